//! After a run: git repositories that the sandbox made (or reached and changed) get what git
//! would run from them moved aside, so that git on the host obeys none of it.
//!
//! A sandbox can always make a repository in a writable directory (`git init sub`), write its
//! `config` (`core.fsmonitor`, `core.pager`, aliases...) and `hooks/`, and record it as a
//! gitlink in an index that was there before, so that the host's next `git status` there
//! descends into it and runs its configuration. Nothing in the kernel can stop the making;
//! once the sandbox has ended, nothing of it runs any more, and what it wrote can be made
//! inert before the host's git reads it: `config`, `config.worktree`, `commondir` and
//! `hooks` of each such git directory that changed during the run are renamed to
//! `NAME.palisade-quarantine` (or `.palisade-quarantine-N`), in place, for the user to read
//! and move back. Without them git still works in the repository, with git's defaults.
//!
//! Which are moved is told by change times, which no one can set. A git directory that is
//! *fresh* (recorded as a gitlink in an index that was there before, or that itself, a
//! directory on the way to it from the writable root, or its work tree's `.git` changed
//! during the run: made, moved into place or pointed at) has all of them moved, whenever
//! their contents were written (a sandbox may prepare them in an earlier run, where no
//! repository was to be seen, and put them in place in this one). Any other (one that was
//! there, out of the start's sight) has those moved that changed during the run. Only below
//! a writable root, reached without following a link
//! (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), and never a placeholder. A linked
//! worktree's `commondir` that names the repository it was added to (a protected one)
//! stays: that is `git worktree add` inside.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ffi::{self, open_beneath};

/// What git runs code from in a git directory, or through which it finds such files.
pub const SURFACES: [&str; 4] = ["config", "config.worktree", "commondir", "hooks"];

/// The suffix of a file moved aside.
pub const SUFFIX: &str = ".palisade-quarantine";

pub use palisade_sandbox::quarantine::{Moved, Suspect};

/// Moves aside the [`SURFACES`] of `s.git_dir`: all of them when it is fresh (see the
/// module documentation), else those whose change time is at or after `since` (seconds and
/// nanoseconds since the epoch, as `ctime`). Returns what was moved; an error when the git
/// directory cannot be reached without following a link, or a rename fails.
pub fn quarantine(s: Suspect<'_>, since: (i64, i64)) -> io::Result<Vec<Moved>> {
    let (root, git_dir) = (s.root, s.git_dir);
    let Ok(rel) = git_dir.strip_prefix(root) else { return Ok(Vec::new()) };
    let root_fd = ffi::open_dir(root)?;
    let dir = open_beneath(root_fd.as_raw_fd(), rel, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let fresh = s.gitlink || changed_on_the_way(root_fd.as_raw_fd(), rel, since) || {
        let dot = s.work_tree.and_then(|w| w.strip_prefix(root).ok()).map(|w| w.join(".git"));
        dot.is_some_and(|d| {
            open_beneath(root_fd.as_raw_fd(), &d, libc::O_PATH, 0)
                .ok()
                .and_then(|fd| ffi::fstat(fd.as_raw_fd()).ok())
                .is_some_and(|st| after(&st, since))
        })
    };
    let mut moved = Vec::new();
    for name in SURFACES {
        let Some(st) = lstat_at(dir.as_raw_fd(), name) else { continue };
        if std::fs::symlink_metadata(git_dir.join(name))
            .is_ok_and(|m| palisade_policy::load::is_placeholder(&git_dir.join(name), &m))
        {
            continue;
        }
        let mut changed = fresh || after(&st, since);
        if name == "hooks" && !changed && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            changed = any_entry_changed(dir.as_raw_fd(), since);
        }
        if !changed {
            continue;
        }
        if name == "commondir"
            && let Some(common) = s.keep_commondir_of
            && names(dir.as_raw_fd(), git_dir, common)
        {
            continue;
        }
        let to = rename_aside(dir.as_raw_fd(), name)?;
        moved.push(Moved { from: git_dir.join(name), to: git_dir.join(to) });
    }
    Ok(moved)
}

/// Whether a directory from below `root` down to `rel` (inclusive) changed at or after
/// `since`: the git directory made, or moved into place, during the run.
fn changed_on_the_way(root: RawFd, rel: &Path, since: (i64, i64)) -> bool {
    let mut prefix = PathBuf::new();
    for c in rel.components() {
        prefix.push(c);
        let Ok(fd) = open_beneath(root, &prefix, libc::O_PATH | libc::O_DIRECTORY, 0) else { return true };
        if ffi::fstat(fd.as_raw_fd()).map_or(true, |st| after(&st, since)) {
            return true;
        }
    }
    false
}

fn lstat_at(dir: RawFd, name: &str) -> Option<libc::stat> {
    ffi::lstat_at(dir, &CString::new(name).ok()?).ok()
}

fn after(st: &libc::stat, since: (i64, i64)) -> bool {
    (st.st_ctime, st.st_ctime_nsec) >= since
}

/// Whether an entry of `dir/hooks` changed at or after `since` (a hook rewritten in place
/// changes its own change time, not the directory's).
fn any_entry_changed(dir: RawFd, since: (i64, i64)) -> bool {
    let Ok(hooks) = open_beneath(dir, Path::new("hooks"), libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return true;
    };
    // The directory's entries through its descriptor, never through a path.
    let Ok(rd) = std::fs::read_dir(format!("/proc/self/fd/{}", hooks.as_raw_fd())) else { return true };
    for e in rd {
        let Ok(e) = e else { return true };
        let Some(st) = e.file_name().to_str().and_then(|n| lstat_at(hooks.as_raw_fd(), n)) else { return true };
        if after(&st, since) {
            return true;
        }
    }
    false
}

/// Whether `dir/commondir` (of the git directory `git_dir`) names `common`.
fn names(dir: RawFd, git_dir: &Path, common: &Path) -> bool {
    let Ok(f) = open_beneath(dir, Path::new("commondir"), libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    let mut buf = vec![0u8; 4096];
    let Ok(n) = ffi::read_some(f.as_raw_fd(), &mut buf) else { return false };
    let text = buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]);
    let target = git_dir.join(OsStr::from_bytes(text));
    std::fs::canonicalize(target).is_ok_and(|t| t == common)
}

/// Renames `dir/name` to the first free `name.palisade-quarantine[-N]`; returns that name.
fn rename_aside(dir: RawFd, name: &str) -> io::Result<OsString> {
    let from = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    for n in 0..1000 {
        let to = if n == 0 { format!("{name}{SUFFIX}") } else { format!("{name}{SUFFIX}-{n}") };
        let c = CString::new(to.as_str()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: valid descriptors and C strings; RENAME_NOREPLACE never overwrites.
        let r = unsafe { libc::renameat2(dir, from.as_ptr(), dir, c.as_ptr(), libc::RENAME_NOREPLACE) };
        if r == 0 {
            return Ok(to.into());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> (i64, i64) {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        (d.as_secs() as i64, i64::from(d.subsec_nanos()))
    }

    fn tree(tag: &str) -> PathBuf {
        let t = std::env::temp_dir().join(format!("palisade-quarantine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(&t).unwrap();
        std::fs::canonicalize(t).unwrap()
    }

    fn suspect<'a>(root: &'a Path, git_dir: &'a Path) -> Suspect<'a> {
        Suspect { root, git_dir, work_tree: None, gitlink: false, keep_commondir_of: None }
    }

    fn names(moved: &[Moved]) -> Vec<String> {
        moved.iter().map(|m| m.to.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn in_a_repository_that_was_there_what_changed_is_moved_aside_and_what_did_not_stays() {
        let t = tree("old");
        let g = t.join("ws/sub/.git");
        std::fs::create_dir_all(g.join("hooks")).unwrap();
        std::fs::write(g.join("hooks/pre-commit"), "old").unwrap();
        std::fs::write(g.join("config"), "old").unwrap();
        std::fs::write(g.join("hooks.palisade-quarantine"), "earlier").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let since = now();
        std::thread::sleep(std::time::Duration::from_millis(30));
        // A hook rewritten in place: the git directory itself does not change.
        std::fs::write(g.join("hooks/pre-commit"), "new").unwrap();
        let ws = t.join("ws");
        let moved = quarantine(suspect(&ws, &g), since).unwrap();
        assert_eq!(names(&moved), ["hooks.palisade-quarantine-1"]);
        assert_eq!(std::fs::read_to_string(g.join("config")).unwrap(), "old");
        // Nothing changed: nothing moved.
        assert!(quarantine(suspect(&ws, &g), now()).unwrap().is_empty());
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_fresh_repository_loses_everything_git_would_run_however_old() {
        let t = tree("fresh");
        // Prepared "in an earlier run", out of sight.
        std::fs::create_dir_all(t.join("ws/.cache/blob/hooks")).unwrap();
        std::fs::write(t.join("ws/.cache/blob/config"), "planted").unwrap();
        std::fs::write(t.join("ws/.cache/blob/hooks/pre-commit"), "planted").unwrap();
        std::fs::create_dir_all(t.join("ws/sub")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let since = now();
        std::thread::sleep(std::time::Duration::from_millis(30));
        // Put in place during the run.
        std::fs::rename(t.join("ws/.cache/blob"), t.join("ws/sub/.git")).unwrap();
        let (ws, g) = (t.join("ws"), t.join("ws/sub/.git"));
        let moved = quarantine(suspect(&ws, &g), since).unwrap();
        assert_eq!(names(&moved), ["config.palisade-quarantine", "hooks.palisade-quarantine"]);
        // Recorded as a gitlink: fresh whatever the times.
        std::fs::write(g.join("config"), "again").unwrap();
        let later = now();
        let s = Suspect { gitlink: true, ..suspect(&ws, &g) };
        assert_eq!(names(&quarantine(s, later).unwrap()), ["config.palisade-quarantine-1"]);
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn nothing_is_moved_outside_the_root_through_a_link_or_that_is_a_placeholder() {
        let t = tree("links");
        let g = t.join("ws/sub/.git");
        std::fs::create_dir_all(&g).unwrap();
        let since = (0, 0);
        std::fs::write(g.join("config"), "x").unwrap();
        let ws = t.join("ws");
        assert!(quarantine(suspect(&ws.join("sub/x"), &t.join("elsewhere/.git")), since).unwrap().is_empty());
        std::os::unix::fs::symlink(&g, ws.join("link")).unwrap();
        assert!(quarantine(suspect(&ws, &ws.join("link")), since).is_err());
        // A placeholder (an empty socket of mode 000) is Palisade's own.
        let sock = std::os::unix::net::UnixListener::bind(g.join("commondir")).unwrap();
        std::fs::set_permissions(g.join("commondir"), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        assert_eq!(names(&quarantine(suspect(&ws, &g), since).unwrap()), ["config.palisade-quarantine"]);
        assert!(g.join("commondir").exists());
        drop(sock);
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_worktree_added_to_a_known_repository_keeps_its_commondir() {
        let t = tree("wt");
        let since = now();
        // File times come from the kernel's coarse clock, up to a tick behind `now()`: let
        // one pass, so what is made next is after `since` (as a command's changes are after
        // the run's start, which is taken before the sandbox exists).
        std::thread::sleep(std::time::Duration::from_millis(30));
        let main = t.join("ws/.git");
        let wt = main.join("worktrees/w");
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(wt.join("commondir"), "../..\n").unwrap();
        let ws = t.join("ws");
        let s = Suspect { keep_commondir_of: Some(&main), ..suspect(&ws, &wt) };
        assert!(quarantine(s, since).unwrap().is_empty());
        std::fs::write(wt.join("commondir"), "/elsewhere\n").unwrap();
        assert_eq!(quarantine(s, since).unwrap().len(), 1);
        std::fs::remove_dir_all(&t).unwrap();
    }
}

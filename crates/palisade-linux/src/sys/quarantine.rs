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
//! Only files whose change time (which no one can set) is after the run began are moved,
//! and only below a writable root, reached without following a link
//! (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`): a repository the sandbox could not
//! write, or did not touch, is left as it is. A linked worktree's `commondir` that names the
//! repository it was added to (a protected one) stays: that is `git worktree add` inside.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ffi::{self, open_beneath};

/// What git runs code from in a git directory, or through which it finds such files.
pub const SURFACES: [&str; 4] = ["config", "config.worktree", "commondir", "hooks"];

/// The suffix of a file moved aside.
pub const SUFFIX: &str = ".palisade-quarantine";

/// A file moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub from: PathBuf,
    pub to: PathBuf,
}

/// Moves aside the [`SURFACES`] of `git_dir` (below the writable `root`, both canonical)
/// whose change time is at or after `since` (seconds and nanoseconds since the epoch, as
/// `ctime`). `keep_commondir_of`: the common directory a `commondir` may name and stay
/// (a worktree added to a known repository). Returns what was moved; an error when the git
/// directory cannot be reached without following a link, or a rename fails.
pub fn quarantine(
    root: &Path,
    git_dir: &Path,
    since: (i64, i64),
    keep_commondir_of: Option<&Path>,
) -> io::Result<Vec<Moved>> {
    let Ok(rel) = git_dir.strip_prefix(root) else { return Ok(Vec::new()) };
    let root_fd = open_dir(root)?;
    let dir = open_beneath(root_fd.as_raw_fd(), rel, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let mut moved = Vec::new();
    for name in SURFACES {
        let Some(st) = lstat_at(dir.as_raw_fd(), name) else { continue };
        let mut changed = after(&st, since);
        if name == "hooks" && !changed && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            changed = any_entry_changed(dir.as_raw_fd(), since);
        }
        if !changed {
            continue;
        }
        if name == "commondir"
            && let Some(common) = keep_commondir_of
            && names(dir.as_raw_fd(), git_dir, common)
        {
            continue;
        }
        let to = rename_aside(dir.as_raw_fd(), name)?;
        moved.push(Moved { from: git_dir.join(name), to: git_dir.join(to) });
    }
    Ok(moved)
}

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = ffi::cstr(p)?;
    // SAFETY: a valid C string; the descriptor is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    ffi::check(fd as libc::c_long)?;
    // SAFETY: just returned by the kernel.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn lstat_at(dir: RawFd, name: &str) -> Option<libc::stat> {
    let c = CString::new(name).ok()?;
    // SAFETY: a zeroed stat is a valid output buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and buffer; the name itself is not followed.
    (unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0).then_some(st)
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

    #[test]
    fn what_changed_is_moved_aside_and_what_did_not_stays() {
        let t = std::env::temp_dir().join(format!("palisade-quarantine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let g = t.join("ws/sub/.git");
        std::fs::create_dir_all(g.join("hooks")).unwrap();
        std::fs::write(g.join("hooks/pre-commit"), "old").unwrap();
        std::fs::write(g.join("config"), "old").unwrap();
        std::fs::write(g.join("config.palisade-quarantine"), "earlier").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let since = now();
        std::thread::sleep(std::time::Duration::from_millis(30));
        // Changed after `since`: a hook rewritten in place, and a new commondir.
        std::fs::write(g.join("hooks/pre-commit"), "new").unwrap();
        std::fs::write(g.join("commondir"), "../../other\n").unwrap();
        let ws = std::fs::canonicalize(t.join("ws")).unwrap();
        let g = std::fs::canonicalize(&g).unwrap();
        let moved = quarantine(&ws, &g, since, None).unwrap();
        let names: Vec<_> = moved.iter().map(|m| m.to.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["commondir.palisade-quarantine", "hooks.palisade-quarantine"]);
        assert_eq!(std::fs::read_to_string(g.join("config")).unwrap(), "old");
        assert!(!g.join("hooks").exists() && !g.join("commondir").exists());
        // A repository outside the root is never touched; nor one reached through a link.
        assert!(quarantine(&ws.join("sub"), &t.join("elsewhere/.git"), since, None).unwrap().is_empty());
        std::os::unix::fs::symlink(&g, ws.join("link")).unwrap();
        std::fs::write(g.join("config"), "new").unwrap();
        assert!(quarantine(&ws, &ws.join("link"), since, None).is_err());
        // A second quarantine of the same name takes the next free one.
        let moved = quarantine(&ws, &g, since, None).unwrap();
        assert_eq!(moved[0].to, g.join("config.palisade-quarantine-1"));
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_worktree_added_to_a_known_repository_keeps_its_commondir() {
        let t = std::env::temp_dir().join(format!("palisade-quarantine-wt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        let since = now();
        let main = t.join("ws/.git");
        let wt = main.join("worktrees/w");
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(wt.join("commondir"), "../..\n").unwrap();
        let ws = std::fs::canonicalize(t.join("ws")).unwrap();
        let (main, wt) = (std::fs::canonicalize(&main).unwrap(), std::fs::canonicalize(&wt).unwrap());
        assert!(quarantine(&ws, &wt, since, Some(&main)).unwrap().is_empty());
        std::fs::write(wt.join("commondir"), "/elsewhere\n").unwrap();
        assert_eq!(quarantine(&ws, &wt, since, Some(&main)).unwrap().len(), 1);
        std::fs::remove_dir_all(&t).unwrap();
    }
}

//! Placeholders on the host, and the registry that lets runs share them and clean up after
//! runs that were killed.
//!
//! A protected path that does not exist under a writable tree must stay uncreatable while a
//! sandbox runs, and a mount needs a name to sit on. The supervisor makes that name: an empty
//! socket with mode 000 (`mknod(S_IFSOCK)`). Git skips special files (`git status`, `git add
//! -A` and `git clean` never see it) and so do most tools; nothing can be created beneath a
//! socket; opening one fails at once (`ENXIO`) rather than blocking like a FIFO; and it
//! costs one inode, no data block (making and removing 25 cost 0.35 ms here, 25 directories
//! 2.3 ms). On a file system without sockets, an empty directory of mode 000 stands in.
//!
//! Runs on the same tree share placeholders, and one may be killed with `SIGKILL`, so each
//! placeholder is removed by the last run that uses it, or by a later run when its users are
//! dead. The registry is a directory (`$XDG_STATE_HOME/palisade/placeholders`, invisible in
//! the sandbox by the built-in policy) holding:
//! - `lock`, locked (`flock`) while a run adds or removes its placeholders;
//! - one `run-PID-NANOS` file per live run: the paths it uses, NUL-separated, locked by that
//!   run for its lifetime. A list file whose lock can be taken belongs to a dead run.
//!
//! Only a placeholder is ever removed (a socket or empty directory with mode 000), through
//! its parent opened without following symbolic links.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use palisade_policy::hostfs::{
    COMMONDIR_PLACEHOLDER, COMMONDIR_PLACEHOLDER_MODE, Kind, PlaceholderShape, placeholder_shape,
};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ffi;

pub use super::step::StepError as RegistryError;
use super::step::at;

/// The placeholders one run holds. Dropping it releases them (removing those no other live
/// run uses), so every way out of a run, error or not, cleans up.
#[derive(Debug)]
pub struct Held {
    dir: PathBuf,
    list: PathBuf,
    /// Keeps the list file locked while the run lives.
    _lock: Option<std::fs::File>,
    paths: Vec<PathBuf>,
    released: bool,
}

/// The registry's global lock, held while it is in scope.
struct Locked(#[allow(dead_code)] std::fs::File);

fn lock(dir: &Path) -> Result<Locked, RegistryError> {
    let path = dir.join("lock");
    let f = at(
        "open the placeholder registry's lock",
        &path,
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path),
    )?;
    at("lock the placeholder registry", &path, flock(f.as_raw_fd(), libc::LOCK_EX))?;
    Ok(Locked(f))
}

fn flock(fd: RawFd, op: i32) -> io::Result<()> {
    loop {
        // SAFETY: flock on an open descriptor.
        if unsafe { libc::flock(fd, op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The registry's list files: for each, its path, its paths, and whether its run is alive.
/// Lists of dead runs come back opened and locked by us.
fn lists(dir: &Path) -> Vec<(PathBuf, Vec<PathBuf>, Option<std::fs::File>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        if !e.file_name().as_bytes().starts_with(b"run-") {
            continue;
        }
        let path = e.path();
        let Ok(mut f) = std::fs::OpenOptions::new().read(true).custom_flags_nofollow().open(&path) else { continue };
        // SAFETY: flock on the descriptor just opened.
        let dead = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        let mut data = Vec::new();
        let _ = f.read_to_end(&mut data);
        let paths =
            data.split(|&b| b == 0).filter(|p| !p.is_empty()).map(|p| PathBuf::from(OsStr::from_bytes(p))).collect();
        out.push((path, paths, dead.then_some(f)));
    }
    out
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

/// Removes the placeholders of dead runs that no live run (nor `keep`) uses, and their
/// lists. Called with the registry locked.
fn reap(dir: &Path, keep: &HashSet<PathBuf>) -> HashSet<PathBuf> {
    let all = lists(dir);
    let mut in_use: HashSet<PathBuf> = keep.clone();
    for (_, paths, dead) in &all {
        if dead.is_none() {
            in_use.extend(paths.iter().cloned());
        }
    }
    for (list, paths, dead) in all {
        if dead.is_some() {
            for p in paths.iter().filter(|p| !in_use.contains(*p)) {
                remove(p);
            }
            let _ = std::fs::remove_file(&list);
        }
    }
    in_use
}

/// Registers `paths` for this run and makes a placeholder at each that has none (a `commondir`
/// file where the flag is set, an empty socket elsewhere). The registry directory is created
/// if needed.
pub fn acquire(dir: &Path, wanted: &[(PathBuf, bool)]) -> Result<Held, RegistryError> {
    let paths: Vec<PathBuf> = wanted.iter().map(|(p, _)| p.clone()).collect();
    at("create the placeholder registry", dir, std::fs::create_dir_all(dir))?;
    let _g = lock(dir)?;
    let mine: HashSet<PathBuf> = paths.iter().cloned().collect();
    reap(dir, &mine);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let list = dir.join(format!("run-{}-{nanos}", std::process::id()));
    let mut f = at(
        "create this run's list of placeholders",
        &list,
        std::fs::OpenOptions::new().write(true).create_new(true).custom_flags_nofollow().open(&list),
    )?;
    at("lock this run's list of placeholders", &list, flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB))?;
    let mut data = Vec::new();
    for p in &paths {
        data.extend_from_slice(p.as_os_str().as_bytes());
        data.push(0);
    }
    at("write this run's list of placeholders", &list, f.write_all(&data))?;
    let held = Held { dir: dir.to_path_buf(), list, _lock: Some(f), paths, released: false };
    let mut parents = Parents::default();
    let mut models = Models::new();
    for (p, commondir) in wanted {
        // On failure `held` is dropped, which removes what was made so far.
        let (pfd, name) = at("open (no symlinks) the parent of the placeholder", p, parents.of(p))?;
        if *commondir { create_commondir(pfd, &name, p)? } else { create(pfd, &name, p, &mut models)? }
    }
    Ok(held)
}

impl Held {
    /// The placeholders this run holds.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Unregisters this run and removes its placeholders that no other live run uses.
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let Ok(_g) = lock(&self.dir) else { return };
        let _ = std::fs::remove_file(&self.list);
        self._lock = None;
        let in_use = reap(&self.dir, &HashSet::new());
        let mut parents = Parents::default();
        for p in &self.paths {
            if !in_use.contains(p) {
                remove_with(&mut parents, p);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release_now();
    }
}

/// Parents of placeholders, opened once each (most placeholders share a few parents).
#[derive(Default)]
struct Parents {
    root: Option<std::fs::File>,
    open: std::collections::HashMap<PathBuf, OwnedFd>,
}

impl Parents {
    /// The parent of `path`, opened without following symbolic links, and the final name.
    fn of(&mut self, path: &Path) -> io::Result<(RawFd, CString)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        if !self.open.contains_key(parent) {
            if self.root.is_none() {
                self.root = Some(std::fs::File::open("/")?);
            }
            let root = self.root.as_ref().map_or(-1, |r| r.as_raw_fd());
            let rel = parent.strip_prefix("/").unwrap_or(parent);
            let pfd = ffi::open_beneath(root, rel, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            self.open.insert(parent.to_path_buf(), pfd);
        }
        let fd = self.open.get(parent).map_or(-1, |f| f.as_raw_fd());
        Ok((fd, ffi::cstr(Path::new(name))?))
    }
}

/// Where this run made its first socket, by file system: later placeholders on the same
/// file system are hard links to it. A link allocates no inode, and ext4's inode allocator
/// is most of what making a socket costs (it scans past recently freed inodes): 30 sockets
/// made and removed took 0.55 ms here, one socket and 29 links 0.30 ms.
type Models = std::collections::HashMap<u64, (RawFd, CString)>;

/// The device of the directory `pfd`.
fn device(pfd: RawFd) -> Option<u64> {
    // SAFETY: a zeroed stat is a valid output buffer; `pfd` is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and buffer.
    (unsafe { libc::fstat(pfd, &mut st) } == 0).then_some(st.st_dev)
}

/// Makes the placeholder `name` in the directory `pfd` (`path` for messages); one already
/// there (another run's) is kept. Anything else that appeared there since planning is left
/// alone: the mount will cover it all the same, and it is never removed.
fn create(pfd: RawFd, name: &CString, path: &Path, models: &mut Models) -> Result<(), RegistryError> {
    let dev = device(pfd);
    if let Some((mfd, mname)) = dev.and_then(|d| models.get(&d)) {
        // SAFETY: valid directory descriptors and C strings; no link is followed.
        if unsafe { libc::linkat(*mfd, mname.as_ptr(), pfd, name.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
    }
    // SAFETY: valid directory descriptor and C string; a socket inode with no permissions.
    let r = unsafe { libc::mknodat(pfd, name.as_ptr(), libc::S_IFSOCK, 0) };
    if r == 0 {
        if let Some(d) = dev {
            models.entry(d).or_insert_with(|| (pfd, name.clone()));
        }
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(()),
        // A file system without sockets (vfat, some FUSE file systems): an empty directory.
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::EINVAL) => {
            // SAFETY: valid directory descriptor and C string.
            let r = unsafe { libc::mkdirat(pfd, name.as_ptr(), 0) };
            let e2 = io::Error::last_os_error();
            if r == 0 || e2.raw_os_error() == Some(libc::EEXIST) {
                Ok(())
            } else {
                Err(RegistryError { step: "create the placeholder", path: path.to_path_buf(), err: e2 })
            }
        }
        _ => Err(RegistryError { step: "create the placeholder", path: path.to_path_buf(), err: e }),
    }
}

/// A `commondir` placeholder: a read-only file saying "." (mode set exactly, whatever the
/// umask, since its mode is how it is recognised).
fn create_commondir(pfd: RawFd, name: &CString, path: &Path) -> Result<(), RegistryError> {
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: valid directory descriptor and C string.
    let fd = unsafe { libc::openat(pfd, name.as_ptr(), flags, COMMONDIR_PLACEHOLDER_MODE) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EEXIST) {
            Ok(())
        } else {
            Err(RegistryError { step: "create the placeholder", path: path.to_path_buf(), err: e })
        };
    }
    // SAFETY: `fd` was just opened and is owned here.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    let r = ffi::write_all(f.as_raw_fd(), COMMONDIR_PLACEHOLDER)
        .and_then(|_| std::os::unix::fs::fchown(&f, None, None))
        .and_then(|_| f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(COMMONDIR_PLACEHOLDER_MODE)));
    at("write the placeholder", path, r)
}

/// Removes the placeholder at `path` if one is there; anything else is left alone.
fn remove(path: &Path) {
    remove_with(&mut Parents::default(), path);
}

fn remove_with(parents: &mut Parents, path: &Path) {
    let Ok((pfd, name)) = parents.of(path) else { return };
    // SAFETY: a zeroed stat is a valid output buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and buffer; the name itself is not followed.
    if unsafe { libc::fstatat(pfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return;
    }
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    };
    let flags = match placeholder_shape(OsStr::from_bytes(name.as_bytes()), kind, st.st_mode, st.st_size as u64) {
        // rmdir refuses a directory that is not empty.
        Some(PlaceholderShape::Empty) if kind == Kind::Dir => libc::AT_REMOVEDIR,
        Some(PlaceholderShape::Empty) => 0,
        Some(PlaceholderShape::Commondir) => {
            let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
            // SAFETY: valid directory descriptor and C string.
            let fd = unsafe { libc::openat(pfd, name.as_ptr(), flags) };
            if fd < 0 {
                return;
            }
            // SAFETY: just opened, owned here.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let mut data = Vec::new();
            if f.read_to_end(&mut data).is_err() || data != COMMONDIR_PLACEHOLDER {
                return;
            }
            0
        }
        None => return,
    };
    // SAFETY: valid descriptor and C string.
    unsafe { libc::unlinkat(pfd, name.as_ptr(), flags) };
}

/// Placeholders left by runs that were killed, that the next run will remove (for `palisade
/// check`). Nothing is changed.
pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let Ok(_g) = lock(dir) else { return Vec::new() };
    let all = lists(dir);
    let live: HashSet<&PathBuf> = all.iter().filter(|(_, _, d)| d.is_none()).flat_map(|(_, p, _)| p).collect();
    let mut out: Vec<PathBuf> = all
        .iter()
        .filter(|(_, _, d)| d.is_some())
        .flat_map(|(_, p, _)| p.iter())
        .filter(|p| !live.contains(p))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| palisade_policy::load::is_placeholder(p, &m)))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

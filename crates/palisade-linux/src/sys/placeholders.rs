//! Placeholders on the host, and the registry that lets runs share them and clean up after
//! runs that were killed.
//!
//! A protected path that does not exist under a writable tree must stay uncreatable while a
//! sandbox runs, and a mount needs a name to sit on. The supervisor makes that name, of the
//! kind the plan says ([`Placeholder`]):
//! - an empty socket of mode 000 (`mknod(S_IFSOCK)`): git skips special files (`git status`,
//!   `git add -A` and `git clean` never see it), opening one fails at once (`ENXIO`) rather
//!   than blocking like a FIFO, nothing can be created beneath it, and it costs an inode and
//!   no data block. After the first, a run's sockets on the same file system are hard links
//!   to it, made from a descriptor of that very inode (`linkat(AT_EMPTY_PATH)`), so that no
//!   one renaming things in a shared directory can make Palisade link something else: ext4's
//!   inode allocator is most of what making a socket costs (30 made and removed: 0.55 ms
//!   here; one and 29 links: 0.30 ms). On a file system without sockets, an empty directory
//!   of mode 000 stands in;
//! - for a path git reads as configuration, a read-only file holding one comment
//!   ([`EMPTY_CONFIG_PLACEHOLDER`]): git reads it as nothing, where a socket would stop it;
//! - for a `commondir`, a read-only file saying `.` ([`COMMONDIR_PLACEHOLDER`]).
//!
//! Runs on the same tree share placeholders, and one may be killed with `SIGKILL`, so each
//! placeholder is removed by the last run that uses it, or by a later run when its users are
//! dead. The registry is a directory (`$XDG_STATE_HOME/palisade/placeholders`, invisible in
//! the sandbox by the built-in policy) holding:
//! - `lock`, locked (`flock`) while a run adds or removes its placeholders;
//! - one `run-PID-NANOS` file per live run: the paths it uses, NUL-separated, locked by that
//!   run for its lifetime. A list file whose lock can be taken belongs to a dead run.
//!
//! Only a placeholder is ever removed (one of the shapes above, contents checked), through
//! its parent opened without following symbolic links.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use palisade_policy::hostfs::{
    COMMONDIR_PLACEHOLDER, EMPTY_CONFIG_PLACEHOLDER, FILE_PLACEHOLDER_MODE, Kind, PlaceholderShape, placeholder_shape,
};
use palisade_policy::model::Placeholder;

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
    list_lock: Option<std::fs::File>,
    /// The registry's lock, while `acquire` holds it (released before it returns).
    registry_lock: Option<Locked>,
    paths: Vec<PathBuf>,
    /// Of `paths`, those this run found already there (another run's placeholder, or
    /// whatever appeared since planning), not made.
    found: Vec<PathBuf>,
    released: bool,
}

/// The registry's global lock, held while it is in scope.
#[derive(Debug)]
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

fn open_nofollow(o: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    o.custom_flags(libc::O_NOFOLLOW)
}

/// The registry's list files: for each, its path, its paths, and whether its run is alive.
/// Lists of dead runs come back opened and locked by us. Called with the registry locked.
fn lists(dir: &Path) -> Vec<(PathBuf, Vec<PathBuf>, Option<std::fs::File>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        if !e.file_name().as_bytes().starts_with(b"run-") {
            continue;
        }
        let path = e.path();
        let Ok(mut f) = open_nofollow(std::fs::OpenOptions::new().read(true)).open(&path) else { continue };
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

/// Removes the placeholders of dead runs that no live run (nor `keep`) uses, and their
/// lists. Called with the registry locked; returns the paths live runs use.
fn reap(dir: &Path, keep: &HashSet<PathBuf>) -> HashSet<PathBuf> {
    let all = lists(dir);
    let mut in_use: HashSet<PathBuf> = keep.clone();
    for (_, paths, dead) in &all {
        if dead.is_none() {
            in_use.extend(paths.iter().cloned());
        }
    }
    let mut parents = Parents::default();
    for (list, paths, dead) in all {
        if dead.is_some() {
            for p in paths.iter().filter(|p| !in_use.contains(*p)) {
                remove(&mut parents, p);
            }
            let _ = std::fs::remove_file(&list);
        }
    }
    in_use
}

/// Registers `wanted` for this run and makes a placeholder of the given kind at each that
/// has none. Returns what it holds, and the paths it left out because neither Palisade nor
/// the sandbox can create anything there (a read-only file system, or a directory of
/// another user that this user cannot write): the caller drops their mounts from the plan.
pub fn acquire(dir: &Path, wanted: &[(PathBuf, Placeholder)]) -> Result<(Held, Vec<PathBuf>), RegistryError> {
    at("create the placeholder registry", dir, std::fs::create_dir_all(dir))?;
    let registry_lock = lock(dir)?;
    let mine: HashSet<PathBuf> = wanted.iter().map(|(p, _)| p.clone()).collect();
    reap(dir, &mine);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let list = dir.join(format!("run-{}-{nanos}", std::process::id()));
    let f = at(
        "create this run's list of placeholders",
        &list,
        open_nofollow(std::fs::OpenOptions::new().write(true).create_new(true)).open(&list),
    )?;
    at("lock this run's list of placeholders", &list, flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB))?;
    let mut data = Vec::new();
    for (p, _) in wanted {
        data.extend_from_slice(p.as_os_str().as_bytes());
        data.push(0);
    }
    // From here on, dropping `held` (on any error) removes what was made, under the
    // registry lock it already holds.
    let mut held = Held {
        dir: dir.to_path_buf(),
        list: list.clone(),
        list_lock: Some(f),
        registry_lock: Some(registry_lock),
        paths: Vec::new(),
        found: Vec::new(),
        released: false,
    };
    let f = held.list_lock.as_mut().expect("just set");
    at("write this run's list of placeholders", &list, f.write_all(&data))?;
    let mut parents = Parents::default();
    let mut models = Models::new();
    let mut skipped = Vec::new();
    for (p, kind) in wanted {
        let (pfd, name) = at("open (no symlinks) the parent of the placeholder", p, parents.of(p))?;
        let made = match kind {
            Placeholder::Absent => create_socket(pfd, &name, p, &mut models),
            Placeholder::SameDir => create_file(pfd, &name, p, COMMONDIR_PLACEHOLDER),
            Placeholder::EmptyConfig => create_file(pfd, &name, p, EMPTY_CONFIG_PLACEHOLDER),
        };
        match made {
            Ok(true) => held.paths.push(p.clone()),
            Ok(false) => {
                held.paths.push(p.clone());
                held.found.push(p.clone());
            }
            Err(e) if uncreatable(pfd, &e.err) => skipped.push(p.clone()),
            Err(e) => return Err(e),
        }
    }
    held.registry_lock = None;
    Ok((held, skipped))
}

/// Whether `err`, from making a name in the directory `pfd`, means that nothing can make it
/// there, the sandbox included: a read-only file system, an immutable directory, or one
/// that belongs to another user and is closed to this one (the sandbox, with this user's id
/// and no capabilities, can neither write there nor change its mode). A directory of this
/// user's own that is merely closed (mode 555) does not count: its owner can open it again.
fn uncreatable(pfd: RawFd, err: &io::Error) -> bool {
    match err.raw_os_error() {
        Some(libc::EROFS) | Some(libc::EPERM) => true,
        Some(libc::EACCES) => {
            // SAFETY: geteuid cannot fail.
            let me = unsafe { libc::geteuid() };
            ffi::fstat(pfd).is_ok_and(|st| st.st_uid != me && me != 0)
        }
        _ => false,
    }
}

impl Held {
    /// The placeholders this run holds.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// A check that the placeholders this run made or found are still there: one removed on
    /// the host (by the user, by another user's run, by a tool) detaches the sandbox's mount
    /// over it, and the path becomes creatable inside. Paths that held something else than
    /// a placeholder when the run started are not watched.
    pub fn watcher(&self) -> impl Fn() -> Option<String> + Send + 'static {
        // What this run made is a placeholder; what it found is checked.
        let watched: Vec<PathBuf> = self
            .paths
            .iter()
            .filter(|p| {
                !self.found.contains(p)
                    || std::fs::symlink_metadata(p).is_ok_and(|m| palisade_policy::load::is_placeholder(p, &m))
            })
            .cloned()
            .collect();
        move || {
            let gone = watched
                .iter()
                .find(|p| !std::fs::symlink_metadata(p).is_ok_and(|m| palisade_policy::load::is_placeholder(p, &m)))?;
            Some(format!(
                "{} was removed or replaced on the host while the sandbox ran, which takes its protection away; the run was stopped (check that nothing was created there)",
                gone.display()
            ))
        }
    }

    /// Unregisters this run and removes its placeholders that no other live run uses.
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        // Locking anew while still holding the lock would wait for ourselves forever.
        let _g = match self.registry_lock.take() {
            Some(g) => g,
            None => match lock(&self.dir) {
                Ok(g) => g,
                Err(_) => return,
            },
        };
        let _ = std::fs::remove_file(&self.list);
        self.list_lock = None;
        let in_use = reap(&self.dir, &HashSet::new());
        let mut parents = Parents::default();
        for p in &self.paths {
            if !in_use.contains(p) {
                remove(&mut parents, p);
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
    open: HashMap<PathBuf, OwnedFd>,
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

/// This run's first socket on each file system (by device), held open (`O_PATH`): later
/// sockets on the same file system are hard links to that very inode.
type Models = HashMap<u64, OwnedFd>;

/// Links the inode `model` refers to as `name` in `pfd`: from the descriptor itself (Linux
/// 6.10 and later without privileges), else through `/proc/self/fd`.
fn link_from(model: RawFd, pfd: RawFd, name: &CString) -> io::Result<()> {
    // SAFETY: valid descriptors and C strings; AT_EMPTY_PATH links the descriptor's inode.
    if unsafe { libc::linkat(model, c"".as_ptr(), pfd, name.as_ptr(), libc::AT_EMPTY_PATH) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Err(e);
    }
    let proc =
        CString::new(format!("/proc/self/fd/{model}")).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid C strings and descriptor; the magic link names the inode.
    if unsafe { libc::linkat(libc::AT_FDCWD, proc.as_ptr(), pfd, name.as_ptr(), libc::AT_SYMLINK_FOLLOW) } == 0 {
        return Ok(());
    }
    Err(io::Error::last_os_error())
}

/// Makes the socket placeholder `name` in the directory `pfd` (`path` for messages); one
/// already there (another run's) is kept. Anything else that appeared there since planning
/// is left alone: the mount covers it all the same, and it is never removed. `true` when
/// this call made it.
fn create_socket(pfd: RawFd, name: &CString, path: &Path, models: &mut Models) -> Result<bool, RegistryError> {
    let dev = ffi::fstat(pfd).ok().map(|st| st.st_dev);
    if let Some(model) = dev.and_then(|d| models.get(&d)) {
        match link_from(model.as_raw_fd(), pfd, name) {
            Ok(()) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(false),
            Err(_) => {}
        }
    }
    // SAFETY: valid directory descriptor and C string; a socket inode with no permissions.
    if unsafe { libc::mknodat(pfd, name.as_ptr(), libc::S_IFSOCK, 0) } == 0 {
        // Hold the new inode as the model, if it is still ours (a socket of mode 000).
        if let (Some(d), Ok(fd)) =
            (dev, ffi::open_beneath(pfd, Path::new(OsStr::from_bytes(name.as_bytes())), libc::O_PATH, 0))
        {
            let ours = ffi::fstat(fd.as_raw_fd())
                .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK && st.st_mode & 0o7777 == 0);
            if ours {
                models.entry(d).or_insert(fd);
            }
        }
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(false),
        // A file system without sockets (vfat, some FUSE file systems): an empty directory,
        // if this file system can give it mode 000 (how it is recognised later).
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
            // SAFETY: valid directory descriptor and C string.
            if unsafe { libc::mkdirat(pfd, name.as_ptr(), 0) } != 0 {
                let e2 = io::Error::last_os_error();
                return if e2.raw_os_error() == Some(libc::EEXIST) {
                    Ok(false)
                } else {
                    Err(RegistryError { step: "create the placeholder", path: path.to_path_buf(), err: e2 })
                };
            }
            let ok = ffi::lstat_at(pfd, name).is_ok_and(|st| st.st_mode & 0o7777 == 0);
            if ok {
                return Ok(true);
            }
            // SAFETY: valid descriptor and C string; the directory just made.
            unsafe { libc::unlinkat(pfd, name.as_ptr(), libc::AT_REMOVEDIR) };
            Err(RegistryError {
                step: "create the placeholder (this file system has neither sockets nor permission bits, so Palisade cannot hold a protected name in it; keep the workspace on another file system)",
                path: path.to_path_buf(),
                err: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            })
        }
        _ => Err(RegistryError { step: "create the placeholder", path: path.to_path_buf(), err: e }),
    }
}

/// A file placeholder with `contents`, mode 444 (set exactly, whatever the umask, since its
/// mode is part of how it is recognised). One already there is kept. `true` when this call
/// made it.
fn create_file(pfd: RawFd, name: &CString, path: &Path, contents: &[u8]) -> Result<bool, RegistryError> {
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: valid directory descriptor and C string.
    let fd = unsafe { libc::openat(pfd, name.as_ptr(), flags, FILE_PLACEHOLDER_MODE) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EEXIST) {
            Ok(false)
        } else {
            Err(RegistryError { step: "create the placeholder", path: path.to_path_buf(), err: e })
        };
    }
    // SAFETY: `fd` was just opened and is owned here.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    let r = ffi::write_all(f.as_raw_fd(), contents)
        .and_then(|_| f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(FILE_PLACEHOLDER_MODE)));
    at("write the placeholder", path, r).map(|()| true)
}

/// Removes the placeholder at `path` if one is there; anything else is left alone.
fn remove(parents: &mut Parents, path: &Path) {
    let Ok((pfd, name)) = parents.of(path) else { return };
    let Ok(st) = ffi::lstat_at(pfd, &name) else { return };
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
        Some(shape) => {
            let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK;
            // SAFETY: valid directory descriptor and C string.
            let fd = unsafe { libc::openat(pfd, name.as_ptr(), flags) };
            if fd < 0 {
                return;
            }
            // SAFETY: just opened, owned here.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let mut data = Vec::new();
            if f.read_to_end(&mut data).is_err() || Some(data.as_slice()) != shape.contents() {
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

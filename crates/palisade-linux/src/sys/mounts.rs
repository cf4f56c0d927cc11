//! Builds the sandbox's file system view from the plan, inside the new mount namespace.
//!
//! Order matters and is fixed:
//! 1. make every mount private, so nothing propagates to or from the host;
//! 2. mount a fresh tmpfs and `pivot_root` into it, keeping the host at `/oldroot`;
//! 3. apply the plan's operations, parents first. Sources are opened below `/oldroot` and
//!    targets below the new root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and
//!    trees are attached with `open_tree`/`move_mount` on those descriptors, so a symbolic
//!    link planted in a writable directory can never redirect a mount;
//! 4. mount `/proc` (while the host's is still visible, as the kernel requires) and `/dev`;
//! 5. detach `/oldroot` and make the root read-only.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::ffi::{self, *};
use crate::plan::Plan;
use palisade_policy::model::Placeholder;
use palisade_sandbox::view::Entry;

use super::step::{StepError as MountError, at};

type Result<T> = std::result::Result<T, MountError>;

/// `/a/b` → `a/b`.
fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

const STAGE: &str = "/tmp";
const OLD: &str = "oldroot";

pub struct Roots {
    new: OwnedFd,
    old: OwnedFd,
    /// A small read-only tmpfs holding the masks' sources, and its entries opened.
    masks: Option<Masks>,
    /// A small tmpfs, never attached, for generated files and links to private copies.
    generated: Option<OwnedFd>,
    /// Generated files made so far (for unique names).
    files: usize,
    /// The tmpfs of private copies ([`crate::plan::PRIVATE_COPIES`]), once mounted.
    copies: Option<OwnedFd>,
}

/// Steps 1 and 2.
pub fn enter_new_root() -> Result<Roots> {
    let root = Path::new("/");
    at("make mounts private", root, ffi::mount(c"none", c"/", c"", (libc::MS_REC | libc::MS_PRIVATE) as _, None))?;
    let stage = Path::new(STAGE);
    at(
        "mount the new root on",
        stage,
        ffi::mount(c"tmpfs", c"/tmp", c"tmpfs", (libc::MS_NOSUID | libc::MS_NODEV) as _, Some(c"mode=0755,size=16m")),
    )?;
    at("enter", stage, std::env::set_current_dir(stage))?;
    at("create", Path::new("/oldroot"), std::fs::create_dir(OLD))?;
    // SAFETY: both arguments are valid C strings naming directories.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c"oldroot".as_ptr()) };
    at("pivot_root into", stage, check(r))?;
    at("enter", root, std::env::set_current_dir("/"))?;
    let new = at("open", root, open_dir(root))?;
    let old = at("open", Path::new("/oldroot"), open_dir(Path::new("/oldroot")))?;
    Ok(Roots { new, old, masks: None, generated: None, files: 0, copies: None })
}

/// Step 3.
pub fn apply(roots: &mut Roots, plan: &Plan) -> Result<()> {
    for op in &plan.view.entries {
        match op {
            Entry::Private { path, size } => {
                make_dirs(roots.new.as_raw_fd(), path)?;
                let t = at(
                    "mount a private tmpfs on",
                    path,
                    new_tmpfs(0o755, *size, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV),
                )?;
                attach_at(roots, &t, path)?;
            }
            Entry::Host { path, writable } if path == Path::new("/") => host_root(roots, *writable)?,
            Entry::Host { path, writable } => {
                let src = at(
                    "open (no symlinks) the host's",
                    path,
                    open_beneath(roots.old.as_raw_fd(), rel(path), libc::O_PATH, 0),
                )?;
                let tree = at("clone the mount tree of", path, clone_tree(src.as_raw_fd(), true))?;
                let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | if *writable { 0 } else { MOUNT_ATTR_RDONLY };
                at("set mount flags on", path, set_mount_attr(tree.as_raw_fd(), attrs, true))?;
                let target = mountpoint(roots.new.as_raw_fd(), path, || is_dir(src.as_raw_fd()))?;
                at("attach on", path, attach(tree.as_raw_fd(), target.as_raw_fd()))?;
            }
            Entry::Hidden { path, dir } => mask(roots, path, *dir)?,
            Entry::Placeholder { path, kind: Placeholder::SameDir } => {
                // A read-only file saying "." made by the supervisor: bound onto itself.
                let src = at(
                    "open (no symlinks) the placeholder",
                    path,
                    open_beneath(roots.old.as_raw_fd(), rel(path), libc::O_PATH, 0),
                )?;
                rebind_read_only(roots, &src, path)?;
            }
            Entry::Placeholder { path, kind: _ } => {
                // Made on the host by the supervisor (an empty socket, or a file git reads as
                // empty configuration; see `placeholders`), covered by a dangling link named
                // for it. On a file system without sockets it is a directory, which only a
                // directory can cover: the kernel refuses the link with EINVAL, and an empty
                // one is mounted instead.
                match placeholder_link(roots, path) {
                    Err(e) if e.err.raw_os_error() == Some(libc::EINVAL) => {
                        from_mask_source(roots, path, Mask::EmptyDir)?
                    }
                    r => r?,
                }
            }
            Entry::PrivateCopy { path } => private_copy(roots, path)?,
            Entry::OwnCopy { path, copy } => {
                // The kept copy (in Palisade's state directory, which the sandbox cannot see)
                // bound writable over the host's file; the file must be there (Palisade made
                // it before planning): no mount point is made through a host bind.
                let src = at(
                    "open (no symlinks) the kept copy of",
                    path,
                    open_beneath(roots.old.as_raw_fd(), rel(copy), libc::O_PATH, 0),
                )?;
                let tree = at("clone the kept copy of", path, clone_tree(src.as_raw_fd(), false))?;
                let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
                at("set mount flags on", path, set_mount_attr(tree.as_raw_fd(), attrs, false))?;
                let target = at(
                    "open (no symlinks) the file kept as a copy",
                    path,
                    open_beneath(roots.new.as_raw_fd(), rel(path), libc::O_PATH, 0),
                )?;
                at("attach on", path, attach(tree.as_raw_fd(), target.as_raw_fd()))?;
            }
            Entry::Cache { path, upper, work, lower } => cache(roots, path, upper, work, *lower)?,
            Entry::PinnedLink { path } => {
                let src = at(
                    "open (no symlinks) the host's link",
                    path,
                    open_beneath(roots.old.as_raw_fd(), rel(path), libc::O_PATH, 0),
                )?;
                if !at("stat", path, is_symlink(src.as_raw_fd()))? {
                    return Err(MountError {
                        step: "pin the link (it is no longer a link)",
                        path: path.clone(),
                        err: io::Error::from_raw_os_error(libc::ESTALE),
                    });
                }
                rebind_read_only(roots, &src, path)?;
            }
            Entry::File { path, contents } => {
                let n = roots.files;
                roots.files += 1;
                let name = format!("file-{n}");
                let fs = generated(roots, path)?;
                let c = at("name", path, cstr(Path::new(&name)))?;
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC;
                // SAFETY: valid directory descriptor (the mask source's root) and C string.
                let fd = unsafe { libc::openat(fs, c.as_ptr(), flags, 0o444) };
                let fd = at("create the contents of", path, check(fd as libc::c_long))? as RawFd;
                // SAFETY: `fd` was just opened and is owned here.
                let file = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                at("write the contents of", path, ffi::write_all(file.as_raw_fd(), contents.as_bytes()))?;
                drop(file);
                let src = at("open the contents of", path, open_beneath(fs, Path::new(&name), libc::O_PATH, 0))?;
                let tree = at("clone the contents of", path, clone_tree(src.as_raw_fd(), false))?;
                let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
                at("set mount flags on", path, set_mount_attr(tree.as_raw_fd(), attrs, false))?;
                attach_at(roots, &tree, path)?;
            }
            Entry::Link { path, target } => {
                let (parent, name) = split(path)?;
                make_dirs(roots.new.as_raw_fd(), &parent)?;
                let pfd = at(
                    "open",
                    &parent,
                    open_beneath(roots.new.as_raw_fd(), rel(&parent), libc::O_PATH | libc::O_DIRECTORY, 0),
                )?;
                let (t, n) = (at("name", target, cstr(target))?, at("name", path, cstr(Path::new(&name)))?);
                // SAFETY: valid C strings and directory descriptor.
                let r = unsafe { libc::symlinkat(t.as_ptr(), pfd.as_raw_fd(), n.as_ptr()) };
                at("create the link", path, check(r as libc::c_long))?;
            }
        }
    }
    Ok(())
}

/// A cache: an overlay of the private layer `upper` over the host's directory (`lower`),
/// or the layer alone when the host has none. The layer's directories and the host's are
/// opened without following links and handed to the kernel as descriptors. Where the kernel
/// refuses the overlay (an old kernel, a layer on a file system without extended
/// attributes), the host's directory is shown read-only, and the run says so: never more
/// access than the policy's `read`.
fn cache(roots: &Roots, path: &Path, upper: &Path, work: &Path, lower: bool) -> Result<()> {
    let dir =
        |what, p: &Path| at(what, p, open_beneath(roots.old.as_raw_fd(), rel(p), libc::O_PATH | libc::O_DIRECTORY, 0));
    let up = dir("open (no symlinks) the cache layer", upper)?;
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    let tree = if lower {
        let low = dir("open (no symlinks) the host's", path)?;
        let wk = dir("open (no symlinks) the cache layer's work directory", work)?;
        match new_overlay(low.as_raw_fd(), up.as_raw_fd(), wk.as_raw_fd(), attrs) {
            Ok(t) => t,
            Err(e) => {
                eprintln!(
                    "palisade: the cache {} is read-only in this run: the kernel refused its private layer (overlay: {e})",
                    path.display()
                );
                let tree = at("clone the mount tree of", path, clone_tree(low.as_raw_fd(), true))?;
                at("set mount flags on", path, set_mount_attr(tree.as_raw_fd(), attrs | MOUNT_ATTR_RDONLY, true))?;
                tree
            }
        }
    } else {
        let tree = at("clone the cache layer of", path, clone_tree(up.as_raw_fd(), false))?;
        at("set mount flags on", path, set_mount_attr(tree.as_raw_fd(), attrs, false))?;
        tree
    };
    let target = mountpoint(roots.new.as_raw_fd(), path, || Ok(true))?;
    at("attach on", path, attach(tree.as_raw_fd(), target.as_raw_fd()))
}

/// The host's whole root (`--allow-read /`): a mount on the new root itself would cover the
/// directory every later step builds in (and `/` never leads past the process's own root),
/// so each entry of the host's `/` is shown in its place instead: directories and files
/// bound, links made again with the same target.
fn host_root(roots: &Roots, writable: bool) -> Result<()> {
    let root = Path::new("/");
    let dir = at(
        "open the host's",
        root,
        open_beneath(roots.old.as_raw_fd(), Path::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0),
    )?;
    let names = at("list the host's", root, ffi::list_dir(dir.as_raw_fd()))?;
    for name in names {
        let path = root.join(&name);
        // `/oldroot` is the host's root itself, seen from the new one.
        if name == OLD {
            continue;
        }
        let src = at(
            "open (no symlinks) the host's",
            &path,
            open_beneath(roots.old.as_raw_fd(), rel(&path), libc::O_PATH, 0),
        );
        let src = match src {
            Ok(s) => s,
            // A link: made again, pointing where the host's points.
            Err(e) if e.err.raw_os_error() == Some(libc::ELOOP) => {
                let target = at("read the host's link", &path, ffi::read_link_at(roots.old.as_raw_fd(), &name))?;
                let (t, n) = (at("name", &target, cstr(&target))?, at("name", &path, cstr(Path::new(&name)))?);
                // SAFETY: valid C strings and directory descriptor.
                let r = unsafe { libc::symlinkat(t.as_ptr(), roots.new.as_raw_fd(), n.as_ptr()) };
                at("create the link", &path, check(r as libc::c_long))?;
                continue;
            }
            Err(e) if e.err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let tree = at("clone the mount tree of", &path, clone_tree(src.as_raw_fd(), true))?;
        let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | if writable { 0 } else { MOUNT_ATTR_RDONLY };
        at("set mount flags on", &path, set_mount_attr(tree.as_raw_fd(), attrs, true))?;
        let target = mountpoint(roots.new.as_raw_fd(), &path, || is_dir(src.as_raw_fd()))?;
        at("attach on", &path, attach(tree.as_raw_fd(), target.as_raw_fd()))?;
    }
    Ok(())
}

/// Mounts the single host inode `src` (a file, a link: nothing beneath it) read-only at the
/// same `path` in the new root, where it already is through its parent's bind.
fn rebind_read_only(roots: &Roots, src: &OwnedFd, path: &Path) -> Result<()> {
    let tree = at("clone the mount tree of", path, clone_tree(src.as_raw_fd(), false))?;
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    at("set mount flags on", path, set_mount_attr(tree.as_raw_fd(), attrs, false))?;
    attach_at(roots, &tree, path)
}

/// A private, writable copy of the host's file at `path`, reached inside through a link
/// mounted over the file (see [`Entry::PrivateCopy`]). A file too large to copy is bound
/// read-only instead.
fn private_copy(roots: &mut Roots, path: &Path) -> Result<()> {
    let src = at(
        "open (no symlinks) the host's",
        path,
        open_beneath(roots.old.as_raw_fd(), rel(path), libc::O_RDONLY | libc::O_NONBLOCK, 0),
    )?;
    let st = at("stat", path, fstat(src.as_raw_fd()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 > crate::plan::PRIVATE_COPY_MAX {
        let tree = at("clone the mount tree of", path, clone_tree(src.as_raw_fd(), false))?;
        at(
            "set mount flags on",
            path,
            set_mount_attr(tree.as_raw_fd(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false),
        )?;
        return attach_at(roots, &tree, path);
    }
    if roots.copies.is_none() {
        let dir = Path::new(crate::plan::PRIVATE_COPIES);
        make_dirs(roots.new.as_raw_fd(), dir)?;
        let t = at(
            "mount the private copies on",
            dir,
            new_tmpfs(
                0o755,
                crate::plan::PRIVATE_COPIES_SIZE,
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            ),
        )?;
        attach_at(roots, &t, dir)?;
        roots.copies =
            Some(at("open", dir, open_beneath(roots.new.as_raw_fd(), rel(dir), libc::O_PATH | libc::O_DIRECTORY, 0))?);
    }
    let n = roots.files;
    roots.files += 1;
    let name = format!("copy-{n}");
    let copies = roots.copies.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    let cname = at("name", path, cstr(Path::new(&name)))?;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: valid directory descriptor and C string.
    let fd = at(
        "create the private copy of",
        path,
        check(unsafe { libc::openat(copies, cname.as_ptr(), flags, 0o644) } as libc::c_long),
    )?;
    // SAFETY: just opened, owned here.
    let dst = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let k = at("read the host's", path, ffi::read_some(src.as_raw_fd(), &mut buf))?;
        if k == 0 {
            break;
        }
        at("write the private copy of", path, ffi::write_all(dst.as_raw_fd(), &buf[..k]))?;
    }
    drop(dst);
    // The link lives in the generated files' tmpfs; its target is the copy's path inside.
    let fs = generated(roots, path)?;
    let target = at("name", path, cstr(&Path::new(crate::plan::PRIVATE_COPIES).join(&name)))?;
    // SAFETY: valid C strings and directory descriptor.
    let r = unsafe { libc::symlinkat(target.as_ptr(), fs, cname.as_ptr()) };
    at("create the link to the private copy of", path, check(r as libc::c_long))?;
    let src = at("open the link to the private copy of", path, open_beneath(fs, Path::new(&name), libc::O_PATH, 0))?;
    let tree = at("clone the link to the private copy of", path, clone_tree(src.as_raw_fd(), false))?;
    attach_at(roots, &tree, path)
}

fn split(path: &Path) -> Result<(PathBuf, std::ffi::OsString)> {
    match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => Ok((p.to_path_buf(), n.to_os_string())),
        _ => {
            Err(MountError { step: "split", path: path.to_path_buf(), err: io::Error::from_raw_os_error(libc::EINVAL) })
        }
    }
}

fn file_type(fd: RawFd) -> io::Result<libc::mode_t> {
    Ok(fstat(fd)?.st_mode & libc::S_IFMT)
}

fn is_dir(fd: RawFd) -> io::Result<bool> {
    Ok(file_type(fd)? == libc::S_IFDIR)
}

fn is_symlink(fd: RawFd) -> io::Result<bool> {
    Ok(file_type(fd)? == libc::S_IFLNK)
}

/// Attaches the detached tree `tree` on `path` in the new root, refusing symlinks on the way.
fn attach_at(roots: &Roots, tree: &OwnedFd, path: &Path) -> Result<()> {
    let target = at(
        "open (no symlinks) the mount point",
        path,
        open_beneath(roots.new.as_raw_fd(), rel(path), libc::O_PATH, 0),
    )?;
    at("attach on", path, attach(tree.as_raw_fd(), target.as_raw_fd()))
}

fn mask(roots: &mut Roots, path: &Path, dir: bool) -> Result<()> {
    from_mask_source(roots, path, if dir { Mask::DeniedDir } else { Mask::Denied })
}

/// The entries of the mask source.
#[derive(Debug, Clone, Copy)]
enum Mask {
    /// An unreadable file.
    Denied,
    /// An unreadable directory.
    DeniedDir,
    /// A readable, empty directory.
    EmptyDir,
}

/// The mask source (a tiny tmpfs, never attached) and its entries, opened once.
pub struct Masks {
    _fs: OwnedFd,
    entries: [OwnedFd; 3],
}

/// The mask source, made on first use: its entries are created, then the mount is made
/// read-only (with nosuid, nodev, noexec) once, so that every clone of an entry inherits
/// those flags.
fn masks<'a>(roots: &'a mut Roots, path: &Path) -> Result<&'a Masks> {
    if roots.masks.is_none() {
        let fs = at(
            "mount the mask source for",
            path,
            new_tmpfs(0o755, 64 << 10, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
        )?;
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC;
        // SAFETY: valid directory descriptor (the new mount's root) and C string.
        let fd = unsafe { libc::openat(fs.as_raw_fd(), c"denied".as_ptr(), flags, 0o000) };
        at("create the mask for", path, check(fd as libc::c_long))?;
        // SAFETY: `fd` was just opened and is not used again.
        unsafe { libc::close(fd) };
        for (name, mode) in [(c"denied-dir", 0o000), (c"empty-dir", 0o555)] {
            // SAFETY: valid directory descriptor and C string.
            let r = unsafe { libc::mkdirat(fs.as_raw_fd(), name.as_ptr(), mode) };
            at("create the mask for", path, check(r as libc::c_long))?;
        }
        let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        at("make the mask source read-only for", path, set_mount_attr(fs.as_raw_fd(), attrs, false))?;
        let open =
            |name: &str| at("open the mask for", path, open_beneath(fs.as_raw_fd(), Path::new(name), libc::O_PATH, 0));
        let entries = [open("denied")?, open("denied-dir")?, open("empty-dir")?];
        roots.masks = Some(Masks { _fs: fs, entries });
    }
    Ok(roots.masks.as_ref().expect("just made"))
}

/// Binds one entry of the mask source over `path`. Every mask is a clone of an entry of the
/// same source, made read-only once: no new file system, and no flags to set, per mask.
fn from_mask_source(roots: &mut Roots, path: &Path, which: Mask) -> Result<()> {
    let src = masks(roots, path)?.entries[which as usize].as_raw_fd();
    let tree = at("clone the mask for", path, clone_tree(src, false))?;
    attach_at(roots, &tree, path)
}

/// A dangling link to [`crate::plan::placeholder_target`] over `path`.
fn placeholder_link(roots: &mut Roots, path: &Path) -> Result<()> {
    let n = roots.files;
    roots.files += 1;
    let name = format!("placeholder-{n}");
    let fs = generated(roots, path)?;
    let (target, cname) =
        (at("name", path, cstr(&crate::plan::placeholder_target(path)))?, at("name", path, cstr(Path::new(&name)))?);
    // SAFETY: valid C strings and directory descriptor.
    let r = unsafe { libc::symlinkat(target.as_ptr(), fs, cname.as_ptr()) };
    at("create the placeholder's link for", path, check(r as libc::c_long))?;
    let src = at("open the placeholder's link for", path, open_beneath(fs, Path::new(&name), libc::O_PATH, 0))?;
    let tree = at("clone the placeholder's link for", path, clone_tree(src.as_raw_fd(), false))?;
    attach_at(roots, &tree, path)
}

/// The generated files' tmpfs (never attached): `File` contents, the placeholders' links
/// and the links to private copies, cloned from there one by one. (A size limit, not an
/// allocation: a link's target longer than an inode holds takes a page.)
fn generated(roots: &mut Roots, path: &Path) -> Result<RawFd> {
    if roots.generated.is_none() {
        let fs = at(
            "mount the generated files for",
            path,
            new_tmpfs(0o755, 4 << 20, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
        )?;
        roots.generated = Some(fs);
    }
    Ok(roots.generated.as_ref().map_or(-1, |f| f.as_raw_fd()))
}

/// Creates the directories of `path` in the sandbox's own tmpfs (never on the host: a
/// component that already exists is only walked through, never followed if it is a link).
fn make_dirs(root: RawFd, path: &Path) -> Result<()> {
    let mut cur = PathBuf::from("/");
    for comp in rel(path).components() {
        let parent = at("open", &cur, open_beneath(root, rel(&cur), libc::O_PATH | libc::O_DIRECTORY, 0))?;
        let name = at("name", path, cstr(Path::new(comp.as_os_str())))?;
        // SAFETY: valid directory descriptor and C string.
        let r = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(MountError { step: "create the mount point", path: cur.join(comp), err: e });
            }
        }
        cur.push(comp);
    }
    Ok(())
}

/// The mount point `path` in the new root, opened (no symlinks on the way), made first as a
/// directory or an empty file (as `is_dir` says) when it does not exist yet.
fn mountpoint(root: RawFd, path: &Path, is_dir: impl FnOnce() -> io::Result<bool>) -> Result<OwnedFd> {
    if let Ok(fd) = open_beneath(root, rel(path), libc::O_PATH, 0) {
        return Ok(fd);
    }
    if at("stat", path, is_dir())? {
        make_dirs(root, path)?;
    } else {
        let (parent, name) = split(path)?;
        make_dirs(root, &parent)?;
        let pfd = at("open", &parent, open_beneath(root, rel(&parent), libc::O_PATH | libc::O_DIRECTORY, 0))?;
        let n = at("name", path, cstr(Path::new(&name)))?;
        // SAFETY: valid directory descriptor and C string.
        let fd = unsafe {
            libc::openat(
                pfd.as_raw_fd(),
                n.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o644,
            )
        };
        at("create the mount point", path, check(fd as libc::c_long))?;
        // SAFETY: just opened, not used again.
        unsafe { libc::close(fd) };
    }
    at("open (no symlinks) the mount point", path, open_beneath(root, rel(path), libc::O_PATH, 0))
}

/// Step 4: a fresh `/proc` for the sandbox's pid namespace and a minimal `/dev`.
pub fn system_mounts(roots: &mut Roots, shm_size: u64, devpts: bool) -> Result<()> {
    let root = roots.new.as_raw_fd();
    let proc_ = Path::new("/proc");
    make_dirs(root, proc_)?;
    at(
        "mount",
        proc_,
        ffi::mount(c"proc", c"/proc", c"proc", (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as _, None),
    )?;
    proc_limits(roots)?;
    let dev = Path::new("/dev");
    make_dirs(root, dev)?;
    let t = at("mount a tmpfs on", dev, new_tmpfs(0o755, 1 << 20, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC))?;
    attach_at(roots, &t, dev)?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let p = dev.join(node);
        let src = at("open the host's", &p, open_beneath(roots.old.as_raw_fd(), rel(&p), libc::O_PATH, 0))?;
        let tree = at("clone", &p, clone_tree(src.as_raw_fd(), false))?;
        at("set mount flags on", &p, set_mount_attr(tree.as_raw_fd(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false))?;
        let target = mountpoint(root, &p, || Ok(false))?;
        at("attach on", &p, attach(tree.as_raw_fd(), target.as_raw_fd()))?;
    }
    if devpts {
        let pts = Path::new("/dev/pts");
        make_dirs(root, pts)?;
        at(
            "mount devpts on",
            pts,
            ffi::mount(
                c"devpts",
                c"/dev/pts",
                c"devpts",
                (libc::MS_NOSUID | libc::MS_NOEXEC) as _,
                Some(c"newinstance,ptmxmode=0666,mode=0620"),
            ),
        )?;
    }
    let shm = Path::new("/dev/shm");
    make_dirs(root, shm)?;
    let t = at("mount a tmpfs on", shm, new_tmpfs(0o1777, shm_size, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV))?;
    attach_at(roots, &t, shm)?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let devfd = at("open", dev, open_beneath(root, Path::new("dev"), libc::O_PATH | libc::O_DIRECTORY, 0))?;
        let (t, l) = (at("name", dev, cstr(Path::new(target)))?, at("name", dev, cstr(Path::new(link)))?);
        // SAFETY: valid C strings and directory descriptor.
        let r = unsafe { libc::symlinkat(t.as_ptr(), devfd.as_raw_fd(), l.as_ptr()) };
        at("create the link", &dev.join(link), check(r as libc::c_long))?;
    }
    let devfd = at("open", dev, open_beneath(root, Path::new("dev"), libc::O_PATH | libc::O_DIRECTORY, 0))?;
    at(
        "make read-only",
        dev,
        set_mount_attr(devfd.as_raw_fd(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false),
    )?;
    Ok(())
}

/// Parts of `/proc` that change or reveal the host's kernel rather than the sandbox's
/// processes, made read-only. A sandbox run by root maps uid 0 to the host's root, and these
/// files check the global uid, not capabilities: a `/proc/sys` file is writable by uid 0
/// whatever its capabilities (`test_perm` in fs/proc/proc_sysctl.c, so `kernel.core_pattern`
/// would run a program of the sandbox's as root at the next crash on the host), and
/// `/proc/sysrq-trigger` acts on any write. The same lists as the OCI runtimes' defaults
/// (runc's `readonlyPaths` and `maskedPaths`).
const PROC_READ_ONLY: [&str; 5] = ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"];
/// Parts of `/proc` hidden (an empty read-only directory, or `/dev/null` for a file): the
/// kernel's memory, keys, timers and devices.
const PROC_MASKED: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/kpagecgroup",
    "/proc/kpagecount",
    "/proc/kpageflags",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
];

fn proc_limits(roots: &Roots) -> Result<()> {
    let root = roots.new.as_raw_fd();
    let sealed = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    for p in PROC_READ_ONLY.iter().chain(&PROC_MASKED).map(Path::new) {
        let target = match open_beneath(root, rel(p), libc::O_PATH, 0) {
            // Not in this kernel (no ACPI, no sound): nothing to limit.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            r => at("open", p, r)?,
        };
        let is_dir = at("stat", p, fstat(target.as_raw_fd()))?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let tree = if PROC_READ_ONLY.iter().any(|r| Path::new(r) == p) {
            at("clone", p, clone_tree(target.as_raw_fd(), false))?
        } else if is_dir {
            at("mount a tmpfs on", p, new_tmpfs(0o555, 4096, sealed))?
        } else {
            let null = Path::new("/dev/null");
            let src = at("open the host's", null, open_beneath(roots.old.as_raw_fd(), rel(null), libc::O_PATH, 0))?;
            at("clone", null, clone_tree(src.as_raw_fd(), false))?
        };
        // The null device stands in for a file: reading it gives nothing, as runc's masks do.
        let attrs = if is_dir || PROC_READ_ONLY.iter().any(|r| Path::new(r) == p) {
            sealed
        } else {
            sealed & !MOUNT_ATTR_NODEV
        };
        at("make read-only", p, set_mount_attr(tree.as_raw_fd(), attrs, false))?;
        at("attach on", p, attach(tree.as_raw_fd(), target.as_raw_fd()))?;
    }
    Ok(())
}

/// Step 5.
pub fn leave_old_root(roots: Roots) -> Result<()> {
    drop(roots.old);
    drop(roots.masks);
    drop(roots.generated);
    let old = Path::new("/oldroot");
    // SAFETY: valid C string.
    let r = unsafe { libc::umount2(c"/oldroot".as_ptr(), libc::MNT_DETACH) };
    at("detach", old, check(r as libc::c_long))?;
    at("remove", old, std::fs::remove_dir(old))?;
    let root = Path::new("/");
    at(
        "make read-only",
        root,
        set_mount_attr(roots.new.as_raw_fd(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false),
    )?;
    Ok(())
}

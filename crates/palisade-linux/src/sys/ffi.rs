//! Thin, checked wrappers over the system calls the executor uses. Each returns
//! `io::Result`; each `unsafe` block says why it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// `p` as a NUL-terminated C string, for a system call.
///
/// # Errors
/// `EINVAL` when `p` contains a NUL byte.
pub fn cstr(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `-1` → the last OS error; anything else → the value.
pub fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// `open(p, O_PATH | O_DIRECTORY | O_CLOEXEC)`: a handle on the directory `p` (links on the
/// way followed), for the `*at` calls below it.
pub fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = cstr(p)?;
    // SAFETY: a valid C string; the descriptor is owned below.
    owned(unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) } as libc::c_long)
}

/// `fstat(fd)` (`O_PATH` descriptors are accepted).
pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid output buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and buffer.
    check(unsafe { libc::fstat(fd, &mut st) } as libc::c_long)?;
    Ok(st)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: `name` itself, never what it links to.
pub fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid output buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, C string and buffer.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } as libc::c_long)?;
    Ok(st)
}

fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(ret)? as RawFd;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` for `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)` resolve flag: refuse "magic links" on the way, such as `/proc/PID/fd/N`.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// `openat2(2)` resolve flag: refuse every symbolic link on the way, magic links included.
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// `openat2(2)` resolve flag: refuse to resolve outside the starting directory (`..` past
/// it, absolute paths, links that lead out).
pub const RESOLVE_BENEATH: u64 = 0x08;

/// `openat2(dir, rel, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`:
/// opens `rel` below `dir` refusing every symbolic link on the way, including the last.
pub fn open_beneath(dir: RawFd, rel: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: mode as u64,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c` is a valid C string and `how` a valid open_how of the size passed.
    owned(unsafe {
        libc::syscall(libc::SYS_openat2, dir, c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    })
}

/// `open_tree(2)` flag: return a detached copy of the mount, as a bind mount would make,
/// rather than a handle on the mount itself.
pub const OPEN_TREE_CLONE: u32 = 1;
/// `open_tree(2)` and `mount_setattr(2)` flag: apply to the whole mount tree below, not only
/// the top mount.
pub const AT_RECURSIVE: u32 = 0x8000;

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH [| AT_RECURSIVE])`: a detached copy of
/// the mount tree at `fd`.
pub fn clone_tree(fd: RawFd, recursive: bool) -> io::Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as u32
        | libc::AT_EMPTY_PATH as u32
        | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: the empty path is a valid C string; the flags are the documented ones.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, fd, c"".as_ptr(), flags) })
}

/// `move_mount(2)` flag: the source is the descriptor itself (an empty path).
pub const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
/// `move_mount(2)` flag: the target is the descriptor itself (an empty path).
pub const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// `move_mount(from, "", to, "", F_EMPTY_PATH | T_EMPTY_PATH)`: attach the detached tree
/// `from` exactly on the inode `to` refers to.
pub fn attach(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: both paths are the empty C string, used with the *_EMPTY_PATH flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            c"".as_ptr(),
            to,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mount attribute (`mount_setattr(2)`, `fsmount(2)`): read-only.
pub const MOUNT_ATTR_RDONLY: u64 = 0x01;
/// Mount attribute: set-user-ID and set-group-ID bits and file capabilities are ignored.
pub const MOUNT_ATTR_NOSUID: u64 = 0x02;
/// Mount attribute: device files cannot be opened.
pub const MOUNT_ATTR_NODEV: u64 = 0x04;
/// Mount attribute: files cannot be executed.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x08;

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], set)`.
pub fn set_mount_attr(fd: RawFd, set: u64, recursive: bool) -> io::Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let flags = libc::AT_EMPTY_PATH as u32 | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `attr` is a valid mount_attr of the size passed; the path is empty.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;

/// A new, detached tmpfs (`fsopen`, `fsconfig`, `fsmount`): its root directory has mode
/// `mode` (`0o1777` for `/dev/shm`), it holds at most `size` bytes (`u64::MAX` for no
/// limit), and it is mounted with `attrs` (`MOUNT_ATTR_*`). Attach it with [`attach`].
///
/// # Errors
/// Any of the three calls failing, e.g. `EPERM` without `CAP_SYS_ADMIN` in the user
/// namespace that owns the mount namespace.
pub fn new_tmpfs(mode: u32, size: u64, attrs: u64) -> io::Result<OwnedFd> {
    // `unlimited` (u64::MAX) is tmpfs's own "no limit", size 0.
    let size = if size == u64::MAX { "0".into() } else { size.to_string() };
    new_mount(c"tmpfs", &[(c"mode", Some(format!("{mode:o}"))), (c"size", Some(size))], attrs)
}

/// A new, detached overlay mount (`fsopen("overlay")`, `fsmount`): `upper` (writable) over
/// `lower` (read-only), with `work` as its scratch directory, each named by an open
/// descriptor through the host's `/proc/self/fd` (still mounted at `/oldroot/proc` while the
/// new root is built), so no path is resolved again; `userxattr`, as a mount in a user
/// namespace needs (kernel ≥ 5.11; Documentation/filesystems/overlayfs.rst).
pub fn new_overlay(lower: RawFd, upper: RawFd, work: RawFd, attrs: u64) -> io::Result<OwnedFd> {
    let fd_path = |fd: RawFd| Some(format!("/oldroot/proc/self/fd/{fd}"));
    let options = [
        (c"lowerdir", fd_path(lower)),
        (c"upperdir", fd_path(upper)),
        (c"workdir", fd_path(work)),
        (c"userxattr", None),
    ];
    new_mount(c"overlay", &options, attrs)
}

/// A new, detached mount of the file system `fstype` (`fsopen`, `fsconfig`, `fsmount`):
/// each option set as a string, or as a flag when it has no value; mounted with `attrs`
/// (`MOUNT_ATTR_*`).
fn new_mount(fstype: &CStr, options: &[(&CStr, Option<String>)], attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string file system name and documented flags.
    let fs = owned(unsafe {
        libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), 1u32 /* FSOPEN_CLOEXEC */)
    })?;
    for (key, value) in options {
        let value =
            value.clone().map(CString::new).transpose().map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let (cmd, v) = match &value {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: key and value are valid C strings (value null for a flag); aux unused.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key.as_ptr(), v, 0) })?;
    }
    // SAFETY: CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    })?;
    // SAFETY: fsmount on a created context; FSMOUNT_CLOEXEC = 1.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), 1u32, attrs) })
}

/// Connects the stream socket `fd` to `port` on the loopback (`127.0.0.1`, or `::1` when
/// `v6`) of the network namespace the socket was made in (connect(2); retried on `EINTR`).
pub fn connect_loopback(fd: RawFd, v6: bool, port: u16) -> io::Result<()> {
    loop {
        // SAFETY: zeroed sockaddr structures are valid; each is filled and passed with its
        // own size.
        let r = unsafe {
            if v6 {
                let mut a: libc::sockaddr_in6 = std::mem::zeroed();
                a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                a.sin6_port = port.to_be();
                a.sin6_addr.s6_addr[15] = 1;
                let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                libc::connect(fd, &a as *const libc::sockaddr_in6 as *const libc::sockaddr, len)
            } else {
                let mut a: libc::sockaddr_in = std::mem::zeroed();
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = port.to_be();
                a.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
                let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                libc::connect(fd, &a as *const libc::sockaddr_in as *const libc::sockaddr, len)
            }
        };
        match check(r as libc::c_long) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other.map(|_| ()),
        }
    }
}

/// The names in the directory open at `dir` (`.` and `..` left out), from `readdir(3)` on a
/// duplicate of it.
pub fn list_dir(dir: RawFd) -> io::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: a duplicate the directory stream owns (closedir closes it).
    let dup = check(unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 3) } as libc::c_long)? as RawFd;
    // SAFETY: `dup` is an open directory descriptor, handed to the stream.
    let stream = unsafe { libc::fdopendir(dup) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: the stream did not take it.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: a valid stream; the entry is read before the next call.
        let ent = unsafe { libc::readdir(stream) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated name within the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(std::ffi::OsStr::from_bytes(name.to_bytes()).to_owned());
        }
    }
    // SAFETY: closing the stream opened above.
    unsafe { libc::closedir(stream) };
    Ok(names)
}

/// The target of the symbolic link `name` in the directory open at `dir` (readlinkat(2)).
pub fn read_link_at(dir: RawFd, name: &std::ffi::OsStr) -> io::Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let c = CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid C string and buffer of the length given.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let n = check(n as libc::c_long)? as usize;
    buf.truncate(n);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// `mount(2)`: mounts `src` (a device, a directory for `MS_BIND`, or a name for a virtual
/// file system) on `target` as `fstype`, with `MS_*` `flags` and the file system's own
/// options in `data`.
pub fn mount(src: &CStr, target: &CStr, fstype: &CStr, flags: libc::c_ulong, data: Option<&CStr>) -> io::Result<()> {
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void);
    // SAFETY: all pointers are valid C strings or null for data.
    check(unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data) } as libc::c_long)?;
    Ok(())
}

/// `struct clone_args` of `clone3(2)` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h, Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork-like `clone3(2)` (no new stack: the child returns here, with 0) with `flags` (the
/// namespaces), `SIGCHLD` on exit, and the child born in the cgroup v2 directory `cgroup`.
/// Returns the child's pid in the parent, 0 in the child.
///
/// # Safety
/// As `fork`: the caller must be single-threaded, and the child must only do what is safe
/// after a fork.
///
/// # Errors
/// `clone3`'s: `ENOSYS` before Linux 5.3 (or under a seccomp filter that refuses it),
/// `E2BIG`/`EINVAL` before 5.7, `EBUSY`/`EOPNOTSUPP` for a cgroup that cannot take
/// processes, `EACCES`/`EPERM` without write access to it, and the namespaces' own errors.
pub unsafe fn clone_into_cgroup(flags: u64, cgroup: RawFd) -> io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: flags | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup as u64,
        ..Default::default()
    };
    // SAFETY: clone3 reads `size_of::<CloneArgs>()` bytes of `args`, which lives until it
    // returns; the rest is the caller's (see above).
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    check(r).map(|p| p as libc::pid_t)
}

/// A non-blocking, close-on-exec eventfd, starting at 0.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd with documented flags.
    owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }.into())
}

/// Writes all of `buf` to `fd`, retrying after `EINTR` and short writes.
///
/// # Errors
/// The first other error of `write(2)`, e.g. `EAGAIN` on a full non-blocking descriptor.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr() as *const libc::c_void, buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// One `read(2)` into `buf`, retried after `EINTR`: the number of bytes read, 0 at end of
/// file.
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// An anonymous memory file (memfd_create(2)), close-on-exec, holding `data`, its offset
/// back at 0 (the receiver of a copy reads it from the start).
pub fn memfd_with(name: &CStr, data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string and documented flags.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) } as libc::c_long)? as RawFd;
    // SAFETY: just returned by the kernel, owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    write_all(fd.as_raw_fd(), data)?;
    // SAFETY: lseek on a descriptor we own.
    check(unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) })?;
    Ok(fd)
}

/// A `SOCK_SEQPACKET` unix socket pair, close-on-exec.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) }
        as libc::c_long)?;
    // SAFETY: both descriptors were just returned by the kernel.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `data` and, optionally, one descriptor over a unix socket.
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    send_fds(sock, data, fd.as_slice())
}

/// The most descriptors one control message carries: the gateway's four fixed listeners and
/// two per transparent port (`0.0.0.0` and `[::1]`), for at most 32 ports, with room to spare.
pub const MAX_FDS: usize = 96;
/// Control buffer for [`MAX_FDS`] descriptors: a `cmsghdr` (16 bytes) and 96 × 4 bytes.
const CMSG_WORDS: usize = 2 + MAX_FDS / 2;

/// Sends `data` and up to [`MAX_FDS`] descriptors over a unix socket.
pub fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let mut cmsg_buf = [0u64; CMSG_WORDS];
    // SAFETY: zeroed msghdr is a valid empty header; fields are filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points at a buffer of CMSG_WORDS words, enough for one header
        // and MAX_FDS descriptors, so the header and its data fit.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut RawFd, fds.len());
        }
    }
    loop {
        // SAFETY: `msg` is fully initialised and its buffers outlive the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message (at most `buf.len()` bytes) and the descriptors sent with it.
/// `Ok((0, []))` is end of stream.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cmsg_buf = [0u64; CMSG_WORDS];
    // SAFETY: zeroed msghdr is valid; fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
    let n = loop {
        // SAFETY: `msg` points at live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control; CMSG_* walk it within msg_controllen, and each
    // SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / sizeof(int) new descriptors.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, fds))
}

/// Takes over descriptor `fd`, handed to Palisade by its caller (`--events 3`) for writing:
/// checks that it is open and writable, and returns a close-on-exec duplicate, closing the
/// original unless it is stdio, so that nothing started later inherits it.
pub fn take_output_fd(fd: RawFd) -> io::Result<std::fs::File> {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::other(format!("descriptor {fd} is not open")));
    }
    if flags & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(io::Error::other(format!("descriptor {fd} is open read-only")));
    }
    // SAFETY: duplicating an open descriptor; the copy is ours alone.
    let dup = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) } as libc::c_long)? as RawFd;
    if fd > 2 {
        // SAFETY: the caller handed this descriptor to us; the duplicate replaces it.
        unsafe { libc::close(fd) };
    }
    // SAFETY: `dup` is a fresh descriptor owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(dup) })
}

//! `palisade-probe`: tries one forbidden (or allowed) thing and prints what happened, for
//! Palisade's escape tests and for checking a machine by hand.
//!
//! Prints `ok` when the attempt succeeded, otherwise the errno name (`EPERM`, `ENOSYS`, ...),
//! and exits 0; usage errors exit 2. Run inside a sandbox:
//! `palisade run --allow-read $(dirname $(which palisade-probe)) -- palisade-probe bpf`.
#![allow(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(what) = args.first() else {
        eprintln!("usage: palisade-probe ATTEMPT [ARGS]  (see the source for the list)");
        std::process::exit(2);
    };
    if what == "ids" {
        // Not an attempt: the real and effective user ids and the effective capabilities.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let (uid, cap) = (field("Uid:"), field("CapEff:"));
        println!(
            "uid={} euid={} capeff={}",
            uid.first().unwrap_or(&"?"),
            uid.get(1).unwrap_or(&"?"),
            cap.first().unwrap_or(&"?")
        );
        return;
    }
    #[cfg(target_os = "linux")]
    let r = linux::attempt(what, &args[1..]);
    #[cfg(not(target_os = "linux"))]
    let r: Option<i64> = {
        let _ = what;
        None
    };
    match r {
        Some(ret) => {
            if ret >= 0 {
                println!("ok");
            } else {
                println!("{}", errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
            }
        }
        None => {
            eprintln!("palisade-probe: unknown attempt `{what}`");
            std::process::exit(2);
        }
    }
}

fn errno_name(e: i32) -> String {
    let names = [
        (1, "EPERM"),
        (2, "ENOENT"),
        (3, "ESRCH"),
        (9, "EBADF"),
        (13, "EACCES"),
        (14, "EFAULT"),
        (16, "EBUSY"),
        (17, "EEXIST"),
        (18, "EXDEV"),
        (20, "ENOTDIR"),
        (21, "EISDIR"),
        (22, "EINVAL"),
        (25, "ENOTTY"),
        (30, "EROFS"),
        (38, "ENOSYS"),
        (95, "EOPNOTSUPP"),
        (97, "EAFNOSUPPORT"),
        (93, "EPROTONOSUPPORT"),
        (111, "ECONNREFUSED"),
        (101, "ENETUNREACH"),
        (113, "EHOSTUNREACH"),
        (110, "ETIMEDOUT"),
        (99, "EADDRNOTAVAIL"),
        (28, "ENOSPC"),
        (24, "EMFILE"),
        (94, "ESOCKTNOSUPPORT"),
        (19, "ENODEV"),
        (6, "ENXIO"),
    ];
    names.iter().find(|(n, _)| *n == e).map_or_else(|| format!("errno {e}"), |(_, s)| s.to_string())
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::CString;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap_or_default()
    }

    fn num(args: &[String], i: usize) -> i64 {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or(0)
    }

    /// Runs one attempt; `None` for an unknown name.
    pub fn attempt(what: &str, args: &[String]) -> Option<i64> {
        // SAFETY: each arm makes one system call with arguments that are either valid or
        // deliberately invalid (a null or bogus pointer the kernel checks); the point is to
        // see whether the sandbox lets the call reach the kernel at all.
        let r: i64 = unsafe {
            match what {
                "bpf" => libc::syscall(libc::SYS_bpf, 0, 0usize, 0),
                "perf_event_open" => libc::syscall(libc::SYS_perf_event_open, 0usize, 0, -1, -1, 0),
                "userfaultfd" => libc::syscall(libc::SYS_userfaultfd, 0),
                "io_uring_setup" => libc::syscall(libc::SYS_io_uring_setup, 1, 0usize),
                "keyctl" => libc::syscall(libc::SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0),
                "add_key" => {
                    libc::syscall(libc::SYS_add_key, c"user".as_ptr(), c"x".as_ptr(), c"v".as_ptr(), 1usize, -3)
                }
                "kexec_load" => libc::syscall(libc::SYS_kexec_load, 0usize, 0usize, 0usize, 0usize),
                "init_module" => libc::syscall(libc::SYS_init_module, 0usize, 0usize, c"".as_ptr()),
                "open_by_handle_at" => libc::syscall(libc::SYS_open_by_handle_at, -1, 0usize, 0),
                "ptrace_attach" => libc::ptrace(libc::PTRACE_ATTACH, num(args, 0) as libc::pid_t, 0, 0),
                "process_vm_readv" => {
                    libc::syscall(libc::SYS_process_vm_readv, num(args, 0), 0usize, 0usize, 0usize, 0usize, 0usize)
                }
                "pidfd_getfd" => libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0),
                // An allow-all filter asking for its own notification listener: a way to
                // take over exec notifications if the chain had no listener yet.
                "seccomp_listener" => {
                    let allow =
                        [libc::sock_filter { code: 0x06 /* BPF_RET|BPF_K */, jt: 0, jf: 0, k: 0x7fff_0000 }];
                    let prog = libc::sock_fprog { len: 1, filter: allow.as_ptr() as *mut libc::sock_filter };
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    libc::syscall(libc::SYS_seccomp, 1 /* SET_MODE_FILTER */, 8 /* NEW_LISTENER */, &prog)
                }
                "kill" => libc::kill(num(args, 0) as libc::pid_t, num(args, 1) as i32) as i64,
                "mount_tmpfs" => {
                    libc::mount(c"none".as_ptr(), c(&args[0]).as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) as i64
                }
                "umount" => libc::umount2(c(&args[0]).as_ptr(), libc::MNT_DETACH) as i64,
                "remount_rw" => libc::mount(
                    std::ptr::null(),
                    c(&args[0]).as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND,
                    std::ptr::null(),
                ) as i64,
                "pivot_root" => libc::syscall(libc::SYS_pivot_root, c(".").as_ptr(), c(".").as_ptr()),
                "chroot" => libc::chroot(c("/").as_ptr()) as i64,
                // Reads another process's limit (changes nothing): refused when the process
                // is out of reach.
                "prlimit_read" => {
                    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    libc::prlimit(num(args, 0) as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) as i64
                }
                // Opened for writing, never written (an open that succeeds is closed at once).
                "open_write" => {
                    let fd = libc::open(c(&args[0]).as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    fd.min(0) as i64
                }
                "fsopen" => libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0),
                "open_tree" => {
                    libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c(&args[0]).as_ptr(), 1u32 /* CLONE */)
                }
                "move_mount" => libc::syscall(libc::SYS_move_mount, -1, c"".as_ptr(), -1, c"".as_ptr(), 0),
                "mount_setattr" => libc::syscall(libc::SYS_mount_setattr, -1, c"".as_ptr(), 0, 0usize, 0usize),
                "unshare_user" => libc::unshare(libc::CLONE_NEWUSER) as i64,
                "unshare_net" => libc::unshare(libc::CLONE_NEWNET) as i64,
                "unshare_mount" => libc::unshare(libc::CLONE_NEWNS) as i64,
                "clone_newuser" => {
                    let pid = libc::syscall(
                        libc::SYS_clone,
                        (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64,
                        0usize,
                        0usize,
                        0usize,
                        0usize,
                    );
                    if pid == 0 {
                        libc::_exit(0);
                    }
                    if pid > 0 {
                        libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
                    }
                    pid
                }
                "clone3" => libc::syscall(libc::SYS_clone3, 0usize, 0usize),
                "setns" => libc::setns(-1, 0) as i64,
                "personality_bad" => libc::personality(0x0040000 /* ADDR_NO_RANDOMIZE */) as i64,
                "tiocsti" => {
                    let ch = b'#';
                    libc::ioctl(num(args, 0) as i32, libc::TIOCSTI, &ch) as i64
                }
                "tioclinux" => {
                    let sub: u8 = 6; // TIOCL_GETSHIFTSTATE-ish; any subcode shows reachability
                    libc::ioctl(num(args, 0) as i32, 0x541C, &sub) as i64
                }
                "socket_packet" => libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) as i64,
                "socket_raw" => libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) as i64,
                "socket_vsock" => libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as i64,
                "socket_netlink_audit" => libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT) as i64,
                "socket_netlink_route" => libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) as i64,
                "socket_tcp" => libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) as i64,
                "connect_abstract" => connect_unix(&args[0], true),
                "connect_unix" => connect_unix(&args[0], false),
                "connect_tcp" => connect_tcp(&args[0]),
                "shmat" => {
                    let p = libc::shmat(num(args, 0) as i32, std::ptr::null(), libc::SHM_RDONLY);
                    if p as isize == -1 { -1 } else { 0 }
                }
                "memfd_secret" => libc::syscall(libc::SYS_memfd_secret, 0),
                "unknown_syscall" => libc::syscall(1000),
                "x32_getpid" => libc::syscall(libc::SYS_getpid | 0x4000_0000),
                "open_trunc" => libc::open(c(&args[0]).as_ptr(), libc::O_RDONLY | libc::O_TRUNC) as i64,
                "creat" => {
                    libc::open(c(&args[0]).as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644) as i64
                }
                "chmod" => libc::chmod(c(&args[0]).as_ptr(), 0o777) as i64,
                "utime" => libc::utimes(c(&args[0]).as_ptr(), std::ptr::null()) as i64,
                "setxattr" => {
                    libc::setxattr(c(&args[0]).as_ptr(), c"user.palisade".as_ptr(), c"x".as_ptr().cast(), 1, 0) as i64
                }
                "rename" => libc::rename(c(&args[0]).as_ptr(), c(&args[1]).as_ptr()) as i64,
                "link" => libc::link(c(&args[0]).as_ptr(), c(&args[1]).as_ptr()) as i64,
                "rmdir" => libc::rmdir(c(&args[0]).as_ptr()) as i64,
                "int80_getpid" => int80_getpid(),
                _ => return None,
            }
        };
        Some(r)
    }

    fn connect_unix(path: &str, abstract_: bool) -> i64 {
        // SAFETY: a zeroed sockaddr_un filled within its bounds; plain socket calls.
        unsafe {
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                return -1;
            }
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as u16;
            let bytes = path.as_bytes();
            let off = usize::from(abstract_);
            for (i, b) in bytes.iter().take(addr.sun_path.len() - 1 - off).enumerate() {
                addr.sun_path[i + off] = *b as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sa_family_t>()
                + off
                + bytes.len().min(addr.sun_path.len() - 1 - off)
                + usize::from(!abstract_);
            libc::connect(s, &addr as *const _ as *const libc::sockaddr, len as u32) as i64
        }
    }

    fn connect_tcp(addr: &str) -> i64 {
        match std::net::TcpStream::connect_timeout(
            &addr.parse().unwrap_or(([127, 0, 0, 1], 1).into()),
            std::time::Duration::from_secs(2),
        ) {
            Ok(_) => 0,
            Err(e) => {
                // SAFETY: setting errno for the caller to read.
                unsafe { *libc::__errno_location() = e.raw_os_error().unwrap_or(libc::EIO) };
                -1
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn int80_getpid() -> i64 {
        let r: i64;
        // SAFETY: the 32-bit system call entry with eax = 20 (getpid); it clobbers nothing else
        // we rely on. Under the sandbox's filter the process is killed here.
        unsafe { std::arch::asm!("int 0x80", inlateout("rax") 20i64 => r, options(nostack)) };
        r
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn int80_getpid() -> i64 {
        0
    }
}

//! Exec tracing by seccomp user notification, used as an observer: the command's process
//! installs the sandbox's seccomp filter (built with `notify_exec`, so that `execve` and
//! `execveat` go to a listener) with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, passes the listener out,
//! and the supervisor records each call and always answers `CONTINUE`. What it reads from the
//! process's memory (path, argv) can be changed under it by another thread; it is only ever
//! recorded, never used to decide (the main filter, Landlock and the mounts do that).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use super::ffi;

/// One `execve`/`execveat`, as seen when it was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    /// The caller's pid inside the sandbox's pid namespace (0 if unknown).
    pub pid: u32,
    /// The caller's pid on the host (in the supervisor's pid namespace).
    pub host_pid: u32,
    /// The caller's parent's pid inside the sandbox's pid namespace (0 if unknown).
    pub ppid: u32,
    /// The path passed (for `execveat` with an empty path: `fd N`); at most 4 KiB, cut there.
    pub path: String,
    /// The arguments passed, `argv[0]` first: at most 256, each at most 4 KiB, read from the
    /// caller's memory before the call went on (lossy UTF-8).
    pub argv: Vec<String>,
    /// The caller's working directory, from `/proc/PID/cwd`; empty when unreadable.
    pub cwd: String,
}

#[repr(C)]
#[derive(Default)]
struct SeccompData {
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Default)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const FLAG_CONTINUE: u32 = 1;
const FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 8;

/// In the command's process: installs `filter` (`seccomp(SET_MODE_FILTER)`), and with
/// `listener` asks for its notification listener, which is returned.
pub fn install(filter: &[libc::sock_filter], listener: bool) -> io::Result<Option<OwnedFd>> {
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    let flags = if listener { FILTER_FLAG_NEW_LISTENER } else { 0 };
    // SAFETY: seccomp(SET_MODE_FILTER, flags, prog); `prog` outlives the call and
    // no_new_privs is already set.
    let ret = unsafe { libc::syscall(libc::SYS_seccomp, 1 as libc::c_ulong, flags, &prog as *const libc::sock_fprog) };
    let fd = ffi::check(ret)? as RawFd;
    // SAFETY: with NEW_LISTENER the return value is the listener the kernel just created.
    Ok(listener.then(|| unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// In the supervisor: answers every notification on `listener` until the sandbox is gone,
/// calling `on_exec` for each. Runs on its own thread.
pub fn serve(listener: OwnedFd, on_exec: impl Fn(ExecInfo)) {
    let mut pids = PidCache::default();
    let mut ns = PidNs::default();
    loop {
        let mut n = Notif::default();
        // SAFETY: NOTIF_RECV fills a zeroed seccomp_notif of the size encoded in the request.
        if unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_RECV, &mut n as *mut Notif) } != 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                // The caller died before we took it, or nothing in the sandbox uses the filter
                // any more: once the last task is gone RECV fails at once, and looping would
                // spin, so ask the listener whether it has hung up.
                Some(libc::ENOENT) if !hung_up(&listener) => continue,
                _ => return,
            }
        }
        // Everything is read before the answer: the exec replaces the caller's memory, and
        // reading the rest afterwards measured slower here (it competes with the sandbox).
        let (path, argv) = read_call(&n);
        let info = describe(n.pid, path, argv, &mut pids, &mut ns);
        let resp = NotifResp { id: n.id, val: 0, error: 0, flags: FLAG_CONTINUE };
        // SAFETY: NOTIF_SEND with a seccomp_notif_resp; ENOENT (the caller died) is harmless.
        unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_SEND, &resp as *const NotifResp) };
        on_exec(info);
    }
}

/// True when no task uses the listener's filter any more (the kernel reports `POLLHUP`).
fn hung_up(listener: &OwnedFd) -> bool {
    let mut p = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n < 0 || (p.revents & libc::POLLHUP != 0 && p.revents & libc::POLLIN == 0)
}

/// The traced process's memory: read with `process_vm_readv` (no descriptor to open: a
/// third of the cost of `/proc/PID/mem`), or through `/proc/PID/mem` where that is refused.
enum Memory {
    Vm(u32),
    File(std::fs::File),
}

impl Memory {
    /// Up to `buf.len()` bytes at `addr`; a read that crosses into unmapped memory comes back
    /// short.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<usize> {
        match self {
            Memory::Vm(pid) => {
                let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
                let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
                // SAFETY: one local iovec over `buf`, one remote range; the kernel checks access.
                let n = unsafe { libc::process_vm_readv(*pid as libc::pid_t, &local, 1, &remote, 1, 0) };
                (n >= 0).then_some(n as usize)
            }
            Memory::File(f) => f.read_at(buf, addr).ok(),
        }
    }

    /// A NUL-terminated string of at most 4 KiB at `addr`, read a page at most at a time so
    /// that no read crosses a page boundary it does not need.
    fn string(&self, addr: u64) -> Option<String> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() < 4096 {
            let room = (4096 - (at % 4096)) as usize;
            let mut chunk = vec![0u8; room.min(4096 - out.len())];
            let got = self.read(at, &mut chunk)?;
            if got == 0 {
                break;
            }
            if let Some(end) = chunk[..got].iter().position(|b| *b == 0) {
                out.extend_from_slice(&chunk[..end]);
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk[..got]);
            at += got as u64;
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// Up to 256 strings from the NULL-terminated pointer array at `addr`, its pointers read
    /// 32 at a time (never past a page boundary).
    fn strings(&self, addr: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut ptrs = [0u8; 8 * 32];
        let mut base = addr;
        while out.len() < 256 {
            let room = (4096 - (base % 4096)) as usize;
            let want = ptrs.len().min(room).max(8);
            let Some(got) = self.read(base, &mut ptrs[..want]) else { break };
            if got < 8 {
                break;
            }
            for p in ptrs[..got - got % 8].chunks(8) {
                let ptr = u64::from_ne_bytes(p.try_into().unwrap_or([0; 8]));
                if ptr == 0 || out.len() >= 256 {
                    return out;
                }
                out.push(self.string(ptr).unwrap_or_default());
            }
            base += (got - got % 8) as u64;
        }
        out
    }
}

/// The call's path and argv.
fn read_call(n: &Notif) -> (String, Vec<String>) {
    let is_execveat = i64::from(n.data.nr) == libc::SYS_execveat;
    let (path_arg, argv_arg) =
        if is_execveat { (n.data.args[1], n.data.args[2]) } else { (n.data.args[0], n.data.args[1]) };
    let vm = Memory::Vm(n.pid);
    let (mem, path) = match vm.string(path_arg) {
        Some(p) => (Some(vm), Some(p)),
        None => {
            let file = std::fs::File::open(format!("/proc/{}/mem", n.pid)).ok().map(Memory::File);
            let p = file.as_ref().and_then(|m| m.string(path_arg));
            (file, p)
        }
    };
    let mut path = path.unwrap_or_default();
    if is_execveat && path.is_empty() {
        path = format!("fd {}", n.data.args[0] as i32);
    }
    (path, mem.map(|m| m.strings(argv_arg)).unwrap_or_default())
}

/// Host pid → pid inside the sandbox, for the processes seen so far (a parent is most often
/// a shell whose own exec was traced): saves reading the parent's `/proc/PID/status`, the
/// most expensive read here. Entries are replaced when a pid is seen again; the map is
/// emptied past 65,536 entries.
#[derive(Default)]
struct PidCache(std::collections::HashMap<u32, u32>);

impl PidCache {
    fn ns_pid(&mut self, host: u32) -> u32 {
        if let Some(p) = self.0.get(&host) {
            return *p;
        }
        let p = std::fs::read_to_string(format!("/proc/{host}/status"))
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|v| v.split_whitespace().last()?.parse().ok())
            })
            .unwrap_or(0);
        self.remember(host, p);
        p
    }

    fn remember(&mut self, host: u32, ns: u32) {
        if self.0.len() >= 65_536 {
            self.0.clear();
        }
        if ns != 0 {
            self.0.insert(host, ns);
        }
    }
}

/// The sandbox's pid namespace, for translating host pids without reading `/proc`: a pidfd's
/// `PIDFD_GET_INFO` gives the parent, `NS_GET_TGID_IN_PIDNS` the pid inside (Linux 6.13 and
/// later; elsewhere, and whenever a call fails, `/proc/PID/status` is read instead).
#[derive(Default)]
struct PidNs {
    fd: Option<OwnedFd>,
    tried: bool,
}

const PIDFD_GET_PID_NAMESPACE: libc::c_ulong = 0xFF05;
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;
const NS_GET_TGID_IN_PIDNS: libc::c_ulong = 0x8004_B709;

#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ids: [u32; 8],
    exit_code: i32,
}

fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2); the descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: just returned by the kernel.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl PidNs {
    /// (pid inside, parent's pid inside) of host `pid`, if the fast path works.
    fn translate(&mut self, pid: u32) -> Option<(u32, u32)> {
        let p = pidfd(pid)?;
        if !self.tried {
            self.tried = true;
            // SAFETY: an ioctl without argument on our pidfd; returns a new descriptor.
            let ns = unsafe { libc::ioctl(p.as_raw_fd(), PIDFD_GET_PID_NAMESPACE, 0) };
            // SAFETY: just returned by the kernel.
            self.fd = (ns >= 0).then(|| unsafe { OwnedFd::from_raw_fd(ns) });
        }
        let ns = self.fd.as_ref()?;
        let mut info = PidfdInfo { mask: 1, ..Default::default() }; // PIDFD_INFO_PID
        // SAFETY: PIDFD_GET_INFO fills a pidfd_info of the size encoded in the request.
        if unsafe { libc::ioctl(p.as_raw_fd(), PIDFD_GET_INFO, &mut info as *mut PidfdInfo) } != 0 {
            return None;
        }
        // SAFETY: NS_GET_TGID_IN_PIDNS takes a pid by value and returns the translation.
        let inside = |host: u32| unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_TGID_IN_PIDNS, host as libc::c_ulong) };
        let me = inside(pid);
        if me <= 0 {
            return None;
        }
        Some((me as u32, inside(info.ppid).max(0) as u32))
    }
}

fn describe(pid: u32, path: String, argv: Vec<String>, pids: &mut PidCache, ns: &mut PidNs) -> ExecInfo {
    let cwd =
        std::fs::read_link(format!("/proc/{pid}/cwd")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some((me, parent)) = ns.translate(pid) {
        return ExecInfo { pid: me, host_pid: pid, ppid: parent, path, argv, cwd };
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let last = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    // NSpid's last field is the pid inside the sandbox; PPid is in our namespace, and the
    // parent's own NSpid gives its sandbox pid.
    let ns_pid = last("NSpid:");
    pids.remember(pid, ns_pid);
    let ppid = pids.ns_pid(last("PPid:"));
    ExecInfo { pid: ns_pid, host_pid: pid, ppid, path, argv, cwd }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of reading the caller's memory give the same strings, across a page
    /// boundary and past the 4 KiB cut.
    #[test]
    fn process_vm_readv_and_proc_mem_read_alike() {
        let long = std::ffi::CString::new("y".repeat(5000)).unwrap();
        let args: Vec<std::ffi::CString> =
            (0..40).map(|i| std::ffi::CString::new(format!("arg-{i}")).unwrap()).collect();
        let mut ptrs: Vec<u64> = args.iter().map(|a| a.as_ptr() as u64).collect();
        ptrs.push(long.as_ptr() as u64);
        ptrs.push(0);
        let me = std::process::id();
        let file = Memory::File(std::fs::File::open("/proc/self/mem").unwrap());
        for m in [Memory::Vm(me), file] {
            let got = m.strings(ptrs.as_ptr() as u64);
            assert_eq!(got.len(), 41);
            assert_eq!(got[39], "arg-39");
            assert_eq!(got[40], "y".repeat(4096));
        }
    }

    /// Both ways of naming a process agree (here, in our own pid namespace, where the pid
    /// inside is the pid itself): the pidfd and namespace ioctls, and `/proc/PID/status`.
    #[test]
    fn pid_translation_fast_path_and_fallback_agree() {
        let me = std::process::id();
        // SAFETY: getppid cannot fail.
        let parent = unsafe { libc::getppid() } as u32;
        let fast = describe(me, String::new(), Vec::new(), &mut PidCache::default(), &mut PidNs::default());
        let slow =
            describe(me, String::new(), Vec::new(), &mut PidCache::default(), &mut PidNs { fd: None, tried: true });
        assert_eq!((fast.pid, fast.ppid), (me, parent));
        assert_eq!((slow.pid, slow.ppid), (me, parent));
        assert_eq!(fast.cwd, std::env::current_dir().unwrap().to_string_lossy());
    }
}

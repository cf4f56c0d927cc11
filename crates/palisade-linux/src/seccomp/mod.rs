//! The seccomp policy as data: which system calls a sandboxed coding agent may make.
//!
//! One filter, compiled by [`crate::bpf`] into a binary search:
//! - the architecture is checked first; the 32-bit entry point is killed and x32 calls return
//!   `ENOSYS`;
//! - the **allowlist** below is allowed; every system call not listed returns `ENOSYS`, so a
//!   call added to the kernel after this list was written is refused by default, and the C
//!   library falls back from `clone3` (whose flags seccomp cannot read) to `clone`;
//! - the **denylist** returns `EPERM` for the kernel attack surface a coding agent never
//!   needs;
//! - dangerous arguments of allowed calls return `EPERM`: namespace flags to `clone`,
//!   `TIOCSTI`/`TIOCLINUX` to `ioctl`, raw, packet and exotic socket families.

use std::collections::BTreeMap;

use crate::bpf::{Action, Asm, Insn, Label, NR, Stmt, arg_lo};
const ARCH: u32 = crate::bpf::ARCH;

mod tables;
use tables::*;
pub use tables::{allowed, denied};

/// An error building the filter (a bug: the tables above are fixed).
#[derive(Debug, thiserror::Error)]
#[error("building the seccomp filter: {0}")]
pub struct FilterError(String);

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

const ENOSYS: Action = Action::Errno(libc::ENOSYS as u16);
const EPERM: Action = Action::Errno(libc::EPERM as u16);

/// Namespace flags refused in `clone` (`CLONE_NEWTIME` is 0x80).
const CLONE_NAMESPACES: u32 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u32
    | 0x80;
const TIOCLINUX: u32 = 0x541C;
const SOCK_PACKET: u32 = 10;

/// Variations of the filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterOptions {
    /// Refuse IPv4 and IPv6 sockets altogether (degraded mode: no network namespace).
    pub refuse_inet: bool,
    /// Refuse `socket(AF_UNIX)` (degraded mode: host sockets such as the Docker daemon's are
    /// reachable by path, which Landlock before ABI 9 does not restrict); `socketpair` stays.
    pub refuse_unix_socket: bool,
    /// Return `USER_NOTIF` for `execve` and `execveat` instead of allowing them, so that the
    /// supervisor (holding the filter's listener) records every exec and lets it continue.
    /// Part of this one filter rather than a second one: every filter in a chain runs on
    /// every system call, so a second one would tax `read` and `stat` as well as `execve`.
    pub notify_exec: bool,
    /// Calls that act on another process by its id (`prlimit64`, `setpriority`,
    /// `sched_setaffinity`, `sched_setattr`, `sched_setscheduler`, `sched_setparam`,
    /// `ioprio_set`) only on the caller itself (id 0), and `process_madvise` refused
    /// (degraded mode: without a pid namespace every process of the user, and of every user
    /// as root, is in reach; Landlock's scoping covers signals only). `prlimit64` on another
    /// process needs only the same uid: as root, lowering init's CPU limit would end it.
    pub own_process_only: bool,
}

/// The calls [`FilterOptions::own_process_only`] limits to the caller (pid argument 0).
const OWN_PROCESS: [i64; 5] = [
    libc_sys::prlimit64,
    libc_sys::sched_setaffinity,
    libc_sys::sched_setattr,
    libc_sys::sched_setscheduler,
    libc_sys::sched_setparam,
];

/// The filter, as BPF instructions: architecture check (anything else is killed), the x32
/// entry point refused, argument checks for `clone`, `ioctl`, `socket`, `socketpair` and
/// `personality` (and, with [`FilterOptions::own_process_only`], for the calls that act on
/// a process by its id), then a binary search over the allow and deny tables; any other
/// number returns `ENOSYS`.
pub fn filter(opts: FilterOptions) -> Result<Vec<Insn>, FilterError> {
    let mut table: BTreeMap<u32, Action> = BTreeMap::new();
    for (_, n) in allowed() {
        table.insert(n as u32, Action::Allow);
    }
    for (_, n) in denied() {
        table.insert(n as u32, EPERM);
    }
    if opts.notify_exec {
        table.insert(libc_sys::execve as u32, Action::UserNotif);
        table.insert(libc_sys::execveat as u32, Action::UserNotif);
    }
    let mut special =
        vec![libc_sys::clone, libc_sys::ioctl, libc_sys::socket, libc_sys::socketpair, libc_sys::personality];
    if opts.own_process_only {
        special.extend(OWN_PROCESS);
        special.extend([libc_sys::setpriority, libc_sys::ioprio_set]);
        table.insert(libc_sys::process_madvise as u32, EPERM);
    }
    for n in &special {
        table.remove(&(*n as u32));
    }
    let mut a = Asm::default();
    a.push(Stmt::Load(ARCH));
    let arch_ok = a.label();
    a.push(Stmt::IfEq(AUDIT_ARCH, arch_ok)).push(Stmt::Ret(Action::KillProcess)).push(Stmt::Mark(arch_ok));
    a.push(Stmt::Load(NR));
    if cfg!(target_arch = "x86_64") {
        // x32 system calls share the architecture value and set bit 30 of the number.
        let x32 = a.label();
        let native = a.label();
        a.push(Stmt::IfGe(0x4000_0000, x32)).push(Stmt::IfGe(0, native));
        a.push(Stmt::Mark(x32)).push(Stmt::Ret(ENOSYS)).push(Stmt::Mark(native));
    }
    let blocks: Vec<(i64, Label)> = special.iter().map(|n| (*n, a.label())).collect();
    for (n, l) in &blocks {
        a.push(Stmt::IfEq(*n as u32, *l));
    }
    let entries: Vec<(u32, Action)> = table.into_iter().collect();
    a.search(&entries, ENOSYS);
    for (n, l) in blocks {
        a.push(Stmt::Mark(l));
        argument_checks(&mut a, n, opts);
    }
    a.assemble().map_err(FilterError)
}

/// The argument checks of one special system call; every path ends in a return.
fn argument_checks(a: &mut Asm, nr: i64, opts: FilterOptions) {
    let allow = a.label();
    let deny = a.label();
    match nr {
        n if n == libc_sys::clone => {
            a.push(Stmt::Load(arg_lo(0))).push(Stmt::IfSet(CLONE_NAMESPACES, deny));
        }
        n if n == libc_sys::ioctl => {
            a.push(Stmt::Load(arg_lo(1)))
                .push(Stmt::IfEq(libc::TIOCSTI as u32, deny))
                .push(Stmt::IfEq(TIOCLINUX, deny));
        }
        n if n == libc_sys::socket => {
            let inet = a.label();
            let netlink = a.label();
            a.push(Stmt::Load(arg_lo(0)));
            if !opts.refuse_unix_socket {
                a.push(Stmt::IfEq(libc::AF_UNIX as u32, allow));
            }
            if !opts.refuse_inet {
                a.push(Stmt::IfEq(libc::AF_INET as u32, inet)).push(Stmt::IfEq(libc::AF_INET6 as u32, inet));
            }
            a.push(Stmt::IfEq(libc::AF_NETLINK as u32, netlink)).push(Stmt::Ret(EPERM));
            a.push(Stmt::Mark(inet))
                .push(Stmt::Load(arg_lo(1)))
                .push(Stmt::And(0xf))
                .push(Stmt::IfEq(libc::SOCK_RAW as u32, deny))
                .push(Stmt::IfEq(SOCK_PACKET, deny))
                .push(Stmt::Ret(Action::Allow));
            a.push(Stmt::Mark(netlink))
                .push(Stmt::Load(arg_lo(2)))
                .push(Stmt::IfEq(libc::NETLINK_ROUTE as u32, allow))
                .push(Stmt::Ret(EPERM));
        }
        n if OWN_PROCESS.contains(&n) => {
            a.push(Stmt::Load(arg_lo(0))).push(Stmt::IfEq(0, allow)).push(Stmt::Ret(EPERM));
        }
        n if n == libc_sys::setpriority || n == libc_sys::ioprio_set => {
            // `which` must name one process (PRIO_PROCESS 0, IOPRIO_WHO_PROCESS 1), and
            // `who` the caller (0).
            // include/uapi/linux/resource.h and ioprio.h (the numbers, whatever platform
            // this filter is built on).
            let one = if n == libc_sys::setpriority { 0 } else { 1 };
            let who = a.label();
            a.push(Stmt::Load(arg_lo(0))).push(Stmt::IfEq(one, who)).push(Stmt::Ret(EPERM));
            a.push(Stmt::Mark(who)).push(Stmt::Load(arg_lo(1))).push(Stmt::IfEq(0, allow)).push(Stmt::Ret(EPERM));
        }
        n if n == libc_sys::socketpair => {
            a.push(Stmt::Load(arg_lo(0))).push(Stmt::IfEq(libc::AF_UNIX as u32, allow)).push(Stmt::Ret(EPERM));
        }
        _ => {
            // personality: only the values the C library and common tools use.
            a.push(Stmt::Load(arg_lo(0)));
            for v in [0u32, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
                a.push(Stmt::IfEq(v, allow));
            }
            a.push(Stmt::Ret(EPERM));
        }
    }
    a.push(Stmt::Ret(Action::Allow));
    a.push(Stmt::Mark(allow)).push(Stmt::Ret(Action::Allow));
    a.push(Stmt::Mark(deny)).push(Stmt::Ret(EPERM));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_consistent() {
        let allow: Vec<i64> = allowed().map(|(_, n)| n).collect();
        for (name, n) in denied() {
            assert!(!allow.contains(&n), "{name} is both allowed and denied");
        }
        let mut sorted = allow.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), allow.len(), "duplicate in the allowlist");
        assert!(!allow.contains(&libc_sys::clone3), "clone3 must stay ENOSYS so libc falls back to clone");
    }

    use crate::bpf::{Data, interpret};

    fn run(nr: i64, args: [u64; 6]) -> Action {
        static PROG: std::sync::OnceLock<Vec<Insn>> = std::sync::OnceLock::new();
        let prog = PROG.get_or_init(|| filter(FilterOptions::default()).unwrap());
        let r = interpret(prog, &Data { nr: nr as i32, arch: AUDIT_ARCH, args }).unwrap();
        [Action::Allow, EPERM, ENOSYS, Action::KillProcess, Action::UserNotif]
            .into_iter()
            .find(|a| a.ret() == r)
            .expect("known action")
    }

    #[test]
    fn every_number_gets_its_table_action() {
        let prog = filter(FilterOptions::default()).unwrap();
        assert!(prog.len() < 4096);
        let allow: Vec<i64> = allowed().map(|(_, n)| n).collect();
        let deny: Vec<i64> = denied().map(|(_, n)| n).collect();
        let special = [libc_sys::clone, libc_sys::ioctl, libc_sys::socket, libc_sys::socketpair, libc_sys::personality];
        for nr in 0..1024i64 {
            if special.contains(&nr) {
                continue;
            }
            let want = if allow.contains(&nr) {
                Action::Allow
            } else if deny.contains(&nr) {
                EPERM
            } else {
                ENOSYS
            };
            assert_eq!(run(nr, [0; 6]), want, "system call {nr}");
        }
    }

    /// Every call the table allows outright is in the kernel's action cache, so it costs no
    /// filter run at all (the run-time cost is then that of the calls checked by argument,
    /// and of those refused); the calls checked by argument are not, and cannot be.
    #[test]
    fn allowed_calls_skip_the_filter_through_the_kernels_cache() {
        use crate::bpf::constant_allow;
        for opts in [FilterOptions::default(), FilterOptions { notify_exec: true, ..Default::default() }] {
            let prog = filter(opts).unwrap();
            let special =
                [libc_sys::clone, libc_sys::ioctl, libc_sys::socket, libc_sys::socketpair, libc_sys::personality];
            for (name, nr) in allowed() {
                let traced = opts.notify_exec && (nr == libc_sys::execve || nr == libc_sys::execveat);
                let want = !special.contains(&nr) && !traced;
                assert_eq!(constant_allow(&prog, nr as i32, AUDIT_ARCH), want, "{name}");
            }
            for common in
                [libc_sys::read, libc_sys::write, libc_sys::openat, libc_sys::close, libc_sys::fstat, libc_sys::mmap]
            {
                assert!(constant_allow(&prog, common as i32, AUDIT_ARCH), "system call {common}");
            }
            assert!(!constant_allow(&prog, libc_sys::getpid as i32, 0x4000_0003), "a foreign architecture");
        }
    }

    /// Degraded mode: the calls that act on a process by its id reach the caller only.
    #[test]
    fn without_a_pid_namespace_other_processes_are_out_of_reach() {
        let prog = filter(FilterOptions { own_process_only: true, ..Default::default() }).unwrap();
        let run = |nr: i64, args: [u64; 6]| interpret(&prog, &Data { nr: nr as i32, arch: AUDIT_ARCH, args }).unwrap();
        let (allow, eperm) = (Action::Allow.ret(), EPERM.ret());
        for nr in OWN_PROCESS {
            assert_eq!(run(nr, [0, 1, 2, 0, 0, 0]), allow, "{nr} on itself");
            assert_eq!(run(nr, [1, 1, 2, 0, 0, 0]), eperm, "{nr} on pid 1");
        }
        let prio = libc_sys::setpriority;
        assert_eq!(run(prio, [0, 0, 5, 0, 0, 0]), allow, "nice()");
        assert_eq!(run(prio, [0, 1, 5, 0, 0, 0]), eperm, "another process");
        assert_eq!(run(prio, [2, 0, 5, 0, 0, 0]), eperm, "every process of the user");
        assert_eq!(run(libc_sys::ioprio_set, [1, 0, 0, 0, 0, 0]), allow);
        assert_eq!(run(libc_sys::ioprio_set, [3, 0, 0, 0, 0, 0]), eperm, "IOPRIO_WHO_USER");
        assert_eq!(run(libc_sys::process_madvise, [3, 0, 0, 0, 0, 0]), eperm);
        // With a pid namespace (the default), the namespace is the limit: unchanged.
        let full = filter(FilterOptions::default()).unwrap();
        assert_eq!(
            interpret(&full, &Data { nr: libc_sys::prlimit64 as i32, arch: AUDIT_ARCH, args: [1, 0, 0, 0, 0, 0] })
                .unwrap(),
            allow
        );
    }

    #[test]
    fn foreign_architectures_are_killed_and_x32_refused() {
        let prog = filter(FilterOptions::default()).unwrap();
        let r = interpret(&prog, &Data { nr: libc_sys::getpid as i32, arch: 0x4000_0003, args: [0; 6] }).unwrap();
        assert_eq!(r, Action::KillProcess.ret());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(run(libc_sys::getpid | 0x4000_0000, [0; 6]), ENOSYS);
        }
    }

    #[test]
    fn argument_checks() {
        let thread =
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
        assert_eq!(run(libc_sys::clone, [thread, 0, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(run(libc_sys::clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), Action::Allow);
        for f in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWPID, libc::CLONE_NEWNET, 0x80] {
            assert_eq!(run(libc_sys::clone, [f as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), EPERM, "{f:#x}");
        }
        assert_eq!(run(libc_sys::ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            run(libc_sys::ioctl, [0, 0xdead_beef_0000_0000 | libc::TIOCSTI, 0, 0, 0, 0]),
            EPERM,
            "high bits ignored"
        );
        assert_eq!(run(libc_sys::ioctl, [0, u64::from(TIOCLINUX), 0, 0, 0, 0]), EPERM);
        assert_eq!(run(libc_sys::ioctl, [0, libc::TCGETS, 0, 0, 0, 0]), Action::Allow);
        let sock = |d: i32, t: i32, p: i32| run(libc_sys::socket, [d as u64, t as u64, p as u64, 0, 0, 0]);
        assert_eq!(sock(libc::AF_UNIX, libc::SOCK_STREAM, 0), Action::Allow);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0), Action::Allow);
        assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0), Action::Allow);
        assert_eq!(sock(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 1), EPERM);
        assert_eq!(sock(libc::AF_INET6, SOCK_PACKET as i32, 0), EPERM);
        assert_eq!(sock(libc::AF_PACKET, libc::SOCK_RAW, 0), EPERM);
        assert_eq!(sock(libc::AF_VSOCK, libc::SOCK_STREAM, 0), EPERM);
        assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE), Action::Allow);
        assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT), EPERM);
        assert_eq!(run(libc_sys::socketpair, [libc::AF_UNIX as u64, 1, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(run(libc_sys::socketpair, [libc::AF_INET as u64, 1, 0, 0, 0, 0]), EPERM);
        assert_eq!(run(libc_sys::personality, [0xffff_ffff, 0, 0, 0, 0, 0]), Action::Allow);
        assert_eq!(run(libc_sys::personality, [0x0040000, 0, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn exec_notification_changes_only_exec() {
        let plain = filter(FilterOptions::default()).unwrap();
        let prog = filter(FilterOptions { notify_exec: true, ..FilterOptions::default() }).unwrap();
        let run = |p: &[Insn], nr: i64| interpret(p, &Data { nr: nr as i32, arch: AUDIT_ARCH, args: [0; 6] }).unwrap();
        assert_eq!(run(&plain, libc_sys::execve), Action::Allow.ret());
        assert_eq!(run(&prog, libc_sys::execve), Action::UserNotif.ret());
        assert_eq!(run(&prog, libc_sys::execveat), Action::UserNotif.ret());
        for nr in (0..1024).filter(|n| ![libc_sys::execve, libc_sys::execveat].contains(n)) {
            assert_eq!(run(&prog, nr), run(&plain, nr), "syscall {nr}");
        }
    }

    #[test]
    fn degraded_options_refuse_inet_and_unix_sockets() {
        let prog =
            filter(FilterOptions { refuse_inet: true, refuse_unix_socket: true, ..FilterOptions::default() }).unwrap();
        let sock = |d: i32, t: i32| {
            let args = [d as u64, t as u64, 0, 0, 0, 0];
            interpret(&prog, &Data { nr: libc_sys::socket as i32, arch: AUDIT_ARCH, args }).unwrap()
        };
        assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM), EPERM.ret());
        assert_eq!(sock(libc::AF_INET6, libc::SOCK_DGRAM), EPERM.ret());
        assert_eq!(sock(libc::AF_UNIX, libc::SOCK_STREAM), EPERM.ret());
        let pair = [libc::AF_UNIX as u64, 1, 0, 0, 0, 0];
        let r = interpret(&prog, &Data { nr: libc_sys::socketpair as i32, arch: AUDIT_ARCH, args: pair }).unwrap();
        assert_eq!(r, Action::Allow.ret());
    }
}

//! Code that runs inside the new namespaces: the sandbox's init (pid 1) and, forked from
//! it, the command's process. Nothing here returns: each path ends in `execve` or `_exit`.
//!
//! Init: waits for the supervisor's go-ahead (its uid/gid maps are written), builds the file
//! system view, forks the command, then reaps children and forwards signals until the
//! command exits, and exits with its status. When init exits, the kernel kills every other
//! process in the pid namespace; when the supervisor dies, `PR_SET_PDEATHSIG` kills init.
//!
//! Command: new session (no controlling terminal shared with the user), stdio, no other
//! descriptors, `no_new_privs`, Landlock, no capabilities, seccomp last, then `execve`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::control::{self, ErrorKind, Msg};
use super::ffi;
use super::landlock;

use super::mounts;
use crate::plan::{LandlockPlan, Plan};

/// What the command's process needs, prepared by the supervisor before `clone`/`fork`
/// (no lookups after).
pub struct CommandArgs<'a> {
    pub sock: RawFd,
    pub filter: &'a [libc::sock_filter],
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub path_env: Option<String>,
    pub pty: Option<super::PtyUse>,
    pub cwd: &'a Path,
    pub landlock: &'a LandlockPlan,
    /// The exec observer's filter, when execs are traced.
    /// Install the filter with a listener and pass it out (exec tracing).
    pub trace_exec: bool,
    /// Resource limits, each set as soft and hard limit (so the command cannot raise them).
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
}

impl<'a> CommandArgs<'a> {
    pub fn new(
        sock: RawFd,
        filter: &'a [libc::sock_filter],
        (argv, envp, path_env): super::ExecStrings,
        pty: Option<super::PtyUse>,
        cwd: &'a Path,
        landlock: &'a LandlockPlan,
    ) -> Self {
        CommandArgs { sock, filter, argv, envp, path_env, pty, cwd, landlock, trace_exec: false, rlimits: Vec::new() }
    }
}

/// What init needs: the plan for the file system view, and the command.
pub struct ChildArgs<'a> {
    pub plan: &'a Plan,
    pub cmd: CommandArgs<'a>,
}

fn report(sock: RawFd, kind: ErrorKind, text: &str) {
    let _ = control::send(sock, &Msg::Error(kind, text.into()), &[]);
}

fn die(sock: RawFd, text: &str) -> ! {
    report(sock, ErrorKind::Setup, text);
    // SAFETY: _exit never returns and runs no destructors, as wanted after fork.
    unsafe { libc::_exit(125) }
}

/// Init's entry point, right after `clone`.
pub fn init_main(a: ChildArgs<'_>) -> ! {
    // SAFETY: prctl with documented arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let sock = a.cmd.sock;
    match control::recv(sock) {
        Ok(Some((Msg::Go, _))) => {}
        // The supervisor is gone or said no.
        // SAFETY: see `die`.
        _ => unsafe { libc::_exit(125) },
    }
    // Keep only stdio and the control socket.
    close_other_fds(&[sock]);
    // SAFETY: prctl with documented arguments: /proc/1 of the sandbox stays unreadable to the
    // command (init holds the supervisor's environment in its memory).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };

    let mut roots =
        mounts::enter_new_root().unwrap_or_else(|e| die(sock, &format!("building the file system view: {e}")));
    if let Err(e) = mounts::apply(&mut roots, a.plan) {
        die(sock, &format!("building the file system view: {e}"));
    }
    if let Err(e) = mounts::system_mounts(&mut roots, a.plan.shm_size, true) {
        die(sock, &format!("building the file system view: {e}"));
    }
    if let Err(e) = mounts::leave_old_root(roots) {
        die(sock, &format!("building the file system view: {e}"));
    }
    if let Err(e) = super::net::loopback_up() {
        die(sock, &format!("bringing up the loopback interface: {e}"));
    }
    match super::tripwire::place(&a.plan.tripwires) {
        Ok(Some(fd)) => {
            if let Err(e) = control::send(sock, &Msg::Tripwires, &[fd.as_raw_fd()]) {
                die(sock, &format!("passing the tripwires out: {e}"));
            }
        }
        Ok(None) => {}
        Err(e) => die(sock, &format!("placing the tripwires: {e}")),
    }
    if let Some(net) = &a.plan.network {
        if let Err(e) = super::net::send_listeners(sock, net) {
            die(sock, &format!("creating the gateway's listeners: {e}"));
        }
    }
    let host = a.plan.hostname.as_bytes();
    // SAFETY: valid buffer and length.
    unsafe { libc::sethostname(host.as_ptr() as *const libc::c_char, host.len()) };

    let slave = a.cmd.pty.map(|_| open_pty(sock).unwrap_or_else(|e| die(sock, &format!("creating the terminal: {e}"))));

    // The supervisor's part of the start (the move into the cgroup, ~10 ms on cgroup v1, and
    // its start-of-run records) overlaps with building the file system view.
    match control::recv(sock) {
        Ok(Some((Msg::Ready, _))) => {}
        // SAFETY: _exit ends this process at once; nothing here needs unwinding or flushing.
        _ => unsafe { libc::_exit(125) },
    }
    let forwarded = forwarded_signals();
    block(&forwarded);
    // SAFETY: fork in a single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die(sock, &format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        command_main(&a.cmd, slave.as_ref().map(|s| s.as_raw_fd()));
    }
    drop(slave);
    // SAFETY: closing our copy of the control socket; the command keeps its own until exec.
    unsafe { libc::close(sock) };
    init_loop(pid, &forwarded)
}

/// Signals init passes on to the command's process group.
fn forwarded_signals() -> Vec<i32> {
    vec![
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCHLD,
    ]
}

extern "C" fn noop(_: libc::c_int) {}

fn block(signals: &[i32]) {
    // SAFETY: sigset manipulation on a local set; sigaction with a valid handler.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            // pid 1 only receives signals it has a handler for.
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = noop as *const () as usize;
            libc::sigaction(*s, &sa, std::ptr::null_mut());
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn init_loop(cmd: libc::pid_t, signals: &[i32]) -> ! {
    // SAFETY: local sigset and plain waitpid/kill calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        loop {
            let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let p = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if p <= 0 {
                        break;
                    }
                    if p == cmd {
                        let code = if libc::WIFEXITED(status) {
                            libc::WEXITSTATUS(status)
                        } else if libc::WIFSIGNALED(status) {
                            128 + libc::WTERMSIG(status)
                        } else {
                            continue;
                        };
                        libc::_exit(code);
                    }
                }
            } else if sig > 0 && libc::kill(-cmd, sig) == -1 {
                libc::kill(cmd, sig);
            }
        }
    }
}

fn close_other_fds(keep: &[RawFd]) {
    let max = keep.iter().copied().max().unwrap_or(2).max(2);
    for fd in 3..=max {
        if !keep.contains(&fd) {
            // SAFETY: closing descriptors we do not use; failures (EBADF) are harmless.
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: close_range over descriptors above every one we keep.
    unsafe { libc::syscall(libc::SYS_close_range, (max + 1) as u32, u32::MAX, 0u32) };
}

/// Opens a pty in the sandbox's own devpts, sends the master to the supervisor, returns the
/// slave.
fn open_pty(sock: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: valid C string; flags documented.
    let m =
        ffi::check(unsafe { libc::open(c"/dev/pts/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) }
            as libc::c_long)? as RawFd;
    // SAFETY: `m` was just opened and is owned here.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int.
    ffi::check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } as libc::c_long)?;
    // SAFETY: TIOCGPTPEER opens the slave of this master with the given flags.
    let s =
        ffi::check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) }
            as libc::c_long)? as RawFd;
    // SAFETY: just returned by the kernel.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    control::send(sock, &Msg::Pty, &[master.as_raw_fd()])?;
    Ok(slave)
}

/// The command's process: from here to `execve`, restrictions only tighten.
pub fn command_main(a: &CommandArgs<'_>, slave: Option<RawFd>) -> ! {
    let sock = a.sock;
    // SAFETY: resetting the signal mask and dispositions inherited from init.
    unsafe {
        for s in forwarded_signals() {
            libc::signal(s, libc::SIG_DFL);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::setsid();
    }
    if let (Some(s), Some(p)) = (slave, a.pty) {
        // SAFETY: TIOCSCTTY on the pty slave we own, then dup2 onto stdio.
        unsafe {
            libc::ioctl(s, libc::TIOCSCTTY, 0);
            if p.stdin {
                libc::dup2(s, 0);
            }
            if p.stdout {
                libc::dup2(s, 1);
            }
            if p.stderr {
                libc::dup2(s, 2);
            }
        }
    }
    // The control socket becomes fd 3 (close-on-exec); everything else above 2 closes.
    // SAFETY: dup3 onto fd 3 with O_CLOEXEC.
    let r = unsafe { libc::dup3(sock, 3, libc::O_CLOEXEC) };
    let sock = if sock == 3 || r == 3 { 3 } else { die(sock, "moving the control socket") };
    close_other_fds(&[3]);

    if let Err(e) = std::env::set_current_dir(a.cwd) {
        die(sock, &format!("entering {}: {e}", a.cwd.display()));
    }
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid rlimit struct.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    for &(resource, value) in &a.rlimits {
        let (cur, max) = if resource == libc::RLIMIT_CPU {
            // SIGXCPU at the limit, SIGKILL a second later.
            (value, value.saturating_add(1))
        } else {
            (value, value)
        };
        let l = libc::rlimit { rlim_cur: cur, rlim_max: max };
        // SAFETY: valid rlimit struct. Lowering a limit never needs a privilege.
        if unsafe { libc::setrlimit(resource, &l) } != 0 {
            die(sock, &format!("setting resource limit {resource}: {}", std::io::Error::last_os_error()));
        }
    }
    // SAFETY: prctl with documented arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        die(sock, &format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    if let Err(e) = landlock::restrict(a.landlock) {
        die(sock, &e);
    }
    if let Err(e) = super::caps::drop_all() {
        die(sock, &format!("dropping capabilities: {e}"));
    }
    if a.trace_exec {
        // Init made itself non-dumpable and this process inherited that until `execve`; the
        // tracer, unprivileged, could not then read this first exec's arguments. Nothing else
        // runs in the sandbox yet, and the memory is about to be replaced.
        // SAFETY: prctl with documented arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    }
    match super::exectrace::install(a.filter, a.trace_exec) {
        Ok(Some(listener)) => {
            if let Err(e) = control::send(sock, &Msg::ExecTracer, &[listener.as_raw_fd()]) {
                die(sock, &format!("passing the exec tracer out: {e}"));
            }
        }
        Ok(None) => {}
        Err(e) => die(sock, &format!("installing the seccomp filter: {e}")),
    }
    exec(sock, a)
}

fn exec(sock: RawFd, a: &CommandArgs<'_>) -> ! {
    let mut argv: Vec<*const libc::c_char> = a.argv.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = a.envp.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let name = a.argv[0].to_bytes();
    let try_exec = |path: &CString| -> i32 {
        // SAFETY: null-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
    };
    let shown = String::from_utf8_lossy(name).into_owned();
    if name.contains(&b'/') {
        let e = try_exec(&a.argv[0]);
        fail_exec(sock, &shown, e, e == libc::ENOENT);
    }
    let path = a.path_env.clone().unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let Ok(full) =
            CString::new(Path::new(dir).join(std::ffi::OsStr::new(&*shown)).into_os_string().into_encoded_bytes())
        else {
            continue;
        };
        // Only a file that exists is tried, so a traced run records one exec, not one
        // attempt per directory of PATH.
        if !Path::new(std::ffi::OsStr::from_bytes(full.as_bytes())).is_file() {
            continue;
        }
        match try_exec(&full) {
            libc::ENOENT | libc::ENOTDIR => continue,
            libc::EACCES => denied = Some(libc::EACCES),
            e => fail_exec(sock, &shown, e, false),
        }
    }
    match denied {
        Some(e) => fail_exec(sock, &shown, e, false),
        None => fail_exec(sock, &shown, libc::ENOENT, true),
    }
}

fn fail_exec(sock: RawFd, name: &str, errno: i32, not_found: bool) -> ! {
    let err = std::io::Error::from_raw_os_error(errno);
    if not_found {
        report(sock, ErrorKind::NotFound, &format!("{name}: command not found in the sandbox ({err})"));
        // SAFETY: see `die`.
        unsafe { libc::_exit(127) }
    }
    report(sock, ErrorKind::CannotExecute, &format!("{name}: cannot execute: {err}"));
    // SAFETY: see `die`.
    unsafe { libc::_exit(126) }
}

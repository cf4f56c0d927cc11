//! The sandbox's init (pid 1): builds the file system view, passes out the gateway's
//! listeners and the tripwires, forks the command, then reaps and forwards signals until the
//! command exits, and exits with its status.

use super::*;

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
    for &tasks in &a.cgroup_tasks {
        // A single thread moving itself: no global lock, so no wait for the kernel.
        if let Err(e) = ffi::write_all(tasks, b"0") {
            die(sock, &format!("moving the sandbox into its cgroup (writing 0 to its v1 tasks file): {e}"));
        }
    }
    // SAFETY: unshare with a documented flag; init holds CAP_SYS_ADMIN in its namespace.
    if a.cgroup_root && unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
        die(sock, &format!("making the sandbox's cgroup its namespace's root: {}", std::io::Error::last_os_error()));
    }
    // Keep only stdio, the control socket and the published ports' socket.
    let publish = a.publish;
    close_other_fds(&[Some(sock), publish].into_iter().flatten().collect::<Vec<_>>());
    // SAFETY: prctl with documented arguments: /proc/1 of the sandbox stays unreadable to the
    // command (init holds the supervisor's environment in its memory).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };

    // Opened now, written once the view is built: detached mount trees count as mount
    // namespaces, and the view's /proc may not be writable.
    let quotas = super::super::quota::open(&a.quotas)
        .unwrap_or_else(|e| die(sock, &format!("capping the sandbox's share of the user's kernel quotas: {e}")));
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
    if let Err(e) = super::super::net::loopback_up() {
        die(sock, &format!("bringing up the loopback interface: {e}"));
    }
    match super::super::tripwire::place(&a.plan.view.tripwires) {
        Ok(Some(fd)) => {
            if let Err(e) = control::send(sock, &Msg::Tripwires, &[fd.as_raw_fd()]) {
                die(sock, &format!("passing the tripwires out: {e}"));
            }
        }
        Ok(None) => {}
        Err(e) => die(sock, &format!("placing the tripwires: {e}")),
    }
    if let Some(net) = &a.plan.network
        && let Err(e) = super::super::net::send_listeners(sock, net)
    {
        die(sock, &format!("creating the gateway's listeners: {e}"));
    }
    if let Err(e) = super::super::quota::apply(quotas) {
        die(sock, &format!("capping the sandbox's share of the user's kernel quotas: {e}"));
    }
    let host = a.plan.hostname.as_bytes();
    // SAFETY: valid buffer and length.
    unsafe { libc::sethostname(host.as_ptr() as *const libc::c_char, host.len()) };

    if let Some(p) = publish
        && let Err(e) = super::super::publish::arm(p)
    {
        die(sock, &format!("preparing the published ports: {e}"));
    }
    let slave = a.cmd.pty.map(|_| open_pty(sock).unwrap_or_else(|e| die(sock, &format!("creating the terminal: {e}"))));

    // The supervisor's part of the start (its start-of-run records, and the move into the
    // cgroup where init could not make it itself) overlaps with building the view.
    match control::recv(sock) {
        Ok(Some((Msg::Ready, _))) => {}
        // SAFETY: _exit ends this process at once; nothing here needs unwinding or flushing.
        _ => unsafe { libc::_exit(125) },
    }
    let forwarded = forwarded_signals();
    block(&forwarded);
    if a.plan.session {
        super::serve::serve_main(&a.cmd, sock, publish, &forwarded);
    }
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
    init_loop(pid, &forwarded, publish)
}

/// Signals init passes on to the command's process group.
pub(super) fn forwarded_signals() -> Vec<i32> {
    vec![
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCHLD,
        // Not forwarded: a request for a published port's socket (see `init_loop`).
        libc::SIGIO,
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

fn init_loop(cmd: libc::pid_t, signals: &[i32], mut publish: Option<RawFd>) -> ! {
    // Requests that came before the signal was armed.
    if let Some(p) = publish.filter(|p| !super::super::publish::serve(*p)) {
        // SAFETY: closing the published ports' socket, which the supervisor closed.
        unsafe { libc::close(p) };
        publish = None;
    }
    // SAFETY: local sigset and plain waitpid/kill calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        loop {
            let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
            if sig == libc::SIGIO {
                if let Some(p) = publish.filter(|p| !super::super::publish::serve(*p)) {
                    libc::close(p);
                    publish = None;
                }
                continue;
            }
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

/// Opens a pty in the sandbox's own devpts, sends the master to the supervisor, returns the
/// slave.
pub(super) fn open_pty(sock: RawFd) -> std::io::Result<OwnedFd> {
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

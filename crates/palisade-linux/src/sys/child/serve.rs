//! A warm session's init: after set-up it starts no command of its own. It says SERVING,
//! then starts each command the supervisor asks for (`Msg::Spawn`) exactly as a cold run's
//! init starts its one command (`command_main`: a new session, its own stdio or a pty made
//! here, `no_new_privs`, Landlock, no capabilities, seccomp, exec tracing), passes signals
//! on (`Msg::Signal`), reports each end (`Msg::Exited`), reaps whatever else ends, and exits
//! when the supervisor closes the socket (the session stops) or asks it to end by signal.

use std::io::Read;

use super::init::open_pty;
use super::*;
use crate::sys::spawn_request::{MAX_REQUEST, SpawnRequest};

/// Init's loop in a warm session. `base` holds what every command shares (the seccomp
/// filter, the Landlock rules, the rlimits, exec tracing); each request brings the rest.
pub(super) fn serve_main(base: &CommandArgs<'_>, sock: RawFd, mut publish: Option<RawFd>, signals: &[i32]) -> ! {
    if let Err(e) = control::send(sock, &Msg::Serving, &[]) {
        die(sock, &format!("saying the session serves: {e}"));
    }
    if let Err(e) = super::super::publish::arm(sock) {
        die(sock, &format!("arming the session's control socket: {e}"));
    }
    let mut running: Vec<(u64, libc::pid_t)> = Vec::new();
    // SAFETY: a local sigset filled with valid signal numbers.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    };
    loop {
        // Everything is looked at after every wake-up: signals of one kind coalesce.
        loop {
            match control::recv(sock) {
                Ok(Some((Msg::Spawn(id), fds))) => match spawn(base, fds) {
                    Ok(pid) => running.push((id, pid)),
                    Err(_) => tell(sock, &Msg::Exited(id, Exit::Code(125))),
                },
                Ok(Some((Msg::Signal(id, sig), _))) => {
                    if let Some(&(_, pid)) = running.iter().find(|(i, _)| *i == id) {
                        // SAFETY: signalling a command's process group, or the command
                        // itself when it has left its group.
                        unsafe {
                            if libc::kill(-pid, sig) == -1 {
                                libc::kill(pid, sig);
                            }
                        }
                    }
                }
                Ok(Some(_)) => {}
                // The supervisor closed its end: the session stops, and with init every
                // process of the sandbox.
                // SAFETY: _exit ends init at once.
                Ok(None) => unsafe { libc::_exit(0) },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // SAFETY: as above: the supervisor can no longer be told anything.
                Err(_) => unsafe { libc::_exit(125) },
            }
        }
        if let Some(p) = publish.filter(|p| !super::super::publish::serve(*p)) {
            // SAFETY: closing the published ports' socket, which the supervisor closed.
            unsafe { libc::close(p) };
            publish = None;
        }
        reap(sock, &mut running);
        // SAFETY: waiting for one of the blocked signals in `set`.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT) {
            // SAFETY: _exit ends init, and the session, at once.
            unsafe { libc::_exit(0) };
        }
    }
}

/// Reaps every child that ended; a command's end is reported.
fn reap(sock: RawFd, running: &mut Vec<(u64, libc::pid_t)>) {
    loop {
        let mut status = 0;
        // SAFETY: reaping our own children without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let exit = if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            continue;
        };
        if let Some(at) = running.iter().position(|(_, p)| *p == pid) {
            let (id, _) = running.swap_remove(at);
            tell(sock, &Msg::Exited(id, exit));
        }
    }
}

/// Sends on the non-blocking control socket, waiting for room when it is full.
fn tell(sock: RawFd, m: &Msg) {
    loop {
        match control::send(sock, m, &[]) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                let mut p = libc::pollfd { fd: sock, events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
            }
            _ => return,
        }
    }
}

/// Starts one command: `fds` are its request (a memfd), its control socket, stdin, stdout
/// and stderr. A failure is reported on its control socket when there is one.
fn spawn(base: &CommandArgs<'_>, fds: Vec<OwnedFd>) -> Result<libc::pid_t, ()> {
    let Ok::<[OwnedFd; 5], _>([request, own, stdin, stdout, stderr]) = fds.try_into() else { return Err(()) };
    let own_sock = own.as_raw_fd();
    let mut bytes = Vec::new();
    let read = std::fs::File::from(request).take(MAX_REQUEST as u64 + 1).read_to_end(&mut bytes);
    let Some(req) = read.ok().filter(|_| bytes.len() <= MAX_REQUEST).and_then(|_| SpawnRequest::decode(&bytes)) else {
        report(own_sock, ErrorKind::Setup, "starting the command: its request could not be read");
        return Err(());
    };
    let path_env = req.path_env();
    let args = CommandArgs {
        sock: own_sock,
        filter: base.filter,
        argv: req.argv,
        envp: req.envp,
        path_env,
        pty: req.pty,
        cwd: &req.cwd,
        landlock: base.landlock,
        trace_exec: base.trace_exec,
        rlimits: base.rlimits.clone(),
    };
    // SAFETY: fork in a single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        report(own_sock, ErrorKind::Setup, &format!("fork: {}", std::io::Error::last_os_error()));
        return Err(());
    }
    if pid == 0 {
        // Received above 2 (init keeps its own stdio open), so none is overwritten early.
        for (fd, to) in [(&stdin, 0), (&stdout, 1), (&stderr, 2)] {
            // SAFETY: dup2 onto a standard stream; the source stays open until exec.
            if unsafe { libc::dup2(fd.as_raw_fd(), to) } < 0 {
                die(own_sock, &format!("attaching the command's stdio: {}", std::io::Error::last_os_error()));
            }
        }
        let slave = args
            .pty
            .map(|_| open_pty(own_sock).unwrap_or_else(|e| die(own_sock, &format!("creating the terminal: {e}"))));
        command_main(&args, slave.as_ref().map(|s| s.as_raw_fd()));
    }
    Ok(pid)
}

//! The supervisor's side of a running sandbox: signals in, terminal relay, exit status out.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::ffi;
use crate::Exit;

const SIGNALS: [i32; 8] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGCHLD,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The supervisor's signals, blocked and read from a descriptor so they can be polled with
/// the terminal. Created before the sandbox is cloned, so none is lost.
pub struct SignalFd {
    fd: OwnedFd,
    old_mask: libc::sigset_t,
}

impl SignalFd {
    pub fn new() -> io::Result<SignalFd> {
        // SAFETY: local sigsets; sigprocmask and signalfd with valid pointers.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in SIGNALS {
                libc::sigaddset(&mut set, s);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                let e = io::Error::last_os_error();
                libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                return Err(e);
            }
            Ok(SignalFd { fd: OwnedFd::from_raw_fd(fd), old_mask: old })
        }
    }

    /// In the cloned child: the caller's original mask.
    pub fn unblock_in_child(&self) {
        // SAFETY: restoring a mask saved by `new`.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }

    fn read(&self) -> io::Result<i32> {
        // SAFETY: zeroed siginfo is a valid buffer of the size read.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is valid for `size` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(&mut info as *mut _ as *mut u8, size) };
        ffi::read_some(self.fd.as_raw_fd(), buf)?;
        Ok(info.ssi_signo as i32)
    }
}

impl Drop for SignalFd {
    fn drop(&mut self) {
        // SAFETY: restoring a mask saved by `new`.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// Puts the user's terminal in raw mode and restores it on drop.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: zeroed termios is a valid output buffer; tcgetattr/tcsetattr on a tty.
        unsafe {
            if libc::isatty(fd) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSADRAIN, &t);
            Some(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring attributes saved by `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

fn copy_winsize(from: RawFd, to: RawFd) {
    // SAFETY: zeroed winsize is a valid buffer; TIOCGWINSZ/TIOCSWINSZ take a pointer to one.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// A pty pair from the host's devpts (degraded mode has no devpts of its own).
pub fn open_host_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty with valid out-pointers and no name, termios or window size.
    if unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just returned by openpty.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    for fd in [&m, &s] {
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((m, s))
}

fn exit_of(status: i32) -> Option<Exit> {
    if libc::WIFEXITED(status) {
        Some(Exit::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Exit::Signal(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// Decoys to watch while supervising.
pub struct Tripwires<'a> {
    pub fd: RawFd,
    pub paths: &'a [std::path::PathBuf],
    pub on_open: &'a (dyn Fn(&std::path::Path) + Send),
}

/// What [`supervise`] waits for, and where signals go.
pub enum Until<'a> {
    /// The sandbox's init, our child: it ends on `SIGCHLD`; signals go by kill(2).
    Child(libc::pid_t),
    /// A warm session's command, served elsewhere: once `sock` is readable, `ended` says
    /// whether (and how) it ended; signals go through `signal`.
    Remote {
        /// The session's socket.
        sock: RawFd,
        /// Reads what came; `Some` once the command has ended.
        ended: &'a mut dyn FnMut() -> io::Result<Option<Exit>>,
        /// Passes a signal on.
        signal: &'a dyn Fn(i32),
    },
}

/// Relays the terminal (if any) and forwards signals until the sandbox's init (or a
/// session's command) ends. `kill`, when given, is an eventfd: once readable, the sandbox is
/// killed.
pub fn supervise(
    mut until: Until<'_>,
    master: Option<OwnedFd>,
    signals: &SignalFd,
    kill: Option<RawFd>,
    tripwires: Option<Tripwires<'_>>,
) -> io::Result<Exit> {
    let _raw = master.as_ref().and_then(|_| RawMode::enter(0));
    if let Some(m) = &master {
        copy_winsize(0, m.as_raw_fd());
    }
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut out_ok = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![libc::pollfd { fd: signals.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        if let (Some(m), true) = (&master, master_open) {
            fds.push(libc::pollfd { fd: m.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        if stdin_open {
            fds.push(libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 });
        }
        if let Some(k) = kill {
            fds.push(libc::pollfd { fd: k, events: libc::POLLIN, revents: 0 });
        }
        if let Some(t) = &tripwires {
            fds.push(libc::pollfd { fd: t.fd, events: libc::POLLIN, revents: 0 });
        }
        if let Until::Remote { sock, .. } = &until {
            fds.push(libc::pollfd { fd: *sock, events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: `fds` is a valid array of the length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for p in &fds {
            if p.revents == 0 {
                continue;
            }
            if p.fd == signals.fd.as_raw_fd() {
                match (signals.read()?, &mut until) {
                    (libc::SIGCHLD, Until::Remote { .. }) => {}
                    (libc::SIGCHLD, Until::Child(pid)) => {
                        let pid = *pid;
                        let mut status = 0;
                        // SAFETY: reaping our own child without blocking.
                        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid
                            && let Some(exit) = exit_of(status)
                        {
                            if let (Some(m), true) = (&master, master_open) {
                                drain(m.as_raw_fd(), &mut buf, out_ok);
                            }
                            return Ok(exit);
                        }
                    }
                    (libc::SIGWINCH, _) => {
                        if let Some(m) = &master {
                            copy_winsize(0, m.as_raw_fd());
                        }
                    }
                    // SAFETY: forwarding a signal to our own child.
                    (sig, Until::Child(pid)) => unsafe {
                        libc::kill(*pid, sig);
                    },
                    (sig, Until::Remote { signal, .. }) => signal(sig),
                }
            } else if let Until::Remote { sock, ended, .. } = &mut until
                && p.fd == *sock
            {
                if let Some(exit) = ended()? {
                    if let (Some(m), true) = (&master, master_open) {
                        drain(m.as_raw_fd(), &mut buf, out_ok);
                    }
                    return Ok(exit);
                }
            } else if Some(p.fd) == master.as_ref().map(|m| m.as_raw_fd()) {
                match ffi::read_some(p.fd, &mut buf) {
                    Ok(0) | Err(_) => master_open = false,
                    Ok(n) => out_ok = out_ok && ffi::write_all(1, &buf[..n]).is_ok(),
                }
            } else if let Some(t) = tripwires.as_ref().filter(|t| t.fd == p.fd) {
                for path in super::tripwire::opened(t.fd, t.paths) {
                    (t.on_open)(&path);
                }
            } else if Some(p.fd) == kill {
                let mut b = [0u8; 8];
                let _ = ffi::read_some(p.fd, &mut b);
                if let Until::Child(pid) = until {
                    // SAFETY: killing our own child (the sandbox's init; the rest follows it).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            } else if p.fd == 0 {
                match ffi::read_some(0, &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        if let Some(m) = &master {
                            let _ = ffi::write_all(m.as_raw_fd(), &buf[..n]);
                        }
                    }
                }
            }
        }
    }
}

/// Reads what is left in the pty after the command ended.
fn drain(fd: RawFd, buf: &mut [u8], out_ok: bool) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    while let Ok(n) = ffi::read_some(fd, buf) {
        if n == 0 {
            break;
        }
        if out_ok {
            let _ = ffi::write_all(1, &buf[..n]);
        }
    }
}

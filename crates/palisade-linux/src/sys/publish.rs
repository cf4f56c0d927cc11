//! Published ports (`--publish`), Linux's half: a way into the sandbox's network namespace
//! for the supervisor, which cannot enter it (`setns` to a network namespace needs
//! `CAP_SYS_ADMIN` in the caller's own user namespace). Init, which lives there, makes a TCP
//! socket on request and passes it out over a `SOCK_SEQPACKET` pair made before `clone`;
//! the supervisor connects it to the port on the sandbox's loopback (a socket stays in the
//! namespace it was made in: socket(7), network_namespaces(7)). No helper process runs in
//! the sandbox; the command never holds the pair (it keeps only stdio).
//!
//! Requests are one byte, `4` or `6`; each answer is `s` with the socket, or `e` and the
//! error's text.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use super::ffi;

/// Init: makes `sock` non-blocking and has the kernel signal `SIGIO` to init when a request
/// arrives (fcntl(2): `O_ASYNC`, `F_SETOWN`), so init's signal loop serves it.
pub fn arm(sock: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor init owns, with documented commands.
    unsafe {
        let flags = libc::fcntl(sock, libc::F_GETFL);
        ffi::check(libc::fcntl(sock, libc::F_SETOWN, libc::getpid()) as libc::c_long)?;
        ffi::check(libc::fcntl(sock, libc::F_SETFL, flags | libc::O_NONBLOCK | libc::O_ASYNC) as libc::c_long)?;
    }
    Ok(())
}

/// Init: answers every request waiting on `sock`; `false` once the supervisor's end is
/// closed (nothing more will come).
pub fn serve(sock: RawFd) -> bool {
    let mut buf = [0u8; 8];
    loop {
        match ffi::recv_with_fds(sock, &mut buf) {
            Ok((0, _)) => return false,
            Ok((_, _)) => {
                let family = if buf[0] == b'6' { libc::AF_INET6 } else { libc::AF_INET };
                // SAFETY: a plain stream socket, owned below.
                let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
                let sent = if fd < 0 {
                    let e = io::Error::last_os_error().to_string();
                    ffi::send_with_fd(sock, format!("e{e}").as_bytes(), None)
                } else {
                    let r = ffi::send_with_fd(sock, b"s", Some(fd));
                    // SAFETY: our copy of the socket just sent.
                    unsafe { libc::close(fd) };
                    r
                };
                if sent.is_err() {
                    return true;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// Supervisor: the session's [`palisade_sandbox::publish::Connector`] over `sock`: a socket
/// from init, connected to `127.0.0.1:port`, else `[::1]:port` (a server listening on IPv6
/// only), in the sandbox's namespace.
pub fn connector(sock: OwnedFd) -> palisade_sandbox::publish::Connector {
    let sock = Arc::new(Mutex::new(sock));
    Arc::new(move |port| {
        let v4 = connect(&sock, false, port);
        match v4 {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => connect(&sock, true, port).map_err(|_| e),
            other => other,
        }
    })
}

fn connect(sock: &Mutex<OwnedFd>, v6: bool, port: u16) -> io::Result<TcpStream> {
    let fd = {
        let s = sock.lock().unwrap_or_else(|e| e.into_inner());
        ffi::send_with_fd(s.as_raw_fd(), if v6 { b"6" } else { b"4" }, None)?;
        let mut buf = [0u8; 256];
        let (n, mut fds) = ffi::recv_with_fds(s.as_raw_fd(), &mut buf)?;
        match (buf.first(), fds.pop()) {
            (Some(b's'), Some(fd)) if n >= 1 => fd,
            _ if n == 0 => return Err(io::Error::other("the sandbox has ended")),
            _ => return Err(io::Error::other(String::from_utf8_lossy(&buf[1..n]).into_owned())),
        }
    };
    ffi::connect_loopback(fd.as_raw_fd(), v6, port)?;
    Ok(TcpStream::from(fd))
}

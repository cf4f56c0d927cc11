//! The control protocol between the supervisor, the sandbox's init and the command's process:
//! one `SOCK_SEQPACKET` socket pair made before `clone`, one message per packet, descriptors
//! passed with `SCM_RIGHTS` (unix(7)). End of stream (every sandbox end closed, which happens
//! when the command `execve`s with the socket close-on-exec) means the command is running.
//!
//! In order, for one run:
//!
//! | from → to | message | descriptors |
//! |---|---|---|
//! | supervisor → init | [`Msg::Go`]: the uid/gid maps are written | |
//! | init → supervisor | [`Msg::Tripwires`] (when there are decoys) | the inotify descriptor |
//! | init → supervisor | [`Msg::Net`] (network mode `allowlist`) | [`GatewaySockets`], in its order |
//! | init → supervisor | [`Msg::Pty`] (a terminal) | the pty master |
//! | supervisor → init | [`Msg::Ready`]: in the cgroup, start records taken | |
//! | command → supervisor | [`Msg::ExecTracer`] (exec tracing) | the seccomp listener |
//! | any → supervisor | [`Msg::Error`]: setup failed, with the kind and the text | |
//!
//! A warm session's init (a plan with [`Plan::session`](crate::plan::Plan::session)) forks no
//! command after READY: it says [`Msg::Serving`] and keeps the socket, over which it then
//! serves the supervisor's requests until the supervisor closes it (see `child/serve.rs`).
//!
//! | from → to | message | descriptors |
//! |---|---|---|
//! | init → supervisor | [`Msg::Serving`]: the view is built, commands may come | |
//! | supervisor → init | [`Msg::Spawn`]: start command N | its request (a memfd), its own control socket, stdin, stdout, stderr |
//! | command N → supervisor, on its own socket | [`Msg::Pty`], [`Msg::ExecTracer`], [`Msg::Error`], then end of stream at `execve` | as above |
//! | supervisor → init | [`Msg::Signal`]: signal command N's process group | |
//! | init → supervisor | [`Msg::Exited`]: command N ended | |

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use super::ffi;

/// One message on the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Supervisor → init: the id maps are written, go on.
    Go,
    /// Supervisor → init: init is in the sandbox's cgroup (when there is one) and the
    /// supervisor has taken what it records at the start; the command may start.
    Ready,
    /// Init → supervisor: the pty master, opened in the sandbox's own devpts.
    Pty,
    /// Init → supervisor: the gateway's listeners, made inside the sandbox's network
    /// namespace, in [`GatewaySockets`]' order.
    Net,
    /// Init → supervisor: the inotify descriptor watching the decoys.
    Tripwires,
    /// Command → supervisor: the exec tracer's seccomp listener.
    ExecTracer,
    /// Sandbox → supervisor: setup failed.
    Error(ErrorKind, String),
    /// Init → supervisor, in a warm session: set up, serving commands.
    Serving,
    /// Supervisor → init, in a warm session: start command N (descriptors: its request, its
    /// control socket, stdin, stdout, stderr).
    Spawn(u64),
    /// Supervisor → init, in a warm session: send signal S to command N's process group.
    Signal(u64, i32),
    /// Init → supervisor, in a warm session: command N ended, with its wait status.
    Exited(u64, Exit),
}

use crate::Exit;

/// An id and four bytes after a tag: `Signal` and `Exited`.
fn id_and(tag: u8, id: u64, sub: u8, value: i32) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&id.to_le_bytes());
    m.push(sub);
    m.extend_from_slice(&value.to_le_bytes());
    m
}

/// The id (8 bytes, little-endian) at the start of `b`.
fn id_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

/// The sub-tag and value after the id of `Signal` and `Exited`.
fn sub_of(b: &[u8]) -> Option<(u64, u8, i32)> {
    let value = i32::from_le_bytes(b.get(9..13)?.try_into().ok()?);
    Some((id_of(b)?, *b.get(8)?, value))
}

/// What kind of failure a [`Msg::Error`] reports (it decides the exit status: 125, 127, 126).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Setup,
    NotFound,
    CannotExecute,
}

/// The longest message sent, in bytes, tag and kind included: a longer error text is cut
/// (possibly inside a UTF-8 character, which the receiver replaces with U+FFFD).
const MAX_TEXT: usize = 4000;

impl Msg {
    /// The message's bytes: a tag, and for errors the kind and the text.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Go => vec![b'G'],
            Msg::Ready => vec![b'R'],
            Msg::Pty => vec![b'P'],
            Msg::Net => vec![b'N'],
            Msg::Tripwires => vec![b'W'],
            Msg::ExecTracer => vec![b'X'],
            Msg::Error(kind, text) => {
                let k = match kind {
                    ErrorKind::Setup => 0,
                    ErrorKind::NotFound => 1,
                    ErrorKind::CannotExecute => 2,
                };
                let mut m = vec![b'E', k];
                m.extend_from_slice(text.as_bytes());
                m.truncate(MAX_TEXT);
                m
            }
            Msg::Serving => vec![b'V'],
            Msg::Spawn(id) => {
                let mut m = vec![b'S'];
                m.extend_from_slice(&id.to_le_bytes());
                m
            }
            Msg::Signal(id, sig) => id_and(b'K', *id, 0, *sig),
            Msg::Exited(id, Exit::Code(c)) => id_and(b'Q', *id, 0, *c),
            Msg::Exited(id, Exit::Signal(s)) => id_and(b'Q', *id, 1, *s),
        }
    }

    /// Reads a message; `None` for bytes that are none (ignored by the receiver).
    pub fn decode(b: &[u8]) -> Option<Msg> {
        Some(match b {
            [b'G', ..] => Msg::Go,
            [b'R', ..] => Msg::Ready,
            [b'P', ..] => Msg::Pty,
            [b'N', ..] => Msg::Net,
            [b'W', ..] => Msg::Tripwires,
            [b'X', ..] => Msg::ExecTracer,
            [b'E', k, text @ ..] => {
                let kind = match k {
                    1 => ErrorKind::NotFound,
                    2 => ErrorKind::CannotExecute,
                    _ => ErrorKind::Setup,
                };
                Msg::Error(kind, String::from_utf8_lossy(text).into_owned())
            }
            [b'V', ..] => Msg::Serving,
            [b'S', rest @ ..] => Msg::Spawn(id_of(rest)?),
            [b'K', rest @ ..] => {
                let (id, _, sig) = sub_of(rest)?;
                Msg::Signal(id, sig)
            }
            [b'Q', rest @ ..] => match sub_of(rest)? {
                (id, 0, c) => Msg::Exited(id, Exit::Code(c)),
                (id, _, s) => Msg::Exited(id, Exit::Signal(s)),
            },
            _ => return None,
        })
    }
}

/// Sends `msg` with `fds` (at most [`ffi::MAX_FDS`]).
pub fn send(sock: RawFd, msg: &Msg, fds: &[RawFd]) -> io::Result<()> {
    ffi::send_fds(sock, &msg.encode(), fds)
}

/// Receives one message and its descriptors; `Ok(None)` at end of stream, and for a packet
/// that is no message (its descriptors are closed).
pub fn recv(sock: RawFd) -> io::Result<Option<(Msg, Vec<OwnedFd>)>> {
    let mut buf = [0u8; MAX_TEXT + 8];
    let mut reset = false;
    loop {
        let (n, fds) = match ffi::recv_with_fds(sock, &mut buf) {
            // The peer closed with a message of ours unread (init died during set-up before
            // it read READY): the kernel reports that first (`sock_error` ahead of the
            // queue in `__skb_try_recv_datagram`), once, and the messages the peer sent
            // before it died, its own report among them, are still queued: read on.
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) && !reset => {
                reset = true;
                continue;
            }
            r => r?,
        };
        if n == 0 {
            return Ok(None);
        }
        if let Some(m) = Msg::decode(&buf[..n]) {
            return Ok(Some((m, fds)));
        }
    }
}

/// The gateway's listening sockets, made inside the sandbox's network namespace and passed
/// out in one `Msg::Net`: HTTP proxy, SOCKS5, DNS over UDP, DNS over TCP, then the
/// transparent listeners (`0.0.0.0` and, for a granted host loopback port, `[::1]`, per port).
/// This order is defined here only.
#[derive(Debug)]
pub struct GatewaySockets {
    /// The HTTP proxy's TCP listener, on [`NetPlan::http_proxy`](crate::plan::NetPlan::http_proxy).
    pub http: OwnedFd,
    /// The SOCKS5 proxy's TCP listener, on [`NetPlan::socks`](crate::plan::NetPlan::socks).
    pub socks: OwnedFd,
    /// The DNS stub's UDP socket, on [`NetPlan::dns`](crate::plan::NetPlan::dns).
    pub dns_udp: OwnedFd,
    /// The DNS stub's TCP listener, on the same address.
    pub dns_tcp: OwnedFd,
    /// The transparent TCP listeners, port by port: `0.0.0.0:PORT`, then `[::1]:PORT` for a
    /// granted host loopback port when the namespace has IPv6. A connection's destination,
    /// not the listener's place here, says where it goes.
    pub transparent: Vec<OwnedFd>,
}

impl GatewaySockets {
    /// The descriptors in the order they are sent.
    pub fn to_raw(&self) -> Vec<RawFd> {
        use std::os::fd::AsRawFd;
        [&self.http, &self.socks, &self.dns_udp, &self.dns_tcp]
            .into_iter()
            .chain(&self.transparent)
            .map(|f| f.as_raw_fd())
            .collect()
    }

    /// The sockets from the descriptors of a `Msg::Net`; `None` when fewer than four came.
    pub fn from_received(fds: Vec<OwnedFd>) -> Option<GatewaySockets> {
        let mut it = fds.into_iter();
        Some(GatewaySockets {
            http: it.next()?,
            socks: it.next()?,
            dns_udp: it.next()?,
            dns_tcp: it.next()?,
            transparent: it.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        for m in [
            Msg::Go,
            Msg::Ready,
            Msg::Pty,
            Msg::Net,
            Msg::Tripwires,
            Msg::ExecTracer,
            Msg::Error(ErrorKind::Setup, "building the view: EPERM".into()),
            Msg::Error(ErrorKind::NotFound, "x: command not found".into()),
            Msg::Error(ErrorKind::CannotExecute, String::new()),
            Msg::Serving,
            Msg::Spawn(u64::MAX),
            Msg::Signal(7, libc::SIGINT),
            Msg::Exited(1, Exit::Code(255)),
            Msg::Exited(2, Exit::Signal(9)),
        ] {
            assert_eq!(Msg::decode(&m.encode()), Some(m));
        }
        assert_eq!(Msg::decode(b""), None);
        assert_eq!(Msg::decode(b"?"), None);
        assert_eq!(Msg::decode(b"S1234"), None, "a cut id is no message");
        assert_eq!(Msg::Error(ErrorKind::Setup, "x".repeat(10_000)).encode().len(), MAX_TEXT);
    }

    #[test]
    fn messages_and_descriptors_cross_a_socket_pair() {
        let mut sv = [0; 2];
        // SAFETY: socketpair fills the two-element array.
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, sv.as_mut_ptr()) }, 0);
        // SAFETY: just returned by the kernel, owned here.
        let (a, b) = unsafe {
            use std::os::fd::FromRawFd;
            (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1]))
        };
        use std::os::fd::AsRawFd;
        let socks: Vec<OwnedFd> = (0..6).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap().into()).collect();
        let raw: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
        send(a.as_raw_fd(), &Msg::Net, &raw).unwrap();
        send(a.as_raw_fd(), &Msg::Error(ErrorKind::NotFound, "nope".into()), &[]).unwrap();
        drop(a);
        let (m, fds) = recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!(m, Msg::Net);
        let g = GatewaySockets::from_received(fds).unwrap();
        assert_eq!(g.transparent.len(), 2);
        assert_eq!(recv(b.as_raw_fd()).unwrap().unwrap().0, Msg::Error(ErrorKind::NotFound, "nope".into()));
        assert!(recv(b.as_raw_fd()).unwrap().is_none(), "end of stream");
    }
}

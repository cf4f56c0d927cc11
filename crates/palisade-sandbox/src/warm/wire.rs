//! The frames between a warm session's client (`run --session`) and its server, over the
//! session's `SOCK_STREAM` unix socket. A frame is its body's length (4 bytes,
//! little-endian; at most [`MAX_FRAME`]) then the body: a tag byte and the fields. A frame's
//! descriptors (`SCM_RIGHTS`) travel with its length, which is sent alone, so the receiver
//! gets them with the first 4 bytes it reads (unix(7): ancillary data is received with the
//! first byte it was sent with).
//!
//! | from | tag | frame | descriptors |
//! |---|---|---|---|
//! | client | `R` | [`ClientMsg::Run`]: pty streams, argv, environment, working directory | stdin, stdout, stderr |
//! | client | `K` | [`ClientMsg::Signal`]: signal the command's process group | |
//! | client | `X` | [`ClientMsg::Stop`]: end the session | |
//! | server | `S` | [`ServerMsg::Started`] | the pty master, when there is one |
//! | server | `E` | [`ServerMsg::Exited`] | |
//! | server | `F` | [`ServerMsg::Failed`]: status 125, 126 or 127 and why | |
//! | server | `O` | [`ServerMsg::Stopping`] | |

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::fdpass;
use crate::{Exit, PtyUse};

/// The largest frame body, in bytes: argv and environment together may be 16 MiB (Linux's
/// own limit for one `execve` is lower: a quarter of the stack limit).
pub const MAX_FRAME: usize = 16 << 20;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// Run a command (with stdin, stdout and stderr attached).
    Run(RunMsg),
    /// Send this signal to the command's process group.
    Signal(i32),
    /// End the session (`palisade session stop`).
    Stop,
}

/// A command to run, as the client has it: its environment unfiltered (the server filters
/// it through the session's policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMsg {
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// The client's environment.
    pub env: Vec<(OsString, OsString)>,
    /// The client's working directory (host path).
    pub cwd: PathBuf,
    /// Which streams are terminals (then the command gets a pty, which the client relays).
    pub pty: Option<PtyUse>,
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// The command runs (with the pty master attached when it has a pty).
    Started,
    /// It ended.
    Exited(Exit),
    /// It did not run: the exit status to give (125, 126, 127) and why.
    Failed {
        /// The status.
        status: u8,
        /// Why, in words.
        message: String,
    },
    /// The session is stopping (the answer to [`ClientMsg::Stop`]).
    Stopping,
}

/// Builds a body.
#[derive(Default)]
struct Body(Vec<u8>);

impl Body {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn list<'a>(self, items: impl ExactSizeIterator<Item = &'a [u8]>) -> Self {
        let mut s = self.i32(items.len() as i32);
        for i in items {
            s = s.bytes(i);
        }
        s
    }
}

/// Reads a body.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad("a frame ends inside a field"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().map_err(|_| bad("short"))?))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.i32()? as u32 as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn list(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let n = self.i32()? as u32 as usize;
        if n > self.0.len() / 4 {
            return Err(bad("a list longer than its frame"));
        }
        (0..n).map(|_| self.bytes()).collect()
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed session frame: {what}"))
}

fn pty_bits(p: Option<PtyUse>) -> u8 {
    p.map_or(0, |p| 8 | u8::from(p.stdin) | u8::from(p.stdout) << 1 | u8::from(p.stderr) << 2)
}

fn pty_of(b: u8) -> Option<PtyUse> {
    (b & 8 != 0).then_some(PtyUse { stdin: b & 1 != 0, stdout: b & 2 != 0, stderr: b & 4 != 0 })
}

impl ClientMsg {
    fn encode(&self) -> Vec<u8> {
        match self {
            ClientMsg::Run(r) => {
                let env: Vec<Vec<u8>> =
                    r.env.iter().map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat()).collect();
                Body::default()
                    .u8(b'R')
                    .u8(pty_bits(r.pty))
                    .list(r.argv.iter().map(|a| a.as_bytes()))
                    .list(env.iter().map(Vec::as_slice))
                    .bytes(r.cwd.as_os_str().as_bytes())
                    .0
            }
            ClientMsg::Signal(s) => Body::default().u8(b'K').i32(*s).0,
            ClientMsg::Stop => vec![b'X'],
        }
    }

    fn decode(b: &[u8]) -> io::Result<ClientMsg> {
        let mut f = Fields(b);
        Ok(match f.u8()? {
            b'R' => {
                let pty = pty_of(f.u8()?);
                let argv: Vec<OsString> = f.list()?.into_iter().map(OsString::from_vec).collect();
                let env = f
                    .list()?
                    .into_iter()
                    .map(|kv| {
                        let at = kv.iter().position(|&c| c == b'=').unwrap_or(kv.len());
                        let v = kv.get(at + 1..).unwrap_or_default().to_vec();
                        (OsString::from_vec(kv[..at].to_vec()), OsString::from_vec(v))
                    })
                    .collect();
                let cwd = PathBuf::from(OsString::from_vec(f.bytes()?));
                ClientMsg::Run(RunMsg { argv, env, cwd, pty })
            }
            b'K' => ClientMsg::Signal(f.i32()?),
            b'X' => ClientMsg::Stop,
            t => return Err(bad(&format!("unknown client tag {t}"))),
        })
    }
}

impl ServerMsg {
    fn encode(&self) -> Vec<u8> {
        match self {
            ServerMsg::Started => vec![b'S'],
            ServerMsg::Exited(Exit::Code(c)) => Body::default().u8(b'E').u8(0).i32(*c).0,
            ServerMsg::Exited(Exit::Signal(s)) => Body::default().u8(b'E').u8(1).i32(*s).0,
            ServerMsg::Failed { status, message } => Body::default().u8(b'F').u8(*status).bytes(message.as_bytes()).0,
            ServerMsg::Stopping => vec![b'O'],
        }
    }

    fn decode(b: &[u8]) -> io::Result<ServerMsg> {
        let mut f = Fields(b);
        Ok(match f.u8()? {
            b'S' => ServerMsg::Started,
            b'E' => match (f.u8()?, f.i32()?) {
                (0, c) => ServerMsg::Exited(Exit::Code(c)),
                (_, s) => ServerMsg::Exited(Exit::Signal(s)),
            },
            b'F' => ServerMsg::Failed { status: f.u8()?, message: String::from_utf8_lossy(&f.bytes()?).into_owned() },
            b'O' => ServerMsg::Stopping,
            t => return Err(bad(&format!("unknown server tag {t}"))),
        })
    }
}

/// Writes one frame with `fds` attached.
fn send(sock: &UnixStream, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the command and its environment exceed 16 MiB"));
    }
    fdpass::send_fds(sock, &(body.len() as u32).to_le_bytes(), fds)?;
    (&*sock).write_all(body)
}

/// Reads one frame and its descriptors; `None` at end of stream before a frame.
fn recv(sock: &UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut len = [0u8; 4];
    let (n, fds) = fdpass::recv_with_fds(sock, &mut len)?;
    if n == 0 {
        return Ok(None);
    }
    (&*sock).read_exact(&mut len[n..])?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME || len == 0 {
        return Err(bad(&format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    (&*sock).read_exact(&mut body)?;
    Ok(Some((body, fds)))
}

/// Sends a client's frame (a `Run` with the three stdio descriptors).
///
/// # Errors
/// The socket's error, or a frame over [`MAX_FRAME`].
pub fn send_client(sock: &UnixStream, m: &ClientMsg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send(sock, &m.encode(), fds)
}

/// Reads a client's frame; `None` when the client has gone.
///
/// # Errors
/// The socket's error, or a malformed frame.
pub fn recv_client(sock: &UnixStream) -> io::Result<Option<(ClientMsg, Vec<OwnedFd>)>> {
    recv(sock)?.map(|(b, fds)| Ok((ClientMsg::decode(&b)?, fds))).transpose()
}

/// Sends the server's frame (a `Started` with the pty master).
///
/// # Errors
/// The socket's error.
pub fn send_server(sock: &UnixStream, m: &ServerMsg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send(sock, &m.encode(), fds)
}

/// Reads the server's frame; `None` when the server has gone.
///
/// # Errors
/// The socket's error, or a malformed frame.
pub fn recv_server(sock: &UnixStream) -> io::Result<Option<(ServerMsg, Vec<OwnedFd>)>> {
    recv(sock)?.map(|(b, fds)| Ok((ServerMsg::decode(&b)?, fds))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile() -> Vec<OsString> {
        vec![OsString::from_vec(b"a\xff\n=b".to_vec()), OsString::new(), "x".repeat(70_000).into()]
    }

    #[test]
    fn every_frame_round_trips_with_hostile_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let run = ClientMsg::Run(RunMsg {
            argv: hostile(),
            env: vec![("K".into(), "v=w".into()), (OsString::from_vec(b"\xfe".to_vec()), OsString::new())],
            cwd: PathBuf::from(OsString::from_vec(b"/tmp/\x01\xff".to_vec())),
            pty: Some(PtyUse { stdin: true, stdout: false, stderr: true }),
        });
        for m in [run, ClientMsg::Signal(2), ClientMsg::Stop] {
            send_client(&a, &m, &[]).unwrap();
            assert_eq!(recv_client(&b).unwrap().unwrap().0, m);
        }
        for m in [
            ServerMsg::Started,
            ServerMsg::Exited(Exit::Code(3)),
            ServerMsg::Exited(Exit::Signal(9)),
            ServerMsg::Failed { status: 127, message: "nope: \u{1b}[31m".into() },
            ServerMsg::Stopping,
        ] {
            send_server(&b, &m, &[]).unwrap();
            assert_eq!(recv_server(&a).unwrap().unwrap().0, m);
        }
        drop(a);
        assert!(recv_client(&b).unwrap().is_none(), "end of stream");
    }

    #[test]
    fn descriptors_travel_with_their_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = UnixStream::pair().unwrap();
        let m = ClientMsg::Run(RunMsg { argv: hostile(), env: vec![], cwd: "/".into(), pty: None });
        use std::os::fd::AsFd;
        send_client(&a, &m, &[r.as_fd(), w.as_fd(), w.as_fd()]).unwrap();
        send_client(&a, &ClientMsg::Stop, &[]).unwrap();
        let (got, fds) = recv_client(&b).unwrap().unwrap();
        assert_eq!((got, fds.len()), (m, 3));
        let (got, fds) = recv_client(&b).unwrap().unwrap();
        assert_eq!((got, fds.len()), (ClientMsg::Stop, 0));
    }

    #[test]
    fn malformed_frames_are_errors_never_panics() {
        for body in [
            &b""[..],
            b"Q",
            b"R",
            b"R\x00\xff\xff\xff\x7f",
            b"R\x00\x01\x00\x00\x00\xff\xff\xff\xff",
            b"K\x01",
            b"E\x00",
            b"F\x7f\x10\x00\x00\x00ab",
        ] {
            assert!(ClientMsg::decode(body).is_err() || ServerMsg::decode(body).is_err(), "{body:?}");
            let _ = ServerMsg::decode(body);
        }
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(recv_client(&b).is_err(), "an oversized frame is refused before it is read");
    }
}

//! Passing descriptors over unix sockets (`SCM_RIGHTS`, unix(7)), for warm sessions'
//! frames ([`crate::warm::wire`]): one `sendmsg` and the descriptors sent with it; received
//! descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`). Through `rustix`, so the portable
//! crate holds no `unsafe`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// The most descriptors one frame carries (a command's three stdio descriptors, or a pty
/// master).
pub const MAX_FDS: usize = 4;

/// Sends all of `data` and `fds` (at most [`MAX_FDS`]) in one `sendmsg`, retried on
/// `EINTR`; `MSG_NOSIGNAL`, so a peer gone is `EPIPE`, never a signal.
///
/// # Errors
/// The system's error; `EINVAL` for too many descriptors; `WriteZero` when the socket took
/// only part of `data` (callers send small headers).
pub fn send_fds(sock: impl AsFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    loop {
        match rustix::net::sendmsg(sock.as_fd(), &[IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => return Err(io::Error::new(io::ErrorKind::WriteZero, "a partial send")),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives at most `buf.len()` bytes and the descriptors sent with them; `(0, [])` is end
/// of stream. Descriptors beyond [`MAX_FDS`] are closed by the kernel (`MSG_CTRUNC`).
///
/// # Errors
/// The system's error.
pub fn recv_with_fds(sock: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(sock.as_fd(), &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    Ok((msg.bytes, fds))
}

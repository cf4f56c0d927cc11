//! Descriptors whose last `close` waits on the kernel, closed off the path the user waits on.
//!
//! Closing the tripwires' inotify instance, the last reference to a group with marks, waits
//! for an SRCU grace period (`fsnotify_destroy_group` flushes the mark reaper, which calls
//! `synchronize_srcu`; fs/notify/group.c, fs/notify/mark.c): 13–20 ms measured here, once
//! per run, after the command's status is known and before the supervisor can exit (a
//! process's exit closes its descriptors before its parent sees it end).
//!
//! [`close_detached`] gives the last reference to the kernel instead: the descriptor is sent
//! over a unix socket into that socket's own receive queue, together with the socket itself,
//! and every descriptor of ours is closed. Nothing can reach that cycle any more; the kernel's
//! garbage collector for in-flight unix sockets (net/unix/garbage.c) frees it from a worker
//! thread (since Linux 6.10 the collection always runs in a workqueue, and a file released
//! by a kernel thread is closed by the delayed-`fput` worker, fs/file_table.c), so the wait
//! happens there. On kernels that collect inline, the wait is paid here, as before: correct,
//! only slower. No process is made, so nothing is left for anyone to reap (a helper process
//! would outlive the supervisor and stay a zombie under an init that does not reap).

use std::os::fd::{AsRawFd, OwnedFd};

use super::ffi;

/// Closes `fd` without waiting for the kernel's teardown of what it refers to (see the
/// module's documentation). When the socket cannot be made or the descriptor not sent,
/// `fd` is closed here and the wait is paid.
pub fn close_detached(fd: OwnedFd) {
    let Ok((a, b)) = ffi::seqpacket_pair() else { return };
    // `b`'s receive queue then holds `fd` and `b` itself: once our descriptors are closed,
    // only the cycle refers to them.
    if ffi::send_fds(a.as_raw_fd(), b"r", &[fd.as_raw_fd(), b.as_raw_fd()]).is_err() {
        return;
    }
    drop(fd);
    drop(b);
    // Closing a unix socket while descriptors are in flight starts the collector.
    drop(a);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// The collector closes the last reference: the other end of a pipe sees end of file.
    #[test]
    fn the_kernel_closes_the_last_reference() {
        let mut p = [0; 2];
        // SAFETY: pipe2 fills two descriptors, owned below.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: just made.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        close_detached(w);
        let mut pfd = libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; waits at most 10 s for the collector (normally < 1 ms).
        let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert_eq!(n, 1, "the write end was never closed");
        let mut b = [0u8; 1];
        assert_eq!(ffi::read_some(r.as_raw_fd(), &mut b).unwrap(), 0, "end of file: no write end is left");
    }
}

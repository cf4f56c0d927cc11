//! A warm session's owner: the process whose end ends the session (by default the one that
//! ran `palisade session start`, an agent or a shell). Identified by pid and start time
//! (proc(5): `/proc/PID/stat`, field 22, in clock ticks since boot), so that a pid reused
//! by another process is never taken for the owner; watched through a pidfd
//! (pidfd_open(2), Linux 5.3), else by looking every half second.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The start time of process `pid` (clock ticks since boot), or `None` when it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold anything, `)` included.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Returns once process `pid`, started at `start` ([`start_time`]), has ended (at once when
/// it already has, or when the pid is now another process's).
pub fn wait_gone(pid: u32, start: u64) {
    // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32) };
    let pidfd = (fd >= 0).then(|| {
        // SAFETY: just returned by the kernel, owned here.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    });
    // Checked after the pidfd is open: it then refers to the process that had this start
    // time, or the owner had already gone.
    if start_time(pid) != Some(start) {
        return;
    }
    match pidfd {
        Some(fd) => {
            let _ = wait_readable(&fd);
        }
        None => {
            while start_time(pid) == Some(start) {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
}

/// A pidfd becomes readable when its process ends.
fn wait_readable(fd: &OwnedFd) -> io::Result<()> {
    loop {
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n > 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_known_by_pid_and_start_time_and_its_end_is_seen() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        let mut child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let start = start_time(child.id()).unwrap();
        let t = std::time::Instant::now();
        let pid = child.id();
        let reaper = std::thread::spawn(move || child.wait());
        wait_gone(pid, start);
        assert!(t.elapsed() >= std::time::Duration::from_millis(200), "returned before the owner ended");
        reaper.join().unwrap().unwrap();
        // Not the owner any more (gone, or another process's pid): at once.
        let t = std::time::Instant::now();
        wait_gone(pid, start);
        wait_gone(me, start_time(me).unwrap() + 1);
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}

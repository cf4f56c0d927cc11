//! Tripwires: decoy files where secrets would be, inside the sandbox's private home, watched
//! with inotify. Init places them (never on the host's file systems: the plan only lists
//! paths in private tmpfs) and passes the inotify descriptor to the supervisor, which reads
//! it from outside; opening a decoy is reported at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use super::ffi;

/// What a decoy holds: looks like a key, opens nothing.
const DECOY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\nc2gtZWQyNTUxOQAAACBwYWxpc2FkZS10cmlwd2lyZS1kZWNveS1rZXktMDAwMDAw\n-----END OPENSSH PRIVATE KEY-----\n";

/// Places the decoys and returns the inotify descriptor watching them (watch `i + 1` is
/// `paths[i]`), or `None` when there are none.
pub fn place(paths: &[PathBuf]) -> io::Result<Option<OwnedFd>> {
    if paths.is_empty() {
        return Ok(None);
    }
    // SAFETY: inotify_init1 with documented flags; the descriptor is owned below.
    let fd = ffi::check(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) } as libc::c_long)? as RawFd;
    // SAFETY: just returned by the kernel.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    for p in paths {
        // The sandbox's own private tmpfs, freshly made: nothing there could be a link.
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(p, DECOY)?;
        let c = ffi::cstr(p)?;
        // SAFETY: valid descriptor and C string.
        ffi::check(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) }
            as libc::c_long)?;
    }
    Ok(Some(fd))
}

/// Reads pending inotify events and returns the decoys they name (each once).
pub fn opened(fd: RawFd, paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut buf = [0u8; 4096];
    let mut hit: Vec<PathBuf> = Vec::new();
    while let Ok(n) = ffi::read_some(fd, &mut buf) {
        if n == 0 {
            break;
        }
        let mut off = 0;
        while off + 16 <= n {
            let wd = i32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default());
            let mask = u32::from_ne_bytes(buf[off + 4..off + 8].try_into().unwrap_or_default());
            let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap_or_default()) as usize;
            // Only opens and reads; not the IN_UNMOUNT / IN_IGNORED that end every watch when
            // the sandbox's file systems go away.
            let touched = mask & (libc::IN_OPEN | libc::IN_ACCESS) != 0;
            if let Some(p) = usize::try_from(wd - 1).ok().filter(|_| touched).and_then(|i| paths.get(i))
                && !hit.contains(p)
            {
                hit.push(p.clone());
            }
            off += 16 + len;
        }
    }
    hit
}

//! Dropping every capability, so that even uid 0 in the sandbox (when Palisade runs as root)
//! has none, before and after `execve`.

use std::io;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn permitted_is_empty(header: &mut CapHeader) -> io::Result<bool> {
    let mut data = [CapData::default(); 2];
    header.version = CAPABILITY_VERSION_3;
    // SAFETY: header and two data words, as capget v3 requires.
    if unsafe { libc::syscall(libc::SYS_capget, header as *mut CapHeader, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data.iter().all(|d| d.permitted == 0 && d.effective == 0))
}

/// Clears the ambient set, empties the bounding set (so `execve` of a root-owned or
/// file-capability binary gains nothing), then clears the effective, permitted and
/// inheritable sets.
pub fn drop_all() -> io::Result<()> {
    // SAFETY: prctl with documented arguments.
    if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    for cap in 0..64 {
        // SAFETY: prctl with documented arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } != 1 {
            // Not in the bounding set (0), or past the last capability (EINVAL).
            continue;
        }
        // SAFETY: prctl with documented arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            // Without CAP_SETPCAP (already in someone's sandbox, say) the bounding set cannot
            // shrink; that is safe only if we hold no capability that could be passed on.
            if e.raw_os_error() == Some(libc::EPERM) && permitted_is_empty(&mut header)? {
                continue;
            }
            return Err(e);
        }
    }
    let data = [CapData::default(); 2];
    // SAFETY: header and two data words, as capset v3 requires.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

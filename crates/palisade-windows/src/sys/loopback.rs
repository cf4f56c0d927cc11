//! The machine's list of AppContainer packages exempt from loopback isolation
//! (`NetworkIsolationGetAppContainerConfig` / `NetworkIsolationSetAppContainerConfig`,
//! FirewallAPI.dll, Win32 docs): one list for the whole machine, replaced whole on each set,
//! persistent, and changed only by an administrator. The broker adds a run's package after
//! the run's filters are in place and removes it before they go; its callers are serialised
//! by the service (a read-modify-write of a shared list).

use std::io;
use std::ptr::null_mut;

use windows_sys::Win32::Security::{EqualSid, PSID, SID_AND_ATTRIBUTES};
use windows_sys::Win32::System::Memory::{GetProcessHeap, HeapFree};

use super::appcontainer::OwnedSid;
use super::handle::{SystemFunction, system_function, win32};

type Get = unsafe extern "system" fn(*mut u32, *mut *mut SID_AND_ATTRIBUTES) -> u32;
type Set = unsafe extern "system" fn(u32, *const SID_AND_ATTRIBUTES) -> u32;

fn api() -> io::Result<(Get, Set)> {
    let find = |name: &str| system_function("FirewallAPI.dll", name);
    type Any = SystemFunction;
    // SAFETY: the named functions, with their documented prototypes.
    unsafe {
        Ok((
            std::mem::transmute::<Any, Get>(find("NetworkIsolationGetAppContainerConfig")?),
            std::mem::transmute::<Any, Set>(find("NetworkIsolationSetAppContainerConfig")?),
        ))
    }
}

/// Adds (`on`) or removes the package SID `package` (`S-1-15-2-…`) from the exemption list,
/// keeping every other entry. Nothing is written when the list already says so.
///
/// # Errors
/// The functions are missing, the SID does not parse, or the system refuses (access denied
/// without administrator rights).
pub fn set_exempt(package: &str, on: bool) -> io::Result<()> {
    let (get, set) = api()?;
    let ours = OwnedSid::parse(package)?;
    let mut n = 0u32;
    let mut list: *mut SID_AND_ATTRIBUTES = null_mut();
    // SAFETY: out-pointers to locals.
    let code = unsafe { get(&mut n, &mut list) };
    win32(code, "reading the loopback exemptions")?;
    let entries: Vec<PSID> = if list.is_null() {
        Vec::new()
    } else {
        // SAFETY: the call returned `n` entries at `list`.
        unsafe { std::slice::from_raw_parts(list, n as usize) }.iter().map(|e| e.Sid).collect()
    };
    // SAFETY: valid SIDs (the system's and ours).
    let present = entries.iter().any(|s| unsafe { EqualSid(*s, ours.as_psid()) } != 0);
    let result = if present == on {
        Ok(())
    } else {
        let mut next: Vec<SID_AND_ATTRIBUTES> = entries
            .iter()
            // SAFETY: as above.
            .filter(|s| unsafe { EqualSid(**s, ours.as_psid()) } == 0)
            .map(|s| SID_AND_ATTRIBUTES { Sid: *s, Attributes: 0 })
            .collect();
        if on {
            next.push(SID_AND_ATTRIBUTES { Sid: ours.as_psid(), Attributes: 0 });
        }
        // SAFETY: `next` holds valid SIDs that live until the call returns.
        let code = unsafe { set(next.len() as u32, next.as_ptr()) };
        win32(code, "writing the loopback exemptions")
    };
    // The list and its SIDs are the caller's to free, from the process heap (the
    // function's documentation).
    // SAFETY: each pointer came from the call and is freed once.
    unsafe {
        let heap = GetProcessHeap();
        for s in &entries {
            HeapFree(heap, 0, *s as *const core::ffi::c_void);
        }
        if !list.is_null() {
            HeapFree(heap, 0, list as *const core::ffi::c_void);
        }
    }
    result
}

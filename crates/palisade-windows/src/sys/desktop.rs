//! The run's own desktop on the user's window station: the command's windows (and hooks,
//! and `SendInput`) cannot reach the user's ("Desktops", Win32 docs). The AppContainer is
//! granted access to it alone.

use std::io;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Security::Authorization::{
    EXPLICIT_ACCESS_W, GRANT_ACCESS, GetSecurityInfo, SE_WINDOW_OBJECT, SetEntriesInAclW, SetSecurityInfo,
    TRUSTEE_IS_SID, TRUSTEE_IS_UNKNOWN, TRUSTEE_W,
};
use windows_sys::Win32::Security::{ACL, DACL_SECURITY_INFORMATION, NO_INHERITANCE, PSECURITY_DESCRIPTOR, PSID};
use windows_sys::Win32::System::StationsAndDesktops::{CloseDesktop, CreateDesktopW, HDESK};

use super::handle::{last_error, wide, win32};

/// `GENERIC_ALL`, for Palisade's own handle.
const GENERIC_ALL: u32 = 0x1000_0000;
/// What the sandbox gets on its desktop: `DESKTOP_READOBJECTS`, `CREATEWINDOW`,
/// `CREATEMENU`, `ENUMERATE`, `WRITEOBJECTS` and `READ_CONTROL` (`0x200C7`); not
/// `HOOKCONTROL`, the journal rights, `SWITCHDESKTOP`, `WRITE_DAC` or `WRITE_OWNER`.
const SANDBOX_RIGHTS: u32 = 0x0002_00C7;

/// A desktop closed on drop.
#[derive(Debug)]
pub struct Desktop {
    handle: HDESK,
    /// `WinSta0\NAME`, for `STARTUPINFO.lpDesktop`.
    pub name: String,
}

impl Desktop {
    /// Creates desktop `name` on the process's window station, granting `sid` (the
    /// AppContainer) access to it.
    ///
    /// # Errors
    /// The system's error.
    pub fn new(name: &str, sid: PSID) -> io::Result<Desktop> {
        let w = wide(name);
        // SAFETY: a NUL-terminated name; default security; GENERIC_ALL for ourselves.
        let handle = unsafe { CreateDesktopW(w.as_ptr(), null(), null(), 0, GENERIC_ALL, null()) };
        if handle.is_null() {
            return Err(last_error("creating the run's desktop"));
        }
        let d = Desktop { handle, name: format!("WinSta0\\{name}") };
        let mut dacl: *mut ACL = null_mut();
        let mut sd: PSECURITY_DESCRIPTOR = null_mut();
        win32(
            // SAFETY: a valid desktop handle and out-pointers to locals; `sd` freed below.
            unsafe {
                GetSecurityInfo(
                    d.handle,
                    SE_WINDOW_OBJECT,
                    DACL_SECURITY_INFORMATION,
                    null_mut(),
                    null_mut(),
                    &mut dacl,
                    null_mut(),
                    &mut sd,
                )
            },
            "reading the desktop's ACL",
        )?;
        let ea = EXPLICIT_ACCESS_W {
            grfAccessPermissions: SANDBOX_RIGHTS,
            grfAccessMode: GRANT_ACCESS,
            grfInheritance: NO_INHERITANCE,
            Trustee: TRUSTEE_W {
                pMultipleTrustee: null_mut(),
                MultipleTrusteeOperation: 0,
                TrusteeForm: TRUSTEE_IS_SID,
                TrusteeType: TRUSTEE_IS_UNKNOWN,
                ptstrName: sid.cast(),
            },
        };
        let mut new: *mut ACL = null_mut();
        // SAFETY: one entry; the old ACL from GetSecurityInfo; `new` freed below.
        let r = unsafe { SetEntriesInAclW(1, &ea, dacl, &mut new) };
        // SAFETY: `sd` was allocated by GetSecurityInfo (LocalAlloc).
        unsafe { windows_sys::Win32::Foundation::LocalFree(sd) };
        win32(r, "granting the AppContainer its desktop")?;
        // SAFETY: a valid handle and the new ACL.
        let r = unsafe {
            SetSecurityInfo(d.handle, SE_WINDOW_OBJECT, DACL_SECURITY_INFORMATION, null_mut(), null_mut(), new, null())
        };
        // SAFETY: `new` was allocated by SetEntriesInAclW (LocalAlloc).
        unsafe { windows_sys::Win32::Foundation::LocalFree(new.cast()) };
        win32(r, "granting the AppContainer its desktop")?;
        Ok(d)
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        // SAFETY: created by CreateDesktopW, closed once.
        unsafe { CloseDesktop(self.handle) };
    }
}

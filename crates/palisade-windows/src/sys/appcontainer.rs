//! The AppContainer profile and the capability SIDs, through the system's own functions,
//! loaded from System32 at run time (so the probe can say when they are missing, and the
//! binary still starts where they are: Wine, old Windows).
//!
//! `CreateAppContainerProfile`, `DeriveAppContainerSidFromAppContainerName` and
//! `DeleteAppContainerProfile` (userenv.dll), `DeriveCapabilitySidsFromName` (kernelbase.dll):
//! Win32 docs, "AppContainer isolation" and the functions' pages.

use std::io;
use std::ptr::null_mut;

use windows_sys::Win32::Foundation::{HLOCAL, LocalFree};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{CopySid, FreeSid, GetLengthSid, PSID};
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LOAD_LIBRARY_SEARCH_SYSTEM32, LoadLibraryExW};
use windows_sys::core::{BOOL, HRESULT, PCWSTR};

use super::handle::wide;
use crate::sid::Sid;

type CreateProfile =
    unsafe extern "system" fn(PCWSTR, PCWSTR, PCWSTR, *const core::ffi::c_void, u32, *mut PSID) -> HRESULT;
type DeriveProfileSid = unsafe extern "system" fn(PCWSTR, *mut PSID) -> HRESULT;
type DeleteProfile = unsafe extern "system" fn(PCWSTR) -> HRESULT;
type DeriveCapability = unsafe extern "system" fn(PCWSTR, *mut *mut PSID, *mut u32, *mut *mut PSID, *mut u32) -> BOOL;

/// The functions, found in System32.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    create: CreateProfile,
    derive: DeriveProfileSid,
    delete: DeleteProfile,
    capability: DeriveCapability,
}

/// `HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS)`.
const ALREADY_EXISTS: HRESULT = 0x8007_00B7_u32 as HRESULT;

impl Api {
    /// Loads the functions from System32 only (never a DLL beside the program).
    ///
    /// # Errors
    /// Which function is missing, in words.
    pub fn load() -> Result<Api, String> {
        let find = |dll: &str, name: &str| -> Result<unsafe extern "system" fn() -> isize, String> {
            let w = wide(dll);
            // SAFETY: a NUL-terminated name; System32 only.
            let module = unsafe { LoadLibraryExW(w.as_ptr(), null_mut(), LOAD_LIBRARY_SEARCH_SYSTEM32) };
            if module.is_null() {
                return Err(format!("{dll} is not in System32"));
            }
            let cname = format!("{name}\0");
            // SAFETY: a loaded module and a NUL-terminated ANSI name.
            unsafe { GetProcAddress(module, cname.as_ptr()) }.ok_or_else(|| format!("{dll} has no {name}"))
        };
        // SAFETY: each pointer is the named function, whose signature is the type it is
        // transmuted to (the functions' documented prototypes).
        unsafe {
            Ok(Api {
                create: std::mem::transmute::<unsafe extern "system" fn() -> isize, CreateProfile>(find(
                    "userenv.dll",
                    "CreateAppContainerProfile",
                )?),
                derive: std::mem::transmute::<unsafe extern "system" fn() -> isize, DeriveProfileSid>(find(
                    "userenv.dll",
                    "DeriveAppContainerSidFromAppContainerName",
                )?),
                delete: std::mem::transmute::<unsafe extern "system" fn() -> isize, DeleteProfile>(find(
                    "userenv.dll",
                    "DeleteAppContainerProfile",
                )?),
                capability: std::mem::transmute::<unsafe extern "system" fn() -> isize, DeriveCapability>(find(
                    "kernelbase.dll",
                    "DeriveCapabilitySidsFromName",
                )?),
            })
        }
    }

    /// Creates the profile `name` (or finds it) and gives its SID.
    ///
    /// # Errors
    /// The HRESULT, in words.
    pub fn profile(&self, name: &str, display: &str) -> io::Result<OwnedSid> {
        let (n, d) = (wide(name), wide(display));
        let mut sid: PSID = null_mut();
        // SAFETY: NUL-terminated strings, no capabilities, an out-pointer to a local.
        let hr = unsafe { (self.create)(n.as_ptr(), d.as_ptr(), d.as_ptr(), std::ptr::null(), 0, &mut sid) };
        if hr == ALREADY_EXISTS {
            // SAFETY: as above.
            let hr = unsafe { (self.derive)(n.as_ptr(), &mut sid) };
            check(hr, "finding the AppContainer profile")?;
        } else {
            check(hr, "creating the AppContainer profile")?;
        }
        // SAFETY: `sid` came from the system and is freed with FreeSid, as documented.
        let owned = unsafe { OwnedSid::copy(sid) };
        // SAFETY: as above.
        unsafe { FreeSid(sid) };
        owned
    }

    /// Deletes the profile `name` (its folder and registry key).
    ///
    /// # Errors
    /// The HRESULT, in words.
    pub fn delete_profile(&self, name: &str) -> io::Result<()> {
        let n = wide(name);
        // SAFETY: a NUL-terminated name.
        check(unsafe { (self.delete)(n.as_ptr()) }, "deleting the AppContainer profile")
    }

    /// The capability SID of `name`, as the system derives it.
    ///
    /// # Errors
    /// The system's error.
    pub fn capability(&self, name: &str) -> io::Result<OwnedSid> {
        let n = wide(name);
        let (mut groups, mut ngroups, mut caps, mut ncaps) = (null_mut(), 0u32, null_mut(), 0u32);
        // SAFETY: a NUL-terminated name and out-pointers to locals.
        if unsafe { (self.capability)(n.as_ptr(), &mut groups, &mut ngroups, &mut caps, &mut ncaps) } == 0 {
            return Err(super::handle::last_error(&format!("deriving the capability SID of {name}")));
        }
        // SAFETY: the arrays and each SID in them were allocated by the system with
        // LocalAlloc and are freed so, as documented; the first capability SID is copied
        // out first.
        unsafe {
            let owned =
                if ncaps > 0 { OwnedSid::copy(*caps) } else { Err(io::Error::other("no capability SID returned")) };
            for i in 0..ngroups as usize {
                LocalFree(*groups.add(i) as HLOCAL);
            }
            for i in 0..ncaps as usize {
                LocalFree(*caps.add(i) as HLOCAL);
            }
            LocalFree(groups as HLOCAL);
            LocalFree(caps as HLOCAL);
            owned
        }
    }
}

fn check(hr: HRESULT, step: &str) -> io::Result<()> {
    if hr >= 0 { Ok(()) } else { Err(io::Error::other(format!("{step}: HRESULT {:#010x}", hr as u32))) }
}

/// A SID in memory of our own.
#[derive(Debug, Clone)]
pub struct OwnedSid(Vec<u8>);

impl OwnedSid {
    /// Copies the SID at `sid`.
    ///
    /// # Safety
    /// `sid` must point at a valid SID.
    pub unsafe fn copy(sid: PSID) -> io::Result<OwnedSid> {
        // SAFETY: the caller's contract.
        let len = unsafe { GetLengthSid(sid) };
        let mut buf = vec![0u8; len as usize];
        // SAFETY: `buf` has the SID's length.
        if unsafe { CopySid(len, buf.as_mut_ptr().cast(), sid) } == 0 {
            return Err(super::handle::last_error("copying a SID"));
        }
        Ok(OwnedSid(buf))
    }

    /// The SID written `text` (`S-1-5-12`).
    ///
    /// # Errors
    /// When Windows does not read it as a SID.
    pub fn parse(text: &str) -> io::Result<OwnedSid> {
        let w = wide(text);
        let mut sid: PSID = null_mut();
        // SAFETY: a NUL-terminated string and an out-pointer; the SID is LocalFree'd below.
        if unsafe { windows_sys::Win32::Security::Authorization::ConvertStringSidToSidW(w.as_ptr(), &mut sid) } == 0 {
            return Err(super::handle::last_error(&format!("reading the SID {text}")));
        }
        // SAFETY: a valid SID from the system.
        let owned = unsafe { OwnedSid::copy(sid) };
        // SAFETY: allocated by ConvertStringSidToSidW.
        unsafe { LocalFree(sid as HLOCAL) };
        owned
    }

    /// A pointer for the system's functions (valid while `self` lives).
    pub fn as_psid(&self) -> PSID {
        self.0.as_ptr() as PSID
    }

    /// Its string form.
    pub fn string(&self) -> Sid {
        let mut out: windows_sys::core::PWSTR = null_mut();
        // SAFETY: a valid SID; the string is freed with LocalFree, as documented.
        unsafe {
            if ConvertSidToStringSidW(self.as_psid(), &mut out) == 0 {
                return Sid(String::new());
            }
            let len = (0..).take_while(|&i| *out.add(i) != 0).count();
            let s = String::from_utf16_lossy(std::slice::from_raw_parts(out, len));
            LocalFree(out as HLOCAL);
            Sid(s)
        }
    }
}

impl Api {
    /// Whether System32's `dll` exports `name` (the probe's question for the OS sandbox
    /// API).
    pub fn has(dll: &str, name: &str) -> bool {
        let w = wide(dll);
        // SAFETY: a NUL-terminated name; System32 only.
        let module = unsafe { LoadLibraryExW(w.as_ptr(), null_mut(), LOAD_LIBRARY_SEARCH_SYSTEM32) };
        if module.is_null() {
            return false;
        }
        let cname = format!("{name}\0");
        // SAFETY: a loaded module and a NUL-terminated ANSI name.
        unsafe { GetProcAddress(module, cname.as_ptr()) }.is_some()
    }
}

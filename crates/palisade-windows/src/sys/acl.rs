//! ACL entries on files and folders, for the journal ([`crate::journal::Host`]): placed with
//! `SetEntriesInAclW` (which keeps the canonical order: deny before allow, explicit before
//! inherited) and `SetSecurityInfo` (which propagates an inheritable entry to what lies
//! beneath, once), removed by finding exactly the journaled tuple (type, flags, mask, SID)
//! among the object's own entries ("Access Control Lists", "SetEntriesInAclW", Win32 docs).
//! Every object is opened without following a link the sandbox could have planted
//! (`FILE_FLAG_OPEN_REPARSE_POINT`): an entry lands on the object at the path, never on
//! where a link leads.

use std::io;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND, LocalFree, WAIT_TIMEOUT};
use windows_sys::Win32::Security::Authorization::*;
use windows_sys::Win32::Security::{
    ACE_HEADER, ACL, DACL_SECURITY_INFORMATION, DeleteAce, EqualSid, GetAce, INHERITED_ACE,
    InitializeSecurityDescriptor, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES, SECURITY_DESCRIPTOR,
    SetSecurityDescriptorDacl,
};
use windows_sys::Win32::Storage::FileSystem::*;
use windows_sys::Win32::System::Threading::{OpenProcess, PROCESS_SYNCHRONIZE, WaitForSingleObject};

use palisade_policy::winpath::WinPath;

use super::handle::{Handle, last_error, wide, win32};
use crate::journal::{Entry, Host};
use crate::plan::Made;

/// The host's ACLs and files, as the journal changes them.
#[derive(Debug, Default)]
pub struct Acls;

/// Opens `path` itself (a link is not followed) for reading and changing its DACL; `None`
/// when nothing is there.
fn open(path: &str) -> io::Result<Option<Handle>> {
    let w = wide(path);
    // SAFETY: a NUL-terminated path; no security attributes; the handle is owned below.
    let h = unsafe {
        CreateFileW(
            w.as_ptr(),
            READ_CONTROL | WRITE_DAC,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            null(),
            OPEN_EXISTING,
            FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT,
            null_mut(),
        )
    };
    if h == windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE {
        let e = io::Error::last_os_error();
        return match e.raw_os_error().map(|c| c as u32) {
            Some(ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND) => Ok(None),
            _ => Err(io::Error::new(e.kind(), format!("opening {path}: {e}"))),
        };
    }
    let h = Handle(h);
    // Only the last component is opened without following a link: a junction or link on
    // the way (planted in a writable folder) would put the entry somewhere else. The handle's
    // final path must be the path asked for.
    let mut buf = vec![0u16; 1024];
    // SAFETY: a valid handle and a buffer of the given length.
    let n =
        unsafe { GetFinalPathNameByHandleW(h.0, buf.as_mut_ptr(), buf.len() as u32, FILE_NAME_NORMALIZED) } as usize;
    if n == 0 || n >= buf.len() {
        return Err(last_error(&format!("reading the final path of {path}")));
    }
    let fin = String::from_utf16_lossy(&buf[..n]);
    let same = match (WinPath::parse(&fin), WinPath::parse(path)) {
        (Ok(a), Ok(b)) => a.key() == b.key(),
        _ => false,
    };
    if !same {
        return Err(io::Error::other(format!(
            "{path} leads to {fin} through a junction or link on the way: refusing to change its ACL (use the real path)"
        )));
    }
    Ok(Some(h))
}

/// The object's DACL (valid while the returned descriptor lives).
struct Dacl {
    acl: *mut ACL,
    sd: PSECURITY_DESCRIPTOR,
}

impl Drop for Dacl {
    fn drop(&mut self) {
        // SAFETY: allocated by GetSecurityInfo with LocalAlloc.
        unsafe { LocalFree(self.sd) };
    }
}

fn dacl(h: &Handle, path: &str) -> io::Result<Dacl> {
    let mut d = Dacl { acl: null_mut(), sd: null_mut() };
    // SAFETY: a valid handle and out-pointers into `d`.
    let r = unsafe {
        GetSecurityInfo(
            h.0,
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            null_mut(),
            null_mut(),
            &mut d.acl,
            null_mut(),
            &mut d.sd,
        )
    };
    win32(r, &format!("reading the ACL of {path}"))?;
    Ok(d)
}

struct Sid(PSID);

impl Sid {
    fn parse(s: &str) -> io::Result<Sid> {
        let w = wide(s);
        let mut sid = null_mut();
        // SAFETY: a NUL-terminated string; the SID is freed with LocalFree on drop.
        if unsafe { ConvertStringSidToSidW(w.as_ptr(), &mut sid) } == 0 {
            return Err(last_error(&format!("reading the SID {s}")));
        }
        Ok(Sid(sid))
    }
}

impl Drop for Sid {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSidToSidW.
        unsafe { LocalFree(self.0) };
    }
}

fn set(h: &Handle, acl: *const ACL, path: &str) -> io::Result<()> {
    // SAFETY: a valid handle and ACL.
    let r =
        unsafe { SetSecurityInfo(h.0, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, null_mut(), null_mut(), acl, null()) };
    win32(r, &format!("writing the ACL of {path}"))
}

impl Host for Acls {
    fn apply(&mut self, e: &Entry) -> io::Result<bool> {
        let Some(h) = open(&e.path)? else { return Ok(false) };
        let old = dacl(&h, &e.path)?;
        let sid = Sid::parse(&e.sid)?;
        let ea = explicit(e, &sid, if e.kind == "deny" { DENY_ACCESS } else { GRANT_ACCESS });
        let mut new: *mut ACL = null_mut();
        // SAFETY: one entry, the object's ACL; `new` freed below.
        let r = unsafe { SetEntriesInAclW(1, &ea, old.acl, &mut new) };
        win32(r, &format!("adding an entry to the ACL of {}", e.path))?;
        let r = set(&h, new, &e.path);
        // SAFETY: allocated by SetEntriesInAclW.
        unsafe { LocalFree(new.cast()) };
        r.map(|()| true)
    }

    fn present(&mut self, e: &Entry) -> io::Result<Option<bool>> {
        let Some(h) = open(&e.path)? else { return Ok(None) };
        let d = dacl(&h, &e.path)?;
        let sid = Sid::parse(&e.sid)?;
        Ok(Some(!matching(&d, &sid, e).is_empty()))
    }

    fn revoke(&mut self, e: &Entry) -> io::Result<()> {
        let Some(h) = open(&e.path)? else { return Ok(()) };
        let d = dacl(&h, &e.path)?;
        let sid = Sid::parse(&e.sid)?;
        let found = matching(&d, &sid, e);
        if found.is_empty() {
            return Ok(());
        }
        for i in found.into_iter().rev() {
            // SAFETY: `i` indexes an entry of the ACL read above, which `d` keeps alive;
            // deleting from the highest index down keeps the others' indexes valid.
            unsafe { DeleteAce(d.acl, i) };
        }
        set(&h, d.acl, &e.path)
    }

    fn make(&mut self, m: &Made, deny: Option<&Entry>) -> io::Result<()> {
        let fail = |e: io::Error| io::Error::new(e.kind(), format!("making the placeholder {}: {e}", m.path));
        // The deny entry is in the security descriptor the object is created with; Windows
        // adds the parent's inheritable entries to it (the DACL is not protected), so the
        // object never exists without it.
        let sid = deny.map(|d| Sid::parse(&d.sid)).transpose()?;
        let mut acl: *mut ACL = null_mut();
        if let (Some(d), Some(sid)) = (deny, &sid) {
            let ea = explicit(d, sid, DENY_ACCESS);
            // SAFETY: one entry, no old ACL; `acl` freed below.
            win32(unsafe { SetEntriesInAclW(1, &ea, null(), &mut acl) }, "building a placeholder's ACL")?;
        }
        // SAFETY: an all-zero SECURITY_DESCRIPTOR is initialised by the call below.
        let mut sd: SECURITY_DESCRIPTOR = unsafe { std::mem::zeroed() };
        let psd: PSECURITY_DESCRIPTOR = (&mut sd as *mut SECURITY_DESCRIPTOR).cast();
        // SAFETY: `sd` lives for the calls; `acl` (or null: no DACL given) lives until freed
        // after the object is created.
        let ok = unsafe {
            InitializeSecurityDescriptor(psd, windows_sys::Win32::System::SystemServices::SECURITY_DESCRIPTOR_REVISION)
                != 0
                && (acl.is_null() || SetSecurityDescriptorDacl(psd, 1, acl, 0) != 0)
        };
        let sa = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: psd,
            bInheritHandle: 0,
        };
        let w = wide(&m.path);
        let result = if !ok {
            Err(last_error("preparing a placeholder's security descriptor"))
        } else {
            match &m.contents {
                None => {
                    // SAFETY: a NUL-terminated path and the attributes above.
                    let made = unsafe { CreateDirectoryW(w.as_ptr(), &sa) };
                    if made == 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
                }
                Some(c) => {
                    // SAFETY: as above; CREATE_NEW fails on anything already there.
                    let h = unsafe {
                        CreateFileW(
                            w.as_ptr(),
                            FILE_GENERIC_WRITE,
                            0,
                            &sa,
                            CREATE_NEW,
                            FILE_ATTRIBUTE_NORMAL,
                            null_mut(),
                        )
                    };
                    if h == windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE {
                        Err(io::Error::last_os_error())
                    } else {
                        let h = Handle(h);
                        let mut written = 0u32;
                        // SAFETY: a valid handle and a buffer of the given length.
                        if unsafe { WriteFile(h.0, c.as_ptr(), c.len() as u32, &mut written, null_mut()) } == 0 {
                            Err(io::Error::last_os_error())
                        } else {
                            Ok(())
                        }
                    }
                }
            }
        };
        if !acl.is_null() {
            // SAFETY: allocated by SetEntriesInAclW.
            unsafe { LocalFree(acl.cast()) };
        }
        result.map_err(fail)
    }

    fn remove(&mut self, path: &str) -> io::Result<()> {
        let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
        if meta.is_dir() {
            // Only while empty: anything else there is not ours to remove.
            let _ = std::fs::remove_dir(path);
        } else if meta.is_file() && meta.len() <= 64 {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    fn alive(&self, pid: u32) -> bool {
        // SAFETY: a query-only open; the handle is closed by `Handle`.
        let h = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
        if h.is_null() {
            return false;
        }
        let h = Handle(h);
        // SAFETY: a valid process handle; zero wait.
        unsafe { WaitForSingleObject(h.0, 0) == WAIT_TIMEOUT }
    }
}

/// Whether process `pid` runs (for the plumbing tests).
#[cfg(test)]
pub fn alive_for_tests(pid: u32) -> bool {
    Acls.alive(pid)
}

/// The indexes of the object's own (not inherited) entries of `e`'s type, trustee and
/// inheritance whose mask holds `e`'s (`SetEntriesInAclW` merges a new entry into an
/// existing one for the same trustee; every entry for Palisade's capabilities is Palisade's).
fn matching(d: &Dacl, sid: &Sid, e: &Entry) -> Vec<u32> {
    let mut found = Vec::new();
    if d.acl.is_null() {
        return found;
    }
    let want_type: u8 = if e.kind == "deny" { 1 } else { 0 }; // ACCESS_DENIED_ACE_TYPE, ACCESS_ALLOWED_ACE_TYPE
    // SAFETY: the ACL is valid while `d` lives; an allowed or denied ACE is an ACE_HEADER, a
    // 32-bit mask and the SID (the ACCESS_ALLOWED_ACE layout).
    unsafe {
        for i in 0..u32::from((*d.acl).AceCount) {
            let mut ace: *mut core::ffi::c_void = null_mut();
            if GetAce(d.acl, i, &mut ace) == 0 {
                continue;
            }
            let header = &*(ace as *const ACE_HEADER);
            if header.AceType != want_type || u32::from(header.AceFlags) & INHERITED_ACE != 0 {
                continue;
            }
            let mask = *(ace.cast::<u8>().add(4) as *const u32);
            let ace_sid = ace.cast::<u8>().add(8) as PSID;
            if mask & e.mask == e.mask && (u32::from(header.AceFlags) & 0x3) == e.flags && EqualSid(ace_sid, sid.0) != 0
            {
                found.push(i);
            }
        }
    }
    found
}

/// The `EXPLICIT_ACCESS_W` for `e` (valid while `sid` lives).
fn explicit(e: &Entry, sid: &Sid, mode: ACCESS_MODE) -> EXPLICIT_ACCESS_W {
    EXPLICIT_ACCESS_W {
        grfAccessPermissions: e.mask,
        grfAccessMode: mode,
        grfInheritance: e.flags,
        Trustee: TRUSTEE_W {
            pMultipleTrustee: null_mut(),
            MultipleTrusteeOperation: 0,
            TrusteeForm: TRUSTEE_IS_SID,
            TrusteeType: TRUSTEE_IS_UNKNOWN,
            ptstrName: sid.0.cast(),
        },
    }
}

//! The restricted-token tier's token: the user's own token with every privilege but
//! `SeChangeNotifyPrivilege` removed and `WRITE_RESTRICTED`, whose restricting SIDs are the
//! workspace's capability and a SID of the run's own. A write is then allowed only where the
//! object's DACL grants it both to the user and to a restricting SID: the workspace and the
//! run's TEMP (Palisade's grants), objects the run creates itself (the token's default DACL
//! names the user, SYSTEM and the run's SID: not `RESTRICTED`, which every other restricted
//! process holds). Reads are checked as the user's ("Restricted Tokens",
//! "CreateRestrictedToken", Win32 docs).

use std::io;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::{HANDLE, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    EXPLICIT_ACCESS_W, SET_ACCESS, SetEntriesInAclW, TRUSTEE_IS_SID, TRUSTEE_IS_UNKNOWN, TRUSTEE_W,
};
use windows_sys::Win32::Security::{
    ACL, CreateRestrictedToken, DISABLE_MAX_PRIVILEGE, GetTokenInformation, NO_INHERITANCE, PSID, SID_AND_ATTRIBUTES,
    SetTokenInformation, TOKEN_ADJUST_DEFAULT, TOKEN_ASSIGN_PRIMARY, TOKEN_DEFAULT_DACL, TOKEN_DUPLICATE, TOKEN_QUERY,
    TOKEN_USER, TokenDefaultDacl, TokenUser, WRITE_RESTRICTED,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use super::appcontainer::OwnedSid;
use super::handle::{Handle, last_error, win32};

/// `GENERIC_ALL`.
const GENERIC_ALL: u32 = 0x1000_0000;

/// The write-restricted token for `capability` and the run's own SID `run` (see the module).
///
/// # Errors
/// The system's error, naming the step.
pub fn restricted(capability: &OwnedSid, run: &OwnedSid) -> io::Result<Handle> {
    let mut own: HANDLE = null_mut();
    // SAFETY: the current process's pseudo-handle and an out-pointer to a local.
    if unsafe {
        OpenProcessToken(
            GetCurrentProcess(),
            TOKEN_DUPLICATE | TOKEN_QUERY | TOKEN_ASSIGN_PRIMARY | TOKEN_ADJUST_DEFAULT,
            &mut own,
        )
    } == 0
    {
        return Err(last_error("opening Palisade's own token"));
    }
    let own = Handle(own);
    let system = OwnedSid::parse("S-1-5-18")?;
    let sids = [capability, run];
    let list: Vec<SID_AND_ATTRIBUTES> =
        sids.iter().map(|s| SID_AND_ATTRIBUTES { Sid: s.as_psid(), Attributes: 0 }).collect();
    let mut token: HANDLE = null_mut();
    // SAFETY: a valid token, no SIDs disabled, no privileges named (DISABLE_MAX_PRIVILEGE
    // removes them all), the restricting SIDs alive for the call, an out-pointer.
    if unsafe {
        CreateRestrictedToken(
            own.0,
            DISABLE_MAX_PRIVILEGE | WRITE_RESTRICTED,
            0,
            null(),
            0,
            null(),
            list.len() as u32,
            list.as_ptr(),
            &mut token,
        )
    } == 0
    {
        return Err(last_error("creating the restricted token"));
    }
    let token = Handle(token);

    // The user's SID, for the default DACL.
    let mut buf = vec![0u8; 256];
    let mut len = 0u32;
    // SAFETY: a buffer of the given length, aligned for TOKEN_USER by the allocator (u8
    // vectors of this size are 8-aligned in practice; read through read_unaligned below).
    if unsafe { GetTokenInformation(own.0, TokenUser, buf.as_mut_ptr().cast(), buf.len() as u32, &mut len) } == 0 {
        return Err(last_error("reading Palisade's own user"));
    }
    // SAFETY: GetTokenInformation wrote a TOKEN_USER at the start of `buf`.
    let user: TOKEN_USER = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    let user_sid: PSID = user.User.Sid;

    let trustees: [PSID; 3] = [user_sid, system.as_psid(), run.as_psid()];
    let entries: Vec<EXPLICIT_ACCESS_W> = trustees
        .iter()
        .map(|sid| EXPLICIT_ACCESS_W {
            grfAccessPermissions: GENERIC_ALL,
            grfAccessMode: SET_ACCESS,
            grfInheritance: NO_INHERITANCE,
            Trustee: TRUSTEE_W {
                pMultipleTrustee: null_mut(),
                MultipleTrusteeOperation: 0,
                TrusteeForm: TRUSTEE_IS_SID,
                TrusteeType: TRUSTEE_IS_UNKNOWN,
                ptstrName: (*sid).cast(),
            },
        })
        .collect();
    let mut acl: *mut ACL = null_mut();
    // SAFETY: the entries (and the SIDs they point at, in `buf` and the owned SIDs) live for
    // the call; no old ACL; `acl` freed below.
    let r = unsafe { SetEntriesInAclW(entries.len() as u32, entries.as_ptr(), null(), &mut acl) };
    win32(r, "building the default DACL")?;
    let dacl = TOKEN_DEFAULT_DACL { DefaultDacl: acl };
    // SAFETY: a valid token opened with TOKEN_ADJUST_DEFAULT (inherited from `own`'s
    // rights by CreateRestrictedToken) and the structure of its size.
    let ok = unsafe {
        SetTokenInformation(
            token.0,
            TokenDefaultDacl,
            (&dacl as *const TOKEN_DEFAULT_DACL).cast(),
            std::mem::size_of::<TOKEN_DEFAULT_DACL>() as u32,
        )
    };
    // SAFETY: allocated by SetEntriesInAclW.
    unsafe { LocalFree(acl.cast()) };
    if ok == 0 {
        return Err(last_error("setting the restricted token's default DACL"));
    }
    Ok(token)
}

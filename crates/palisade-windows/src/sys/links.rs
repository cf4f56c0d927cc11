//! A file's identity on its volume and its number of names, for `palisade check`'s scan of
//! files hard-linked into a workspace from outside it (`std`'s `MetadataExt` keeps
//! `number_of_links` and `file_index` unstable).
//!
//! Source: `GetFileInformationByHandle` and `BY_HANDLE_FILE_INFORMATION` (Win32 docs): the
//! volume serial number and the 64-bit file index identify a file on NTFS while it is open;
//! `nNumberOfLinks` counts its names.

use std::io;
use std::path::Path;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, CreateFileW, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT,
    FILE_READ_ATTRIBUTES, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, GetFileInformationByHandle,
    OPEN_EXISTING,
};

use super::handle::{Handle, last_error};

/// Which file a name leads to, and how many names that file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// The volume's serial number.
    pub volume: u32,
    /// The file's index on that volume (`nFileIndexHigh:nFileIndexLow`).
    pub index: u64,
    /// Its hard links (names), this one included.
    pub links: u32,
}

/// The identity of the file at `path`, the last component not followed if it is a link or
/// junction. Opens with `FILE_READ_ATTRIBUTES` only (no sharing conflict with a writer).
///
/// # Errors
/// The path cannot be opened or queried (the system error, with the path).
pub fn file_identity(path: &Path) -> io::Result<FileIdentity> {
    use std::os::windows::ffi::OsStrExt;
    let text = path.display();
    let w: Vec<u16> = path.as_os_str().encode_wide().chain(std::iter::once(0)).collect();
    // SAFETY: a NUL-terminated path; no security attributes; the handle is owned below.
    let h = unsafe {
        CreateFileW(
            w.as_ptr(),
            FILE_READ_ATTRIBUTES,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            null(),
            OPEN_EXISTING,
            FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT,
            null_mut(),
        )
    };
    let h = Handle::checked(h, &format!("opening {text}"))?;
    // SAFETY: a plain-data structure the call fills in.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: a valid handle and a structure of the right type.
    if unsafe { GetFileInformationByHandle(h.0, &mut info) } == 0 {
        return Err(last_error(&format!("reading the file information of {text}")));
    }
    Ok(FileIdentity {
        volume: info.dwVolumeSerialNumber,
        index: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        links: info.nNumberOfLinks,
    })
}

//! The broker's records, under its service key in `HKEY_LOCAL_MACHINE`
//! (`SYSTEM\CurrentControlSet\Services\PalisadeBroker\Parameters`), which only SYSTEM and
//! administrators can change: never in `%ProgramData%`, whose folders any user may create
//! first or fill with links. A value is replaced whole in one call (`RegSetKeyValueW`), so a
//! crash never leaves half a record.

use std::io;
use std::ptr::null_mut;

use windows_sys::Win32::System::Registry::{
    HKEY_LOCAL_MACHINE, REG_MULTI_SZ, REG_SZ, RRF_RT_REG_MULTI_SZ, RegGetValueW, RegSetKeyValueW,
};

use super::handle::{wide, win32};

/// The service's parameters key.
pub const PARAMETERS: &str = r"SYSTEM\CurrentControlSet\Services\PalisadeBroker\Parameters";

/// The strings of the `REG_MULTI_SZ` value `name` under [`PARAMETERS`]; none when the value
/// or the key does not exist.
///
/// # Errors
/// The value cannot be read (another type, access denied).
pub fn read_list(name: &str) -> io::Result<Vec<String>> {
    let (key, value) = (wide(PARAMETERS), wide(name));
    let mut len = 0u32;
    // SAFETY: NUL-terminated names; a size query.
    let code = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_MULTI_SZ,
            null_mut(),
            null_mut(),
            &mut len,
        )
    };
    if code == windows_sys::Win32::Foundation::ERROR_FILE_NOT_FOUND {
        return Ok(Vec::new());
    }
    win32(code, &format!("reading {PARAMETERS}\\{name}"))?;
    let mut buf = vec![0u16; len as usize / 2 + 2];
    let mut len = (buf.len() * 2) as u32;
    // SAFETY: as above, with a buffer of `len` bytes.
    let code = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_MULTI_SZ,
            null_mut(),
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    win32(code, &format!("reading {PARAMETERS}\\{name}"))?;
    buf.truncate(len as usize / 2);
    Ok(buf.split(|c| *c == 0).filter(|s| !s.is_empty()).map(String::from_utf16_lossy).collect())
}

/// Replaces the `REG_MULTI_SZ` value `name` under [`PARAMETERS`] (made when missing).
///
/// # Errors
/// The system refuses (not SYSTEM or an administrator).
pub fn write_list(name: &str, items: &[String]) -> io::Result<()> {
    let mut data: Vec<u16> = Vec::new();
    for i in items {
        data.extend(i.encode_utf16());
        data.push(0);
    }
    data.push(0);
    set(name, REG_MULTI_SZ, &data)
}

/// Replaces the `REG_SZ` value `name` under [`PARAMETERS`] (made when missing).
///
/// # Errors
/// As [`write_list`].
pub fn write_text(name: &str, text: &str) -> io::Result<()> {
    set(name, REG_SZ, &wide(text))
}

fn set(name: &str, kind: u32, data: &[u16]) -> io::Result<()> {
    let (key, value) = (wide(PARAMETERS), wide(name));
    // SAFETY: NUL-terminated names; data of the given byte length.
    let code = unsafe {
        RegSetKeyValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            kind,
            data.as_ptr().cast(),
            (data.len() * 2) as u32,
        )
    };
    win32(code, &format!("writing {PARAMETERS}\\{name}"))
}

/// The names (monikers) of this user's AppContainer profiles: the `Moniker` value of each
/// key under `HKCU\Software\Classes\Local Settings\Software\Microsoft\Windows\
/// CurrentVersion\AppContainer\Mappings` (one per package SID). Empty when unreadable.
pub fn app_container_monikers() -> Vec<String> {
    use windows_sys::Win32::System::Registry::{
        HKEY, HKEY_CURRENT_USER, KEY_READ, RRF_RT_REG_SZ, RegCloseKey, RegEnumKeyExW, RegOpenKeyExW,
    };
    let path = wide(r"Software\Classes\Local Settings\Software\Microsoft\Windows\CurrentVersion\AppContainer\Mappings");
    let mut key: HKEY = null_mut();
    // SAFETY: a predefined key, a NUL-terminated path, an out-pointer.
    if unsafe { RegOpenKeyExW(HKEY_CURRENT_USER, path.as_ptr(), 0, KEY_READ, &mut key) } != 0 {
        return Vec::new();
    }
    let moniker = wide("Moniker");
    let mut out = Vec::new();
    for index in 0.. {
        let mut name = [0u16; 256];
        let mut len = name.len() as u32;
        // SAFETY: an open key; a buffer of `len` units; the other outputs unused.
        let code = unsafe {
            RegEnumKeyExW(key, index, name.as_mut_ptr(), &mut len, null_mut(), null_mut(), null_mut(), null_mut())
        };
        if code != 0 {
            break;
        }
        name[len as usize] = 0;
        let mut value = [0u16; 256];
        let mut size = (value.len() * 2) as u32;
        // SAFETY: the open key, the subkey's NUL-terminated name, a buffer of `size` bytes.
        let code = unsafe {
            RegGetValueW(
                key,
                name.as_ptr(),
                moniker.as_ptr(),
                RRF_RT_REG_SZ,
                null_mut(),
                value.as_mut_ptr().cast(),
                &mut size,
            )
        };
        if code == 0 {
            let units = (size as usize / 2).saturating_sub(1);
            out.push(String::from_utf16_lossy(&value[..units.min(value.len())]));
        }
    }
    // SAFETY: opened above.
    unsafe { RegCloseKey(key) };
    out
}

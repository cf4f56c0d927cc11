//! Owned handles, wide strings, the system's error, functions loaded from System32, a
//! pipe's state and random values, shared by the `sys` modules.

use std::io;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE};

/// A kernel handle closed on drop.
#[derive(Debug)]
pub struct Handle(pub HANDLE);

// SAFETY: a kernel handle is a process-wide index, usable from any thread; the objects used
// here (jobs, processes, threads, completion ports) are thread-safe by the Win32 contract.
unsafe impl Send for Handle {}
// SAFETY: as above; shared use only calls thread-safe functions on it.
unsafe impl Sync for Handle {}

impl Handle {
    /// `h`, or the system's error for `step` when it is null or `INVALID_HANDLE_VALUE`.
    pub fn checked(h: HANDLE, step: &str) -> io::Result<Handle> {
        if h.is_null() || h == INVALID_HANDLE_VALUE { Err(last_error(step)) } else { Ok(Handle(h)) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is owned by this value and closed once.
        unsafe { CloseHandle(self.0) };
    }
}

/// `s` in UTF-16 with a terminating NUL.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The thread's last error, with the step that failed.
pub fn last_error(step: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{step}: {e}"))
}

/// A `WIN32_ERROR` return value as an error, with the step.
pub fn win32(code: u32, step: &str) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        let e = io::Error::from_raw_os_error(code as i32);
        Err(io::Error::new(e.kind(), format!("{step}: {e}")))
    }
}

/// A function's address, untyped: transmuted by the caller to its documented prototype.
pub type SystemFunction = unsafe extern "system" fn() -> isize;

/// The function `name` of System32's `dll` (never a DLL beside the program), loaded at run
/// time so the binary starts where it is missing (Wine, older Windows).
///
/// # Errors
/// The DLL is not in System32, or it has no such function, in words.
pub fn system_function(dll: &str, name: &str) -> io::Result<SystemFunction> {
    use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LOAD_LIBRARY_SEARCH_SYSTEM32, LoadLibraryExW};
    let w = wide(dll);
    // SAFETY: a NUL-terminated name; System32 only.
    let module = unsafe { LoadLibraryExW(w.as_ptr(), std::ptr::null_mut(), LOAD_LIBRARY_SEARCH_SYSTEM32) };
    if module.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{dll} is not in System32")));
    }
    let c = format!("{name}\0");
    // SAFETY: a loaded module and a NUL-terminated ANSI name.
    unsafe { GetProcAddress(module, c.as_ptr()) }
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{dll} has no {name}")))
}

/// The bytes waiting in the pipe `h` (`PeekNamedPipe`, which does not block); `None` once the
/// other end has closed (or `h` is no pipe).
pub fn pipe_waiting(h: HANDLE) -> Option<u32> {
    let mut avail = 0u32;
    // SAFETY: no buffer is read, only the count, into a local.
    let ok = unsafe {
        windows_sys::Win32::System::Pipes::PeekNamedPipe(
            h,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            &mut avail,
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(avail)
}

/// 128 bits nobody can predict: each `RandomState` is seeded from the system's random source
/// (and differs from every other this process makes).
pub fn random_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut out = 0u128;
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        out = (out << 64) | u128::from(h.finish());
    }
    out
}

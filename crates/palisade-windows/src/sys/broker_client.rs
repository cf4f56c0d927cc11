//! A run's side of the broker: ask for the run's filters, hold them while the connection is
//! open ([`Lease`]), let them go by closing it (also when the supervisor dies).

use std::io;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::{GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, OPEN_EXISTING, ReadFile, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT, WriteFile,
};

use super::handle::{Handle, wide};
use crate::broker::{self, Reply, Request};

/// The run's filters and exemption, in place while this lives.
#[derive(Debug)]
pub struct Lease {
    _pipe: Handle,
}

/// Asks the broker for the filters of the run whose profile is `profile`, with the gateway
/// listening on `127.0.0.1:http` and `:socks` (in this process).
///
/// # Errors
/// No broker (`palisade setup` not run), the broker's refusal, or a broken exchange, in words.
pub fn open(profile: &str, http: u16, socks: u16) -> Result<Lease, String> {
    let name = wide(broker::PIPE);
    // SAFETY: a NUL-terminated name; the broker may identify this process but not act as it
    // (SECURITY_IDENTIFICATION); the handle is owned below.
    let h = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            null(),
            OPEN_EXISTING,
            SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        let e = io::Error::last_os_error();
        return Err(format!(
            "Palisade's broker service does not answer on {} ({e}); an administrator runs `palisade setup` once to install it",
            broker::PIPE
        ));
    }
    let pipe = Handle(h);
    let request = Request::Open { version: broker::VERSION, profile: profile.to_owned(), http, socks };
    let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let mut written = 0u32;
    // SAFETY: a valid pipe; a buffer of the given length.
    if unsafe { WriteFile(pipe.0, line.as_ptr(), line.len() as u32, &mut written, null_mut()) } == 0 {
        return Err(format!("writing to the broker: {}", io::Error::last_os_error()));
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.contains(&b'\n') && reply.len() < 64 * 1024 {
        let mut got = 0u32;
        // SAFETY: a valid pipe; a buffer of the given length.
        if unsafe { ReadFile(pipe.0, buf.as_mut_ptr(), buf.len() as u32, &mut got, null_mut()) } == 0 || got == 0 {
            return Err(format!("the broker closed the pipe without an answer: {}", io::Error::last_os_error()));
        }
        reply.extend_from_slice(&buf[..got as usize]);
    }
    let end = reply.iter().position(|b| *b == b'\n').unwrap_or(reply.len());
    match serde_json::from_slice::<Reply>(&reply[..end]) {
        Ok(Reply::Opened { .. }) => Ok(Lease { _pipe: pipe }),
        Ok(Reply::Refused { reason }) => Err(format!("the broker refused the run's network: {reason}")),
        Err(e) => Err(format!("the broker's answer is not one Palisade knows: {e}")),
    }
}

/// Whether the broker's pipe exists (`WaitNamedPipeW` with a 1 ms wait: it takes no instance
/// of the pipe, unlike opening it).
pub fn available() -> bool {
    let name = wide(broker::PIPE);
    // SAFETY: a NUL-terminated name.
    if unsafe { windows_sys::Win32::System::Pipes::WaitNamedPipeW(name.as_ptr(), 1) } != 0 {
        return true;
    }
    // Busy (every instance taken, or the wait too short) still means a broker runs.
    io::Error::last_os_error().raw_os_error() == Some(windows_sys::Win32::Foundation::ERROR_SEM_TIMEOUT as i32)
}

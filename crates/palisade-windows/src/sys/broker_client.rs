//! A run's side of the broker: ask for the run's filters, hold them while the connection is
//! open ([`Lease`]), let them go by closing it (also when the supervisor dies). The pipe must
//! be served by the `PalisadeBroker` service's own process; a lease whose pipe breaks during
//! the run (the service died, and with it the filters) ends the run.

use std::io;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_GENERIC_READ, FILE_WRITE_DATA, OPEN_EXISTING, ReadFile, SECURITY_IDENTIFICATION,
    SECURITY_SQOS_PRESENT, WriteFile,
};

use super::handle::{Handle, pipe_waiting, wide};
use crate::broker::{self, Reply, Request};

/// The run's filters and exemption, in place while this lives.
#[derive(Debug)]
pub struct Lease {
    pipe: std::sync::Arc<Handle>,
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Lease {
    /// Whether the lease's pipe is still open (the broker still holds the run's filters).
    pub fn alive(&self) -> bool {
        pipe_waiting(self.pipe.0).is_some()
    }

    /// Ends `job` if the lease's pipe breaks before the lease is dropped: the broker's
    /// process ended, and with it the run's filters. Once broken, the job is ended at every
    /// look (every 200 ms) until the lease is dropped, so a process started after the first
    /// look ends too.
    pub fn watch(&self, job: std::sync::Arc<super::job::Job>) {
        use std::sync::atomic::Ordering;
        let (pipe, released) = (std::sync::Arc::clone(&self.pipe), std::sync::Arc::clone(&self.released));
        let _ = std::thread::Builder::new().name("palisade-lease".into()).spawn(move || {
            let mut said = false;
            while !released.load(Ordering::SeqCst) {
                // The pipe handle lives while this thread holds its Arc.
                let open = pipe_waiting(pipe.0).is_some();
                if !open && !released.load(Ordering::SeqCst) {
                    if !said {
                        eprintln!(
                            "palisade: the broker service ended during the run, and with it the run's network filters: the run is ended"
                        );
                        said = true;
                    }
                    job.terminate(137);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Asks the broker for the filters of the run whose profile is `profile`, with the gateway
/// listening on `127.0.0.1:http` and `:socks` (in this process).
///
/// # Errors
/// No broker (`palisade setup` not run), the broker's refusal, or a broken exchange, in words.
pub fn open(profile: &str, http: u16, socks: u16) -> Result<Lease, String> {
    open_served_by(profile, http, socks, service_process())
}

/// [`open`], with the process the pipe must be served by (`None`: no broker runs).
///
/// # Errors
/// As [`open`].
pub fn open_served_by(profile: &str, http: u16, socks: u16, expected: Option<u32>) -> Result<Lease, String> {
    let name = wide(broker::PIPE);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let h = loop {
        // SAFETY: a NUL-terminated name; the broker may identify this process but not act
        // as it (SECURITY_IDENTIFICATION); the handle is owned below.
        let h = unsafe {
            CreateFileW(
                name.as_ptr(),
                // Exactly what the pipe grants interactive users (0x12008B): GENERIC_WRITE
                // would ask for attribute writes and instance creation too, and be refused.
                FILE_GENERIC_READ | FILE_WRITE_DATA,
                0,
                null(),
                OPEN_EXISTING,
                SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                null_mut(),
            )
        };
        if h != INVALID_HANDLE_VALUE {
            break h;
        }
        let e = io::Error::last_os_error();
        // Every instance busy (runs starting together): wait for one, for a while.
        if e.raw_os_error() == Some(windows_sys::Win32::Foundation::ERROR_PIPE_BUSY as i32)
            && std::time::Instant::now() < until
        {
            // SAFETY: a NUL-terminated name.
            unsafe { windows_sys::Win32::System::Pipes::WaitNamedPipeW(name.as_ptr(), 1000) };
            continue;
        }
        return Err(format!(
            "Palisade's broker service does not answer on {} ({e}); an administrator runs `palisade setup` once to install it",
            broker::PIPE
        ));
    };
    let pipe = Handle(h);
    // The pipe must be the service's: another process serving the name gets no request.
    let mut server = 0u32;
    // SAFETY: a valid pipe and an out-pointer.
    unsafe { windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId(pipe.0, &mut server) };
    match expected {
        Some(pid) if pid == server => {}
        found => {
            return Err(format!(
                "{} is served by process {server}, not by the {} service ({}): refusing to use it",
                broker::PIPE,
                super::broker_setup::SERVICE_NAME,
                found.map_or_else(|| "not running".to_owned(), |p| format!("process {p}"))
            ));
        }
    }
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
        Ok(Reply::Opened { .. }) => Ok(Lease {
            pipe: std::sync::Arc::new(pipe),
            released: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }),
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

/// The process id of the running broker service (`QueryServiceStatusEx`).
fn service_process() -> Option<u32> {
    use windows_service::service::ServiceAccess;
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT).ok()?;
    let service = manager.open_service(super::broker_setup::SERVICE_NAME, ServiceAccess::QUERY_STATUS).ok()?;
    service.query_status().ok()?.process_id
}

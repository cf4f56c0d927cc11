//! The broker service: serves [`crate::broker`]'s protocol on its named pipe, one thread per
//! connection, and carries out what [`crate::broker::decide`] grants: the run's filters in a
//! dynamic WFP session ([`super::fwp`]), then its package's loopback exemption
//! ([`super::loopback`]), both undone (the exemption first) when the lease ends: the caller
//! closes its end, or the caller's process ends (its handle is held from the request on, so
//! its id cannot be reused while the lease lives), or the service stops.
//!
//! Exemptions outlive the service (the list is persistent): each is recorded under the
//! service's registry key ([`super::registry`], which only SYSTEM and administrators can
//! change) before it is made, and the service removes every recorded one when it starts and
//! when it stops; `palisade setup --remove` does too. Filters need no record: the engine
//! deletes a dynamic session's objects when the session's process ends. If the service dies,
//! each run's supervisor sees its lease's pipe break and ends the run (`broker_client`), and
//! the service control manager restarts the service, which removes the exemptions.
//!
//! The pipe: the service makes its first instance (`FILE_FLAG_FIRST_PIPE_INSTANCE`) and always
//! keeps one instance waiting, so the name never lapses for another process to take. Its
//! descriptor admits SYSTEM and administrators, and interactive users to read and write data
//! only (`0x12008B`: no `FILE_CREATE_PIPE_INSTANCE`, so they cannot serve instances of their
//! own); no AppContainer (no entry names `ALL APPLICATION PACKAGES`) and no remote client
//! (`PIPE_REJECT_REMOTE_CLIENTS`). The decision still checks every caller. A request must
//! arrive within [`REQUEST_WAIT`]; at most [`MAX_CONNECTIONS`] are served at once.

use std::io;
use std::ptr::{null, null_mut};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_INSUFFICIENT_BUFFER, ERROR_PIPE_CONNECTED, HANDLE, HLOCAL, INVALID_HANDLE_VALUE, LocalFree, WAIT_OBJECT_0,
};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, MIB_TCPROW_OWNER_PID, TCP_TABLE_OWNER_PID_LISTENER,
};
use windows_sys::Win32::Security::Authorization::ConvertStringSecurityDescriptorToSecurityDescriptorW;
use windows_sys::Win32::Security::{
    GetTokenInformation, IsTokenRestricted, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
    TokenIsAppContainer, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_FLAG_FIRST_PIPE_INSTANCE, PIPE_ACCESS_DUPLEX, ReadFile, WriteFile};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, GetNamedPipeClientProcessId, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS,
    PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};
use windows_sys::Win32::System::Registry::{HKEY, HKEY_USERS, KEY_READ, RegCloseKey, RegOpenKeyExW};
use windows_sys::Win32::System::Threading::{
    OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, WaitForSingleObject,
};

use super::appcontainer::OwnedSid;
use super::handle::{Handle, last_error, pipe_waiting, wide};
use crate::broker::{self, Caller, Machine, Reply};
use crate::sid::Sid;

/// The pipe's security descriptor (SDDL): see the module.
const PIPE_SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;0x12008b;;;IU)";

/// `AF_INET`.
const AF_INET: u32 = 2;

/// How long a connection may take to send its request.
pub const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// Connections served at once; more are refused at once.
pub const MAX_CONNECTIONS: usize = 256;

/// The registry value listing the exempted packages ([`super::registry::PARAMETERS`]).
const EXEMPTIONS_VALUE: &str = "Exemptions";

/// Serialises changes of the machine's exemption list, of the record and of the packages
/// leased.
static EXEMPTIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Set when the service stops: no exemption is made after it.
static STOPPING: AtomicBool = AtomicBool::new(false);

static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Serves until `stop` returns true (checked between connections; [`wake`] makes it look).
///
/// # Errors
/// The pipe cannot be made (another process made it first, or the descriptor is refused).
pub fn serve(stop: &(dyn Fn() -> bool + Sync)) -> io::Result<()> {
    STOPPING.store(false, Ordering::SeqCst);
    undo_recorded_exemptions();
    let sd = SecurityDescriptor::from_sddl(PIPE_SDDL)?;
    let sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: 0,
    };
    let name = wide(broker::PIPE);
    let instance = |first: bool| -> io::Result<Handle> {
        // SAFETY: a NUL-terminated name, valid attributes; the handle is owned by the caller.
        let pipe = unsafe {
            CreateNamedPipeW(
                name.as_ptr(),
                PIPE_ACCESS_DUPLEX | if first { FILE_FLAG_FIRST_PIPE_INSTANCE } else { 0 },
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                PIPE_UNLIMITED_INSTANCES,
                4096,
                4096,
                0,
                &sa,
            )
        };
        if pipe == INVALID_HANDLE_VALUE { Err(last_error("making the broker's pipe")) } else { Ok(Handle(pipe)) }
    };
    let served = (|| {
        // The first instance must be ours: if another process made the pipe first (to pose
        // as the broker), the service fails instead of serving beside it. Afterwards one
        // instance always waits, so the name never lapses.
        // After a crash, runs may still hold the dead instance's pipes for a moment (their
        // supervisors end them within 200 ms and then let go): the name is taken until they
        // do, so the first instance is retried for up to 30 s before the service gives up.
        let until = Instant::now() + Duration::from_secs(30);
        let mut waiting = loop {
            match instance(true) {
                Ok(p) => break p,
                Err(_) if Instant::now() < until && !stop() => std::thread::sleep(Duration::from_millis(250)),
                Err(e) => return Err(e),
            }
        };
        while !stop() {
            // SAFETY: a valid pipe; synchronous.
            let connected = unsafe { ConnectNamedPipe(waiting.0, null_mut()) } != 0
                || io::Error::last_os_error().raw_os_error() == Some(ERROR_PIPE_CONNECTED as i32);
            // The next instance before the connected one is handed off; a passing failure is
            // retried (ending the service would leave runs without a broker).
            let mut next = instance(false);
            for _ in 0..50 {
                if next.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                next = instance(false);
            }
            let conn = std::mem::replace(&mut waiting, next?);
            if !connected || stop() {
                continue;
            }
            if CONNECTIONS.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
                reply(
                    &conn,
                    &Reply::Refused {
                        reason: format!("the broker serves {MAX_CONNECTIONS} connections at most; try again"),
                    },
                );
                continue;
            }
            let spawned = std::thread::Builder::new().name("palisade-broker-lease".into()).spawn(move || {
                serve_one(&conn);
                CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                // The connection went with the closure; its client sees the pipe break.
                CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    })();
    // Runs still holding a lease lose their network with the service (their filters go with
    // its process, their supervisors end them): their exemptions go now.
    {
        let _guard = EXEMPTIONS.lock().unwrap_or_else(|e| e.into_inner());
        STOPPING.store(true, Ordering::SeqCst);
    }
    undo_recorded_exemptions();
    served
}

/// Wakes a `serve` blocked waiting for a client (after `stop` turned true): connects once,
/// anonymously (whatever serves the pipe learns nothing of the service's token).
pub fn wake() {
    let name = wide(broker::PIPE);
    // SAFETY: a NUL-terminated name; the handle is closed at once.
    let h = unsafe {
        windows_sys::Win32::Storage::FileSystem::CreateFileW(
            name.as_ptr(),
            windows_sys::Win32::Foundation::GENERIC_READ,
            0,
            null(),
            windows_sys::Win32::Storage::FileSystem::OPEN_EXISTING,
            windows_sys::Win32::Storage::FileSystem::SECURITY_SQOS_PRESENT
                | windows_sys::Win32::Storage::FileSystem::SECURITY_ANONYMOUS,
            null_mut(),
        )
    };
    if h != INVALID_HANDLE_VALUE {
        drop(Handle(h));
    }
}

fn reply(pipe: &Handle, r: &Reply) {
    let mut line = serde_json::to_vec(r).unwrap_or_default();
    line.push(b'\n');
    let mut written = 0u32;
    // SAFETY: a valid pipe; a buffer of the given length.
    unsafe { WriteFile(pipe.0, line.as_ptr(), line.len() as u32, &mut written, null_mut()) };
}

/// One connection: the request, the decision, the reply; then, when granted, the lease
/// until the caller closes its end, its process ends, or the service stops.
fn serve_one(pipe: &Handle) {
    let line = match read_line(pipe) {
        Ok(l) => l,
        Err(e) => return reply(pipe, &Reply::Refused { reason: e }),
    };
    let granted = broker::parse(&line).and_then(|request| {
        let (caller, process) = caller_of(pipe).map_err(|e| format!("the caller could not be identified: {e}"))?;
        broker::decide(&request, &caller, &Host).map(|plan| (request, plan, process))
    });
    let (broker::Request::Open { profile, .. }, plan, process) = match granted {
        Ok(g) => g,
        Err(reason) => return reply(pipe, &Reply::Refused { reason }),
    };
    let package = crate::sid::app_container_sid(&profile);
    // One lease per package: a second would outlive the first's undoing of the exemption.
    {
        let mut leased = EXEMPTIONS.lock().unwrap_or_else(|e| e.into_inner());
        if leased.contains(&package.0) {
            return reply(pipe, &Reply::Refused { reason: format!("profile {profile} already holds a lease") });
        }
        leased.push(package.0.clone());
    }
    let release = || EXEMPTIONS.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != package.0);
    let (session, filters) = match super::fwp::Session::open().and_then(|s| s.apply(&plan).map(|n| (s, n))) {
        Ok(s) => s,
        Err(e) => {
            release();
            return reply(pipe, &Reply::Refused { reason: format!("adding the run's filters: {e}") });
        }
    };
    if let Err(e) = exempt(&package, true) {
        let _ = exempt(&package, false);
        drop(session);
        release();
        return reply(
            pipe,
            &Reply::Refused { reason: format!("exempting the run's package from loopback isolation: {e}") },
        );
    }
    reply(pipe, &Reply::Opened { filters });
    // The lease: until the pipe breaks, the caller's process ends, or the service stops.
    loop {
        let open = pipe_waiting(pipe.0).is_some();
        // SAFETY: a process handle opened with SYNCHRONIZE.
        let alive = unsafe { WaitForSingleObject(process.0, 200) } != WAIT_OBJECT_0;
        if !open || !alive || STOPPING.load(Ordering::SeqCst) {
            break;
        }
    }
    // The exemption before the filters; while it cannot be removed, the filters stay (a
    // package exempt without them would reach every loopback service). When the service
    // stops meanwhile, its own undo retries, and the filters stay until its process ends.
    let mut removed = exempt(&package, false).is_ok();
    while !removed && !STOPPING.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
        removed = exempt(&package, false).is_ok();
    }
    if removed {
        drop(session);
    } else {
        std::mem::forget(session);
    }
    release();
}

/// Reads one request line (at most `MAX_REQUEST` bytes and its newline), within
/// [`REQUEST_WAIT`].
fn read_line(pipe: &Handle) -> Result<Vec<u8>, String> {
    let until = Instant::now() + REQUEST_WAIT;
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let Some(avail) = pipe_waiting(pipe.0) else {
            return Err("the caller closed the pipe before a whole request".into());
        };
        if Instant::now() >= until {
            return Err(format!("no whole request within {} s", REQUEST_WAIT.as_secs()));
        }
        if avail == 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut got = 0u32;
        let want = (avail as usize).min(buf.len()) as u32;
        // SAFETY: a valid pipe; a buffer of at least `want` bytes; `want` are available, so
        // the read does not block.
        if unsafe { ReadFile(pipe.0, buf.as_mut_ptr(), want, &mut got, null_mut()) } == 0 {
            return Err("the caller closed the pipe before a whole request".into());
        }
        line.extend_from_slice(&buf[..got as usize]);
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            line.truncate(end);
            return Ok(line);
        }
        if line.len() > broker::MAX_REQUEST {
            return Err(format!("the request is longer than {} bytes", broker::MAX_REQUEST));
        }
    }
}

/// Who is at the other end of the pipe, from Windows: its process id, its user, whether its
/// token is an AppContainer's or restricted; and its process, held (with `SYNCHRONIZE`) so
/// its id is not reused while the lease lives.
fn caller_of(pipe: &Handle) -> io::Result<(Caller, Handle)> {
    let mut pid = 0u32;
    // SAFETY: a valid pipe and an out-pointer.
    if unsafe { GetNamedPipeClientProcessId(pipe.0, &mut pid) } == 0 {
        return Err(last_error("reading the caller's process id"));
    }
    // SAFETY: a query-and-wait open; owned below.
    let process = Handle::checked(
        unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE, 0, pid) },
        "opening the caller",
    )?;
    let mut token: HANDLE = null_mut();
    // SAFETY: a valid process handle and an out-pointer.
    if unsafe { OpenProcessToken(process.0, TOKEN_QUERY, &mut token) } == 0 {
        return Err(last_error("opening the caller's token"));
    }
    let token = Handle(token);
    let mut buf = vec![0u64; 64];
    let mut len = 0u32;
    // SAFETY: a buffer of the given length, 8-aligned (u64 units).
    if unsafe { GetTokenInformation(token.0, TokenUser, buf.as_mut_ptr().cast(), (buf.len() * 8) as u32, &mut len) }
        == 0
    {
        return Err(last_error("reading the caller's user"));
    }
    // SAFETY: the call wrote a TOKEN_USER at the start of the aligned buffer; its SID lies
    // in the same buffer.
    let user = unsafe { OwnedSid::copy((*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid) }?.string().0;
    let mut app_container = 0u32;
    // SAFETY: a u32 out-value of its size.
    if unsafe {
        GetTokenInformation(token.0, TokenIsAppContainer, (&mut app_container as *mut u32).cast(), 4, &mut len)
    } == 0
    {
        return Err(last_error("reading whether the caller is an AppContainer"));
    }
    // SAFETY: a valid token.
    let restricted = unsafe { IsTokenRestricted(token.0) } != 0;
    Ok((Caller { pid, user, app_container: app_container != 0, restricted }, process))
}

/// The machine's facts for the decision.
struct Host;

impl Machine for Host {
    /// The owner of `127.0.0.1:port`; `None` also when two processes listen there (only one
    /// sole owner counts).
    fn listener_owner(&self, port: u16) -> Option<u32> {
        let mut buf = vec![0u32; 1024];
        loop {
            let mut size = (buf.len() * 4) as u32;
            // SAFETY: a buffer of the given byte size, 4-aligned.
            let code = unsafe {
                GetExtendedTcpTable(buf.as_mut_ptr().cast(), &mut size, 0, AF_INET, TCP_TABLE_OWNER_PID_LISTENER, 0)
            };
            if code == ERROR_INSUFFICIENT_BUFFER && buf.len() < (1 << 24) {
                buf = vec![0u32; size as usize / 4 + 1024];
                continue;
            }
            if code != 0 {
                return None;
            }
            break;
        }
        let n = (buf[0] as usize).min((buf.len() - 1) / 6);
        // SAFETY: MIB_TCPTABLE_OWNER_PID: a count, then `n` rows of six u32 (bounded by the
        // buffer above).
        let rows = unsafe { std::slice::from_raw_parts(buf.as_ptr().add(1).cast::<MIB_TCPROW_OWNER_PID>(), n) };
        // Address and port in network byte order; the port in the low 16 bits.
        let owners: Vec<u32> = rows
            .iter()
            .filter(|r| {
                u32::from_be(r.dwLocalAddr) == u32::from(std::net::Ipv4Addr::LOCALHOST)
                    && u16::from_be(r.dwLocalPort as u16) == port
            })
            .map(|r| r.dwOwningPid)
            .collect();
        match owners.as_slice() {
            [first, rest @ ..] if rest.iter().all(|o| o == first) => Some(*first),
            _ => None,
        }
    }

    fn profile_registered(&self, user: &str, package: &Sid) -> bool {
        let path = wide(&format!(
            r"{user}\Software\Classes\Local Settings\Software\Microsoft\Windows\CurrentVersion\AppContainer\Mappings\{}",
            package.0
        ));
        let mut key: HKEY = null_mut();
        // SAFETY: a predefined key, a NUL-terminated path, an out-pointer.
        let found = unsafe { RegOpenKeyExW(HKEY_USERS, path.as_ptr(), 0, KEY_READ, &mut key) } == 0;
        if found {
            // SAFETY: opened above.
            unsafe { RegCloseKey(key) };
        }
        found
    }
}

/// Adds or removes the exemption, recording it first when adding and forgetting it after
/// removing. No exemption is made once the service is stopping.
fn exempt(package: &Sid, on: bool) -> io::Result<()> {
    let _guard = EXEMPTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let mut listed = super::registry::read_list(EXEMPTIONS_VALUE)?;
    if on {
        if STOPPING.load(Ordering::SeqCst) {
            return Err(io::Error::other("the broker is stopping"));
        }
        if !listed.contains(&package.0) {
            listed.push(package.0.clone());
        }
        super::registry::write_list(EXEMPTIONS_VALUE, &listed)?;
        super::loopback::set_exempt(&package.0, true)
    } else {
        super::loopback::set_exempt(&package.0, false)?;
        listed.retain(|l| *l != package.0);
        super::registry::write_list(EXEMPTIONS_VALUE, &listed)
    }
}

/// Removes every recorded exemption (a previous instance ended without removing them, or
/// the service is stopping). Returns those it could not remove.
pub fn undo_recorded_exemptions() -> Vec<String> {
    let listed = super::registry::read_list(EXEMPTIONS_VALUE).unwrap_or_default();
    listed
        .into_iter()
        .filter(|sid| sid.starts_with("S-1-15-2-"))
        .filter(|sid| exempt(&Sid(sid.clone()), false).is_err())
        .collect()
}

/// A security descriptor from SDDL, freed with `LocalFree`.
struct SecurityDescriptor(PSECURITY_DESCRIPTOR);

impl SecurityDescriptor {
    fn from_sddl(sddl: &str) -> io::Result<SecurityDescriptor> {
        let w = wide(sddl);
        let mut sd: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: a NUL-terminated SDDL string (revision 1) and an out-pointer.
        if unsafe { ConvertStringSecurityDescriptorToSecurityDescriptorW(w.as_ptr(), 1, &mut sd, null_mut()) } == 0 {
            return Err(last_error("reading the pipe's security descriptor"));
        }
        Ok(SecurityDescriptor(sd))
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        // SAFETY: allocated by the conversion, freed once.
        unsafe { LocalFree(self.0 as HLOCAL) };
    }
}

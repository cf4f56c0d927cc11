//! The broker service: serves [`crate::broker`]'s protocol on its named pipe, one thread per
//! connection, and carries out what [`crate::broker::decide`] grants: the run's filters in a
//! dynamic WFP session ([`super::fwp`]), then its package's loopback exemption
//! ([`super::loopback`]), both undone when the caller's connection closes (exemption first).
//!
//! Exemptions outlive a crash of the service (the list is persistent), so each is written to
//! `%ProgramData%\palisade\broker-exemptions.txt` before it is made, and the service removes
//! every package listed there when it starts. Filters need no such record: the engine deletes
//! a dynamic session's objects when the session's process ends.
//!
//! The service makes the pipe's first instance (`FILE_FLAG_FIRST_PIPE_INSTANCE`), so it fails
//! rather than serve beside a process that made the pipe first. A client that reached such
//! an impostor anyway gets no filters and no exemption: its container reaches nothing.
//! The pipe admits SYSTEM, administrators and interactive users
//! (`D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)`), no AppContainer (no entry names
//! `ALL APPLICATION PACKAGES`) and no remote client (`PIPE_REJECT_REMOTE_CLIENTS`); the
//! decision still checks every caller.

use std::io::{self, Write};
use std::path::PathBuf;
use std::ptr::{null, null_mut};
use std::sync::Mutex;

use windows_sys::Win32::Foundation::{ERROR_PIPE_CONNECTED, HANDLE, HLOCAL, INVALID_HANDLE_VALUE, LocalFree};
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
use windows_sys::Win32::System::Threading::{OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION};

use super::appcontainer::OwnedSid;
use super::handle::{Handle, last_error, wide};
use crate::broker::{self, Caller, Machine, Reply};
use crate::sid::Sid;

/// The pipe's security descriptor (SDDL): see the module.
const PIPE_SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)";

/// `AF_INET`.
const AF_INET: u32 = 2;

/// Serialises changes of the machine's exemption list and of the record.
static EXEMPTIONS: Mutex<()> = Mutex::new(());

/// Serves until `stop` returns true (checked between connections).
///
/// # Errors
/// The pipe cannot be made (another broker runs, or the descriptor is refused).
pub fn serve(stop: &(dyn Fn() -> bool + Sync)) -> io::Result<()> {
    undo_recorded_exemptions();
    let sd = SecurityDescriptor::from_sddl(PIPE_SDDL)?;
    let sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: 0,
    };
    let name = wide(broker::PIPE);
    let served = (|| {
        // The first instance must be ours: if another process made the pipe first (to pose
        // as the broker), the service fails instead of serving beside it.
        let mut first = FILE_FLAG_FIRST_PIPE_INSTANCE;
        while !stop() {
            // SAFETY: a NUL-terminated name, valid attributes; the handle is owned below.
            let pipe = unsafe {
                CreateNamedPipeW(
                    name.as_ptr(),
                    PIPE_ACCESS_DUPLEX | std::mem::take(&mut first),
                    PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                    PIPE_UNLIMITED_INSTANCES,
                    4096,
                    4096,
                    0,
                    &sa,
                )
            };
            if pipe == INVALID_HANDLE_VALUE {
                return Err(last_error("making the broker's pipe"));
            }
            let pipe = Handle(pipe);
            // SAFETY: a valid pipe; synchronous.
            let connected = unsafe { ConnectNamedPipe(pipe.0, null_mut()) } != 0
                || io::Error::last_os_error().raw_os_error() == Some(ERROR_PIPE_CONNECTED as i32);
            if !connected || stop() {
                continue;
            }
            std::thread::spawn(move || serve_one(&pipe));
        }
        Ok(())
    })();
    // Runs still holding a lease lose their network with the service (their filters go with
    // its process): their exemptions go too.
    undo_recorded_exemptions();
    served
}

/// Wakes a `serve` blocked waiting for a client (after `stop` turned true): connects once.
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
            0,
            null_mut(),
        )
    };
    if h != INVALID_HANDLE_VALUE {
        drop(Handle(h));
    }
}

/// One connection: the request, the decision, the reply; then, when granted, the lease
/// until the caller closes its end.
fn serve_one(pipe: &Handle) {
    let reply = |r: &Reply| {
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        let mut written = 0u32;
        // SAFETY: a valid pipe; a buffer of the given length.
        unsafe { WriteFile(pipe.0, line.as_ptr(), line.len() as u32, &mut written, null_mut()) };
    };
    let line = match read_line(pipe) {
        Ok(l) => l,
        Err(e) => return reply(&Reply::Refused { reason: e }),
    };
    let granted = broker::parse(&line).and_then(|request| {
        let caller = caller_of(pipe).map_err(|e| format!("the caller could not be identified: {e}"))?;
        broker::decide(&request, &caller, &Host).map(|plan| (request, plan))
    });
    let (broker::Request::Open { profile, .. }, plan) = match granted {
        Ok(g) => g,
        Err(reason) => return reply(&Reply::Refused { reason }),
    };
    let package = crate::sid::app_container_sid(&profile);
    let (session, filters) = match super::fwp::Session::open().and_then(|s| s.apply(&plan).map(|n| (s, n))) {
        Ok(s) => s,
        Err(e) => return reply(&Reply::Refused { reason: format!("adding the run's filters: {e}") }),
    };
    if let Err(e) = exempt(&package, true) {
        drop(session);
        return reply(&Reply::Refused { reason: format!("exempting the run's package from loopback isolation: {e}") });
    }
    reply(&Reply::Opened { filters });
    // The lease lasts until the caller closes its end (or dies): a read then fails.
    let mut byte = [0u8; 64];
    let mut got = 0u32;
    // SAFETY: a valid pipe; a buffer of the given length.
    while unsafe { ReadFile(pipe.0, byte.as_mut_ptr(), byte.len() as u32, &mut got, null_mut()) } != 0 {}
    let _ = exempt(&package, false);
    drop(session);
}

/// Reads one request line (at most `MAX_REQUEST` bytes and its newline).
fn read_line(pipe: &Handle) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let mut got = 0u32;
        // SAFETY: a valid pipe; a buffer of the given length.
        if unsafe { ReadFile(pipe.0, buf.as_mut_ptr(), buf.len() as u32, &mut got, null_mut()) } == 0 {
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
/// token is an AppContainer's or restricted.
fn caller_of(pipe: &Handle) -> io::Result<Caller> {
    let mut pid = 0u32;
    // SAFETY: a valid pipe and an out-pointer.
    if unsafe { GetNamedPipeClientProcessId(pipe.0, &mut pid) } == 0 {
        return Err(last_error("reading the caller's process id"));
    }
    // SAFETY: a query-only open; owned below.
    let process =
        Handle::checked(unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) }, "opening the caller")?;
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
    Ok(Caller { pid, user, app_container: app_container != 0, restricted })
}

/// The machine's facts for the decision.
struct Host;

impl Machine for Host {
    fn listener_owner(&self, port: u16) -> Option<u32> {
        let mut size = 0u32;
        // SAFETY: a size query (null table).
        unsafe { GetExtendedTcpTable(null_mut(), &mut size, 0, AF_INET, TCP_TABLE_OWNER_PID_LISTENER, 0) };
        let mut buf = vec![0u32; (size as usize / 4) + 64];
        let mut size = (buf.len() * 4) as u32;
        // SAFETY: a buffer of the given byte size, 4-aligned.
        if unsafe {
            GetExtendedTcpTable(buf.as_mut_ptr().cast(), &mut size, 0, AF_INET, TCP_TABLE_OWNER_PID_LISTENER, 0)
        } != 0
        {
            return None;
        }
        let n = buf[0] as usize;
        // SAFETY: MIB_TCPTABLE_OWNER_PID: a count, then `n` rows of six u32.
        let rows = unsafe { std::slice::from_raw_parts(buf.as_ptr().add(1).cast::<MIB_TCPROW_OWNER_PID>(), n) };
        // Both in network byte order; the port in the low 16 bits.
        rows.iter()
            .find(|r| {
                u32::from_be(r.dwLocalAddr) == u32::from(std::net::Ipv4Addr::LOCALHOST)
                    && u16::from_be(r.dwLocalPort as u16) == port
            })
            .map(|r| r.dwOwningPid)
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

/// The record of exemptions in force: `%ProgramData%\palisade\broker-exemptions.txt`.
fn record() -> PathBuf {
    let data = std::env::var_os("ProgramData").map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
    data.join("palisade").join("broker-exemptions.txt")
}

/// Adds or removes the exemption, writing the record first when adding and after removing.
fn exempt(package: &Sid, on: bool) -> io::Result<()> {
    let _guard = EXEMPTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let path = record();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut listed: Vec<String> = text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if on {
        if !listed.contains(&package.0) {
            listed.push(package.0.clone());
        }
        write_record(&path, &listed)?;
        super::loopback::set_exempt(&package.0, true)
    } else {
        super::loopback::set_exempt(&package.0, false)?;
        listed.retain(|l| *l != package.0);
        write_record(&path, &listed)
    }
}

fn write_record(path: &std::path::Path, listed: &[String]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::File::create(path)?;
    for l in listed {
        writeln!(f, "{l}")?;
    }
    f.sync_all()
}

/// Removes every exemption a previous instance recorded (it ended without removing them).
fn undo_recorded_exemptions() {
    let text = std::fs::read_to_string(record()).unwrap_or_default();
    for sid in text.lines().filter(|l| l.starts_with("S-1-15-2-")) {
        let _ = exempt(&Sid(sid.to_owned()), false);
    }
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

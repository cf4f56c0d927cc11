//! Starting the command: suspended, with only its three standard handles inherited
//! (`PROC_THREAD_ATTRIBUTE_HANDLE_LIST`), in the AppContainer when one is given
//! (`PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES`), with the plan's mitigations, on the
//! run's desktop, put into the job before its first instruction, then resumed
//! ("UpdateProcThreadAttribute", "CreateProcessW", Win32 docs).

use std::io;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::{DUPLICATE_SAME_ACCESS, DuplicateHandle, HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::Security::SECURITY_CAPABILITIES;
use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE};
use windows_sys::Win32::System::Threading::*;

use super::handle::{Handle, last_error, wide};
use super::job::Job;
use crate::cmdline;

/// What to start.
pub struct Spec<'a> {
    /// The command and its arguments.
    pub argv: &'a [String],
    /// The program to run and its command line ([`crate::cmdline::launch`]); `None`: the
    /// command line of `argv`, the program found by `CreateProcessW` (the plumbing tests).
    pub launch: Option<&'a crate::cmdline::Launch>,
    /// The working directory.
    pub cwd: &'a str,
    /// The whole environment.
    pub env: &'a [(String, String)],
    /// Standard input, output and error (`None`: the supervisor's own).
    pub stdio: [Option<HANDLE>; 3],
    /// The AppContainer and its capabilities (`None` only in the plumbing tests, which
    /// make no enforcement claim).
    pub security: Option<&'a SECURITY_CAPABILITIES>,
    /// `PROC_THREAD_ATTRIBUTE_MITIGATION_POLICY` bits (0: none asked).
    pub mitigations: u64,
    /// `PROCESS_CREATION_DESKTOP_APP_BREAKAWAY_DISABLE_PROCESS_TREE`.
    pub desktop_app_breakaway_disabled: bool,
    /// `winsta\desktop` to start on (`None`: the supervisor's).
    pub desktop: Option<&'a str>,
    /// The token to start with (`CreateProcessAsUserW`: the restricted-token tier); `None`:
    /// Palisade's own (with `security`, the AppContainer's).
    pub token: Option<HANDLE>,
}

impl std::fmt::Debug for Spec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .field("appcontainer", &self.security.is_some())
            .finish_non_exhaustive()
    }
}

/// A started process.
#[derive(Debug)]
pub struct Started {
    /// Its handle.
    pub process: Handle,
    /// Its id (the job's messages name processes by it).
    pub pid: u32,
}

impl Started {
    /// Waits for it to end and gives its exit code.
    ///
    /// # Errors
    /// The system's error.
    pub fn wait(&self) -> io::Result<u32> {
        // SAFETY: the process handle is valid while `self` lives.
        if unsafe { WaitForSingleObject(self.process.0, INFINITE) } != WAIT_OBJECT_0 {
            return Err(last_error("waiting for the command"));
        }
        let mut code = 0u32;
        // SAFETY: as above; `code` is a local.
        if unsafe { GetExitCodeProcess(self.process.0, &mut code) } == 0 {
            return Err(last_error("reading the command's exit code"));
        }
        Ok(code)
    }
}

/// Starts `spec` in `job`; see the module.
///
/// # Errors
/// The system's error, naming the step (`ERROR_FILE_NOT_FOUND` when the program does not
/// exist).
pub fn start(spec: &Spec<'_>, job: &Job) -> io::Result<Started> {
    // Inheritable duplicates of the three standard handles: the only handles the child gets.
    let std_ids = [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE];
    let mut inherited: Vec<Handle> = Vec::new();
    let mut stdio = [null_mut(); 3];
    for (i, slot) in stdio.iter_mut().enumerate() {
        // SAFETY: GetStdHandle has no preconditions.
        let source = spec.stdio[i].unwrap_or_else(|| unsafe { GetStdHandle(std_ids[i]) });
        if source.is_null() {
            continue;
        }
        let mut dup = null_mut();
        // SAFETY: duplicating a handle of this process into this process.
        let ok = unsafe {
            DuplicateHandle(GetCurrentProcess(), source, GetCurrentProcess(), &mut dup, 0, 1, DUPLICATE_SAME_ACCESS)
        };
        if ok == 0 {
            return Err(last_error("duplicating a standard handle for the command"));
        }
        inherited.push(Handle(dup));
        *slot = dup;
    }
    let handles: Vec<HANDLE> = inherited.iter().map(|h| h.0).collect();

    let mut count = 1;
    count += u32::from(spec.security.is_some());
    count += u32::from(spec.mitigations != 0);
    count += u32::from(spec.desktop_app_breakaway_disabled);
    let mut size = 0usize;
    // SAFETY: the documented size query (null list).
    unsafe { InitializeProcThreadAttributeList(null_mut(), count, 0, &mut size) };
    let mut buf = vec![0u8; size];
    let list: LPPROC_THREAD_ATTRIBUTE_LIST = buf.as_mut_ptr().cast();
    // SAFETY: `buf` has the size the query asked for and outlives the list.
    if unsafe { InitializeProcThreadAttributeList(list, count, 0, &mut size) } == 0 {
        return Err(last_error("preparing the command's start attributes"));
    }
    let list_guard = AttributeList(list);
    let mitigations = spec.mitigations;
    let desktop_policy: u32 = 2; // PROCESS_CREATION_DESKTOP_APP_BREAKAWAY_DISABLE_PROCESS_TREE
    // SAFETY: each value points at memory that lives until the list is deleted (after
    // CreateProcessW): `handles`, `spec.security`, the two locals above.
    unsafe {
        update(
            list,
            PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
            handles.as_ptr().cast(),
            std::mem::size_of_val(handles.as_slice()),
        )?;
        if let Some(sc) = spec.security {
            update(
                list,
                PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES,
                (sc as *const SECURITY_CAPABILITIES).cast(),
                std::mem::size_of::<SECURITY_CAPABILITIES>(),
            )?;
        }
        if mitigations != 0 {
            update(list, PROC_THREAD_ATTRIBUTE_MITIGATION_POLICY, (&mitigations as *const u64).cast(), 8)?;
        }
        if spec.desktop_app_breakaway_disabled {
            update(list, PROC_THREAD_ATTRIBUTE_DESKTOP_APP_POLICY, (&desktop_policy as *const u32).cast(), 4)?;
        }
    }

    let mut desktop = spec.desktop.map(wide);
    // SAFETY: all-zero STARTUPINFOEXW is valid; the fields are set below.
    let mut si: STARTUPINFOEXW = unsafe { std::mem::zeroed() };
    si.StartupInfo.cb = std::mem::size_of::<STARTUPINFOEXW>() as u32;
    si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    si.StartupInfo.hStdInput = stdio[0];
    si.StartupInfo.hStdOutput = stdio[1];
    si.StartupInfo.hStdError = stdio[2];
    if let Some(d) = desktop.as_mut() {
        si.StartupInfo.lpDesktop = d.as_mut_ptr();
    }
    si.lpAttributeList = list;

    let mut line = wide(&spec.launch.map_or_else(|| cmdline::command_line(spec.argv), |l| l.line.clone()));
    let application = spec.launch.map(|l| wide(&l.application));
    let application_ptr = application.as_ref().map_or(null(), |a| a.as_ptr());
    let env = cmdline::env_block(spec.env);
    let cwd = wide(spec.cwd);
    // SAFETY: zeroed out-structure.
    let mut pi: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
    let flags = CREATE_SUSPENDED | EXTENDED_STARTUPINFO_PRESENT | CREATE_UNICODE_ENVIRONMENT;
    // SAFETY: every pointer is to a live local of the right type; the command line buffer
    // is writable, as CreateProcessW requires; the token is the caller's, valid for the call.
    let ok = unsafe {
        match spec.token {
            // A restricted version of Palisade's own token: no SeAssignPrimaryTokenPrivilege
            // needed ("CreateProcessAsUserW", Win32 docs).
            Some(token) => CreateProcessAsUserW(
                token,
                application_ptr,
                line.as_mut_ptr(),
                null(),
                null(),
                1,
                flags,
                env.as_ptr().cast(),
                cwd.as_ptr(),
                (&si as *const STARTUPINFOEXW).cast(),
                &mut pi,
            ),
            None => CreateProcessW(
                application_ptr,
                line.as_mut_ptr(),
                null(),
                null(),
                1,
                flags,
                env.as_ptr().cast(),
                cwd.as_ptr(),
                (&si as *const STARTUPINFOEXW).cast(),
                &mut pi,
            ),
        }
    };
    drop(list_guard);
    drop(inherited);
    if ok == 0 {
        // The raw error (its code tells a missing program apart); the caller names the step.
        return Err(io::Error::last_os_error());
    }
    let process = Handle(pi.hProcess);
    let thread = Handle(pi.hThread);
    if let Err(e) = job.assign(process.0) {
        // SAFETY: the process is ours and suspended; it never ran.
        unsafe { TerminateProcess(process.0, 1) };
        return Err(e);
    }
    // SAFETY: the thread handle is valid.
    if unsafe { ResumeThread(thread.0) } == u32::MAX {
        return Err(last_error("resuming the command"));
    }
    Ok(Started { process, pid: pi.dwProcessId })
}

/// Deletes the attribute list on drop.
struct AttributeList(LPPROC_THREAD_ATTRIBUTE_LIST);

impl Drop for AttributeList {
    fn drop(&mut self) {
        // SAFETY: initialised by InitializeProcThreadAttributeList, deleted once.
        unsafe { DeleteProcThreadAttributeList(self.0) };
    }
}

/// # Safety
/// `value` must point at `size` bytes that live until the list is deleted.
unsafe fn update(
    list: LPPROC_THREAD_ATTRIBUTE_LIST,
    attr: u32,
    value: *const core::ffi::c_void,
    size: usize,
) -> io::Result<()> {
    // SAFETY: the caller's contract.
    if unsafe { UpdateProcThreadAttribute(list, 0, attr as usize, value, size, null_mut(), null()) } == 0 {
        return Err(last_error(&format!("setting the start attribute {attr:#x}")));
    }
    Ok(())
}

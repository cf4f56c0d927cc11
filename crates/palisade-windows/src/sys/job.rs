//! The job object of one run: limits, kill on close, and its completion port, whose
//! messages say when a process starts and ends in it ("Job Objects",
//! `JOBOBJECT_ASSOCIATE_COMPLETION_PORT`, Win32 docs).

use std::io;
use std::ptr::null;

use windows_sys::Win32::System::IO::{CreateIoCompletionPort, GetQueuedCompletionStatus, OVERLAPPED};
use windows_sys::Win32::System::JobObjects::*;
use windows_sys::Win32::System::SystemServices::*;

use super::handle::{Handle, last_error};
use crate::plan::{JobPlan, UI_RESTRICTIONS};

pub use crate::monitor::JobMessage as Message;

// The message identifiers the pure mapping uses are winnt.h's.
const _: () = {
    use crate::monitor as m;
    assert!(m::MSG_END_OF_JOB_TIME == JOB_OBJECT_MSG_END_OF_JOB_TIME);
    assert!(m::MSG_END_OF_PROCESS_TIME == JOB_OBJECT_MSG_END_OF_PROCESS_TIME);
    assert!(m::MSG_ACTIVE_PROCESS_LIMIT == JOB_OBJECT_MSG_ACTIVE_PROCESS_LIMIT);
    assert!(m::MSG_ACTIVE_PROCESS_ZERO == JOB_OBJECT_MSG_ACTIVE_PROCESS_ZERO);
    assert!(m::MSG_NEW_PROCESS == JOB_OBJECT_MSG_NEW_PROCESS);
    assert!(m::MSG_EXIT_PROCESS == JOB_OBJECT_MSG_EXIT_PROCESS);
    assert!(m::MSG_ABNORMAL_EXIT_PROCESS == JOB_OBJECT_MSG_ABNORMAL_EXIT_PROCESS);
    assert!(m::MSG_PROCESS_MEMORY_LIMIT == JOB_OBJECT_MSG_PROCESS_MEMORY_LIMIT);
    assert!(m::MSG_JOB_MEMORY_LIMIT == JOB_OBJECT_MSG_JOB_MEMORY_LIMIT);
};

/// A job object with its completion port.
#[derive(Debug)]
pub struct Job {
    job: Handle,
    port: Handle,
}

impl Job {
    /// Makes the job with `plan`'s limits and UI restrictions, and its completion port.
    ///
    /// # Errors
    /// The system's error, naming the step.
    pub fn new(plan: &JobPlan) -> io::Result<Job> {
        // SAFETY: no attributes and no name: an anonymous job only this process holds.
        let job = Handle::checked(unsafe { CreateJobObjectW(null(), null()) }, "creating the job object")?;
        // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION is valid (no limits).
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        let mut flags = 0;
        if plan.kill_on_close {
            flags |= JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        }
        if plan.die_on_unhandled_exception {
            flags |= JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION;
        }
        if let Some(n) = plan.active_processes {
            flags |= JOB_OBJECT_LIMIT_ACTIVE_PROCESS;
            info.BasicLimitInformation.ActiveProcessLimit = n;
        }
        if let Some(m) = plan.memory {
            flags |= JOB_OBJECT_LIMIT_JOB_MEMORY;
            info.JobMemoryLimit = usize::try_from(m).unwrap_or(usize::MAX);
        }
        if let Some(t) = plan.user_time_100ns {
            flags |= JOB_OBJECT_LIMIT_JOB_TIME;
            info.BasicLimitInformation.PerJobUserTimeLimit = i64::try_from(t).unwrap_or(i64::MAX);
        }
        // Breakaway is never allowed: neither BREAKAWAY_OK nor SILENT_BREAKAWAY_OK is set.
        debug_assert!(!plan.breakaway);
        info.BasicLimitInformation.LimitFlags = flags;
        set(&job, JobObjectExtendedLimitInformation, &info, "setting the job's limits")?;
        let ui = JOBOBJECT_BASIC_UI_RESTRICTIONS {
            UIRestrictionsClass: UI_RESTRICTIONS
                .iter()
                .filter(|(n, _)| plan.ui_restrictions.contains(n))
                .fold(0, |acc, (_, bit)| acc | bit),
        };
        set(&job, JobObjectBasicUIRestrictions, &ui, "setting the job's UI restrictions")?;
        // SAFETY: a new port (no file handle), one concurrent thread.
        let port = Handle::checked(
            unsafe {
                CreateIoCompletionPort(windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, 1)
            },
            "creating the job's completion port",
        )?;
        let assoc = JOBOBJECT_ASSOCIATE_COMPLETION_PORT { CompletionKey: std::ptr::null_mut(), CompletionPort: port.0 };
        set(&job, JobObjectAssociateCompletionPortInformation, &assoc, "associating the job's completion port")?;
        Ok(Job { job, port })
    }

    /// Puts `process` (created suspended: it has run no instruction) into the job.
    ///
    /// # Errors
    /// The system's error.
    pub fn assign(&self, process: windows_sys::Win32::Foundation::HANDLE) -> io::Result<()> {
        // SAFETY: both handles are valid and owned by the caller for the call.
        if unsafe { AssignProcessToJobObject(self.job.0, process) } == 0 {
            return Err(last_error("putting the command into the job object"));
        }
        Ok(())
    }

    /// Ends every process of the job with `code`.
    pub fn terminate(&self, code: u32) {
        // SAFETY: the job handle is valid while `self` lives.
        unsafe { TerminateJobObject(self.job.0, code) };
    }

    /// The next message of the completion port, waiting at most `timeout_ms`; `None` on a
    /// timeout or for a message Palisade does not use.
    pub fn next(&self, timeout_ms: u32) -> Option<Message> {
        let mut code = 0u32;
        let mut key = 0usize;
        let mut ov: *mut OVERLAPPED = std::ptr::null_mut();
        // SAFETY: out-pointers to locals; the port is valid while `self` lives. For job
        // messages, the "overlapped" pointer carries the process id (documented).
        let ok = unsafe { GetQueuedCompletionStatus(self.port.0, &mut code, &mut key, &mut ov, timeout_ms) };
        if ok == 0 {
            return None;
        }
        crate::monitor::message_of(code, ov as usize as u32)
    }
}

fn set<T>(job: &Handle, class: JOBOBJECTINFOCLASS, info: &T, step: &str) -> io::Result<()> {
    // SAFETY: `info` is the structure `class` names, of its exact size, alive for the call.
    let ok =
        unsafe { SetInformationJobObject(job.0, class, (info as *const T).cast(), std::mem::size_of::<T>() as u32) };
    if ok == 0 { Err(last_error(step)) } else { Ok(()) }
}

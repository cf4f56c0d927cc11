//! The job's completion-port messages turned into the audit log's events, by pure code
//! (tested on every OS); `sys::backend`'s watcher reads the port and the processes.
//!
//! Source: "JOBOBJECT_ASSOCIATE_COMPLETION_PORT" (Win32 docs): the message identifiers
//! (`JOB_OBJECT_MSG_…`, winnt.h), and for the per-process ones the process id in the
//! "overlapped" pointer. The facts of a new process (its image, command line and parent) are
//! read while it lives; a process that ended first is recorded with what could be read.

use palisade_sandbox::SandboxEvent;

use crate::cmdline;

/// `JOB_OBJECT_MSG_END_OF_JOB_TIME`.
pub const MSG_END_OF_JOB_TIME: u32 = 1;
/// `JOB_OBJECT_MSG_END_OF_PROCESS_TIME`.
pub const MSG_END_OF_PROCESS_TIME: u32 = 2;
/// `JOB_OBJECT_MSG_ACTIVE_PROCESS_LIMIT`.
pub const MSG_ACTIVE_PROCESS_LIMIT: u32 = 3;
/// `JOB_OBJECT_MSG_ACTIVE_PROCESS_ZERO`.
pub const MSG_ACTIVE_PROCESS_ZERO: u32 = 4;
/// `JOB_OBJECT_MSG_NEW_PROCESS`.
pub const MSG_NEW_PROCESS: u32 = 6;
/// `JOB_OBJECT_MSG_EXIT_PROCESS`.
pub const MSG_EXIT_PROCESS: u32 = 7;
/// `JOB_OBJECT_MSG_ABNORMAL_EXIT_PROCESS`.
pub const MSG_ABNORMAL_EXIT_PROCESS: u32 = 8;
/// `JOB_OBJECT_MSG_PROCESS_MEMORY_LIMIT`.
pub const MSG_PROCESS_MEMORY_LIMIT: u32 = 9;
/// `JOB_OBJECT_MSG_JOB_MEMORY_LIMIT`.
pub const MSG_JOB_MEMORY_LIMIT: u32 = 10;

/// A message of the job's completion port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobMessage {
    /// A process joined the job (its id).
    NewProcess(u32),
    /// A process of the job ended (its id; `abnormal`: by an exception or a kill).
    Exited {
        /// Its id.
        pid: u32,
        /// Whether it ended abnormally.
        abnormal: bool,
    },
    /// No process is left.
    Empty,
    /// The active-process limit refused a new process.
    ProcessLimit,
    /// The job-wide (or a process's) memory limit was reached.
    MemoryLimit,
    /// The job's (or a process's) CPU time ran out.
    TimeLimit,
}

/// The message a completion packet carries: `code` is its `lpNumberOfBytesTransferred`,
/// `pid` the value of its "overlapped" pointer. `None` for a message Palisade does not use
/// (`JOB_OBJECT_MSG_NOTIFICATION_LIMIT`, future ones).
pub fn message_of(code: u32, pid: u32) -> Option<JobMessage> {
    Some(match code {
        MSG_NEW_PROCESS => JobMessage::NewProcess(pid),
        MSG_EXIT_PROCESS => JobMessage::Exited { pid, abnormal: false },
        MSG_ABNORMAL_EXIT_PROCESS => JobMessage::Exited { pid, abnormal: true },
        MSG_ACTIVE_PROCESS_ZERO => JobMessage::Empty,
        MSG_ACTIVE_PROCESS_LIMIT => JobMessage::ProcessLimit,
        MSG_JOB_MEMORY_LIMIT | MSG_PROCESS_MEMORY_LIMIT => JobMessage::MemoryLimit,
        MSG_END_OF_JOB_TIME | MSG_END_OF_PROCESS_TIME => JobMessage::TimeLimit,
        _ => return None,
    })
}

/// What could be read of a process the job reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Its image's full path (`QueryFullProcessImageNameW`), or its file name from a process
    /// snapshot; `None` when it ended before either answered.
    pub image: Option<String>,
    /// Its command line as it was given to `CreateProcessW`
    /// (`ProcessCommandLineInformation`); `None` when unreadable.
    pub command_line: Option<String>,
    /// Its parent's process id (0 when unknown).
    pub parent: u32,
}

/// The audit event of a message, reading a new process's facts with `facts` (called only
/// for [`JobMessage::NewProcess`]). `None` for messages the log does not record (a process's
/// exit, the job's end: `session_end` carries the status).
///
/// An `exec` event's `argv` is the command line split as the Microsoft C runtime splits it
/// ([`cmdline::split`]): what a program built with it sees, though a program may parse its
/// command line otherwise (`cmd.exe` does). Its `cwd` is not read (it lives in the process's
/// memory, which the supervisor does not read) and is empty.
pub fn event_of(message: JobMessage, facts: impl FnOnce(u32) -> ProcessFacts) -> Option<SandboxEvent> {
    let limit = |limit: &str, detail: &str| SandboxEvent::Limit { limit: limit.into(), detail: detail.into() };
    match message {
        JobMessage::NewProcess(pid) => {
            let f = facts(pid);
            Some(SandboxEvent::Exec {
                pid,
                ppid: f.parent,
                path: f.image.unwrap_or_default(),
                argv: f.command_line.as_deref().map(cmdline::split).unwrap_or_default(),
                cwd: String::new(),
            })
        }
        JobMessage::ProcessLimit => Some(limit("pids", "the job's active-process limit refused a new process")),
        JobMessage::MemoryLimit => Some(limit("memory", "the job's memory limit was reached")),
        JobMessage::TimeLimit => Some(limit("cpu_time", "the job's CPU time ran out")),
        JobMessage::Exited { .. } | JobMessage::Empty => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_code_maps_to_its_message() {
        assert_eq!(message_of(6, 42), Some(JobMessage::NewProcess(42)));
        assert_eq!(message_of(7, 42), Some(JobMessage::Exited { pid: 42, abnormal: false }));
        assert_eq!(message_of(8, 42), Some(JobMessage::Exited { pid: 42, abnormal: true }));
        assert_eq!(message_of(4, 0), Some(JobMessage::Empty));
        assert_eq!(message_of(3, 0), Some(JobMessage::ProcessLimit));
        assert_eq!(message_of(9, 42), Some(JobMessage::MemoryLimit));
        assert_eq!(message_of(10, 0), Some(JobMessage::MemoryLimit));
        assert_eq!(message_of(1, 0), Some(JobMessage::TimeLimit));
        assert_eq!(message_of(2, 42), Some(JobMessage::TimeLimit));
        // JOB_OBJECT_MSG_NOTIFICATION_LIMIT, and 5, which winnt.h leaves unused.
        assert_eq!(message_of(11, 0), None);
        assert_eq!(message_of(5, 0), None);
    }

    /// A new process becomes an `exec` event with its image, parent and arguments split as
    /// the C runtime splits them (quotes, backslashes before a quote); facts are read for it
    /// alone.
    #[test]
    fn a_new_process_becomes_an_exec_event_with_its_arguments() {
        let mut asked = Vec::new();
        let e = event_of(JobMessage::NewProcess(77), |pid| {
            asked.push(pid);
            ProcessFacts {
                image: Some(r"C:\Program Files\Git\cmd\git.exe".into()),
                command_line: Some(
                    r#""C:\Program Files\Git\cmd\git.exe" commit -m "a \"quoted\" message" C:\dir\"#.into(),
                ),
                parent: 70,
            }
        });
        assert_eq!(asked, [77]);
        assert_eq!(
            e,
            Some(SandboxEvent::Exec {
                pid: 77,
                ppid: 70,
                path: r"C:\Program Files\Git\cmd\git.exe".into(),
                argv: vec![
                    r"C:\Program Files\Git\cmd\git.exe".into(),
                    "commit".into(),
                    "-m".into(),
                    r#"a "quoted" message"#.into(),
                    r"C:\dir\".into()
                ],
                cwd: String::new(),
            })
        );
    }

    /// A process gone before it could be read is still recorded, with what is known.
    #[test]
    fn a_process_that_ended_first_is_recorded_without_facts() {
        let e = event_of(JobMessage::NewProcess(9), |_| ProcessFacts::default());
        assert_eq!(
            e,
            Some(SandboxEvent::Exec { pid: 9, ppid: 0, path: String::new(), argv: vec![], cwd: String::new() })
        );
    }

    /// Limits are named by their `[process]` keys, as on Linux; exits and the job's end are
    /// not events, and no facts are read for them.
    #[test]
    fn limits_are_named_by_their_policy_keys_and_exits_are_not_events() {
        let none = |_: u32| -> ProcessFacts { panic!("facts read for a message that is no new process") };
        let key = |m| match event_of(m, none) {
            Some(SandboxEvent::Limit { limit, .. }) => limit,
            other => panic!("{other:?}"),
        };
        assert_eq!(key(JobMessage::ProcessLimit), "pids");
        assert_eq!(key(JobMessage::MemoryLimit), "memory");
        assert_eq!(key(JobMessage::TimeLimit), "cpu_time");
        assert_eq!(event_of(JobMessage::Exited { pid: 3, abnormal: true }, none), None);
        assert_eq!(event_of(JobMessage::Empty, none), None);
    }
}

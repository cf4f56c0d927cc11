//! How the sandboxed command ended, and the exit statuses a run reports: the conventions of
//! `env`, `timeout` and container runtimes. This module is their only owner.

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// It (or the sandbox's init) was killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The conventional exit status: the code, or 128 + the signal number (as `env` and
    /// container runtimes report a killed child).
    pub fn status(self) -> u8 {
        match self {
            Exit::Code(c) => (c & 0xff) as u8,
            Exit::Signal(s) => (128 + s).min(255) as u8,
        }
    }
}

/// Palisade itself failed: bad policy, missing kernel feature, setup error.
pub const FAILURE: u8 = 125;
/// The command was found but cannot be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;
/// The run reached its wall-clock limit (`[process] wall_time`), as `timeout` reports it.
/// Other limits stop the sandbox with SIGKILL: 137, as container runtimes report an OOM
/// kill.
pub const TIMED_OUT: u8 = 124;

//! The event model (schema version [`SCHEMA_VERSION`], documented in `docs/events.md`).
//! Strings from the sandbox (names, argv) are carried as data: JSON escapes every control
//! character, and human output escapes them again, so nothing is ever interpreted.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to [`Event`].
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A sandbox starts: what runs, where, and what is enforced.
    SessionStart {
        argv: Vec<String>,
        workspace: String,
        /// `namespaces`, or `degraded` (`--allow-degraded`).
        mode: String,
        landlock_abi: i32,
        /// `none` or `allowlist`.
        network: String,
        /// The policy layers applied, lowest first.
        layers: Vec<String>,
        /// Protections not enforced in this mode (empty unless degraded).
        missing: Vec<String>,
    },
    /// A process in the sandbox called `execve`/`execveat` (pids inside the sandbox).
    Exec { pid: u32, ppid: u32, path: String, argv: Vec<String>, cwd: String },
    /// A DNS query to the stub.
    Dns { name: String, qtype: String, allowed: bool, reason: String, answer: Option<String> },
    /// A connection through the gateway.
    Connection {
        /// `http`, `connect`, `socks5` or `transparent`.
        via: String,
        target: String,
        allowed: bool,
        reason: String,
    },
    /// A decoy file was opened: a strong sign of a hijacked agent.
    Tripwire { path: String },
    /// A limit was reached (once per limit and episode): `connections` (every gateway slot is
    /// in use; new connections wait), `upload` or `download` (the session's byte budget is
    /// spent; tunnels close).
    Limit { limit: String, detail: String },
    /// A monitor rule fired and its action was taken.
    MonitorAction { rule: String, condition: String, action: String, reason: String },
    /// The sandbox ended.
    SessionEnd { exit_code: Option<i32>, signal: Option<i32>, duration_ms: u64 },
}

impl Event {
    /// The event's kind, as in the JSON `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SessionStart { .. } => "session_start",
            Event::Exec { .. } => "exec",
            Event::Dns { .. } => "dns",
            Event::Connection { .. } => "connection",
            Event::Tripwire { .. } => "tripwire",
            Event::Limit { .. } => "limit",
            Event::MonitorAction { .. } => "monitor_action",
            Event::SessionEnd { .. } => "session_end",
        }
    }
}

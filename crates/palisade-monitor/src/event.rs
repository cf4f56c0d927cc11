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
    SessionEnd {
        exit_code: Option<i32>,
        signal: Option<i32>,
        duration_ms: u64,
        /// What the session recorded, by kind (every record before this one).
        #[serde(default)]
        totals: Totals,
    },
}

/// Counts of a session's events, carried by `session_end`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub execs: u64,
    pub connections_allowed: u64,
    pub connections_denied: u64,
    pub dns_allowed: u64,
    pub dns_denied: u64,
    pub tripwires: u64,
    pub limits: u64,
    pub monitor_actions: u64,
}

impl Totals {
    /// Counts `event`.
    pub fn add(&mut self, event: &Event) {
        match event {
            Event::Exec { .. } => self.execs += 1,
            Event::Connection { allowed: true, .. } => self.connections_allowed += 1,
            Event::Connection { allowed: false, .. } => self.connections_denied += 1,
            Event::Dns { allowed: true, .. } => self.dns_allowed += 1,
            Event::Dns { allowed: false, .. } => self.dns_denied += 1,
            Event::Tripwire { .. } => self.tripwires += 1,
            Event::Limit { .. } => self.limits += 1,
            Event::MonitorAction { .. } => self.monitor_actions += 1,
            Event::SessionStart { .. } | Event::SessionEnd { .. } => {}
        }
    }
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

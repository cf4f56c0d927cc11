//! The event model (schema version [`SCHEMA_VERSION`], documented in `docs/events.md`).
//! Strings from the sandbox (names, argv) are carried as data: JSON escapes every control
//! character, and human output escapes them again, so nothing is ever interpreted.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to [`Event`].
pub const SCHEMA_VERSION: u32 = 1;

/// One record of a session, as written to the audit log (`kind` names the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A sandbox starts: what runs, where, and what is enforced.
    SessionStart {
        /// The command as given.
        argv: Vec<String>,
        /// The workspace directory (host path).
        workspace: String,
        /// `namespaces`, or `degraded` (`--allow-degraded`).
        mode: String,
        /// The Landlock ABI version in force.
        landlock_abi: i32,
        /// `none` or `allowlist`.
        network: String,
        /// The policy layers applied, lowest first.
        layers: Vec<String>,
        /// Protections not enforced in this mode (empty unless degraded).
        missing: Vec<String>,
        /// How resource limits are held: `cgroup v2`, `cgroup v1` or `rlimits`.
        #[serde(default)]
        limits: String,
        /// `recorded` when Landlock's denials are read from the kernel's audit log, or why
        /// not (then the absence of `denial` events means nothing).
        #[serde(default)]
        denials: String,
        /// A warm session's name (`palisade session start`): its commands come later, each
        /// as a `command` record; `argv` is then empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// A process in the sandbox called `execve`/`execveat` (pids inside the sandbox).
    Exec {
        /// Its pid inside the sandbox.
        pid: u32,
        /// Its parent's pid inside the sandbox.
        ppid: u32,
        /// The path it asked for.
        path: String,
        /// Its arguments.
        argv: Vec<String>,
        /// Its working directory.
        cwd: String,
    },
    /// A DNS query to the stub.
    Dns {
        /// The name asked (escaped presentation form).
        name: String,
        /// The query type (`TYPE(A)`, ...).
        qtype: String,
        /// Whether it was answered.
        allowed: bool,
        /// The rule that decided, or why nothing allowed it.
        reason: String,
        /// The synthetic address answered, for an allowed A query.
        answer: Option<String>,
        /// A refusal the policy expects (`network.quiet`): recorded, counted in the
        /// totals, but by no monitor rule.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        quiet: bool,
    },
    /// A connection through the gateway.
    Connection {
        /// The session's number for an allowed connection (from 1), repeated by its
        /// `connection_end`; absent for a refused one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// `http`, `connect`, `socks5` or `transparent`.
        via: String,
        /// `host:port` as the client named it.
        target: String,
        /// Whether the policy allowed it.
        allowed: bool,
        /// The rule that decided, or why it was refused.
        reason: String,
        /// For an allowed connection that could not be made (its name did not resolve):
        /// why. Not a refusal: it counts for no `denied_connections` rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// A refusal the policy expects (`network.quiet`: an agent's telemetry, update
        /// checks): recorded, counted in the totals, but by no monitor rule.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        quiet: bool,
    },
    /// One HTTP request through the gateway, decided on its own (plain proxy, and plaintext
    /// HTTP inside a tunnel or on a transparent port), or what opened a tunnel when it was
    /// refused (`method` `TLS` with the server name as `host`, or `-` for other bytes).
    /// Recorded when the response ends. Never the query or header values, which may carry
    /// secrets.
    Request {
        /// The `connection` it travelled on, when one was allowed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connection: Option<u64>,
        /// `http`, `connect`, `socks5` or `transparent`.
        via: String,
        /// The request's method, `TLS`, or `-`.
        method: String,
        /// The host it named.
        host: String,
        /// The port it named.
        port: u16,
        /// The path, without query, at most 200 characters.
        path: String,
        /// Whether it was forwarded.
        allowed: bool,
        /// The rule that decided, or why it was refused.
        reason: String,
        /// The response's status: the origin's, or the gateway's own refusal (400, 403, 431,
        /// 502); absent when there was none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// The request body's bytes.
        bytes_up: u64,
        /// The response body's bytes.
        bytes_down: u64,
        /// A refusal the policy expects (`network.quiet`): recorded, counted in the
        /// totals, but by no monitor rule.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        quiet: bool,
    },
    /// An allowed connection closed: what it carried.
    ConnectionEnd {
        /// The `connection`'s id.
        id: u64,
        /// Its target.
        target: String,
        /// Bytes sent out (sandbox to upstream).
        bytes_up: u64,
        /// Bytes received.
        bytes_down: u64,
        /// How long it was open, in milliseconds.
        duration_ms: u64,
    },
    /// A connection from the host's loopback to a published port (`--publish`), recorded
    /// when it closes: the supervisor accepted it on `127.0.0.1:host_port` and carried it to
    /// `port` on the sandbox's own loopback.
    Inbound {
        /// The sandbox's port.
        port: u16,
        /// The host's port it was published on.
        host_port: u16,
        /// Who connected (`127.0.0.1:54321`).
        peer: String,
        /// Bytes carried into the sandbox.
        bytes_in: u64,
        /// Bytes carried out of it.
        bytes_out: u64,
        /// How long it was open, in milliseconds.
        duration_ms: u64,
        /// Why it could not be carried in (nothing listens on the port inside), if so.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The session's total `upload` or `download` passed a mark that a byte rule watches
    /// (reported while the bytes flow, not when the connection ends).
    Traffic {
        /// `upload` or `download`.
        direction: String,
        /// The session's total that way, in bytes.
        total: u64,
    },
    /// `count` more records identical to `event` arrived within a second and were folded
    /// into this one (bounded log and memory under a flood); rules saw every one.
    Repeated {
        /// How many more.
        count: u64,
        /// The record repeated.
        event: Box<Event>,
    },
    /// Landlock refused something and said so through the kernel's audit log: `blockers`
    /// names what was missing (`fs.read_file`, `scope.signal`, ...), `object` what it was
    /// (`path=...`, or `opid=... ocomm=...`), as the sandbox saw it.
    Denial {
        /// What was missing.
        blockers: Vec<String>,
        /// What it was about.
        object: String,
    },
    /// A decoy file was opened: a strong sign of a hijacked agent.
    Tripwire {
        /// The decoy, as the user wrote it (`~/...`).
        path: String,
    },
    /// A limit was reached (once per limit and episode): `connections` (every gateway slot is
    /// in use; new connections wait), `upload` or `download` (the session's byte budget is
    /// spent; tunnels close); or a resource limit of `[process]` (`memory`, `pids`,
    /// `cpu_time`, `wall_time`, `tmp_size`) stopped the sandbox.
    Limit {
        /// Which limit.
        limit: String,
        /// What happened, in words.
        detail: String,
    },
    /// A tool of `palisade mcp` was called: `tool` (`read_file`, `write_file`, `edit_file`,
    /// `list_directory`, `search_files`, `run_command`) on `target` (a path, or the command),
    /// allowed by the policy or refused with the reason.
    ToolCall {
        /// The tool's name.
        tool: String,
        /// The path it named (as resolved) or the command line.
        target: String,
        /// Whether it was done.
        allowed: bool,
        /// The rule that decided, why it was refused, or how a command ended.
        reason: String,
    },
    /// A git repository appeared under a writable root during the run (found at its end):
    /// what it holds was written inside the sandbox. `gitlink_of`: an older work tree whose
    /// index records it, so that `git status` there descends into it. `quarantined`: the
    /// files git would run code from that changed during the run, moved aside (each
    /// `FROM -> TO`), so that git on the host obeys none of them.
    NewRepository {
        /// Its git directory.
        path: String,
        /// The older work tree whose index records it, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gitlink_of: Option<String>,
        /// What was moved aside, each `FROM -> TO`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        quarantined: Vec<String>,
    },
    /// A command of a warm session (`palisade run --session`) was asked for; `id` numbers
    /// the session's commands from 1, and its `exec` records follow.
    Command {
        /// Its number in the session.
        id: u64,
        /// The command as given.
        argv: Vec<String>,
        /// Its working directory inside.
        cwd: String,
    },
    /// A command of a warm session ended (or did not start: 125, 126, 127 and `error`).
    CommandEnd {
        /// Its number in the session.
        id: u64,
        /// Its exit status, when it exited.
        exit_code: Option<i32>,
        /// The signal that killed it, when one did.
        signal: Option<i32>,
        /// From the request to its end, in milliseconds.
        duration_ms: u64,
        /// Why it did not start, when it did not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A monitor rule fired and its action was taken.
    MonitorAction {
        /// The rule's name (or its condition when unnamed).
        rule: String,
        /// Its condition, as written.
        condition: String,
        /// `log`, `alert` or `kill`.
        action: String,
        /// What made it fire.
        reason: String,
    },
    /// The sandbox ended.
    SessionEnd {
        /// The exit status, when the command exited (125 when Palisade failed).
        exit_code: Option<i32>,
        /// The signal that killed it, when one did.
        signal: Option<i32>,
        /// How long the session lasted, in milliseconds.
        duration_ms: u64,
        /// What the session recorded, by kind (every record before this one).
        #[serde(default)]
        totals: Totals,
    },
}

/// Counts of a session's events, carried by `session_end`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// `exec` records.
    pub execs: u64,
    /// Allowed `connection` records.
    pub connections_allowed: u64,
    /// Refused `connection` records.
    pub connections_denied: u64,
    /// HTTP requests (`request`) allowed and refused.
    #[serde(default)]
    pub requests_allowed: u64,
    /// Refused `request` records.
    #[serde(default)]
    pub requests_denied: u64,
    /// Answered DNS queries.
    pub dns_allowed: u64,
    /// Refused DNS queries.
    pub dns_denied: u64,
    /// Decoys opened.
    pub tripwires: u64,
    /// `limit` records.
    pub limits: u64,
    /// Rules that fired.
    pub monitor_actions: u64,
    /// Denials Landlock reported (`denial`), and those of them about files.
    #[serde(default)]
    pub denials: u64,
    /// Of them, denials about files.
    #[serde(default)]
    pub files_denied: u64,
    /// Bytes carried by connections that ended (`connection_end`).
    #[serde(default)]
    pub bytes_up: u64,
    /// Bytes in, by the same connections.
    #[serde(default)]
    pub bytes_down: u64,
}

impl Totals {
    /// Counts `event`.
    pub fn add(&mut self, event: &Event) {
        self.add_n(event, 1);
    }

    /// Counts `event` `n` times.
    pub fn add_n(&mut self, event: &Event, n: u64) {
        match event {
            Event::Exec { .. } => self.execs += n,
            Event::Connection { allowed: true, .. } => self.connections_allowed += n,
            Event::Connection { allowed: false, .. } => self.connections_denied += n,
            Event::Request { allowed: true, .. } => self.requests_allowed += n,
            Event::Request { allowed: false, .. } => self.requests_denied += n,
            Event::Dns { allowed: true, .. } => self.dns_allowed += n,
            Event::Dns { allowed: false, .. } => self.dns_denied += n,
            Event::Tripwire { .. } => self.tripwires += n,
            Event::Denial { blockers, .. } => {
                self.denials += n;
                if blockers.iter().any(|b| b.starts_with("fs.")) {
                    self.files_denied += n;
                }
            }
            Event::Limit { .. } => self.limits += n,
            Event::MonitorAction { .. } => self.monitor_actions += n,
            Event::ConnectionEnd { bytes_up, bytes_down, .. } => {
                self.bytes_up += bytes_up * n;
                self.bytes_down += bytes_down * n;
            }
            Event::Repeated { count, event } => self.add_n(event, count * n),
            Event::SessionStart { .. }
            | Event::SessionEnd { .. }
            | Event::Traffic { .. }
            | Event::NewRepository { .. }
            | Event::Inbound { .. }
            | Event::Command { .. }
            | Event::CommandEnd { .. }
            | Event::ToolCall { .. } => {}
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
            Event::ConnectionEnd { .. } => "connection_end",
            Event::Request { .. } => "request",
            Event::Traffic { .. } => "traffic",
            Event::Repeated { .. } => "repeated",
            Event::Tripwire { .. } => "tripwire",
            Event::Denial { .. } => "denial",
            Event::Limit { .. } => "limit",
            Event::NewRepository { .. } => "new_repository",
            Event::ToolCall { .. } => "tool_call",
            Event::Command { .. } => "command",
            Event::CommandEnd { .. } => "command_end",
            Event::Inbound { .. } => "inbound",
            Event::MonitorAction { .. } => "monitor_action",
            Event::SessionEnd { .. } => "session_end",
        }
    }
}

//! The command-line contract. Names here are fixed: scripts depend on them.
//!
//! Doc comments here are clap's help text, written for a terminal (`HOST[:PORT]` is not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run coding agents and their commands in a kernel-enforced sandbox.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Exit status of `run`: the command's own status; 128+N when it was killed by signal N; \
125 when Palisade itself failed (bad policy, missing kernel feature); 126 when the command \
cannot be executed; 127 when it is not found.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command inside the sandbox: `palisade run [OPTIONS] -- CMD [ARGS...]`.
    Run(RunArgs),
    /// Warm sessions: one sandbox brought up once, many commands run in it with `run --session
    /// NAME` (an agent's many short commands pay the start-up once).
    #[command(subcommand)]
    Session(SessionCommand),
    /// Show, explain and check policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Report what this machine can enforce and whether `run` would work (exit 0 if it would).
    Check(CheckArgs),
    /// Read audit logs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List the agent profiles `--profile NAME` can name: built-in, and yours in
    /// `$XDG_CONFIG_HOME/palisade/profiles/`.
    Profiles,
    /// Serve the Model Context Protocol on stdin and stdout: file tools that obey the policy
    /// and `run_command` in a sandbox built from it (for an agent's MCP configuration:
    /// `palisade mcp [POLICY OPTIONS]`).
    Mcp(McpArgs),
    /// Windows: revoke every ACL entry Palisade placed for WORKSPACE and delete its
    /// AppContainer profile (the next run places them again).
    #[cfg(windows)]
    Forget {
        /// The workspace, as `run` was given it.
        workspace: std::path::PathBuf,
    },
    /// Windows: undo what runs that crashed left (placeholders, ACL entries whose placing
    /// was cut short), from the journal.
    #[cfg(windows)]
    Repair,
    /// Windows, as an administrator, once: install (or reinstall) the broker service that adds
    /// a run's network filters, so `--allow-net` needs no elevation afterwards; `--remove`
    /// removes it and what it installed.
    #[cfg(windows)]
    Setup {
        /// Remove the service, its copy of palisade.exe and its record.
        #[arg(long)]
        remove: bool,
    },
    /// Windows: the broker service's entry point (the service control manager starts it).
    #[cfg(windows)]
    #[command(name = "broker-service", hide = true)]
    BrokerService,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain: exit 0 if intact, 1 if edited, reordered or cut.
    Verify {
        /// The log (a `.jsonl` file written by `palisade run`); by default the latest run's
        /// in this workspace.
        file: Option<PathBuf>,
    },
    /// Summarise an audit log: the command, network decisions by host, how it ended.
    Show {
        /// The log; by default the latest run's in this workspace (the current directory).
        file: Option<PathBuf>,
    },
    /// List the session logs of this workspace, newest last: when, how it ended, the
    /// command, the file.
    List {
        /// Every workspace's, with its workspace.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Bring up a sandbox for later commands and print its name once it can take them. It
    /// ends with `session stop`, or when its owner ends (by default the process that ran
    /// this: your shell or agent).
    Start(SessionStartArgs),
    /// End a session: its commands and every process left in it are killed, and its audit
    /// log is closed.
    Stop {
        /// The session's name, as `session start` printed it.
        name: String,
    },
    /// List the running sessions of this user, one name per line.
    List,
    /// The session's own process, started by `session start` (not for direct use).
    #[command(hide = true)]
    Serve(SessionStartArgs),
}

#[derive(Debug, Args)]
pub struct SessionStartArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The session's name (letters, digits, '.', '_', '-'); default: a fresh one.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The process whose end ends the session (default: the parent of this command).
    #[arg(long, value_name = "PID")]
    pub owner: Option<u32>,
    /// Write the session's audit log to FILE (as `run --audit`).
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// Do not record every exec in the audit log.
    #[arg(long)]
    pub no_exec_trace: bool,
    /// The owner's start time, as `session start` read it (internal).
    #[arg(long, hide = true, value_name = "TICKS")]
    pub owner_start: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Run the command in the warm session NAME (`palisade session start`), whose policy
    /// applies: policy options are refused here.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// Write the audit log to FILE, which must not exist yet and must not be writable inside
    /// the sandbox (default: $XDG_STATE_HOME/palisade/sessions/session-TIME-PID.jsonl).
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// Print diagnostics as JSON lines on stderr.
    #[arg(long)]
    pub json: bool,
    /// Stream every audit record live, as JSON Lines, to file descriptor FD ("-" for
    /// stdout, which the command also writes to). A reader that falls behind misses
    /// records (gaps in "seq"); the audit log has them all.
    #[arg(long, value_name = "FD|-")]
    pub events: Option<String>,
    /// Show a compact live view of the events on stderr.
    #[arg(long)]
    pub watch: bool,
    /// Where user namespaces are unavailable (an unprivileged container, an AppArmor
    /// restriction), run with Landlock and seccomp only, and say which protections are missing.
    #[arg(long)]
    pub allow_degraded: bool,
    /// Do not record every exec in the audit log (exec tracing costs one round trip to
    /// Palisade per exec).
    #[arg(long)]
    pub no_exec_trace: bool,
    /// Do not print the one-line summary of refused connections, DNS names and file
    /// accesses at the end of the run (the audit log has them either way).
    #[arg(long)]
    pub quiet: bool,
    /// Print the sandbox plan (mounts, Landlock rules, environment) as JSON and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// Options that select and adjust the policy; shared by `run`, `policy show` and
/// `policy explain`, so `show` and `explain` see exactly what `run` would enforce.
#[derive(Debug, Args, Clone, Default, PartialEq, Eq)]
pub struct PolicyArgs {
    /// The project directory the agent works on (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Add a trusted policy file above the project file (repeatable).
    #[arg(long = "policy", value_name = "FILE")]
    pub policy_files: Vec<PathBuf>,
    /// Apply a profile: built-in (codex, claude, gemini, opencode, aider, generic; `palisade
    /// profiles` lists them) or $XDG_CONFIG_HOME/palisade/profiles/NAME.toml.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Make PATH visible, read-only (repeatable).
    #[arg(long, value_name = "PATH")]
    pub allow_read: Vec<String>,
    /// Make PATH visible and writable (repeatable).
    #[arg(long, value_name = "PATH")]
    pub allow_write: Vec<String>,
    /// Hide PATH (a path or a glob such as '**/.env'; repeatable).
    #[arg(long, value_name = "PATH")]
    pub deny: Vec<String>,
    /// Keep PATH read-only even inside a writable directory (repeatable).
    #[arg(long, value_name = "PATH")]
    pub protect: Vec<String>,
    /// Network mode.
    #[arg(long, value_name = "MODE", value_parser = ["none", "allowlist"])]
    pub net: Option<String>,
    /// Allow connections to HOST[:PORT] (implies --net allowlist; repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub allow_net: Vec<String>,
    /// Refuse connections to HOST[:PORT], whatever allows it (repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub deny_net: Vec<String>,
    /// Forward the host's 127.0.0.1:HOST_PORT to PORT on the sandbox's own loopback, to
    /// reach a server started inside (repeatable; HOST_PORT defaults to PORT).
    #[arg(long, value_name = "[HOST_PORT:]PORT")]
    pub publish: Vec<String>,
    /// Pass NAME from your environment, or set NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Let the project's .palisade.toml widen access (by default it may only narrow).
    #[arg(long)]
    pub trust_project: bool,
    /// Memory for the whole sandbox, tmpfs included: e.g. 4GiB, or `unlimited`.
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub memory: Option<String>,
    /// Processes and threads at once in the sandbox, or `unlimited`.
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub pids: Option<String>,
    /// CPU time of the whole sandbox: e.g. 30m, or `unlimited`.
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    pub cpu_time: Option<String>,
    /// Wall-clock time of the run: e.g. 2h, or `unlimited`. Past it, exit status 124.
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    pub wall_time: Option<String>,
    /// Largest file a process may write: e.g. 1GiB, or `unlimited`.
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub file_size: Option<String>,
    /// Size of the private /tmp: e.g. 2GiB, or `unlimited`.
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub tmp_size: Option<String>,
    /// Open files per process, or `unlimited`.
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub open_files: Option<String>,
}

impl PolicyArgs {
    /// The limit flags given, by their `[process]` key.
    pub fn limits(&self) -> Vec<(&'static str, String)> {
        [
            ("memory", &self.memory),
            ("pids", &self.pids),
            ("cpu_time", &self.cpu_time),
            ("wall_time", &self.wall_time),
            ("file_size", &self.file_size),
            ("tmp_size", &self.tmp_size),
            ("open_files", &self.open_files),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the resolved policy, each rule tagged with the layer it came from.
    Show {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Explain the decision for a path or HOST[:PORT]: allowed or not, by which rule and layer.
    Explain {
        /// A path (absolute, relative, or starting with ~) or HOST[:PORT] (port 443 if omitted).
        target: String,
        /// Treat TARGET as a path even if it looks like a host name.
        #[arg(long, conflicts_with = "host")]
        path: bool,
        /// Treat TARGET as a host even if it looks like a path.
        #[arg(long)]
        host: bool,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a policy file for errors without running anything (exit 1 when it has one).
    Check {
        /// The file to check.
        file: PathBuf,
        /// Check it as a project file (.palisade.toml): also refuse keys that would widen access.
        #[arg(long)]
        project: bool,
        /// The workspace used to expand ${workspace} and relative paths (default: the current directory).
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
    },
    /// Print the built-in default policy.
    Default,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The project to look through for files hard-linked from outside it and repositories
    /// nested deeper than `run` looks (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<std::path::PathBuf>,
}

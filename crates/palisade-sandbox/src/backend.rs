//! The contract between the portable session and one platform's enforcement.

use std::io;
use std::sync::Arc;

use palisade_policy::ResolvedPolicy;
use palisade_policy::hostfs::HostFs;
use serde::Serialize;

use crate::quarantine::{Moved, Suspect};
use crate::view::{FsView, ViewError};
use crate::{Events, Exit, KillSwitch, Request};

/// How strong a sandbox the session asks for. A backend builds [`Strength::Full`] or refuses
/// with [`RunError::Unsupported`]; the weaker one only runs when the user named it
/// (`--allow-degraded`), and then says in its [`Enforcement::missing`] what it lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    /// Every protection of the policy.
    Full,
    /// What the machine allows without the missing feature (on Linux: no namespaces).
    Degraded,
}

/// One enforcement mechanism of the machine, as `palisade check` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mechanism {
    /// Its name (`user namespaces`, `Landlock`, `AppContainer`).
    pub name: String,
    /// Whether it can be used here.
    pub available: bool,
    /// What was found, or why it is missing and how to get it.
    pub detail: String,
}

/// What a backend found on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The platform and its version (`linux 6.8.0-45-generic`).
    pub platform: String,
    /// The mechanisms a full sandbox needs; all available means `run` enforces.
    pub required: Vec<Mechanism>,
    /// Facts that change what is recorded or how limits hold (`cgroups`, `denials`), in
    /// words.
    pub facts: Vec<(String, String)>,
}

impl Probe {
    /// Whether `run` can enforce the whole policy here.
    pub fn can_run(&self) -> bool {
        self.required.iter().all(|m| m.available)
    }

    /// The missing mechanisms, as `NAME: DETAIL`.
    pub fn missing(&self) -> Vec<String> {
        self.required.iter().filter(|m| !m.available).map(|m| format!("{}: {}", m.name, m.detail)).collect()
    }
}

/// What the sandbox of one run enforces, as the backend established it before starting:
/// recorded in `session_start` (see `docs/events.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enforcement {
    /// The mode (`namespaces`, `degraded`).
    pub mode: String,
    /// The Landlock ABI in use (Linux); 0 elsewhere.
    pub landlock_abi: i32,
    /// Protections of the policy this run does not give, in words (empty at full strength).
    pub missing: Vec<String>,
    /// How resource limits hold (`cgroup v2`, `rlimits`).
    pub limits: String,
    /// `recorded` when the platform's own denials are read, else why not.
    pub denials: String,
}

/// Why the session refuses to go on, in words: the message names what failed (the step,
/// the path and the system's error where there are), the hint how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// What failed.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Refusal {
    /// A refusal, with a hint when there is something to suggest.
    pub fn new(message: impl Into<String>, hint: Option<&str>) -> Refusal {
        Refusal { message: message.into(), hint: hint.map(str::to_owned) }
    }
}

/// Why the command did not run (or ran no further than setup).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A step of building or supervising the sandbox failed, with the system's error (its
    /// `source`).
    #[error("setting up the sandbox failed: {step}: {source}")]
    Step {
        /// The step, in words (`creating the sandbox's cgroup`).
        step: String,
        /// The system's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Set-up failed in a way that has no system error (a precondition), or the sandbox
    /// reported its own failure in words (init's or the command's report).
    #[error("setting up the sandbox failed: {0}")]
    Setup(String),
    /// The machine cannot give the requested [`Strength`] (Linux: the kernel refused the
    /// namespaces); the session may retry weaker when the user allowed it.
    #[error("{0}")]
    Unsupported(String),
    /// The command does not exist inside the sandbox (exit status 127).
    #[error("{0}")]
    NotFound(String),
    /// The command exists but cannot be executed (exit status 126).
    #[error("{0}")]
    CannotExecute(String),
}

/// Which of the command's standard streams go to a pseudo-terminal served by the
/// supervisor (decided by the session: those that are terminals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyUse {
    /// Standard input.
    pub stdin: bool,
    /// Standard output.
    pub stdout: bool,
    /// Standard error.
    pub stderr: bool,
}

/// Serves the gateway's listening sockets from outside the sandbox: made by the session from
/// the policy (so the backend never sees the policy), called by the backend once, on a
/// thread of its own, with the listeners it made reachable from inside; it returns when the
/// gateway stops.
pub type Gateway = Box<dyn FnOnce(palisade_gateway::server::Listeners) + Send>;

/// What the session hands a backend to start: where events go, how to be stopped, the
/// gateway, and the two moments the session must know of.
pub struct Wiring {
    /// A pty for these streams, or none.
    pub pty: Option<PtyUse>,
    /// Every report of the sandbox.
    pub events: Arc<dyn Events>,
    /// Armed by the backend with its own way to stop the sandbox.
    pub kill: Arc<KillSwitch>,
    /// Serves the network, when the plan has one.
    pub gateway: Option<Gateway>,
    /// Serves the published ports (`--publish`), when the policy has some: started by the
    /// backend, once the sandbox's network exists, with a way into it.
    pub publish: Option<crate::publish::Publisher>,
    /// Called once the sandbox exists and before the command starts; the session starts its
    /// threads here.
    pub on_started: Box<dyn FnOnce() + Send>,
    /// Called once the sandbox has ended, before the backend undoes what it made on the host
    /// (the session looks at what the run left).
    pub on_ended: Box<dyn FnOnce() + Send>,
    /// A warm session ([`crate::Request::session`]): the commands to start in the sandbox,
    /// instead of the plan's own. A backend that cannot serve them refuses the run.
    #[cfg(target_os = "linux")]
    pub serve: Option<crate::warm::Serve>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring")
            .field("pty", &self.pty)
            .field("gateway", &self.gateway.is_some())
            .field("publish", &self.publish.is_some())
            .finish()
    }
}

/// One platform's enforcement. The session ([`crate::run`]) calls, in order: `preflight`,
/// `plan`, `prepare`, `spawn` (and, when the user allowed it and `spawn` said
/// [`RunError::Unsupported`], `plan`, `prepare` and `spawn` again at [`Strength::Degraded`]);
/// `probe` is for `palisade check`; `move_aside` for what a run left. Entries of the view a
/// backend cannot realise are either refused (`plan` or `prepare`) or named in
/// [`Enforcement::missing`], never dropped silently. A backend never reads the policy after `plan`, never writes the audit log and never
/// decides a connection: it reports [`crate::SandboxEvent`]s.
pub trait Backend {
    /// The platform plan: pure data, built without side effects, printed by
    /// `run --dry-run`.
    type Plan: Serialize;

    /// What this machine can enforce (for `palisade check`). May take a few milliseconds.
    fn probe(&self) -> Probe;

    /// A cheap check before anything is planned: refuses when a mechanism the backend
    /// cannot do without at any strength is missing.
    ///
    /// # Errors
    /// A [`Refusal`] naming the mechanism and how to get it.
    fn preflight(&self) -> Result<(), Refusal>;

    /// Turns the policy into the platform plan for `req`, at `strength`. Pure: reads the
    /// host only through `host`. Starts from [`crate::view::build`].
    ///
    /// # Errors
    /// [`ViewError`] when the policy cannot be shown as asked.
    fn plan(
        &self,
        policy: &ResolvedPolicy,
        host: &dyn HostFs,
        req: Request,
        strength: Strength,
    ) -> Result<Self::Plan, ViewError>;

    /// The portable view inside `plan` (what the session checks before it writes a file on
    /// the host: never one the sandbox can write).
    fn view(plan: &Self::Plan) -> &FsView;

    /// Chooses what the run will use (Linux: the cgroup, the audit subscription) and says
    /// what it will enforce. Called once before each `spawn` (the session opens the audit
    /// log and records `session_start` in between).
    ///
    /// # Errors
    /// A [`Refusal`] when the plan cannot be run here as it is (a host path it would use
    /// is writable inside).
    fn prepare(&mut self, plan: &Self::Plan) -> Result<Enforcement, Refusal>;

    /// Runs `plan` to completion: builds the sandbox, arms `wiring.kill`, calls
    /// `wiring.on_started`, starts the command, reports its events, stops it when the kill
    /// switch triggers, calls `wiring.on_ended`, undoes what it made on the host, and returns
    /// how the command ended.
    ///
    /// # Errors
    /// [`RunError`]. [`RunError::Unsupported`] lets the session retry weaker, so it must come
    /// before `on_started` (the session starts threads there) and leave nothing behind.
    fn spawn(&mut self, plan: &Self::Plan, wiring: Wiring) -> Result<Exit, RunError>;

    /// What the user can do about a failed run, when the backend knows (Linux: a path the
    /// user namespace cannot show).
    fn hint(&self, _error: &RunError) -> Option<String> {
        None
    }

    /// Moves aside what git would run from a git directory the sandbox made or changed (see
    /// [`crate::quarantine`]), reaching it without following links the sandbox planted.
    /// `since` is the run's start as a change time (seconds and nanoseconds since the epoch,
    /// as `st_ctime`): what changed at or after it is moved.
    ///
    /// # Errors
    /// When it cannot be reached safely or a rename fails; nothing is then moved.
    fn move_aside(suspect: Suspect<'_>, since: (i64, i64)) -> io::Result<Vec<Moved>>;
}

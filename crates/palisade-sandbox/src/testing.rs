//! A recording backend: the run contract without a kernel, so the session is tested end to
//! end (events in, audit log and exit status out) on any OS, and so is any code that takes a
//! [`Backend`]. Only with the `testing` feature: it runs nothing and reports success, so it
//! never belongs in a build that runs commands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_policy::ResolvedPolicy;
use palisade_policy::hostfs::HostFs;
use serde::Serialize;

use crate::backend::{Backend, Enforcement, Mechanism, Probe, Refusal, RunError, Strength, Wiring};
use crate::quarantine::{Moved, Suspect};
use crate::view::{self, FsView, ViewError};
use crate::{Exit, Request, SandboxEvent};

/// How a [`Recording`] run ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The command ends so.
    Exit(Exit),
    /// The command is not found ([`RunError::NotFound`]).
    NotFound,
    /// A set-up step fails ([`RunError::Setup`]).
    Setup(String),
    /// It runs until the kill switch triggers (at most 10 s), then ends by SIGKILL.
    UntilKilled,
}

/// The plan of a [`Recording`]: the portable view and the strength asked for.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedPlan {
    /// What was asked.
    pub strength: Strength,
    /// The portable view, as [`view::build`] made it.
    pub view: FsView,
}

/// A backend that runs nothing: it reports `script` once "started" and ends as `ending`;
/// with `refuse_full`, a [`Strength::Full`] spawn fails with [`RunError::Unsupported`] and
/// that reason. Its degraded view is the full one plus `degraded_writable`, host directories
/// writable as they are without namespaces. Every call is written to `calls` (`plan full`,
/// `prepare`, `spawn degraded`, `gateway`, `started`, `killed`, `ended`), for tests to read.
#[derive(Debug, Default)]
pub struct Recording {
    /// Reported in order once started.
    pub script: Vec<SandboxEvent>,
    /// How the run ends (`None`: exit 0).
    pub ending: Option<Ending>,
    /// Refuse the full strength, with this reason.
    pub refuse_full: Option<String>,
    /// Host directories the degraded view shows writable (as Linux's shows `${tmp}`).
    pub degraded_writable: Vec<std::path::PathBuf>,
    /// What the session asked, in order.
    pub calls: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn note(&self, s: impl Into<String>) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(s.into());
    }
}

fn strength(s: Strength) -> &'static str {
    match s {
        Strength::Full => "full",
        Strength::Degraded => "degraded",
    }
}

impl Backend for Recording {
    type Plan = RecordedPlan;

    fn probe(&self) -> Probe {
        Probe {
            platform: "recording".into(),
            required: vec![Mechanism { name: "nothing".into(), available: true, detail: "runs nothing".into() }],
            facts: Vec::new(),
        }
    }

    fn preflight(&self) -> Result<(), Refusal> {
        self.note("preflight");
        Ok(())
    }

    fn plan(
        &self,
        policy: &ResolvedPolicy,
        host: &dyn HostFs,
        req: Request,
        s: Strength,
    ) -> Result<RecordedPlan, ViewError> {
        self.note(format!("plan {}", strength(s)));
        let mut view = view::build(policy, host, &req)?;
        if s == Strength::Degraded {
            for p in &self.degraded_writable {
                view.entries.push(view::Entry::Host { path: p.clone(), writable: true });
            }
        }
        Ok(RecordedPlan { strength: s, view })
    }

    fn view(plan: &RecordedPlan) -> &FsView {
        &plan.view
    }

    fn prepare(&mut self, plan: &RecordedPlan) -> Result<Enforcement, Refusal> {
        self.note("prepare");
        Ok(Enforcement {
            mode: strength(plan.strength).into(),
            missing: if plan.strength == Strength::Degraded { vec!["everything".into()] } else { Vec::new() },
            limits: "none".into(),
            denials: "recorded".into(),
            ..Enforcement::default()
        })
    }

    fn spawn(&mut self, plan: &RecordedPlan, wiring: Wiring) -> Result<Exit, RunError> {
        self.note(format!("spawn {}", strength(plan.strength)));
        if plan.strength == Strength::Full
            && let Some(why) = &self.refuse_full
        {
            return Err(RunError::Unsupported(why.clone()));
        }
        if wiring.gateway.is_some() {
            self.note("gateway");
        }
        let killed = Arc::new(AtomicBool::new(false));
        let k = killed.clone();
        wiring.kill.arm(Box::new(move || k.store(true, Ordering::SeqCst)));
        (wiring.on_started)();
        self.note("started");
        for e in &self.script {
            wiring.events.event(e.clone());
        }
        let result = match self.ending.clone().unwrap_or(Ending::Exit(Exit::Code(0))) {
            Ending::Exit(e) => Ok(e),
            Ending::NotFound => Err(RunError::NotFound("command not found in the sandbox".into())),
            Ending::Setup(m) => Err(RunError::Setup(m)),
            Ending::UntilKilled => {
                let until = Instant::now() + Duration::from_secs(10);
                while !killed.load(Ordering::SeqCst) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(Exit::Signal(9))
            }
        };
        if killed.load(Ordering::SeqCst) {
            self.note("killed");
        }
        (wiring.on_ended)();
        self.note("ended");
        result
    }

    fn move_aside(_: Suspect<'_>, _: (i64, i64)) -> std::io::Result<Vec<Moved>> {
        Ok(Vec::new())
    }
}

//! `palisade run`: resolve the policy, then hand the session to the portable driver
//! ([`palisade_sandbox::run`]) with this platform's backend.

use crate::cli::RunArgs;
use crate::cmd_policy::load_policy_on;
use crate::{Failure, Outcome};

pub fn run(args: RunArgs) -> Outcome {
    if let Some(name) = &args.session {
        args_for_session(&args)?;
        return crate::cmd_session::run_in(name, args.command);
    }
    // The policy is loaded and validated first, so policy errors are reported as such.
    let host = palisade_policy::load::FsResolver::default();
    let (env, policy) = load_policy_on(&args.policy, &host)?;
    let mut backend = backend(&env)?;
    let spec = palisade_sandbox::RunSpec {
        events: args.events.as_deref().map(event_fd).transpose()?,
        argv: args.command,
        audit: args.audit,
        watch: args.watch,
        json: args.json,
        dry_run: args.dry_run,
        allow_degraded: args.allow_degraded,
        trace_exec: !args.no_exec_trace,
        quiet: args.quiet,
        #[cfg(target_os = "linux")]
        session: None,
    };
    palisade_sandbox::run(&mut backend, spec, &env, &policy, &host)
        .map_err(|r| Failure { message: r.message, hint: r.hint })
}

/// `run --session`: the session's policy and audit log apply, so every option that would
/// choose otherwise is refused rather than ignored.
fn args_for_session(args: &RunArgs) -> Result<(), Failure> {
    let given = [
        (args.policy != crate::cli::PolicyArgs::default(), "policy options"),
        (args.audit.is_some(), "--audit"),
        (args.events.is_some(), "--events"),
        (args.watch, "--watch"),
        (args.allow_degraded, "--allow-degraded"),
        (args.no_exec_trace, "--no-exec-trace"),
        (args.dry_run, "--dry-run"),
    ];
    match given.iter().find(|(on, _)| *on) {
        Some((_, what)) => Err(Failure {
            message: format!("{what} cannot be given with --session: the session's own apply"),
            hint: Some("give them to `palisade session start`".into()),
        }),
        None => Ok(()),
    }
}

/// This platform's backend: Linux, whose runs record their placeholders under
/// `$XDG_STATE_HOME/palisade/placeholders` (which the built-in policy hides).
#[cfg(target_os = "linux")]
pub fn backend(env: &palisade_policy::load::Environment) -> Result<palisade_linux::Linux, Failure> {
    Ok(palisade_linux::Linux::new(env.state_home.join("palisade/placeholders")))
}

/// Windows' backend, whose journal and private TEMP folders live in
/// `%LOCALAPPDATA%\palisade` (the built-in policy hides it).
#[cfg(windows)]
fn backend(env: &palisade_policy::load::Environment) -> Result<palisade_windows::Windows, Failure> {
    Ok(palisade_windows::Windows::new(env.state_home.join("palisade")))
}

/// No enforcement backend for this platform yet: refuse rather than run unsandboxed.
#[cfg(not(any(target_os = "linux", windows)))]
fn backend(_: &palisade_policy::load::Environment) -> Result<NoBackend, Failure> {
    Err(Failure {
        message: "this build of Palisade has no enforcement backend for this platform yet; refusing to run the command unsandboxed".into(),
        hint: Some("`palisade check` shows what this machine can enforce".into()),
    })
}

/// The backend of a platform that has none: it cannot be made (no value of it exists), so
/// nothing can run without enforcement.
#[cfg(not(any(target_os = "linux", windows)))]
enum NoBackend {}

#[cfg(not(any(target_os = "linux", windows)))]
impl palisade_sandbox::Backend for NoBackend {
    type Plan = palisade_sandbox::view::FsView;

    fn probe(&self) -> palisade_sandbox::Probe {
        match *self {}
    }
    fn preflight(&self) -> Result<(), palisade_sandbox::Refusal> {
        match *self {}
    }
    fn plan(
        &self,
        _: &palisade_policy::ResolvedPolicy,
        _: &dyn palisade_policy::hostfs::HostFs,
        _: palisade_sandbox::Request,
        _: palisade_sandbox::Strength,
    ) -> Result<Self::Plan, palisade_sandbox::view::ViewError> {
        match *self {}
    }
    fn view(plan: &Self::Plan) -> &palisade_sandbox::view::FsView {
        plan
    }
    fn prepare(&mut self, _: &Self::Plan) -> Result<palisade_sandbox::Enforcement, palisade_sandbox::Refusal> {
        match *self {}
    }
    fn spawn(
        &mut self,
        _: &Self::Plan,
        _: palisade_sandbox::Wiring,
    ) -> Result<palisade_sandbox::Exit, palisade_sandbox::RunError> {
        match *self {}
    }
    fn move_aside(
        _: palisade_sandbox::quarantine::Suspect<'_>,
        _: (i64, i64),
    ) -> std::io::Result<Vec<palisade_sandbox::quarantine::Moved>> {
        Err(std::io::Error::other("no backend on this platform"))
    }
}

/// The `--events` destination: "-" (stdout) or an open, writable descriptor, duplicated
/// close-on-exec so that nothing started later inherits it.
#[cfg(target_os = "linux")]
pub fn event_fd(spec: &str) -> Result<std::fs::File, Failure> {
    let hint = Some("pass --events - for stdout, or an open descriptor such as --events 3 with 3>events.jsonl".into());
    let fd: i32 = if spec == "-" {
        1
    } else {
        spec.parse().ok().filter(|fd| *fd >= 0).ok_or_else(|| Failure {
            message: format!("--events {spec:?}: expected a file descriptor number or \"-\""),
            hint: hint.clone(),
        })?
    };
    palisade_linux::ffi::take_output_fd(fd).map_err(|e| Failure { message: format!("--events {spec}: {e}"), hint })
}

#[cfg(not(target_os = "linux"))]
fn event_fd(_: &str) -> Result<std::fs::File, Failure> {
    Err(Failure { message: "--events is not supported on this platform yet".into(), hint: None })
}

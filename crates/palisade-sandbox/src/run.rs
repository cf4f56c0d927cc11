//! The session driver: from a resolved policy and a command to an exit status, through any
//! [`Backend`]. Everything here is the same on every platform: the environment, the audit
//! log and its live copies, the monitor and its kill switch, the gateway, the degraded retry
//! (only when the user named it), the exit status, and what the run left behind.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use palisade_monitor::live::{LiveOutput, QUEUE, watch_line};
use palisade_monitor::{AuditLog, Sink};
use palisade_policy::ResolvedPolicy;
use palisade_policy::load::{Environment, FsResolver, RepoWatch};

use crate::backend::{Backend, Enforcement, Gateway, PtyUse, Refusal, RunError, Strength, Wiring};
use crate::exit::{CANNOT_EXECUTE, FAILURE, NOT_FOUND};
use crate::report::{self, Say};
use crate::{Events, KillSwitch, Request, Session, monitor};

/// What the user asked of one run, besides the policy (the flags of `palisade run`).
#[derive(Debug, Default)]
pub struct RunSpec {
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// `--audit FILE`: the audit log (relative to the working directory); by default a new
    /// file under `$XDG_STATE_HOME/palisade/sessions/`.
    pub audit: Option<PathBuf>,
    /// `--events`: a live copy of the audit records, already opened by the caller.
    pub events: Option<std::fs::File>,
    /// `--watch`: a readable line per record on stderr.
    pub watch: bool,
    /// `--json`: Palisade's own messages as JSON lines.
    pub json: bool,
    /// `--dry-run`: print the platform plan as JSON and run nothing.
    pub dry_run: bool,
    /// `--allow-degraded`: run weaker when the machine cannot give the full sandbox.
    pub allow_degraded: bool,
    /// Record every exec (off with `--no-exec-trace`).
    pub trace_exec: bool,
    /// `--quiet`: no summary of what was refused at the end of the run.
    pub quiet: bool,
    /// A warm session (`palisade session start`): `argv` is empty, and commands come through
    /// its socket.
    #[cfg(target_os = "linux")]
    pub session: Option<SessionSpec>,
}

impl RunSpec {
    /// The warm session's name, when this run is one.
    pub fn session_name(&self) -> Option<String> {
        #[cfg(target_os = "linux")]
        return self.session.as_ref().map(|s| s.name.clone());
        #[cfg(not(target_os = "linux"))]
        None
    }
}

/// A warm session's part of a run (see [`crate::warm`]): its name, its socket (bound by the
/// caller at [`crate::warm::socket_path`]) and what to do once it serves and when its owner
/// ends.
#[cfg(target_os = "linux")]
pub struct SessionSpec {
    /// Its name.
    pub name: String,
    /// Its listening socket.
    pub listener: std::os::unix::net::UnixListener,
    /// The socket's path (checked against the view: never visible inside).
    pub socket: PathBuf,
    /// Called once the first command could start (the daemon tells `session start`).
    pub on_ready: Box<dyn FnOnce() + Send>,
    /// Returns when the session's owner has ended (run on a thread of its own); the session
    /// then stops.
    pub owner_gone: Option<Box<dyn FnOnce() + Send>>,
}

#[cfg(target_os = "linux")]
impl std::fmt::Debug for SessionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSpec").field("name", &self.name).field("socket", &self.socket).finish()
    }
}

/// Runs `spec` under `policy` with `backend` and returns the exit status: the command's, 124
/// at the wall-clock limit, 126/127 when the command cannot run, 128+N for a signal. With
/// `--dry-run` it prints the platform plan as JSON on stdout and returns 0. Palisade's own
/// messages go to stderr.
///
/// The caller must be single-threaded where the backend needs it (Linux clones the
/// supervisor): `run` starts its own threads only once the sandbox exists.
///
/// # Errors
/// A [`Refusal`] (the caller exits 125) when Palisade itself cannot go on: a missing
/// mechanism, a policy that cannot be shown, an audit log that cannot be made, a failed
/// set-up step.
pub fn run<B: Backend + 'static>(
    backend: &mut B,
    mut spec: RunSpec,
    env: &Environment,
    policy: &ResolvedPolicy,
    host: &FsResolver,
) -> Result<u8, Refusal> {
    backend.preflight()?;
    let say = Say { json: spec.json };
    // State directories are made before planning, so the plan shows them; the host's
    // answers are then asked afresh (the policy's resolver has them as missing).
    let req = request(&spec, env, policy);
    let copies = |dir: &std::path::Path| {
        crate::copies::prepare(policy, dir, say) | crate::copies::prepare_caches(policy, dir, &req.tmp, say)
    };
    let fresh;
    let host = if !spec.dry_run && (make_state_dirs(policy, say) | req.copies.as_deref().is_some_and(copies)) {
        fresh = FsResolver::default();
        &fresh
    } else {
        host
    };
    let plan = backend
        .plan(policy, host, req.clone(), Strength::Full)
        .map_err(|e| Refusal::new(format!("cannot build the sandbox: {e}"), None))?;
    if spec.dry_run {
        let text = serde_json::to_string_pretty(&plan).map_err(|e| Refusal::new(e.to_string(), None))?;
        println!("{text}");
        return Ok(0);
    }
    #[cfg(target_os = "linux")]
    if let Some(s) = &spec.session {
        check_socket_hidden(&s.socket, B::view(&plan))?;
    }
    // Listening before anything starts: a port in use refuses the run, with the reason.
    let mut published = Some(crate::publish::bind(policy)?).filter(|l| !l.is_empty());
    let enforced = backend.prepare(&plan)?;
    let (log, audit) = open_audit(spec.audit.as_deref(), env, policy, B::view(&plan))?;
    let live = live_outputs(&mut spec, &log);
    let refused = Arc::new(crate::refusals::Refusals::default());
    {
        let r = refused.clone();
        log.add_tap(Box::new(move |event, _| r.see(event)));
    }
    let started = std::time::Instant::now();
    report::unevaluated_rules(policy, &enforced.denials, say);
    for n in policy.notes.iter().chain(report::empty_workspace_hint(policy, &spec.argv).as_ref()) {
        say.warning(n);
    }
    let name = spec.argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let path_var = req.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
    if let Some(w) = report::shadowed(&name, &path_var, B::view(&plan)) {
        say.warning(&w);
    }
    log.record(&report::session_start(&spec, policy, &enforced));
    let pty = (std::io::stdin().is_terminal() && spec.session_name().is_none()).then(|| PtyUse {
        stdin: true,
        stdout: std::io::stdout().is_terminal(),
        stderr: std::io::stderr().is_terminal(),
    });
    let kill = KillSwitch::new();
    let sink = {
        let kill = kill.clone();
        monitor(&log, &policy.monitor_rules, Box::new(move || kill.trigger()), spec.json)
    };
    // Every report of the sandbox becomes a record (and reaches the monitor's rules).
    let session = Session::new(sink.clone(), env.home.clone(), spec.json);
    let events: Arc<dyn Events> = session.clone();
    let repos = Arc::new(Mutex::new(RepoWatch::new(policy, env, host)));
    #[cfg(target_os = "linux")]
    let mut serve = spec.session.take().map(|s| session_serve(s, policy, env, B::view(&plan), sink.clone()));
    #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
    let mut wiring = |gateway: Option<Gateway>, publish: Option<crate::publish::Publisher>| Wiring {
        #[cfg(target_os = "linux")]
        serve: serve.take(),
        pty,
        events: events.clone(),
        kill: kill.clone(),
        gateway,
        publish,
        on_started: report::starter(&live, &repos),
        on_ended: report::new_repositories::<B>(&repos, sink.clone(), say),
    };
    let network = policy.mode() == palisade_policy::NetMode::Allowlist;
    let inbound = Arc::new(crate::publish::Inbound::default());
    let publish = published.take().map(|l| crate::publish::publisher(l, sink.clone(), inbound.clone()));
    let result = match backend.spawn(&plan, wiring(network.then(|| gateway(policy, sink.clone())), publish)) {
        Err(RunError::Unsupported(why)) if spec.allow_degraded => {
            // Neither the gateway nor the published ports are wired (their listeners closed
            // with the first attempt's wiring): a weaker sandbox has no network of its own.
            if !policy.publish.is_empty() {
                say.warning(
                    "published ports are not forwarded in the degraded mode: the sandbox shares the host's network, so a server inside listens on the host's loopback itself",
                );
            }
            let weaker = Weaker { spec: &spec, policy, host, req, log: &log, audit: &audit, say };
            retry_weaker(backend, weaker, why, wiring(None, None))
        }
        Err(RunError::Unsupported(why)) => {
            let missing = backend.probe().missing();
            let why = if missing.is_empty() { why } else { format!("{why}; {}", missing.join("; ")) };
            Err(Refusal::new(
                why,
                Some(
                    "`palisade check` shows what this machine can enforce; --allow-degraded runs a weaker sandbox that says what it lacks",
                ),
            ))
        }
        Err(RunError::NotFound(m)) => {
            eprintln!("palisade: {m}");
            if let Some(h) = report::not_found_hint(&name, &path_var, B::view(&plan)) {
                eprintln!("  hint: {h}");
            }
            Ok(NOT_FOUND)
        }
        other => outcome(other, backend),
    };
    let status = match &result {
        Ok(c) => *c,
        Err(_) => FAILURE,
    };
    crate::copies::release_caches(B::view(&plan));
    // Published connections still open are ended, and recorded, before `session_end`.
    inbound.close(std::time::Duration::from_secs(2));
    // Past its wall-clock limit the run ends like `timeout`'s: 124.
    let status = match (&result, session.limit()) {
        (Ok(_), Some((limit, _))) if limit == "wall_time" => crate::exit::TIMED_OUT,
        _ => status,
    };
    session.end(&log, &live, status, started.elapsed().as_millis() as u64);
    if let Some(summary) = refused.summary().filter(|_| !spec.quiet) {
        report::refused(&summary, &audit, say);
    }
    prune_sessions(env, policy, &audit);
    result.map(|_| status)
}

/// Makes the missing directories of `filesystem.state` on the host (mode 0700), each said
/// once; one that cannot be made is said too (what is kept there then ends with the run).
/// Returns whether any was made.
fn make_state_dirs(policy: &ResolvedPolicy, say: Say) -> bool {
    let mut made = false;
    for r in policy.paths.iter().filter(|r| r.state && r.kind == palisade_policy::PathKind::Write) {
        let path = r.pattern.base();
        if std::fs::symlink_metadata(&path).is_ok()
            || policy.decide_path(&path).access != palisade_policy::Access::Write
        {
            continue;
        }
        if !crate::copies::may_make(policy, r.via_link.as_deref().unwrap_or(&path), &path, &r.origin, say) {
            continue;
        }
        match crate::copies::make_private_dirs(&path) {
            Ok(()) => {
                made = true;
                say.warning(&format!(
                    "made {} on the host ({}), so that what is kept there persists",
                    path.display(),
                    r.origin
                ));
            }
            Err(e) => say.warning(&format!(
                "cannot make {} ({}): {e}; what is kept there ends with the run",
                path.display(),
                r.origin
            )),
        }
    }
    made
}

/// What a retry at [`Strength::Degraded`] needs of the session.
struct Weaker<'a> {
    spec: &'a RunSpec,
    policy: &'a ResolvedPolicy,
    host: &'a FsResolver,
    req: Request,
    log: &'a AuditLog,
    /// The audit log's canonical path.
    audit: &'a std::path::Path,
    say: Say,
}

/// The weaker run, once the user allowed it: planned, checked like the first (the audit log
/// must not be writable in the weaker view either: without namespaces `${tmp}` is the host's
/// own), said and recorded, then started. Any refusal here still ends the session properly.
fn retry_weaker<B: Backend>(backend: &mut B, w: Weaker<'_>, why: String, wiring: Wiring) -> Result<u8, Refusal> {
    let weaker = backend
        .plan(w.policy, w.host, w.req, Strength::Degraded)
        .map_err(|e| Refusal::new(format!("cannot build the sandbox: {e}"), None))?;
    if B::view(&weaker).exposes_writable(w.audit) {
        return Err(Refusal::new(
            format!("the audit log {} would be writable inside the degraded sandbox", w.audit.display()),
            Some(
                "without namespaces the sandbox writes the host's own directories (${tmp} included): pass --audit with a file outside every write grant",
            ),
        ));
    }
    let enforced: Enforcement = backend.prepare(&weaker)?;
    report::degraded(&why, &enforced, w.say);
    w.log.record(&report::session_start(w.spec, w.policy, &enforced));
    let r = backend.spawn(&weaker, wiring);
    outcome(r, backend)
}

/// The request: the command, the policy's environment with `HOME` and `TMPDIR` pointing at
/// the sandbox's (unless the policy sets them), the canonical private `${tmp}`.
fn request(spec: &RunSpec, env: &Environment, policy: &ResolvedPolicy) -> Request {
    Request {
        argv: spec.argv.clone(),
        cwd: env.cwd.clone(),
        env: command_env(policy, env, palisade_policy::load::process_env()),
        tmp: palisade_policy::PathResolver::resolve(&FsResolver::default(), &env.tmp),
        trace_exec: spec.trace_exec,
        copies: Some(crate::copies::dir(env, policy)),
        session: spec.session_name().is_some(),
    }
}

/// A command's environment from its caller's (`parent`): what the policy's `[environment]`
/// passes and sets, with `HOME` and `TMPDIR` pointing at the sandbox's (unless the policy
/// sets them), sorted.
fn command_env(
    policy: &ResolvedPolicy,
    env: &Environment,
    parent: Vec<(std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(String, String)> {
    let mut vars = policy.environment(parent);
    let mut set = |k: &str, v: String| {
        if !policy.env_set.iter().any(|s| s.name == k) {
            vars.retain(|(n, _)| n != k);
            vars.push((k.to_owned(), v));
        }
    };
    set("HOME", env.home.to_string_lossy().into_owned());
    set("TMPDIR", env.tmp.to_string_lossy().into_owned());
    vars.sort();
    vars
}

/// Refuses a session whose socket the sandbox could see: a command could then ask for
/// commands of its own, or a later session's socket could be planted.
#[cfg(target_os = "linux")]
fn check_socket_hidden(socket: &std::path::Path, view: &crate::view::FsView) -> Result<(), Refusal> {
    let dir = socket.parent().unwrap_or(socket);
    let canonical = palisade_policy::PathResolver::resolve(&FsResolver::default(), dir);
    match view.seen(&canonical) {
        crate::view::Seen::Host(palisade_policy::Access::Read | palisade_policy::Access::Write) => Err(Refusal::new(
            format!("the session's socket directory {} would be visible inside the sandbox", dir.display()),
            Some("keep $XDG_STATE_HOME/palisade out of every grant (the built-in policy hides it)"),
        )),
        _ => Ok(()),
    }
}

/// The backend's side of a session: once it serves, the socket server starts (with the
/// owner's watch) and the caller is told the session is ready.
#[cfg(target_os = "linux")]
fn session_serve(
    s: SessionSpec,
    policy: &ResolvedPolicy,
    env: &Environment,
    view: &crate::view::FsView,
    sink: Arc<dyn palisade_monitor::Sink>,
) -> crate::warm::Serve {
    use crate::warm::server::{Context, serve};
    let (p, e, v, workspace) = (policy.clone(), env.clone(), view.clone(), policy.workspace.clone());
    let ctx = Arc::new(Context {
        env: Box::new(move |parent| command_env(&p, &e, parent)),
        cwd: Box::new(move |wanted| v.cwd_for(wanted, &FsResolver::default(), &workspace)),
        sink,
        commands: Mutex::new(None),
    });
    let SessionSpec { listener, on_ready, owner_gone, .. } = s;
    crate::warm::Serve {
        on_serving: Box::new(move |commands| {
            *ctx.commands.lock().unwrap_or_else(|e| e.into_inner()) = Some(commands);
            if let Some(wait) = owner_gone {
                let c = ctx.clone();
                let _ = std::thread::Builder::new().name("palisade-owner".into()).spawn(move || {
                    wait();
                    c.stop();
                });
            }
            let _ = std::thread::Builder::new().name("palisade-sessions".into()).spawn(move || serve(listener, ctx));
            on_ready();
        }),
    }
}

/// The directory of session logs: `[monitor] audit`, else
/// `$XDG_STATE_HOME/palisade/sessions` (what `palisade audit list` reads).
pub fn sessions_dir(env: &Environment, policy: &ResolvedPolicy) -> PathBuf {
    policy.audit.as_ref().map_or_else(|| env.state_home.join("palisade/sessions"), |s| s.value.clone())
}

/// After a run, at most once a minute: the session logs beyond `[monitor] retention` (30
/// days) or `keep` (1,000) are removed from the directory, never the one just written.
fn prune_sessions(env: &Environment, policy: &ResolvedPolicy, current: &std::path::Path) {
    use palisade_monitor::sessions::{DEFAULT_KEEP, DEFAULT_RETENTION, PRUNE_EVERY, prune_if_due};
    let retention = policy.retention.as_ref().map_or(DEFAULT_RETENTION, |s| s.value);
    let keep = policy.keep.as_ref().map_or(DEFAULT_KEEP, |s| s.value);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let _ = prune_if_due(&sessions_dir(env, policy), retention, keep, now, current, PRUNE_EVERY);
}

/// Opens a session's audit log, `audit` (relative to the working directory) or a new file in
/// [`sessions_dir`]: never one the sandbox (as `view` shows it) could write, never an
/// existing one. Returns it and its canonical path. `run` and `palisade mcp` use it.
///
/// # Errors
/// A [`Refusal`] naming the file: writable inside, a file where the directory should be, or
/// the system's error creating it.
pub fn open_audit(
    audit: Option<&std::path::Path>,
    env: &Environment,
    policy: &ResolvedPolicy,
    view: &crate::view::FsView,
) -> Result<(Arc<AuditLog>, PathBuf), Refusal> {
    let path = match audit {
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => env.cwd.join(p),
        None => {
            let secs =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let dir = sessions_dir(env, policy);
            if dir.is_file() {
                return Err(Refusal::new(
                    format!("[monitor] audit names {}, a file: it is the directory of session logs", dir.display()),
                    Some("name a directory (the default is $XDG_STATE_HOME/palisade/sessions), or pass --audit FILE"),
                ));
            }
            dir.join(palisade_monitor::sessions::file_name(secs, std::process::id()))
        }
    };
    let canonical = palisade_policy::PathResolver::resolve(&FsResolver::default(), &path);
    if view.exposes_writable(&canonical) {
        return Err(Refusal::new(
            format!("the audit log {} would be writable inside the sandbox", path.display()),
            Some("write it outside the workspace (the default is under $XDG_STATE_HOME/palisade/sessions/)"),
        ));
    }
    let log = AuditLog::create(&path).map(Arc::new).map_err(|e| {
        Refusal::new(
            format!("cannot create the audit log {}: {e}", path.display()),
            Some("pass --audit FILE with a new file in a writable directory"),
        )
    })?;
    Ok((log, canonical))
}

/// `--events` and `--watch`: live copies of the audit records, each with its own writer
/// thread (started with the sandbox) so that a slow reader never blocks the session.
fn live_outputs(spec: &mut RunSpec, log: &AuditLog) -> Vec<(&'static str, Arc<LiveOutput>)> {
    let mut outs = Vec::new();
    if let Some(file) = spec.events.take() {
        let out = LiveOutput::new(file, QUEUE);
        let tap = out.clone();
        log.add_tap(Box::new(move |_, line| tap.send(line.as_bytes().to_vec())));
        outs.push(("--events", out));
    }
    if spec.watch {
        let out = LiveOutput::new(std::io::stderr(), QUEUE);
        let tap = out.clone();
        log.add_tap(Box::new(move |event, _| tap.send(watch_line(event).into_bytes())));
        outs.push(("--watch", out));
    }
    outs
}

/// The gateway for this policy: serves the listeners the sandbox made (HTTP proxy, SOCKS5,
/// DNS stub, transparent ports) with the policy's decisions and budgets, recording into
/// `sink`.
fn gateway(policy: &ResolvedPolicy, sink: Arc<dyn Sink>) -> Gateway {
    use palisade_gateway::server::{Budgets, serve};
    let decider = palisade_gateway::decision::Decider::new(policy.rules.clone());
    let marks = palisade_monitor::rules::byte_marks(&policy.monitor_rules);
    let budgets = Budgets::of(&policy.net_budgets);
    Box::new(move |l| {
        if let Err(e) = serve(l, decider, budgets, Some(sink), (marks.up, marks.down)) {
            eprintln!("palisade: the gateway stopped: {e}");
        }
    })
}

/// Maps how the command ended (or failed to start) to an exit status.
fn outcome<B: Backend>(r: Result<crate::Exit, RunError>, backend: &B) -> Result<u8, Refusal> {
    match r {
        Ok(exit) => Ok(exit.status()),
        Err(RunError::NotFound(m)) => {
            eprintln!("palisade: {m}");
            Ok(NOT_FOUND)
        }
        Err(RunError::CannotExecute(m)) => {
            eprintln!("palisade: {m}");
            Ok(CANNOT_EXECUTE)
        }
        Err(e) => Err(Refusal { hint: backend.hint(&e), message: e.to_string() }),
    }
}

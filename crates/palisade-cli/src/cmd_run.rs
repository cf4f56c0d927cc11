//! `palisade run`: resolve the policy, plan the sandbox, enforce it and run the command.

#[cfg(target_os = "linux")]
use std::io::IsTerminal;

use crate::cli::RunArgs;
use crate::cmd_policy::load_policy_on;
#[cfg(target_os = "linux")]
use crate::exit;
use crate::{Failure, Outcome};

pub fn run(args: RunArgs) -> Outcome {
    // The policy is loaded and validated first, so policy errors are reported as such.
    let host = palisade_policy::load::FsResolver::default();
    let (env, policy) = load_policy_on(&args.policy, &host)?;
    run_platform(args, env, policy, &host)
}

#[cfg(target_os = "linux")]
fn run_platform(
    args: RunArgs,
    env: palisade_policy::load::Environment,
    policy: palisade_policy::ResolvedPolicy,
    host: &palisade_policy::load::FsResolver,
) -> Outcome {
    use palisade_linux::{RunError, plan};
    use palisade_monitor::Sink;

    let abi = palisade_linux::probe::landlock_abi_now();
    if abi < palisade_linux::probe::LANDLOCK_MINIMUM_ABI {
        let report = palisade_linux::probe::probe();
        return Err(Failure {
            message: format!("cannot enforce the policy: Landlock: {}", report.landlock.detail),
            hint: Some("`palisade check` shows what this machine can enforce".into()),
        });
    }
    let mut vars_env = policy.environment(palisade_policy::load::process_env());
    let mut set = |k: &str, v: String| {
        if !policy.env_set.iter().any(|s| s.name == k) {
            vars_env.retain(|(n, _)| n != k);
            vars_env.push((k.to_owned(), v));
        }
    };
    set("HOME", env.home.to_string_lossy().into_owned());
    set("TMPDIR", env.tmp.to_string_lossy().into_owned());
    vars_env.sort();
    let tmp = palisade_policy::PathResolver::resolve(&palisade_policy::load::FsResolver::default(), &env.tmp);
    let req = plan::Request {
        argv: args.command.clone(),
        cwd: env.cwd.clone(),
        env: vars_env,
        tmp,
        trace_exec: !args.no_exec_trace,
    };
    let plan = plan::build(&policy, host, req.clone())
        .map_err(|e| Failure { message: format!("cannot build the sandbox: {e}"), hint: None })?;
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).map_err(|e| Failure { message: e.to_string(), hint: None })?
        );
        return Ok(0);
    }
    let log = open_audit(&args, &env, &plan)?;
    let registry = placeholder_registry(&env, &plan)?;
    let live = live_outputs(&args, &log)?;
    let started = std::time::Instant::now();
    let cgroup = palisade_linux::cgroup_layout(&plan.limits);
    let limits_mode = cgroup.as_ref().map_or("rlimits", |l| l.label());
    let (audit_fd, denials) = match palisade_linux::kaudit::open() {
        Ok(fd) => (Some(fd), "recorded".to_owned()),
        Err(why) => (None, why),
    };
    warn_unevaluated_rules(&policy, &denials, args.json);
    for n in policy.notes.iter().chain(empty_workspace_hint(&policy, &args.command).as_ref()) {
        if args.json {
            eprintln!("{}", serde_json::json!({ "level": "warning", "reason": n }));
        } else {
            eprintln!("palisade: warning: {n}");
        }
    }
    log.record(&session_start(&args, &policy, ("namespaces", abi, &[]), limits_mode, &denials));
    let pty = std::io::stdin().is_terminal().then(|| palisade_linux::PtyUse {
        stdin: true,
        stdout: std::io::stdout().is_terminal(),
        stderr: std::io::stderr().is_terminal(),
    });
    let kill = palisade_linux::KillSwitch::new()
        .map_err(|e| Failure { message: format!("creating the monitor's kill switch: {e}"), hint: None })?;
    let sink = {
        let kill = kill.clone();
        palisade_sandbox::monitor(&log, &policy.monitor_rules, Box::new(move || kill.trigger()), args.json)
    };
    let gateway = plan.network.as_ref().map(|_| gateway(&policy, sink.clone()));
    // Every report of the sandbox becomes a record (and reaches the monitor's rules).
    let session = palisade_sandbox::Session::new(sink.clone(), env.home.clone(), args.json);
    let events: std::sync::Arc<dyn palisade_sandbox::Events> = session.clone();
    let repos = std::sync::Arc::new(std::sync::Mutex::new(palisade_policy::load::RepoWatch::new(&policy, &env, host)));
    let opts = palisade_linux::RunOptions {
        pty,
        gateway,
        kill: Some(kill.clone()),
        events: Some(events.clone()),
        on_started: Some(starter(&live, &repos)),
        on_ended: Some(new_repository_reporter(&repos, sink.clone(), args.json)),
        denials: audit_fd,
        cgroup,
        placeholders: Some(registry),
    };
    let result = match palisade_linux::run(&plan, opts) {
        Err(RunError::Namespaces(m)) if args.allow_degraded => {
            let degraded = plan::build_degraded(&policy, host, req)
                .map_err(|e| Failure { message: format!("cannot build the sandbox: {e}"), hint: None })?;
            warn_degraded(&m, abi, &degraded.missing, args.json);
            log.record(&session_start(&args, &policy, ("degraded", abi, &degraded.missing), "rlimits", &denials));
            outcome(palisade_linux::run_degraded(
                &degraded,
                palisade_linux::RunOptions {
                    pty,
                    on_started: Some(starter(&live, &repos)),
                    on_ended: Some(new_repository_reporter(&repos, sink.clone(), args.json)),
                    kill: Some(kill),
                    events: Some(events),
                    // The first subscription went with the failed attempt.
                    denials: palisade_linux::kaudit::open().ok(),
                    ..Default::default()
                },
            ))
        }
        Err(RunError::Namespaces(m)) => {
            let report = palisade_linux::probe::probe();
            Err(Failure {
                message: format!("{m}; {}", report.user_namespaces.detail),
                hint: Some(
                    "`palisade check` shows what this machine can enforce; --allow-degraded runs with Landlock and seccomp only".into(),
                ),
            })
        }
        other => outcome(other),
    };
    // Past its wall-clock limit the run ends like `timeout`'s: 124.
    let result = match (&result, session.limit()) {
        (Ok(_), Some((limit, _))) if limit == "wall_time" => Ok(exit::TIMED_OUT),
        _ => result,
    };
    let status = match &result {
        Ok(c) => *c,
        Err(_) => exit::FAILURE,
    };
    session.end(&log, &live, status, started.elapsed().as_millis() as u64);
    result
}

/// A hint, not a protection: in an empty workspace that is no repository, a command that
/// mentions git is most likely `git init` or `git clone URL .`, which fail inside (the
/// workspace's `.git` is protected) with git's own words ("not an empty directory").
#[cfg(target_os = "linux")]
fn empty_workspace_hint(policy: &palisade_policy::ResolvedPolicy, command: &[std::ffi::OsString]) -> Option<String> {
    let mentions_git = command.iter().any(|a| a.to_string_lossy().contains("git"));
    let empty = std::fs::read_dir(&policy.workspace).is_ok_and(|mut d| d.next().is_none());
    (mentions_git && empty && policy.protects_git() && policy.git_repositories.is_empty()).then(|| {
        format!(
            "the workspace {} is empty and no git repository, and cannot become one inside the sandbox (`git init` or `git clone URL .` there fail: a configuration and hooks written inside would run on the host); run that outside first, or clone into a subdirectory (its configuration and hooks are moved aside when the run ends)",
            policy.workspace.display()
        )
    })
}

/// Repositories made during the run: nothing can stop a sandbox from making one (their
/// configuration and hooks were written inside), so the user is told where, and whether an
/// older work tree's `git status` descends into it. Runs when the sandbox has ended, before
/// its placeholders are removed.
#[cfg(target_os = "linux")]
fn new_repository_reporter(
    watch: &std::sync::Arc<std::sync::Mutex<Option<palisade_policy::load::RepoWatch>>>,
    sink: std::sync::Arc<dyn palisade_monitor::Sink>,
    json: bool,
) -> Box<dyn FnOnce() + Send> {
    let watch = watch.clone();
    Box::new(move || {
        let Some(w) = watch.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let found = w.new_repositories();
        let say = |text: String| {
            if json {
                eprintln!("{}", serde_json::json!({ "level": "warning", "reason": text }));
            } else {
                eprintln!("palisade: warning: {text}");
            }
        };
        if found.too_many {
            let detail = format!(
                "more git repositories than Palisade examines ({}) lie under the writable directories after the run: not all were checked for what the sandbox wrote; look for .git directories and HEAD files made during the run before you run git there",
                palisade_policy::git::Bounds::AFTER_RUN.repositories
            );
            say(detail.clone());
            sink.record(&palisade_monitor::Event::Limit { limit: "repositories".into(), detail });
        }
        for r in found.repositories {
            let path = r.git_dir.display().to_string();
            let gitlink_of = r.gitlink_of.as_ref().map(|p| p.display().to_string());
            // The writable root it lies under (the innermost), and, for a worktree added to
            // a repository that was there before, that repository's common directory.
            let root = w.roots().iter().filter(|root| r.git_dir.starts_with(root)).max_by_key(|p| p.as_os_str().len());
            let keep = r.common.as_deref().filter(|c| w.known().iter().any(|k| k == c));
            let moved = match root {
                Some(root) => palisade_linux::quarantine::quarantine(
                    palisade_linux::quarantine::Suspect {
                        root,
                        git_dir: &r.git_dir,
                        work_tree: r.work_tree.as_deref(),
                        gitlink: r.gitlink_of.is_some(),
                        keep_commondir_of: keep,
                    },
                    w.since(),
                ),
                None => Ok(Vec::new()),
            };
            let of = gitlink_of.as_deref().map_or(String::new(), |o| format!(" (git status in {o} descends into it)"));
            let quarantined: Vec<String> = match &moved {
                Ok(m) => m.iter().map(|m| format!("{} -> {}", m.from.display(), m.to.display())).collect(),
                Err(_) => Vec::new(),
            };
            match &moved {
                Ok(m) if m.is_empty() => {}
                Ok(m) => say(format!(
                    "the git repository {path} was made or changed inside the sandbox{of}; what git would run from it was moved aside, so that git on the host obeys none of it: {}. Read them, and move them back to use them",
                    m.iter()
                        .map(|m| format!(
                            "{} -> {}",
                            m.from.display(),
                            m.to.file_name().unwrap_or_default().to_string_lossy()
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(e) => say(format!(
                    "the git repository {path} was made inside the sandbox{of}, and what git would run from it could not be moved aside ({e}): read its config and hooks before you run git there"
                )),
            }
            sink.record(&palisade_monitor::Event::NewRepository { path, gitlink_of, quarantined });
        }
    })
}

/// Rules whose events this run cannot produce: said at every run, so nobody believes a rule
/// protects them when it cannot fire. `denials` is `recorded`, or why Landlock's denials
/// cannot be read here.
#[cfg(target_os = "linux")]
fn warn_unevaluated_rules(policy: &palisade_policy::ResolvedPolicy, denials: &str, json: bool) {
    use palisade_policy::monitor::{Condition, Counter};
    for r in &policy.monitor_rules {
        let why = match &r.when {
            Condition::Rate { counter: Counter::DeniedFiles, .. } if denials != "recorded" => {
                format!("file denials come from the kernel's audit log, which cannot be read here: {denials}")
            }
            _ => continue,
        };
        if json {
            let v = serde_json::json!({ "level": "warning", "rule": r.when.to_string(), "at": r.origin.site.to_string(), "reason": why });
            eprintln!("{v}");
        } else {
            eprintln!("palisade: warning: rule `{}` ({}) cannot fire: {why}", r.when, r.origin.site);
        }
    }
}

/// Once the sandbox exists (its placeholders made): stamps what git discovery looked at, and
/// starts the live outputs' writer threads.
#[cfg(target_os = "linux")]
fn starter(
    live: &[(&'static str, std::sync::Arc<palisade_monitor::live::LiveOutput>)],
    repos: &std::sync::Arc<std::sync::Mutex<Option<palisade_policy::load::RepoWatch>>>,
) -> Box<dyn FnOnce() + Send> {
    let outs: Vec<_> = live.iter().map(|(_, o)| o.clone()).collect();
    let repos = repos.clone();
    Box::new(move || {
        if let Some(w) = repos.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            w.stamp();
        }
        for o in outs {
            if let Err(e) = o.start() {
                eprintln!("palisade: cannot start a live output: {e}");
            }
        }
    })
}

/// `--events` and `--watch`: live copies of the audit records, each with its own writer
/// thread so that a slow reader never blocks the session.
#[cfg(target_os = "linux")]
fn live_outputs(
    args: &RunArgs,
    log: &palisade_monitor::AuditLog,
) -> Result<Vec<(&'static str, std::sync::Arc<palisade_monitor::live::LiveOutput>)>, Failure> {
    use palisade_monitor::live::{LiveOutput, QUEUE, watch_line};
    let mut outs = Vec::new();
    if let Some(spec) = &args.events {
        let file = event_fd(spec)?;
        let out = LiveOutput::new(file, QUEUE);
        let tap = out.clone();
        log.add_tap(Box::new(move |_, line| tap.send(line.as_bytes().to_vec())));
        outs.push(("--events", out));
    }
    if args.watch {
        let out = LiveOutput::new(std::io::stderr(), QUEUE);
        let tap = out.clone();
        log.add_tap(Box::new(move |event, _| tap.send(watch_line(event).into_bytes())));
        outs.push(("--watch", out));
    }
    Ok(outs)
}

/// The `--events` destination: "-" (stdout) or an open, writable descriptor, duplicated
/// close-on-exec so that nothing started later inherits it.
#[cfg(target_os = "linux")]
fn event_fd(spec: &str) -> Result<std::fs::File, Failure> {
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

/// Opens the session's audit log: never one the sandbox could write, never an existing one.
#[cfg(target_os = "linux")]
fn open_audit(
    args: &RunArgs,
    env: &palisade_policy::load::Environment,
    plan: &palisade_linux::plan::Plan,
) -> Result<std::sync::Arc<palisade_monitor::AuditLog>, Failure> {
    let path = match &args.audit {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => env.cwd.join(p),
        None => {
            let secs =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            env.state_home.join("palisade/sessions").join(format!("session-{secs}-{}.jsonl", std::process::id()))
        }
    };
    let canonical = palisade_policy::PathResolver::resolve(&palisade_policy::load::FsResolver::default(), &path);
    if plan.exposes_writable(&canonical) {
        return Err(Failure {
            message: format!("the audit log {} would be writable inside the sandbox", path.display()),
            hint: Some(
                "write it outside the workspace (the default is under $XDG_STATE_HOME/palisade/sessions/)".into(),
            ),
        });
    }
    palisade_monitor::AuditLog::create(&path).map(std::sync::Arc::new).map_err(|e| Failure {
        message: format!("cannot create the audit log {}: {e}", path.display()),
        hint: Some("pass --audit FILE with a new file in a writable directory".into()),
    })
}

/// Where runs record the placeholders they make (see `palisade_linux::placeholders`): under
/// `$XDG_STATE_HOME/palisade/`, which the built-in policy hides from the sandbox. A policy
/// that makes it writable inside is refused: the sandbox could then have Palisade remove
/// files of its choosing.
#[cfg(target_os = "linux")]
pub fn placeholder_registry(
    env: &palisade_policy::load::Environment,
    plan: &palisade_linux::plan::Plan,
) -> Result<std::path::PathBuf, Failure> {
    let dir = env.state_home.join("palisade/placeholders");
    let canonical = palisade_policy::PathResolver::resolve(&palisade_policy::load::FsResolver::default(), &dir);
    if plan.exposes_writable(&canonical) || plan.exposes_writable(&canonical.join("run-0")) {
        return Err(Failure {
            message: format!("the placeholder registry {} would be writable inside the sandbox", dir.display()),
            hint: Some("keep $XDG_STATE_HOME/palisade out of every write grant (the built-in policy denies it)".into()),
        });
    }
    Ok(dir)
}

#[cfg(target_os = "linux")]
fn session_start(
    args: &RunArgs,
    policy: &palisade_policy::ResolvedPolicy,
    (mode, abi, missing): (&str, i32, &[String]),
    limits: &str,
    denials: &str,
) -> palisade_monitor::Event {
    palisade_monitor::Event::SessionStart {
        argv: args.command.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        workspace: policy.workspace.to_string_lossy().into_owned(),
        mode: mode.into(),
        landlock_abi: abi,
        network: policy.mode().to_string(),
        layers: policy.layers.iter().map(|(k, s)| format!("{k} ({s})")).collect(),
        missing: missing.to_vec(),
        limits: limits.into(),
        denials: denials.into(),
    }
}

/// The gateway for this policy: serves the listeners the sandbox made (HTTP proxy, SOCKS5,
/// DNS stub, transparent ports).
#[cfg(target_os = "linux")]
fn gateway(
    policy: &palisade_policy::ResolvedPolicy,
    sink: std::sync::Arc<dyn palisade_monitor::Sink>,
) -> palisade_linux::Gateway {
    use palisade_gateway::server::{Budgets, Listeners, serve};
    let decider = palisade_gateway::decision::Decider::new(policy.rules.clone());
    let marks = palisade_monitor::rules::byte_marks(&policy.monitor_rules);
    let budgets = Budgets::of(&policy.net_budgets);
    Box::new(move |s: palisade_linux::GatewaySockets| {
        let l = Listeners {
            http: Some(s.http.into()),
            socks: Some(s.socks.into()),
            dns_udp: Some(s.dns_udp.into()),
            dns_tcp: Some(s.dns_tcp.into()),
            transparent: s.transparent.into_iter().map(Into::into).collect(),
        };
        if let Err(e) = serve(l, decider, budgets, Some(sink), (marks.up, marks.down)) {
            eprintln!("palisade: the gateway stopped: {e}");
        }
    })
}

/// Maps how the command ended (or failed to start) to an exit status.
#[cfg(target_os = "linux")]
fn outcome(r: Result<palisade_linux::Exit, palisade_linux::RunError>) -> Outcome {
    use palisade_linux::RunError;
    match r {
        Ok(exit) => Ok(exit.status()),
        Err(RunError::NotFound(m)) => {
            eprintln!("palisade: {m}");
            Ok(exit::NOT_FOUND)
        }
        Err(RunError::CannotExecute(m)) => {
            eprintln!("palisade: {m}");
            Ok(exit::CANNOT_EXECUTE)
        }
        Err(e) => {
            let message = e.to_string();
            let hint = message.contains("Permission denied").then(|| {
                "the sandbox's user namespace holds only your own user id: a path of another user that root reaches \
                 through its capabilities, or a directory closed to your user, cannot be shown inside; grant paths \
                 your user can read"
                    .to_owned()
            });
            Err(Failure { message, hint })
        }
    }
}

/// The degraded mode is never silent: it says why, what still holds and what does not.
#[cfg(target_os = "linux")]
fn warn_degraded(why: &str, abi: i32, missing: &[String], json: bool) {
    if json {
        let v = serde_json::json!({ "level": "warning", "mode": "degraded", "reason": why, "landlock_abi": abi, "missing": missing });
        eprintln!("{v}");
        return;
    }
    eprintln!("palisade: warning: DEGRADED MODE (--allow-degraded): {why}");
    eprintln!(
        "palisade: enforced: Landlock ABI {abi} over the policy's grants, TCP refused, seccomp, no capabilities, no_new_privs"
    );
    for m in missing {
        eprintln!("palisade: NOT enforced: {m}");
    }
}

#[cfg(not(target_os = "linux"))]
fn run_platform(
    _: RunArgs,
    _: palisade_policy::load::Environment,
    _: palisade_policy::ResolvedPolicy,
    _: &palisade_policy::load::FsResolver,
) -> Outcome {
    // No enforcement backend for this platform yet: refuse rather than run unsandboxed.
    Err(Failure {
        message: "this build of Palisade has no enforcement backend for this platform yet; refusing to run the command unsandboxed".into(),
        hint: Some("`palisade check` shows what this machine can enforce".into()),
    })
}

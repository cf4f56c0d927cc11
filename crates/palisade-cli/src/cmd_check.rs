//! `palisade check`: what this machine can enforce, and whether `run` would work.

use crate::Outcome;
use crate::cli::CheckArgs;

#[cfg(target_os = "linux")]
pub fn run(args: CheckArgs) -> Outcome {
    let r = palisade_linux::probe::probe();
    // What every backend reports, then what only Linux has (the JSON keeps the whole report).
    let portable = palisade_linux::Linux::probe_of(&r);
    let can = portable.can_run();
    // Placeholders that runs killed with SIGKILL left behind (the next run removes them).
    let env = palisade_policy::load::Environment::from_process().ok();
    let leftovers = env
        .as_ref()
        .map(|env| palisade_linux::placeholders::leftovers(&env.state_home.join("palisade/placeholders")))
        .unwrap_or_default();
    let (links, unprotected) = workspace_findings(&args, env.as_ref());
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["platform"] = "linux".into();
        v["run"] = if can { "enforce" } else { "refuse" }.into();
        v["leftover_placeholders"] = leftovers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().into();
        findings_json(&mut v, links.as_ref(), unprotected.as_ref());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mark = |ok: bool| if ok { "ok     " } else { "MISSING" };
        println!("platform:         {}", portable.platform);
        for m in &portable.required {
            println!("{} {:<17}{}", mark(m.available), format!("{}:", m.name), m.detail);
        }
        for (name, fact) in &portable.facts {
            println!("        {:<17}{fact}", format!("{name}:"));
        }
        if let Some(t) = r.tiocsti_legacy {
            println!(
                "        TIOCSTI:         dev.tty.legacy_tiocsti = {} ({})",
                u8::from(t),
                if t {
                    "live on the host; Palisade blocks it inside with setsid, a private pty and seccomp"
                } else {
                    "disabled by the kernel"
                }
            );
        }
        if let Some(u) = r.io_uring_disabled {
            println!("        io_uring:        kernel.io_uring_disabled = {u} (refused inside by seccomp either way)");
        }
        if leftovers.is_empty() {
            println!("        placeholders:    none left behind");
        } else {
            println!(
                "        placeholders:    {} left by runs that were killed (empty sockets that git ignores; the next run removes them):",
                leftovers.len()
            );
            for p in &leftovers {
                println!("                         {}", p.display());
            }
        }
        print_findings(links.as_ref(), unprotected.as_ref());
        if can {
            println!("run would: enforce the policy with namespaces, Landlock ABI {} and seccomp", r.landlock_abi);
        } else {
            println!("run would: refuse (exit 125): {}", portable.missing().join("; "));
        }
    }
    Ok(if can { 0 } else { 1 })
}

/// The workspace scanned and what was found there.
#[cfg(any(target_os = "linux", windows))]
type Links = Option<(std::path::PathBuf, crate::tree_scan::Report)>;
/// Repositories `run` does not protect, or why the policy naming the protected ones does not load.
#[cfg(any(target_os = "linux", windows))]
type Unprotected = Option<Result<Vec<std::path::PathBuf>, String>>;

/// A workspace's scan: files hard-linked into it from outside (a package cache), and
/// repositories deeper than `run` looks. Nothing when no plausible workspace is given or
/// found (`--workspace`, else the current directory).
#[cfg(any(target_os = "linux", windows))]
fn workspace_findings(args: &CheckArgs, env: Option<&palisade_policy::load::Environment>) -> (Links, Unprotected) {
    let ws = args.workspace.clone().or_else(|| env.map(|e| e.cwd.clone()));
    let links =
        ws.as_ref().filter(|ws| plausible_workspace(ws, env)).map(|ws| (ws.clone(), crate::tree_scan::scan(ws)));
    let unprotected = links.as_ref().map(|(ws, r)| {
        let policy_args = crate::cli::PolicyArgs { workspace: Some(ws.clone()), ..Default::default() };
        crate::cmd_policy::load_policy(&policy_args)
            .map(|(_, p)| crate::tree_scan::unprotected_repositories(&r.dot_gits, &r.bare_dirs, &p.git_repositories))
            .map_err(|f| f.message)
    });
    (links, unprotected)
}

/// The scan's findings as `check --json` keys: `hard_links`, `unprotected_repositories`.
#[cfg(any(target_os = "linux", windows))]
fn findings_json(
    v: &mut serde_json::Value,
    links: Option<&(std::path::PathBuf, crate::tree_scan::Report)>,
    unprotected: Option<&Result<Vec<std::path::PathBuf>, String>>,
) {
    if let Some((ws, r)) = links {
        v["hard_links"] = serde_json::json!({
            "workspace": ws.display().to_string(),
            "files": r.files,
            "truncated": r.truncated,
            "by_directory": r.by_top.iter().map(|(d, n, e)| serde_json::json!({"directory": d, "files": n, "example": e.display().to_string()})).collect::<Vec<_>>(),
        });
    }
    match unprotected {
        Some(Ok(dirs)) => {
            v["unprotected_repositories"] = dirs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().into()
        }
        Some(Err(e)) => v["unprotected_repositories"] = serde_json::json!({ "error": e }),
        None => {}
    }
}

/// The scan's findings as `check` lines.
#[cfg(any(target_os = "linux", windows))]
fn print_findings(
    links: Option<&(std::path::PathBuf, crate::tree_scan::Report)>,
    unprotected: Option<&Result<Vec<std::path::PathBuf>, String>>,
) {
    match links {
        None => println!("        hard links:      (run in a project directory, or pass --workspace DIR, to look)"),
        Some((ws, r)) if r.files == 0 => println!(
            "        hard links:      none from outside {}{}",
            ws.display(),
            if r.truncated { " (in the first 250,000 entries)" } else { "" }
        ),
        Some((ws, r)) => {
            println!(
                "WARNING hard links:      {} files in {} are hard links to files outside it:",
                r.files,
                ws.display()
            );
            for (dir, n, example) in &r.by_top {
                println!("                         {n} under {dir}/ (e.g. {})", example.display());
            }
            println!("                         {}", crate::tree_scan::ADVICE);
            if r.by_top.iter().any(|(d, _, _)| d == ".git") {
                println!("                         {}", crate::tree_scan::GIT_ADVICE);
            }
        }
    }
    match unprotected {
        None => {}
        Some(Err(e)) => println!("        repositories:    not checked: the policy does not load: {e}"),
        Some(Ok(dirs)) if dirs.is_empty() => {
            println!("        repositories:    every nested repository is protected")
        }
        Some(Ok(dirs)) => {
            println!(
                "WARNING repositories:    {} nested repositories lie deeper than `run` looks for them:",
                dirs.len()
            );
            for d in dirs {
                println!("                         {}", d.display());
            }
            println!("                         {}", crate::tree_scan::REPOSITORY_ADVICE);
        }
    }
}

/// Not `/`, your home or one of its ancestors (as `run` refuses them for a workspace): those
/// would take long to scan and are no project.
#[cfg(any(target_os = "linux", windows))]
fn plausible_workspace(ws: &std::path::Path, env: Option<&palisade_policy::load::Environment>) -> bool {
    ws.parent().is_some() && env.is_none_or(|e| !e.home.starts_with(ws))
}

/// Windows: the backend's probe (the tier found and why, the OS sandbox API, whether ACL
/// changes are allowed).
#[cfg(windows)]
pub fn run(args: CheckArgs) -> Outcome {
    use palisade_sandbox::Backend;
    let env = palisade_policy::load::Environment::from_process()
        .map_err(|e| crate::Failure { message: e.to_string(), hint: None })?;
    let mut probe = palisade_windows::Windows::new(env.state_home.join("palisade")).probe();
    // The tier the policy asks for (`windows.tier`), and where.
    let policy_args = crate::cli::PolicyArgs { workspace: args.workspace.clone(), ..Default::default() };
    let chosen = match crate::cmd_policy::load_policy(&policy_args) {
        Ok((_, p)) => match &p.windows_tier {
            Some(t) => format!("{} (chosen by {})", t.value, t.origin),
            None => "app_container (the default)".to_owned(),
        },
        Err(f) => format!("unknown: the policy does not load: {}", f.message),
    };
    probe.facts.insert(0, ("policy tier".into(), chosen));
    let can = probe.can_run();
    let (links, unprotected) = workspace_findings(&args, Some(&env));
    if args.json {
        let mut v = serde_json::to_value(&probe).unwrap_or_default();
        v["platform"] = "windows".into();
        v["run"] = if can { "enforce" } else { "refuse" }.into();
        findings_json(&mut v, links.as_ref(), unprotected.as_ref());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        // The layout of Linux's `check`: a mark, the name, what was found.
        let mark = |ok: bool| if ok { "ok     " } else { "MISSING" };
        println!("platform:         {}", probe.platform);
        for m in &probe.required {
            println!("{} {:<17}{}", mark(m.available), format!("{}:", m.name), m.detail);
        }
        for (k, v) in &probe.facts {
            println!("        {:<17}{v}", format!("{k}:"));
        }
        print_findings(links.as_ref(), unprotected.as_ref());
        if can {
            println!("run would: enforce the policy in an AppContainer per workspace, with a job object per run");
        } else {
            println!("run would: refuse (exit 125): {}", probe.missing().join("; "));
        }
    }
    Ok(if can { 0 } else { 1 })
}

#[cfg(not(any(target_os = "linux", windows)))]
pub fn run(args: CheckArgs) -> Outcome {
    let verdict = "refuse: no enforcement backend for this platform in this build";
    if args.json {
        println!("{}", serde_json::json!({ "platform": std::env::consts::OS, "run": "refuse", "reason": verdict }));
    } else {
        println!("platform: {}", std::env::consts::OS);
        println!("run would: {verdict}");
    }
    Ok(1)
}

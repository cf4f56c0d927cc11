//! `palisade check`: what this machine can enforce, and whether `run` would work.

use crate::Outcome;
use crate::cli::CheckArgs;

#[cfg(target_os = "linux")]
pub fn run(args: CheckArgs) -> Outcome {
    let r = palisade_linux::probe::probe();
    let can = r.can_run();
    // Placeholders that runs killed with SIGKILL left behind (the next run removes them).
    let leftovers = palisade_policy::load::Environment::from_process()
        .map(|env| palisade_linux::placeholders::leftovers(&env.state_home.join("palisade/placeholders")))
        .unwrap_or_default();
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["platform"] = "linux".into();
        v["run"] = if can { "enforce" } else { "refuse" }.into();
        v["leftover_placeholders"] = leftovers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mark = |ok: bool| if ok { "ok     " } else { "MISSING" };
        println!("platform:         linux {}", r.kernel);
        println!("{} user namespaces: {}", mark(r.user_namespaces.available), r.user_namespaces.detail);
        println!("{} Landlock:        {}", mark(r.landlock.available), r.landlock.detail);
        println!("{} seccomp:         {}", mark(r.seccomp.available), r.seccomp.detail);
        println!("        cgroups:         {}", r.cgroups);
        println!("        limits:          {}", r.limits);
        println!("        denials:         Landlock's, from the kernel's audit log: {}", r.denials);
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
        if can {
            println!("run would: enforce the policy with namespaces, Landlock ABI {} and seccomp", r.landlock_abi);
        } else {
            println!("run would: refuse (exit 125): {}", r.missing().join("; "));
        }
    }
    Ok(if can { 0 } else { 1 })
}

#[cfg(not(target_os = "linux"))]
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

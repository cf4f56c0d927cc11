//! `palisade policy show | explain | check | default`.

use std::fmt::Write as _;
use std::path::Path;

use palisade_policy::load::{Environment, Flags, FsResolver, LoadOptions, load_on};
use palisade_policy::{
    LayerKind, Lexical, PathResolver, PolicyError, ResolveOptions, ResolvedPolicy, Target, builtin, parse_layer,
    resolve,
};

use crate::cli::{PolicyArgs, PolicyCommand};
use crate::{Failure, Outcome};

/// Loads the policy that a `run` with these options would enforce.
pub fn load_policy(args: &PolicyArgs) -> Result<(Environment, ResolvedPolicy), Failure> {
    load_policy_on(args, &FsResolver::default())
}

/// [`load_policy`], asking `host` about the file system (the planner then asks it again, and
/// finds every answer cached).
pub fn load_policy_on(args: &PolicyArgs, host: &FsResolver) -> Result<(Environment, ResolvedPolicy), Failure> {
    let env = Environment::from_process()?;
    let opts = LoadOptions {
        workspace: args.workspace.clone(),
        profile: args.profile.clone(),
        policy_files: args.policy_files.clone(),
        trust_project: args.trust_project,
        flags: Flags {
            allow_read: args.allow_read.clone(),
            allow_write: args.allow_write.clone(),
            deny: args.deny.clone(),
            protect: args.protect.clone(),
            net: args.net.clone(),
            allow_net: args.allow_net.clone(),
            deny_net: args.deny_net.clone(),
            env: args.env.clone(),
            limits: args.limits(),
            publish: args.publish.clone(),
        },
    };
    let policy = load_on(&env, &opts, host).map_err(policy_failure)?;
    Ok((env, policy))
}

pub fn policy_failure(e: PolicyError) -> Failure {
    let hint = match &e {
        PolicyError::Invalid { .. } => Some("see docs/policy.md for every key and its values".to_owned()),
        _ => None,
    };
    Failure { message: e.to_string(), hint }
}

pub fn run(cmd: PolicyCommand) -> Outcome {
    match cmd {
        PolicyCommand::Default => {
            print!("{}", builtin::DEFAULT_POLICY);
            Ok(0)
        }
        PolicyCommand::Show { policy, json } => {
            let (_, p) = load_policy(&policy)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print!("{}", render(&p));
            }
            Ok(0)
        }
        PolicyCommand::Explain { target, path, host, policy, json } => {
            let (env, p) = load_policy(&policy)?;
            explain(&env, &p, &target, path, host, json)
        }
        PolicyCommand::Check { file, project, workspace } => check(&file, project, workspace.as_deref()),
    }
}

fn explain(env: &Environment, p: &ResolvedPolicy, target: &str, as_path: bool, as_host: bool, json: bool) -> Outcome {
    // A Windows drive path (`C:\x`, `c:/x`) or a `\` anywhere is a path, never host:port.
    let drive = target.len() > 2
        && target.as_bytes()[0].is_ascii_alphabetic()
        && target[1..].starts_with([':'])
        && target[2..].starts_with(['\\', '/']);
    let looks_like_path = target.starts_with(['/', '~', '.', '$', '%'])
        || target.contains(['/', '\\'])
        || drive
        || Path::new(target).exists();
    if as_host || (!as_path && !looks_like_path) {
        let t = Target::parse(target, 443).map_err(|m| Failure {
            message: format!("`{}` is not a host: {m}", target.escape_debug()),
            hint: Some("pass --path to explain it as a file".into()),
        })?;
        if !as_host && !target.contains(':') && target != "localhost" {
            eprintln!("(explained as a host; pass --path to explain a file of that name)");
        }
        // Beyond the rule: the host's loopback by grant, and what a connection carries (the
        // same functions the gateway asks).
        let d = p.decide_net(&t);
        let loopback = palisade_policy::is_host_loopback(&t.host);
        let (allowed, note) = if loopback {
            match p.loopback_grant(t.port) {
                Some(g) => (
                    true,
                    format!(
                        "the host's own loopback port {} (as localhost, 127.0.0.1 or [::1]), granted by allow {:?} [{}]",
                        t.port, g.rule.origin.text, g.rule.origin
                    ),
                ),
                None => (
                    false,
                    format!(
                        "the host's own loopback: reachable only on a port your own policy, a profile, a --policy file or --allow-net grants (e.g. --allow-net localhost:{}), never the project file",
                        t.port
                    ),
                ),
            }
        } else {
            let carries = p.carries(&t);
            let note = match (&carries, carries.restriction(&t)) {
                (palisade_policy::Carries::Any(_), _) => {
                    "any protocol (the rule names this port); HTTP is still checked request by request".to_owned()
                }
                (_, Some(why)) => format!("{why}; every HTTP request must name {}", t.host),
                (_, None) => String::new(),
            };
            (d.allowed, note)
        };
        if json {
            let mut v = serde_json::to_value(&d)?;
            v["allowed"] = serde_json::json!(allowed);
            v["gateway"] = serde_json::json!(note);
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if loopback {
            // Inside, the name is the sandbox's own loopback (its own network namespace):
            // a server the command starts answers there, whatever the policy says; the
            // question is the host's port.
            if allowed {
                println!("{t}: the host's port, allowed");
                println!("  rule:  {note}");
                println!(
                    "  note:  inside, port {} of the sandbox's loopback is the gateway's: a server the command starts cannot listen on it",
                    t.port
                );
            } else {
                println!(
                    "{t}: inside, the sandbox's own loopback: reachable (a server the command starts there answers)"
                );
                println!("  host:  the host's own port {} is not reachable: {note}", t.port);
            }
        } else {
            print!("{d}");
            if !note.is_empty() {
                println!("  carries: {note}");
            }
            if let Some(q) = p.quiet(&t.host, Some(t.port)).filter(|_| !allowed) {
                println!(
                    "  quiet: an expected refusal (an agent's telemetry): recorded, counted by no monitor rule  [{}]",
                    q.origin
                );
            }
        }
        return Ok(0);
    }
    let vars = env.vars(&p.workspace);
    let abs = vars.expand(target, &env.cwd)?;
    let resolved = FsResolver::default().resolve(&abs);
    let d = p.decide_path(&resolved);
    let held = held_by_placeholder(p, &resolved);
    let decoy = p.tripwires.iter().find(|t| t.value == resolved);
    if json {
        let mut v = serde_json::to_value(&d)?;
        if let Some((at, below)) = &held {
            v["placeholder"] = serde_json::json!({ "at": at, "because_of": below });
        }
        if let Some(t) = decoy {
            v["tripwire"] = serde_json::json!({ "origin": t.origin.to_string() });
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{d}");
        if let Some((at, below)) = held {
            println!(
                "  but:   {} does not exist, and {} below it has a rule of its own: while a run lasts a placeholder holds {}, so it cannot be created inside (create it outside the sandbox)",
                at.display(),
                below.display(),
                at.display()
            );
        }
        if let Some(t) = decoy {
            println!(
                "  decoy: [monitor] tripwires puts a decoy file here when the path lies in one of the sandbox's private directories (its home, by default): it can be read, and opening it is recorded as a tripwire (a rule may stop the run)  [{}]",
                t.origin
            );
        }
    }
    Ok(0)
}

/// Where `path` would be writable but does not exist: the first missing directory on its
/// way, when a rule of its own (read, protect or deny) lies below it. A run holds that
/// directory with a placeholder (the rule below needs its parents to stay), so nothing can
/// create it inside. Returns that directory and the rule's path.
fn held_by_placeholder(p: &ResolvedPolicy, path: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let missing = path.ancestors().filter(|a| std::fs::symlink_metadata(a).is_err()).last()?.to_path_buf();
    if p.decide_path(&missing).access != palisade_policy::Access::Write {
        return None;
    }
    p.rules
        .paths
        .iter()
        .filter(|r| r.kind != palisade_policy::PathKind::Write)
        .map(|r| r.pattern.base())
        .find(|b| b.starts_with(&missing) && *b != missing)
        .map(|b| (missing, b))
}

fn check(file: &Path, project: bool, workspace: Option<&Path>) -> Outcome {
    let env = Environment::from_process()?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let ws = workspace.map_or_else(|| env.cwd.clone(), Path::to_path_buf);
    let vars = env.vars(&ws);
    let kind = if project { LayerKind::Project } else { LayerKind::PolicyFile };
    let name = file.display().to_string();
    let result = parse_layer(&text, &name, kind, &vars, &Lexical).and_then(|layer| {
        if !project {
            return Ok(layer);
        }
        let base = parse_layer(builtin::DEFAULT_POLICY, "<built-in>", LayerKind::Builtin, &vars, &Lexical)?;
        resolve(&ws, &env.home, vec![base, layer.clone()], ResolveOptions::default()).map(|_| layer)
    });
    match result {
        Ok(layer) => {
            let r = &layer.rules;
            println!(
                "{name}: ok ({} path rules, {} network rules, {} environment rules, {} monitor rules)",
                r.paths.len(),
                r.net_allow.len() + r.net_deny.len() + r.hosts.len(),
                r.env_pass.len() + r.env_deny.len() + r.env_set.len(),
                r.monitor_rules.len()
            );
            // Settings with no effect: checked on the file alone (another layer may set the
            // mode; `policy show` says what the merged policy does).
            if r.net_mode.is_none() && !r.net_allow.is_empty() {
                println!(
                    "warning: [network] allow has {} {}, but this file sets no mode: unless another layer sets mode = \"allowlist\", nothing is reachable (`palisade policy show` tells)",
                    r.net_allow.len(),
                    if r.net_allow.len() == 1 { "entry" } else { "entries" }
                );
            }
            for n in palisade_policy::resolve::ineffective(r).iter().filter(|_| r.net_mode.is_some()) {
                println!("warning: {n}");
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(1)
        }
    }
}

/// The resolved policy as text, one rule a line with its layer and place.
fn render(p: &ResolvedPolicy) -> String {
    let mut o = String::new();
    for n in &p.notes {
        let _ = writeln!(o, "warning: {n}");
    }
    let _ = writeln!(o, "workspace: {}", p.workspace.display());
    let _ = writeln!(o, "layers (lowest first):");
    for (kind, source) in &p.layers {
        let _ = writeln!(o, "  {:<20} {source}", kind.to_string());
    }
    let _ = writeln!(
        o,
        "\nfilesystem (most specific rule wins; at equal depth deny > protect > write > read; a cache is read\nas the host has it and written inside into a private layer kept for this workspace):"
    );
    let mut rules: Vec<_> = p.paths.iter().collect();
    rules.sort_by(|a, b| a.pattern.to_string().cmp(&b.pattern.to_string()).then(a.kind.cmp(&b.kind)));
    for r in rules {
        let kind = if r.cache { "cache" } else { r.kind.key() };
        let _ = writeln!(o, "  {:<8} {:<48} {}", kind, r.pattern.to_string(), r.origin);
    }
    let mode =
        p.net_mode.as_ref().map_or_else(|| "none (default)".to_owned(), |m| format!("{}  [{}]", m.value, m.origin));
    let _ = writeln!(o, "\nnetwork: {mode}");
    for (label, list) in [("allow", &p.net_allow), ("deny", &p.net_deny)] {
        for r in list {
            let _ = writeln!(o, "  {label:<8} {:<48} {}", r.pattern.to_string(), r.origin);
        }
    }
    for h in &p.hosts {
        let _ = writeln!(o, "  {:<8} {:<48} {}", "host", format!("{} = {}", h.name, h.addr), h.origin);
    }
    if p.mode() == palisade_policy::NetMode::Allowlist {
        let b = &p.net_budgets;
        let (c, h, i, u, d) = b.effective();
        let at = |o: Option<&palisade_policy::Origin>| o.map_or_else(|| "default".to_owned(), |o| o.layer.to_string());
        let bytes =
            |n: u64| if n == u64::MAX { "unlimited".to_owned() } else { palisade_policy::units::format_size(n) };
        for (name, value, origin) in [
            ("max_connections", c.to_string(), at(b.max_connections.as_ref().map(|s| &s.origin))),
            ("handshake_timeout", humantime_fmt(h), at(b.handshake_timeout.as_ref().map(|s| &s.origin))),
            ("idle_timeout", humantime_fmt(i), at(b.idle_timeout.as_ref().map(|s| &s.origin))),
            ("max_upload", bytes(u), at(b.max_upload.as_ref().map(|s| &s.origin))),
            ("max_download", bytes(d), at(b.max_download.as_ref().map(|s| &s.origin))),
        ] {
            let _ = writeln!(o, "  {name:<17} {value}  [{origin}]");
        }
    }
    let _ = writeln!(o, "\nenvironment:");
    for (label, list) in [("pass", &p.env_pass), ("deny", &p.env_deny)] {
        let names: Vec<&str> = list.iter().map(|r| r.pattern.as_str()).collect();
        if !names.is_empty() {
            let _ = writeln!(o, "  {label:<8} {}", names.join(" "));
        }
    }
    for s in &p.env_set {
        let _ = writeln!(o, "  {:<8} {:<48} {}", "set", format!("{}={}", s.name, s.value), s.origin);
    }
    let _ = writeln!(o, "\nlimits:");
    let l = &p.limits;
    let size = |v: &Option<palisade_policy::model::Setting<u64>>| {
        v.as_ref().map(|s| match s.value {
            u64::MAX => format!("unlimited  [{}]", s.origin.layer),
            n => format!("{}  [{}]", palisade_policy::units::format_size(n), s.origin.layer),
        })
    };
    let count = |v: &Option<palisade_policy::model::Setting<u64>>| {
        v.as_ref().map(|s| match s.value {
            u64::MAX => format!("unlimited  [{}]", s.origin.layer),
            n => format!("{n}  [{}]", s.origin.layer),
        })
    };
    let dur = |v: &Option<palisade_policy::model::Setting<std::time::Duration>>| {
        v.as_ref().map(|s| match s.value {
            std::time::Duration::MAX => format!("unlimited  [{}]", s.origin.layer),
            d => format!("{}  [{}]", humantime_fmt(d), s.origin.layer),
        })
    };
    for (name, v) in [
        ("memory", size(&l.memory)),
        ("pids", count(&l.pids)),
        ("cpu_time", dur(&l.cpu_time)),
        ("wall_time", dur(&l.wall_time)),
        ("file_size", size(&l.file_size)),
        ("open_files", count(&l.open_files)),
        ("tmp_size", size(&l.tmp_size)),
    ] {
        let _ = writeln!(o, "  {name:<10} {}", v.unwrap_or_else(|| "no limit".into()));
    }
    let _ = writeln!(o, "\nmonitor:");
    match &p.audit {
        Some(a) => {
            let _ = writeln!(o, "  audit    {}  [{}]", a.value.display(), a.origin);
        }
        None => {
            let _ = writeln!(o, "  audit    default location ($XDG_STATE_HOME/palisade/sessions/)");
        }
    }
    for t in &p.tripwires {
        let _ = writeln!(o, "  tripwire {:<48} {}", t.value.display(), t.origin.layer);
    }
    for r in &p.monitor_rules {
        let _ = writeln!(o, "  rule     {:<48} {}", format!("{} -> {}", r.when, r.action), r.origin.layer);
    }
    o
}

fn humantime_fmt(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

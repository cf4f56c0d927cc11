//! `palisade audit verify | show | list`.

use std::collections::BTreeMap;

// Strings from the sandbox are shown escaped, never interpreted by the terminal.
use palisade_monitor::live::printable as clean;
use palisade_monitor::{Event, verify};

use crate::cli::AuditCommand;
use crate::{Failure, Outcome};

pub fn run(cmd: AuditCommand) -> Outcome {
    match cmd {
        AuditCommand::List { all } => list(all),
        AuditCommand::Verify { file } => {
            let file = chosen(file)?;
            verify_one(&file)
        }
        AuditCommand::Show { file } => {
            let file = chosen(file)?;
            show(&file)
        }
    }
}

/// The sessions directory and this workspace, as `run` would have them (the policy of the
/// current directory; the default directory when it does not load).
fn place() -> Result<(std::path::PathBuf, std::path::PathBuf), Failure> {
    let env = palisade_policy::load::Environment::from_process()?;
    match crate::cmd_policy::load_policy(&crate::cli::PolicyArgs::default()) {
        Ok((env, p)) => Ok((palisade_sandbox::sessions_dir(&env, &p), p.workspace.clone())),
        Err(_) => Ok((env.state_home.join("palisade/sessions"), env.cwd.clone())),
    }
}

/// The file given, or the latest session log of this workspace.
fn chosen(file: Option<std::path::PathBuf>) -> Result<std::path::PathBuf, Failure> {
    if let Some(f) = file {
        return Ok(f);
    }
    let (dir, ws) = place()?;
    let latest = palisade_monitor::sessions::latest_for(&dir, &ws).map_err(|e| Failure {
        message: format!("cannot read the session logs in {}: {e}", dir.display()),
        hint: None,
    })?;
    let Some(f) = latest else {
        return Err(Failure {
            message: format!("no session log of the workspace {} in {}", ws.display(), dir.display()),
            hint: Some("`palisade audit list --all` shows every workspace's; or pass the log's file".into()),
        });
    };
    eprintln!("{}", f.path.display());
    Ok(f.path)
}

/// `audit list`: this workspace's runs (or every one), oldest first, so the newest is next
/// to the prompt.
fn list(all: bool) -> Outcome {
    let (dir, ws) = place()?;
    let files = palisade_monitor::sessions::list(&dir).map_err(|e| Failure {
        message: format!("cannot read the session logs in {}: {e}", dir.display()),
        hint: None,
    })?;
    let want = ws.to_string_lossy().into_owned();
    let mut shown = 0;
    for f in files.iter().rev() {
        let Some(Event::SessionStart { argv, workspace, .. }) = palisade_monitor::sessions::start_of(&f.path) else {
            continue;
        };
        if !all && workspace != want {
            continue;
        }
        let when = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(f.started));
        let ended = ending(&f.path);
        // Arguments with spaces quoted, so the command reads as it was typed.
        let quoted: Vec<String> = argv
            .iter()
            .map(|a| if a.is_empty() || a.contains(char::is_whitespace) { format!("'{}'", clean(a)) } else { clean(a) })
            .collect();
        let command = quoted.join(" ");
        if all {
            println!("{when}  {ended:<10} {}  {command}  {}", clean(&workspace), f.path.display());
        } else {
            println!("{when}  {ended:<10} {command}  {}", f.path.display());
        }
        shown += 1;
    }
    if shown == 0 {
        eprintln!(
            "no session logs{} in {}",
            if all { String::new() } else { format!(" of the workspace {}", ws.display()) },
            dir.display()
        );
    }
    Ok(0)
}

/// How a logged run ended, from its last record: `exit N`, `signal N`, or `running?` when
/// the log has no end (still running, or Palisade was killed).
fn ending(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let last = text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        serde_json::from_value::<Event>(v.get("event")?.clone()).ok()
    });
    match last {
        Some(Event::SessionEnd { exit_code: Some(c), .. }) => format!("exit {c}"),
        Some(Event::SessionEnd { signal: Some(s), .. }) => format!("signal {s}"),
        _ => "running?".into(),
    }
}

fn verify_one(file: &std::path::Path) -> Outcome {
    {
        match verify(file) {
            Ok(s) => {
                println!("{}: intact ({} records, hash chain and sequence verified)", file.display(), s.records);
                Ok(0)
            }
            Err(e) => {
                println!("{}: NOT intact: {e}", file.display());
                Ok(1)
            }
        }
    }
}

fn show(file: &std::path::Path) -> Outcome {
    {
        {
            let (events, warning) = match verify(file) {
                Ok(s) => (s.events, None),
                Err(e) => (read_anyway(file), Some(e.to_string())),
            };
            print!("{}", summarise(&events));
            if let Some(w) = warning {
                println!("WARNING: this log does not verify: {w}");
                return Ok(1);
            }
            Ok(0)
        }
    }
}

/// Events from a log that does not verify, as far as they parse (shown with a warning).
fn read_anyway(file: &std::path::Path) -> Vec<Event> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| serde_json::from_value(v.get("event")?.clone()).ok())
        .collect()
}

fn summarise(events: &[Event]) -> String {
    let mut out = String::new();
    let mut hosts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut bytes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut dns: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut requests: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut refused_requests: BTreeMap<String, u64> = BTreeMap::new();
    let mut inbound: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut execs: Vec<String> = Vec::new();
    let mut denials: BTreeMap<String, u64> = BTreeMap::new();
    // A `repeated` record counts as its event, that many times.
    let expanded = events.iter().map(|e| match e {
        Event::Repeated { count, event } => (event.as_ref(), *count),
        e => (e, 1),
    });
    for (e, n) in expanded {
        match e {
            Event::SessionStart { argv, workspace, mode, landlock_abi, network, missing, limits, denials, .. } => {
                let argv: Vec<String> = argv.iter().map(|a| clean(a)).collect();
                out.push_str(&format!("command:   {}\n", argv.join(" ")));
                out.push_str(&format!("workspace: {}\n", clean(workspace)));
                out.push_str(&format!("enforced:  {mode}, Landlock ABI {landlock_abi}, network {network}\n"));
                if !limits.is_empty() {
                    out.push_str(&format!("limits:    held by {}\n", clean(limits)));
                }
                match denials.as_str() {
                    "" => {}
                    "recorded" => out.push_str("denials:   Landlock denials recorded from the kernel audit log\n"),
                    why => out.push_str(&format!("denials:   Landlock denials NOT recorded: {}\n", clean(why))),
                }
                for m in missing {
                    out.push_str(&format!("NOT enforced: {}\n", clean(m)));
                }
            }
            Event::Connection { target, allowed, .. } => {
                let c = hosts.entry(clean(target)).or_default();
                if *allowed { c.0 += n } else { c.1 += n }
            }
            Event::ConnectionEnd { target, bytes_up, bytes_down, .. } => {
                let b = bytes.entry(clean(target)).or_default();
                b.0 += bytes_up * n;
                b.1 += bytes_down * n;
            }
            Event::Request { method, host, port, path, allowed, reason, .. } => {
                let c = requests.entry(format!("{}:{port}", clean(host))).or_default();
                if *allowed {
                    c.0 += n;
                } else {
                    c.1 += n;
                    let what = format!("{} {}:{port}{}: {}", clean(method), clean(host), clean(path), clean(reason));
                    *refused_requests.entry(what).or_default() += n;
                }
            }
            Event::Dns { name, allowed, .. } => {
                let c = dns.entry(clean(name)).or_default();
                if *allowed { c.0 += n } else { c.1 += n }
            }
            Event::Exec { pid, argv, path, .. } => {
                let line: Vec<String> =
                    if argv.is_empty() { vec![clean(path)] } else { argv.iter().map(|a| clean(a)).collect() };
                execs.push(format!("  [{pid}] {}", line.join(" ")));
            }
            Event::Denial { blockers, object } => {
                *denials.entry(format!("{} {}", clean(&blockers.join(",")), clean(object))).or_default() += n;
            }
            Event::Tripwire { path } => {
                out.push_str(&format!("TRIPWIRE:  {} was opened\n", clean(path)));
            }
            Event::Limit { limit, detail } => {
                out.push_str(&format!("LIMIT:     {}: {}\n", clean(limit), clean(detail)));
            }
            Event::NewRepository { path, gitlink_of, quarantined } => {
                let of = gitlink_of
                    .as_deref()
                    .map_or(String::new(), |o| format!(" (git status in {} descends into it)", clean(o)));
                let moved = if quarantined.is_empty() {
                    String::new()
                } else {
                    format!("; moved aside: {}", clean(&quarantined.join(", ")))
                };
                out.push_str(&format!("NEW REPO:  {} was made inside the sandbox{of}{moved}\n", clean(path)));
            }
            Event::MonitorAction { rule, condition, action, reason } => {
                out.push_str(&format!(
                    "ACTION:    {action} by rule {:?} ({}): {}\n",
                    clean(rule),
                    clean(condition),
                    clean(reason)
                ));
            }
            Event::SessionEnd { exit_code, signal, duration_ms, .. } => {
                let how = match (exit_code, signal) {
                    (_, Some(s)) => format!("killed by signal {s}"),
                    (Some(c), _) => format!("exit status {c}"),
                    _ => "unknown".into(),
                };
                out.push_str(&format!("ended:     {how} after {:.1} s\n", *duration_ms as f64 / 1000.0));
            }
            Event::Inbound { port, host_port, bytes_in, bytes_out, error, .. } => {
                let c = inbound.entry(format!("127.0.0.1:{host_port} -> sandbox :{port}")).or_default();
                if error.is_some() {
                    c.1 += n;
                } else {
                    c.0 += n;
                }
                c.2 += (bytes_in + bytes_out) * n;
            }
            _ => {}
        }
    }
    if !execs.is_empty() {
        // Attempts are recorded before the kernel decides; a PATH search repeats one
        // command per directory: show runs of the same line once, with a count.
        out.push_str(&format!("commands run ({} exec calls):\n", execs.len()));
        let mut i = 0;
        while i < execs.len() {
            let n = execs[i..].iter().take_while(|e| **e == execs[i]).count();
            out.push_str(&execs[i]);
            if n > 1 {
                out.push_str(&format!("   (x{n})"));
            }
            out.push('\n');
            i += n;
        }
    }
    if !denials.is_empty() {
        out.push_str("refused by Landlock (count, what):\n");
        for (k, n) in &denials {
            out.push_str(&format!("  {n:>5} {k}\n"));
        }
    }
    if !hosts.is_empty() {
        out.push_str("connections (allowed / denied, bytes up / down):\n");
        for (k, (a, d)) in &hosts {
            let (up, down) = bytes.get(k).copied().unwrap_or_default();
            out.push_str(&format!("  {a:>5} / {d:<5} {up:>10} / {down:<10} {k}\n"));
        }
    }
    if !inbound.is_empty() {
        out.push_str("published ports (connections carried / not carried, bytes):\n");
        for (k, (a, f, b)) in &inbound {
            out.push_str(&format!("  {k}  {a} / {f}  {b} bytes\n"));
        }
    }
    if !requests.is_empty() {
        out.push_str("HTTP requests (allowed / denied):\n");
        for (k, (a, d)) in &requests {
            out.push_str(&format!("  {a:>5} / {d:<5} {k}\n"));
        }
    }
    if !refused_requests.is_empty() {
        out.push_str("refused requests (count, what):\n");
        for (k, n) in &refused_requests {
            out.push_str(&format!("  {n:>5} {k}\n"));
        }
    }
    if !dns.is_empty() {
        out.push_str("DNS queries (allowed / denied):\n");
        for (k, (a, d)) in &dns {
            out.push_str(&format!("  {a:>5} / {d:<5} {k}\n"));
        }
    }
    out
}

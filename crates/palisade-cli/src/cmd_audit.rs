//! `palisade audit verify | show`.

use std::collections::BTreeMap;

// Strings from the sandbox are shown escaped, never interpreted by the terminal.
use palisade_monitor::live::printable as clean;
use palisade_monitor::{Event, verify};

use crate::Outcome;
use crate::cli::AuditCommand;

pub fn run(cmd: AuditCommand) -> Outcome {
    match cmd {
        AuditCommand::Verify { file } => match verify(&file) {
            Ok(s) => {
                println!("{}: intact ({} records, hash chain and sequence verified)", file.display(), s.records);
                Ok(0)
            }
            Err(e) => {
                println!("{}: NOT intact: {e}", file.display());
                Ok(1)
            }
        },
        AuditCommand::Show { file } => {
            let (events, warning) = match verify(&file) {
                Ok(s) => (s.events, None),
                Err(e) => (read_anyway(&file), Some(e.to_string())),
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

//! The audit log from outside: what a run records, and `palisade audit verify` catching
//! every kind of tampering.

use crate::util::*;

fn run_with_audit(s: &Sandbox, log: &std::path::Path) {
    let p = s.path("p.toml");
    std::fs::write(&p, "[network]\nmode = \"allowlist\"\nallow = [\"allowed.test:9\"]\n").unwrap();
    let o = s.palisade(&[
        "run", "--audit", log.to_str().unwrap(), "--policy", p.to_str().unwrap(), "--", "/bin/sh", "-c",
        "getent hosts allowed.test; getent hosts denied.test; curl -s --max-time 3 http://denied.test:9/ >/dev/null; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn a_run_records_its_session_and_every_network_decision() {
    let s = Sandbox::new("e-audit");
    let log = s.path("audit/session.jsonl");
    run_with_audit(&s, &log);
    let o = s.palisade(&["audit", "verify", log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let raw = std::fs::read_to_string(&log).unwrap();
    for kind in ["session_start", "dns", "connection", "session_end"] {
        assert!(raw.contains(&format!("\"kind\":\"{kind}\"")), "no {kind} event: {raw}");
    }
    let out = stdout(&s.palisade(&["audit", "show", log.to_str().unwrap()]));
    assert!(out.contains("exit status 3") && out.contains("denied.test:9") && out.contains("allowed.test"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn verify_catches_a_changed_byte_a_removed_record_and_a_cut_tail() {
    let s = Sandbox::new("e-audit-tamper");
    let log = s.path("audit/session.jsonl");
    run_with_audit(&s, &log);
    let original = std::fs::read_to_string(&log).unwrap();
    let verify = |text: &str| {
        std::fs::write(&log, text).unwrap();
        s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code()
    };
    assert_eq!(verify(&original), Some(0));
    assert_eq!(verify(&original.replacen("\"allowed\":false", "\"allowed\":true", 1)), Some(1), "a changed decision");
    let lines: Vec<&str> = original.lines().collect();
    let without =
        |i: usize| lines.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, l)| format!("{l}\n")).collect::<String>();
    assert_eq!(verify(&without(1)), Some(1), "a removed record");
    assert_eq!(verify(&without(lines.len() - 1)), Some(1), "a cut tail");
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    assert_eq!(verify(&(swapped.join("\n") + "\n")), Some(1), "reordered records");
}

#[test]
fn the_audit_log_is_never_writable_inside_the_sandbox() {
    let s = Sandbox::new("e-audit-inside");
    let o = s.palisade(&["run", "--audit", s.path("ws/log.jsonl").to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("writable inside the sandbox"), "{}", stderr(&o));
    // By default the log goes under the state directory, which the sandbox cannot see.
    let o = s.sh("ls ~/.local/state/palisade 2>&1; true");
    assert!(stdout(&o).contains("No such file"), "{}", stdout(&o));
    let sessions = s.home().join(".local/state/palisade/sessions");
    assert!(
        std::fs::read_dir(&sessions).map(|d| d.count()).unwrap_or(0) >= 1,
        "no default audit log in {}",
        sessions.display()
    );
}

#[test]
fn a_denied_connection_burst_raises_the_default_alert() {
    let s = Sandbox::new("e-rule-alert");
    let log = s.path("audit/a.jsonl");
    let o = s.palisade(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--allow-net",
        "allowed.test:443",
        "--",
        "/bin/sh",
        "-c",
        "for i in $(seq 25); do curl -s --max-time 2 http://denied$i.test/ >/dev/null; done; echo finished",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("finished"));
    assert!(stderr(&o).contains("ALERT") && stderr(&o).contains("denied-connection-burst"), "{}", stderr(&o));
    let raw = std::fs::read_to_string(&log).unwrap();
    assert_eq!(raw.matches("\"kind\":\"monitor_action\"").count(), 1, "an alert per window, not per connection");
}

#[test]
fn a_kill_rule_stops_the_sandbox_at_once_and_says_why() {
    let s = Sandbox::new("e-rule-kill");
    let log = s.path("audit/k.jsonl");
    let p = s.path("k.toml");
    std::fs::write(
        &p,
        "[network]\nmode = \"allowlist\"\nallow = [\"allowed.test:443\"]\n[[monitor.rules]]\nname = \"burst-kill\"\nwhen = \"denied_connections > 3 in 60s\"\naction = \"kill\"\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = s.palisade(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        "--policy",
        p.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "for i in 1 2 3 4 5 6; do curl -s --max-time 2 http://denied$i.test/ >/dev/null; done; sleep 20; echo survived",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(!stdout(&o).contains("survived"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the kill was not immediate");
    let show = stdout(&s.palisade(&["audit", "show", log.to_str().unwrap()]));
    assert!(show.contains("ACTION:    kill by rule \"burst-kill\"") && show.contains("killed by signal 9"), "{show}");
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
}

#[test]
fn every_exec_is_recorded_even_renamed_or_from_memory() {
    let s = Sandbox::new("e-exec");
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: no /usr/bin/python3");
        return;
    }
    let log = s.path("audit/e.jsonl");
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a dynamic loader");
    let script = "/bin/true; cp /bin/true ./renamed-tool; ./renamed-tool --flag; LOADER /bin/true via-loader; \
                  /usr/bin/python3 -c 'import os; fd = os.memfd_create(\"m\"); os.write(fd, open(\"/bin/true\", \"rb\").read()); os.execve(fd, [\"from-memory\"], {})'";
    let script = script.replace("LOADER", loader);
    let o = s.palisade(&["run", "--audit", log.to_str().unwrap(), "--", "/bin/sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let execs: Vec<serde_json::Value> = events_in(&log).into_iter().filter(|e| e["kind"] == "exec").collect();
    let argvs: Vec<String> = execs
        .iter()
        .map(|e| e["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "/bin/sh -c",
        "/bin/true",
        "cp /bin/true ./renamed-tool",
        "./renamed-tool --flag",
        &format!("{loader} /bin/true via-loader"),
        "/usr/bin/python3 -c",
        "from-memory",
    ] {
        assert!(argvs.iter().any(|a| a.starts_with(want)), "no exec of {want:?} in {argvs:#?}");
    }
    let memfd = execs.iter().find(|e| e["argv"][0] == "from-memory").unwrap();
    assert!(memfd["path"].as_str().unwrap().starts_with("fd "), "{memfd}");
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
    // Turned off, nothing is recorded.
    let log2 = s.path("audit/off.jsonl");
    let o = s.palisade(&["run", "--no-exec-trace", "--audit", log2.to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!std::fs::read_to_string(&log2).unwrap().contains("\"kind\":\"exec\""));
}

#[test]
fn events_stream_live_copies_of_the_log_and_watch_escapes_names() {
    let s = Sandbox::new("e-live");
    let log = s.path("audit/live.jsonl");
    // The command writes nothing to stdout, so stdout is exactly the event stream.
    let o = s.palisade(&[
        "run",
        "--events",
        "-",
        "--watch",
        "--audit",
        log.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "/bin/true \"$(printf 'evil\\033[2J\\nname')\"; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let raw = std::fs::read_to_string(&log).unwrap();
    assert_eq!(stdout(&o), raw, "--events - must carry every record of the log, unchanged");
    assert!(raw.lines().count() >= 4);
    let err = stderr(&o);
    assert!(err.contains("palisade: start  namespaces"), "{err}");
    assert!(err.contains("palisade: exec   [") && err.contains("/bin/true evil\\u{1b}[2J\\nname"), "{err}");
    assert!(!err.contains('\u{1b}'), "an escape sequence from the sandbox reached the terminal: {err:?}");
    assert!(err.contains("palisade: end    exit 3"), "{err}");
    // Bad descriptors are refused before anything runs.
    for (spec, want) in [("987", "descriptor 987 is not open"), ("x", "expected a file descriptor number")] {
        let o = s.palisade(&["run", "--events", spec, "--", "/bin/true"]);
        assert_eq!(o.status.code(), Some(125));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
}

#[test]
fn a_flood_of_parallel_execs_is_recorded_in_full() {
    let s = Sandbox::new("e-flood");
    let log = s.path("audit/flood.jsonl");
    // 300 background processes at once, bounded, each exec'ing /bin/true with its number.
    let script = "i=0; while [ $i -lt 300 ]; do /bin/true flood-$i & i=$((i+1)); done; wait";
    let o = s.palisade(&["run", "--audit", log.to_str().unwrap(), "--", "/bin/sh", "-c", script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events = events_in(&log);
    let mut seen: Vec<u32> = events
        .iter()
        .filter(|e| e["kind"] == "exec" && e["argv"][0] == "/bin/true")
        .filter_map(|e| e["argv"][1].as_str()?.strip_prefix("flood-")?.parse().ok())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..300).collect::<Vec<u32>>(), "an exec escaped the record");
    let execs = events.iter().filter(|e| e["kind"] == "exec").count() as u64;
    let end = events.last().unwrap();
    assert_eq!(end["kind"], "session_end");
    assert_eq!(end["totals"]["execs"].as_u64(), Some(execs), "{end}");
    assert_eq!(s.palisade(&["audit", "verify", log.to_str().unwrap()]).status.code(), Some(0));
}

#[test]
fn rules_that_cannot_fire_yet_are_said_at_every_run() {
    let s = Sandbox::new("e-unfired");
    let p = s.path("unfired.toml");
    std::fs::write(&p, "[[monitor.rules]]\nwhen = \"upload_bytes > 1MiB\"\naction = \"kill\"\n").unwrap();
    let o = s.palisade(&["run", "--policy", p.to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning: rule `upload_bytes > 1MiB`")
            && err.contains("unfired.toml:2:")
            && err.contains("byte counts are not recorded yet"),
        "{err}"
    );
}

/// The `event` of every record of the audit log at `log`.
fn events_in(log: &std::path::Path) -> Vec<serde_json::Value> {
    let raw = std::fs::read_to_string(log).unwrap();
    raw.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone()).collect()
}

#[test]
fn the_command_cannot_install_its_own_exec_listener() {
    let s = Sandbox::new("e-listener");
    // The tracer holds the chain's one listener; a second one is refused (EBUSY)...
    assert_eq!(s.probe(&[], &["seccomp_listener"]), "EBUSY");
    // ...which is the tracer's doing, not a blanket refusal: untraced, the call is allowed.
    assert_eq!(s.probe(&["--no-exec-trace"], &["seccomp_listener"]), "ok");
}

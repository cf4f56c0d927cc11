//! The library API (`crates/palisade`): its examples run here, against this build's
//! `palisade`, in a throwaway home; what they claim is checked from outside.

use std::io::Write;
use std::process::Stdio;

use crate::util::Sandbox as Fixture;

#[allow(dead_code)]
#[path = "../../../palisade/examples/watch.rs"]
mod watch_example;

#[allow(dead_code)]
#[path = "../../../palisade/examples/async_output.rs"]
mod async_example;

/// A library sandbox over the fixture's workspace, with the supervisor's home, config and
/// state in the fixture.
fn sandbox(f: &Fixture) -> palisade::Sandbox {
    palisade::Sandbox::with_program(env!("CARGO_BIN_EXE_palisade"))
        .workspace(f.ws())
        .supervisor_env("HOME", f.home())
        .supervisor_env("XDG_CONFIG_HOME", f.home().join(".config"))
        .supervisor_env("XDG_STATE_HOME", f.home().join(".local/state"))
}

/// A secret beside the workspace (not in it), which no sandbox here may read.
fn canary(f: &Fixture) -> std::path::PathBuf {
    let p = f.home().join("secret-canary");
    std::fs::write(&p, "CANARY-7f3a\n").unwrap();
    p
}

#[test]
fn the_watch_example_streams_execs_and_returns_the_status_while_the_sandbox_holds() {
    let f = Fixture::new("lib-watch");
    let canary = canary(&f);
    let script = format!("cat {}; echo made > made.txt; ls > /dev/null; exit 3", canary.display());
    let mut out = Vec::new();
    let code = watch_example::watch(&sandbox(&f), &script, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&format!("exec cat {}", canary.display())), "{out}");
    assert!(out.contains("exec ls"), "{out}");
    assert!(out.trim_end().ends_with("end Some(3)"), "{out}");
    assert!(!out.contains("CANARY-7f3a"), "{out}");
    // From outside: the workspace write happened, the canary is as it was.
    assert_eq!(std::fs::read_to_string(f.ws().join("made.txt")).unwrap(), "made\n");
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "CANARY-7f3a\n");
}

#[test]
fn the_async_example_runs_sandboxes_concurrently_each_held_by_the_policy() {
    let f = Fixture::new("lib-async");
    let canary = canary(&f);
    let read = format!("cat {}", canary.display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let results =
        rt.block_on(async_example::run_all(&sandbox(&f), &["echo hello; ls / > /dev/null", &read, "exit 7"])).unwrap();
    assert_eq!(results[0].1, 0);
    assert_eq!(results[0].2, b"hello\n");
    assert!(results[0].3 >= 2, "sh and ls were executed: {:?}", results[0]);
    assert_ne!(results[1].1, 0, "{:?}", results[1]);
    assert!(results[1].2.is_empty(), "{:?}", results[1]);
    assert_eq!(results[2].1, 7);
}

#[test]
fn output_captures_stdio_and_records_and_a_refusal_is_125_with_its_reason() {
    let f = Fixture::new("lib-output");
    let out = sandbox(&f).command("sh").args(["-c", "printf out; printf err >&2"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"out");
    assert_eq!(out.stderr, b"err");
    let kinds: Vec<_> = out.records.iter().map(|r| serde_json_kind(&r.event)).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("session_start"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("session_end"), "{kinds:?}");
    assert!(out.records.windows(2).all(|w| w[1].seq == w[0].seq + 1), "no gaps");

    // A policy Palisade refuses: exit 125, the reason on stderr, nothing ran.
    let out = sandbox(&f).profile("no-such-profile").command("touch").arg("ran").output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-profile"), "{out:?}");
    assert!(!f.ws().join("ran").exists());

    // A supervisor that does not exist: an error naming it, not a panic.
    let err = palisade::Sandbox::with_program("/nonexistent/palisade").command("true").status().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("/nonexistent/palisade"), "{err}");
}

fn serde_json_kind(e: &palisade::Event) -> String {
    let v = serde_json::to_value(e).unwrap();
    v["kind"].as_str().unwrap().to_owned()
}

#[test]
fn terminate_stops_the_sandbox_and_ends_the_log_and_stdin_reaches_the_command() {
    let f = Fixture::new("lib-term");
    let mut child = sandbox(&f)
        .command("sh")
        .args(["-c", "read line; echo \"got $line\" > got.txt; exec sleep 60"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let events = child.take_events().unwrap();
    child.stdin.as_mut().unwrap().write_all(b"ping\n").unwrap();
    // Wait until the command has read its line and gone to sleep (the file is written first).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(f.ws().join("got.txt")).unwrap_or_default() != "got ping\n" {
        assert!(std::time::Instant::now() < deadline, "the command never read its stdin");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.terminate().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    let last = events.filter_map(Result::ok).last().unwrap();
    assert!(matches!(last.event, palisade::Event::SessionEnd { signal: Some(15), .. }), "{last:?}");
}

#[test]
fn a_library_session_runs_commands_in_one_sandbox_and_ends_when_dropped() {
    let f = Fixture::new("lib-session");
    let secret = canary(&f);
    let session = sandbox(&f).start_session().unwrap();
    let socket = f.home().join(format!(".local/state/palisade/live/{}.sock", session.name()));
    assert!(socket.exists());
    let o = session.command("/bin/sh").args(["-c", "echo one > /tmp/shared; echo made"]).output().unwrap();
    assert_eq!((o.status.code(), String::from_utf8_lossy(&o.stdout).trim()), (Some(0), "made"));
    let o = session.command("/bin/cat").arg("/tmp/shared").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "one", "the session's /tmp is shared");
    let o = session.command("/bin/cat").arg(&secret).output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("CANARY"), "the secret was read");
    let mut child = session.command("/bin/cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "piped\n");
    drop(session);
    assert!(!socket.exists(), "dropping the session stops it");
}

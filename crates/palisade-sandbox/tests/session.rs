//! The session driven end to end through the recording backend: events in, the audit log
//! and the exit status out, without a kernel (runs on every OS).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use palisade_policy::load::{Environment, FsResolver, LoadOptions, load_on};
use palisade_sandbox::testing::{Ending, Recording};
use palisade_sandbox::{Exit, RunSpec, SandboxEvent};

/// A home, a workspace and a state directory under a fresh temporary directory, removed on
/// drop.
struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn new(name: &str) -> Dirs {
        let root = std::env::temp_dir().join(format!("palisade-session-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["home/.config", "ws", "state", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Dirs { root: root.canonicalize().unwrap() }
    }

    fn env(&self) -> Environment {
        Environment {
            home: self.root.join("home"),
            cwd: self.root.join("ws"),
            tmp: self.root.join("tmp"),
            config_home: self.root.join("home/.config"),
            state_home: self.root.join("state"),
            cache_home: self.root.join("home/.cache"),
            git_configs: Vec::new(),
            path: Vec::new(),
        }
    }

    fn audit(&self) -> PathBuf {
        self.root.join("state/audit.jsonl")
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `backend` with the built-in policy plus `extra` (a policy file's text) and returns
/// the result, the audit records' events and the backend's calls.
fn session(
    name: &str,
    extra: &str,
    mut backend: Recording,
    spec: impl FnOnce(&Dirs) -> RunSpec,
) -> (Result<u8, palisade_sandbox::Refusal>, Vec<serde_json::Value>, Vec<String>) {
    let dirs = Dirs::new(name);
    let env = dirs.env();
    let file = dirs.root.join("state/policy.toml");
    std::fs::write(&file, extra).unwrap();
    let host = FsResolver::default();
    let opts = LoadOptions { workspace: Some(env.cwd.clone()), policy_files: vec![file], ..Default::default() };
    let policy = load_on(&env, &opts, &host).unwrap();
    let calls: Arc<Mutex<Vec<String>>> = backend.calls.clone();
    let result = palisade_sandbox::run(&mut backend, spec(&dirs), &env, &policy, &host);
    let records = std::fs::read_to_string(dirs.audit())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
        .collect();
    let calls = calls.lock().unwrap().clone();
    (result, records, calls)
}

fn spec(d: &Dirs) -> RunSpec {
    RunSpec { argv: vec!["make".into(), "test".into()], audit: Some(d.audit()), trace_exec: true, ..Default::default() }
}

fn kinds(records: &[serde_json::Value]) -> Vec<&str> {
    records.iter().map(|r| r["kind"].as_str().unwrap()).collect()
}

fn exec(argv: &[&str]) -> SandboxEvent {
    SandboxEvent::Exec {
        pid: 2,
        ppid: 1,
        path: format!("/usr/bin/{}", argv[0]),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: "/w".into(),
    }
}

#[test]
fn events_become_records_and_the_exit_status_is_the_commands() {
    let backend = Recording {
        script: vec![exec(&["make", "test"]), exec(&["cc", "-c", "a.c"])],
        ending: Some(Ending::Exit(Exit::Code(3))),
        ..Default::default()
    };
    let (result, records, calls) = session("plain", "", backend, spec);
    assert_eq!(result.unwrap(), 3);
    assert_eq!(kinds(&records), ["session_start", "exec", "exec", "session_end"]);
    assert_eq!(records[0]["argv"], serde_json::json!(["make", "test"]));
    assert_eq!(records[0]["mode"], "full");
    assert_eq!(records[2]["argv"], serde_json::json!(["cc", "-c", "a.c"]));
    assert_eq!(records[3]["exit_code"], 3);
    assert_eq!(calls, ["preflight", "plan full", "prepare", "spawn full", "started", "ended"]);
}

#[test]
fn a_wall_time_limit_ends_the_run_with_124_and_a_signal_with_128_plus_n() {
    let backend = Recording {
        script: vec![SandboxEvent::Limit { limit: "wall_time".into(), detail: "ran for 1s".into() }],
        ending: Some(Ending::Exit(Exit::Signal(9))),
        ..Default::default()
    };
    let (result, records, _) = session("wall", "", backend, spec);
    assert_eq!(result.unwrap(), 124);
    assert!(kinds(&records).contains(&"limit"), "{records:?}");
    let backend = Recording { ending: Some(Ending::Exit(Exit::Signal(15))), ..Default::default() };
    let (result, records, _) = session("signal", "", backend, spec);
    assert_eq!(result.unwrap(), 143);
    assert_eq!(records.last().unwrap()["signal"], 15);
}

#[test]
fn a_kill_rule_stops_the_run_through_the_kill_switch() {
    let rule = "[[monitor.rules]]\nwhen = \"exec matches \\\"curl *\\\"\"\naction = \"kill\"\n";
    let backend = Recording {
        script: vec![exec(&["curl", "http://evil.example"])],
        ending: Some(Ending::UntilKilled),
        ..Default::default()
    };
    let (result, records, calls) = session("kill", rule, backend, spec);
    assert_eq!(result.unwrap(), 137, "{records:?}");
    assert!(calls.contains(&"killed".to_owned()), "{calls:?}");
    assert!(records.iter().any(|r| r["kind"] == "monitor_action" && r["action"] == "kill"), "{records:?}");
}

#[test]
fn a_weaker_sandbox_only_when_the_user_named_it_and_then_recorded() {
    let refusing = || Recording { refuse_full: Some("no namespaces here".into()), ..Default::default() };
    let (result, records, calls) = session("refused", "", refusing(), spec);
    let refusal = result.unwrap_err();
    assert!(refusal.message.contains("no namespaces here"), "{refusal:?}");
    assert!(refusal.hint.unwrap().contains("--allow-degraded"));
    assert!(!calls.iter().any(|c| c.contains("degraded")), "{calls:?}");
    assert_eq!(records.last().unwrap()["exit_code"], 125);

    let (result, records, calls) = session("degraded", "", refusing(), |d| RunSpec { allow_degraded: true, ..spec(d) });
    assert_eq!(result.unwrap(), 0);
    assert!(
        calls.ends_with(&[
            "plan degraded".into(),
            "prepare".into(),
            "spawn degraded".into(),
            "started".into(),
            "ended".into()
        ]),
        "{calls:?}"
    );
    let starts: Vec<_> = records.iter().filter(|r| r["kind"] == "session_start").collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1]["mode"], "degraded");
    assert_eq!(starts[1]["missing"], serde_json::json!(["everything"]));
}

#[test]
fn an_audit_log_the_sandbox_could_write_is_refused_before_anything_runs() {
    let (result, _, calls) = session("audit", "", Recording::default(), |d| RunSpec {
        audit: Some(d.root.join("ws/audit.jsonl")),
        ..spec(d)
    });
    let refusal = result.unwrap_err();
    assert!(refusal.message.contains("would be writable inside the sandbox"), "{refusal:?}");
    assert!(!calls.iter().any(|c| c.starts_with("spawn")), "{calls:?}");
}

#[test]
fn a_command_not_found_exits_127_and_a_failed_setup_is_refused() {
    let backend = Recording { ending: Some(Ending::NotFound), ..Default::default() };
    let (result, records, _) = session("notfound", "", backend, spec);
    assert_eq!(result.unwrap(), 127);
    assert_eq!(records.last().unwrap()["exit_code"], 127);
    let backend = Recording { ending: Some(Ending::Setup("mounting /w: EPERM".into())), ..Default::default() };
    let (result, _, _) = session("setup", "", backend, spec);
    assert!(result.unwrap_err().message.contains("mounting /w: EPERM"));
}

#[test]
fn dry_run_plans_and_runs_nothing() {
    let (result, records, calls) = session("dry", "", Recording::default(), |d| RunSpec { dry_run: true, ..spec(d) });
    assert_eq!(result.unwrap(), 0);
    assert!(records.is_empty());
    assert_eq!(calls, ["preflight", "plan full"]);
}

#[test]
fn the_view_shows_the_workspace_writable_and_hides_the_home() {
    let d = Dirs::new("view");
    let env = d.env();
    let host = FsResolver::default();
    let opts = LoadOptions { workspace: Some(env.cwd.clone()), ..Default::default() };
    let policy = load_on(&env, &opts, &host).unwrap();
    let req = palisade_sandbox::Request {
        argv: vec!["true".into()],
        cwd: env.cwd.clone(),
        env: vec![],
        tmp: env.tmp.clone(),
        trace_exec: false,
        copies: None,
        session: false,
    };
    let v = palisade_sandbox::view::build(&policy, &host, &req).unwrap();
    assert!(v.exposes_writable(&env.cwd.join("src/main.rs")));
    assert!(!v.exposes_writable(&env.state_home.join("audit.jsonl")));
    assert_eq!(v.seen(&env.home.join(".ssh/id_rsa")), palisade_sandbox::view::Seen::Private);
    assert!(!v.exposes_writable(Path::new("/etc/passwd")));
}

#[test]
fn the_audit_log_is_checked_against_the_weaker_view_too() {
    // Without namespaces the sandbox writes host directories the full view kept private
    // (Linux: `${tmp}`): an audit log there is refused before the weaker sandbox starts.
    let name = "weaker-audit";
    let tmp = std::env::temp_dir().join(format!("palisade-session-{name}-{}", std::process::id())).join("tmp");
    let backend = Recording {
        refuse_full: Some("no namespaces here".into()),
        degraded_writable: vec![tmp],
        ..Default::default()
    };
    let (result, _, calls) = session(name, "", backend, |d| RunSpec {
        allow_degraded: true,
        audit: Some(d.root.join("tmp/audit.jsonl")),
        ..spec(d)
    });
    let refusal = result.unwrap_err();
    assert!(refusal.message.contains("writable inside the degraded sandbox"), "{refusal:?}");
    assert!(calls.contains(&"spawn full".to_owned()) && !calls.contains(&"spawn degraded".to_owned()), "{calls:?}");
}

#[test]
fn a_refusal_during_the_weaker_retry_still_writes_session_end() {
    let name = "weaker-end";
    let backend = Recording {
        refuse_full: Some("no namespaces here".into()),
        degraded_writable: vec![
            std::env::temp_dir().join(format!("palisade-session-{name}-{}", std::process::id())).join("state"),
        ],
        ..Default::default()
    };
    let (result, records, calls) = session(name, "", backend, |d| RunSpec { allow_degraded: true, ..spec(d) });
    assert!(result.is_err());
    assert!(!calls.iter().any(|c| c == "spawn degraded"), "{calls:?}");
    assert_eq!(kinds(&records), ["session_start", "session_end"], "{records:?}");
    assert_eq!(records[1]["exit_code"], 125);
}

#[test]
fn the_gateway_is_wired_only_for_an_allowlist_at_full_strength() {
    let net = "[network]\nmode = \"allowlist\"\nallow = [\"example.com:443\"]\n";
    let (_, _, calls) = session("gw-none", "", Recording::default(), spec);
    assert!(!calls.contains(&"gateway".to_owned()), "{calls:?}");
    let (_, _, calls) = session("gw-allow", net, Recording::default(), spec);
    assert!(calls.contains(&"gateway".to_owned()), "{calls:?}");
    let refusing = Recording { refuse_full: Some("no namespaces here".into()), ..Default::default() };
    let (result, _, calls) = session("gw-degraded", net, refusing, |d| RunSpec { allow_degraded: true, ..spec(d) });
    assert_eq!(result.unwrap(), 0);
    let after = calls.iter().position(|c| c == "spawn degraded").unwrap();
    assert!(!calls[after..].contains(&"gateway".to_owned()), "{calls:?}");
}

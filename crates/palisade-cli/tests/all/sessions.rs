//! Warm sessions from outside: `session start`, `run --session`, `session stop`, checked
//! with the host's own view (canaries, processes, the audit log, the socket's directory).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A session started for a test, stopped when the test ends (pass or fail).
struct Live<'a> {
    s: &'a Sandbox,
    name: String,
    log: std::path::PathBuf,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        let _ = self.s.palisade(&["session", "stop", &self.name]);
    }
}

/// Starts session `name` owned by `owner` (default: this test process), with `opts`.
fn start<'a>(s: &'a Sandbox, name: &str, owner: Option<u32>, opts: &[&str]) -> Live<'a> {
    let log = s.path(&format!("audit/{name}.jsonl"));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let owner = owner.unwrap_or_else(std::process::id).to_string();
    let bin = bin_dir();
    let mut args = vec![
        "session",
        "start",
        "--name",
        name,
        "--owner",
        &owner,
        "--audit",
        log.to_str().unwrap(),
        "--allow-read",
        &bin,
    ];
    args.extend_from_slice(opts);
    let o = s.palisade(&args);
    assert_eq!(o.status.code(), Some(0), "session start: {}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).trim(), name);
    Live { s, name: name.to_owned(), log }
}

impl Live<'_> {
    fn run(&self, cmd: &[&str]) -> std::process::Output {
        self.run_in(&self.s.ws(), cmd)
    }

    fn run_in(&self, cwd: &std::path::Path, cmd: &[&str]) -> std::process::Output {
        let mut args = vec!["run", "--session", &self.name, "--"];
        args.extend_from_slice(cmd);
        self.s.palisade_in(cwd, &args)
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
            .collect()
    }

    fn socket(&self) -> std::path::PathBuf {
        self.s.home().join(format!(".local/state/palisade/live/{}.sock", self.name))
    }
}

/// Whether a process of the sandbox (a host process whose command line holds `marker`, not
/// the client that asked for it) is running.
fn running(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains(marker) && !c.contains("--session")
        })
    })
}

#[track_caller]
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_command_has_its_own_stdio_directory_environment_and_status() {
    let s = Sandbox::new("sess-basic");
    std::fs::create_dir_all(s.ws().join("sub")).unwrap();
    let live = start(&s, "basic", None, &[]);
    let o = live.run(&["/bin/sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!((o.status.code(), stdout(&o).as_str(), stderr(&o).as_str()), (Some(7), "out\n", "err\n"));

    let mut child = s
        .command(&s.ws(), &["run", "--session", "basic", "--", "/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"through stdin\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "through stdin\n"));

    let o = live.run_in(&s.ws().join("sub"), &["/bin/pwd"]);
    assert_eq!(stdout(&o).trim(), s.ws().join("sub").to_str().unwrap(), "the caller's directory");
    let o = live.run_in(std::path::Path::new("/"), &["/bin/pwd"]);
    assert_eq!(stdout(&o).trim(), s.ws().to_str().unwrap(), "a directory not shown: the workspace");

    // The caller's environment through the session's policy, as a cold run's: a secret is
    // dropped, the language passed.
    let script = "echo ${LANG:-unset} ${AWS_SECRET_ACCESS_KEY:-dropped} $HOME";
    let env_of = |args: &[&str]| {
        let o =
            s.command(&s.ws(), args).env("LANG", "C.UTF-8").env("AWS_SECRET_ACCESS_KEY", "hunter2").output().unwrap();
        stdout(&o).trim().to_owned()
    };
    let warm = env_of(&["run", "--session", "basic", "--", "/bin/sh", "-c", script]);
    assert_eq!(warm, format!("C.UTF-8 dropped {}", s.home().display()));
    assert_eq!(warm, env_of(&["run", "--", "/bin/sh", "-c", script]), "as a cold run's");

    let o = live.run(&["no-such-program-here"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));

    // Shared between commands: the private /tmp.
    assert_eq!(live.run(&["/bin/sh", "-c", "echo kept > /tmp/note"]).status.code(), Some(0));
    assert_eq!(stdout(&live.run(&["/bin/cat", "/tmp/note"])).trim(), "kept");
    assert!(!std::path::Path::new("/tmp/note").exists() || std::fs::read_to_string("/tmp/note").unwrap() != "kept\n");

    let kinds: Vec<String> = live.records().iter().map(|r| r["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("session_start"));
    assert!(kinds.iter().filter(|k| *k == "command").count() >= 8, "{kinds:?}");
    let execs = live.records().into_iter().filter(|r| r["kind"] == "exec").count();
    assert!(execs >= 7, "every command's exec is recorded ({execs}): {kinds:?}");
    let ends: Vec<serde_json::Value> = live.records().into_iter().filter(|r| r["kind"] == "command_end").collect();
    assert_eq!(ends[0]["exit_code"], 7);
}

#[test]
fn a_sessions_command_is_confined_as_a_cold_runs_is() {
    let s = Sandbox::new("sess-confined");
    let outside = s.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let live = start(&s, "confined", None, &["--allow-read", outside.to_str().unwrap()]);
    let o = live.run(&["/bin/sh", "-c", &format!("echo x > {}/planted", outside.display())]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!outside.join("planted").exists(), "a file was written outside the workspace");
    // A probe of the kernel's view: no capabilities, no new privileges, seccomp on.
    let o = live.run(&["/bin/sh", "-c", "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"]);
    let status = format!("{}{}", stdout(&o), stderr(&o));
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1") && status.contains("Seccomp:\t2"), "{status}");
    assert_eq!(live.run(&["/bin/sh", "-c", "echo ok > inside"]).status.code(), Some(0));
    assert!(s.ws().join("inside").exists(), "the workspace is writable");
    // The host's secret is a decoy inside; opening it is a tripwire, and the built-in rule
    // kills the whole session, not only the command.
    let secret = s.home().join(".ssh/id_rsa");
    let o = live.run(&["/bin/sh", "-c", &format!("cat {}; echo x > {}", secret.display(), secret.display())]);
    assert!(!stdout(&o).contains("canary-secret"), "the secret was read: {}", stdout(&o));
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "canary-secret", "the canary changed");
    assert_eq!(o.status.code(), Some(128 + libc::SIGKILL), "{}", stderr(&o));
    wait_until(5, "a hijacked session lived on", || !live.socket().exists());
    let kinds: Vec<_> = live.records().iter().map(|r| r["kind"].as_str().unwrap_or("").to_owned()).collect();
    assert!(
        kinds.iter().any(|k| k == "tripwire") && kinds.last().map(String::as_str) == Some("session_end"),
        "{kinds:?}"
    );
}

#[test]
fn a_session_ends_with_its_owner_and_takes_every_process_with_it() {
    let s = Sandbox::new("sess-owner");
    let mut owner = Command::new("sleep").arg("60").spawn().unwrap();
    let live = start(&s, "owned", Some(owner.id()), &[]);
    let marker = format!("palisade-owner-marker-{}", std::process::id());
    let o = live.run(&["/bin/sh", "-c", &format!("setsid sh -c 'sleep 60; : {marker}' </dev/null >/dev/null 2>&1 &")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    wait_until(5, "the background process started", || running(&marker));
    assert!(live.socket().exists());
    owner.kill().unwrap();
    owner.wait().unwrap();
    wait_until(10, "the session outlived its owner", || !live.socket().exists());
    wait_until(5, "a process of the session outlived it", || !running(&marker));
    let o = live.run(&["/bin/true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("no session named"), "{}", stderr(&o));
    let last = live.records().pop().unwrap();
    assert_eq!(last["kind"], "session_end", "the audit log is closed");
    let o = s.palisade(&["audit", "verify", live.log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn session_stop_ends_what_commands_left_running_and_closes_the_log() {
    let s = Sandbox::new("sess-stop");
    let live = start(&s, "stopped", None, &[]);
    let marker = format!("palisade-stop-marker-{}", std::process::id());
    let o = live.run(&["/bin/sh", "-c", &format!("sh -c 'sleep 60; : {marker}' </dev/null >/dev/null 2>&1 &")]);
    assert_eq!(o.status.code(), Some(0));
    wait_until(5, "the background process started", || running(&marker));
    std::thread::sleep(Duration::from_millis(200));
    assert!(running(&marker), "what a command leaves running lives on while the session does");
    let o = s.palisade(&["session", "list"]);
    assert!(stdout(&o).lines().any(|l| l == "stopped"), "{}", stdout(&o));
    let o = s.palisade(&["session", "stop", "stopped"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!live.socket().exists(), "stop returns once the session has ended");
    wait_until(5, "a process of the session outlived it", || !running(&marker));
    assert_eq!(live.records().pop().unwrap()["kind"], "session_end");
    assert!(!stdout(&s.palisade(&["session", "list"])).contains("stopped"));
    let o = s.palisade(&["session", "stop", "stopped"]);
    assert_eq!(o.status.code(), Some(125), "stopping a session that is not running says so");
}

#[test]
fn a_client_that_goes_away_takes_its_command_and_signals_reach_it() {
    let s = Sandbox::new("sess-client");
    let live = start(&s, "clients", None, &[]);
    let marker = format!("palisade-client-marker-{}", std::process::id());
    let script = format!("sleep 60; : {marker}");
    let mut client =
        s.command(&s.ws(), &["run", "--session", "clients", "--", "/bin/sh", "-c", &script]).spawn().unwrap();
    wait_until(5, "the command started", || running(&marker));
    client.kill().unwrap();
    client.wait().unwrap();
    wait_until(5, "the command outlived its client", || !running(&marker));

    let mut client =
        s.command(&s.ws(), &["run", "--session", "clients", "--", "/bin/sh", "-c", &script]).spawn().unwrap();
    wait_until(5, "the command started", || running(&marker));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(client.id() as i32, libc::SIGTERM) };
    let status = client.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "SIGTERM reached the command: {status:?}");
    drop(live);
}

#[test]
fn options_that_would_change_the_sessions_policy_are_refused() {
    let s = Sandbox::new("sess-options");
    let _live = start(&s, "opts", None, &[]);
    for extra in [&["--allow-write", "/"][..], &["--deny", "x"], &["--no-exec-trace"], &["--audit", "/tmp/x"]] {
        let mut args = vec!["run", "--session", "opts"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "/bin/true"]);
        let o = s.palisade(&args);
        assert_eq!(o.status.code(), Some(125), "{extra:?}");
        assert!(stderr(&o).contains("cannot be given with --session"), "{}", stderr(&o));
    }
    let o = s.palisade(&["session", "start", "--name", "../x"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("not a session name"), "{}", stderr(&o));
    let o = s.palisade(&["session", "start", "--name", "opts", "--owner", &std::process::id().to_string()]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
    let o = s.palisade(&["session", "start", "--name", "bad", "--memory", "lots"]);
    assert_eq!(o.status.code(), Some(125), "a bad policy fails the start");
    assert!(!stderr(&o).is_empty());
    assert!(!s.home().join(".local/state/palisade/live/bad.sock").exists());
    use std::os::unix::fs::PermissionsExt;
    let dir = std::fs::metadata(s.home().join(".local/state/palisade/live")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700, "only the user reaches the sockets");
}

#[test]
fn the_sessions_socket_is_out_of_the_sandboxs_sight() {
    let s = Sandbox::new("sess-hidden");
    let live = start(&s, "hidden", None, &[]);
    let o = live.run(&["/bin/sh", "-c", &format!("ls {} 2>&1; echo end", live.socket().parent().unwrap().display())]);
    assert!(!stdout(&o).contains("hidden.sock"), "{}", stdout(&o));
    let o = s.palisade(&["session", "start", "--name", "seen", "--allow-read", "~/.local/state/palisade/live"]);
    assert_eq!(o.status.code(), Some(125), "a policy that shows the sockets is refused: {}", stderr(&o));
}

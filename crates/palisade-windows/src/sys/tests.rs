//! The process plumbing, on Windows or under Wine (`.ci/run` runs these with Wine 8): the
//! launch, exit codes, the environment block, the standard handles, the job's completion
//! port and kill-on-close of a grandchild. Wine enforces no token, ACL or AppContainer, so
//! these start the command without one and make no enforcement claim; the enforcement tests
//! are `tests/windows/` in the Windows workflow.
//!
//! The helper processes are this test binary itself, started with the name of the `helper`
//! test and an argument `palisade-helper=WHAT`: it then does WHAT.

use std::io::Read;
use std::os::windows::io::{FromRawHandle, IntoRawHandle};
use std::time::{Duration, Instant};

use super::job::{Job, Message};
use super::launch::{Spec, start};
use crate::plan::JobPlan;

/// Runs the `helper` test of this binary as a child doing `what` (its argv, and the
/// environment to give it).
pub(super) fn helper_argv(what: &str) -> (Vec<String>, Vec<(String, String)>) {
    let exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
    let argv = vec![
        exe,
        "sys::tests::helper".into(),
        format!("palisade-helper={what}"),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ];
    (argv, std::env::vars().collect())
}

fn spec<'a>(argv: &'a [String], env: &'a [(String, String)], cwd: &'a str) -> Spec<'a> {
    Spec {
        argv,
        launch: None,
        cwd,
        env,
        stdio: [None; 3],
        security: None,
        mitigations: 0,
        desktop_app_breakaway_disabled: false,
        desktop: None,
        token: None,
    }
}

/// Not a test on its own: what a helper child does.
#[test]
fn helper() {
    let Some(what) = std::env::args().find_map(|a| a.strip_prefix("palisade-helper=").map(str::to_owned)) else {
        return;
    };
    let child = |what: &str| {
        let (argv, env) = helper_argv(what);
        std::process::Command::new(&argv[0]).args(&argv[1..]).env_clear().envs(env).spawn().unwrap()
    };
    match what.as_str() {
        "exit7" => std::process::exit(7),
        "exit7_later" => {
            // Long enough for the job's watcher to read it on a loaded machine under Wine.
            std::thread::sleep(Duration::from_millis(1500));
            std::process::exit(7);
        }
        "env" => {
            println!("MARK={}", std::env::var("PALISADE_MARK").unwrap_or_default());
            println!("ARGS={:?}", std::env::args().skip(6).collect::<Vec<_>>());
            std::process::exit(0);
        }
        "child_then_exit3" => {
            assert_eq!(child("exit7_later").wait().unwrap().code(), Some(7));
            std::process::exit(3);
        }
        "child_sleeps" => {
            let _ = child("sleep").wait();
            std::process::exit(0);
        }
        "grandchild" => {
            // Starts a grandchild that would live 60 s, writes its pid, and exits at once.
            println!("GRANDCHILD={}", child("sleep").id());
            std::process::exit(0);
        }
        "sleep" => {
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(0);
        }
        other => panic!("unknown helper {other}"),
    }
}

fn cwd() -> String {
    std::env::temp_dir().to_string_lossy().into_owned()
}

#[test]
fn exit_codes_come_back() {
    let job = Job::new(&JobPlan::bare()).unwrap();
    let (argv, env) = helper_argv("exit7");
    let cwd = cwd();
    let p = start(&spec(&argv, &env, &cwd), &job).unwrap();
    assert_eq!(p.wait().unwrap(), 7);
}

#[test]
fn a_missing_program_is_not_found() {
    let job = Job::new(&JobPlan::bare()).unwrap();
    let argv = vec![r"C:\no\such\program.exe".to_string()];
    let cwd = cwd();
    let e = start(&spec(&argv, &[], &cwd), &job).unwrap_err();
    assert!(matches!(e.raw_os_error(), Some(2 | 3)), "{e}");
}

/// A pipe whose write end the child gets as standard output.
fn pipe() -> (std::fs::File, windows_sys::Win32::Foundation::HANDLE) {
    let (r, w) = std::io::pipe().unwrap();
    (std::fs::File::from(std::os::windows::io::OwnedHandle::from(r)), w.into_raw_handle())
}

#[test]
fn the_environment_and_arguments_arrive_exactly() {
    let job = Job::new(&JobPlan::bare()).unwrap();
    let (mut argv, mut env) = helper_argv("env");
    argv.push("two words".into());
    argv.push(r#"a "quoted" \ arg\"#.into());
    env.push(("PALISADE_MARK".into(), "ü and spaces".into()));
    let (mut out, w) = pipe();
    let cwd = cwd();
    let mut s = spec(&argv, &env, &cwd);
    s.stdio[1] = Some(w);
    let p = start(&s, &job).unwrap();
    // The child has its own duplicate; ours is closed so the pipe ends with the child.
    // SAFETY: `w` came from into_raw_handle above and is owned here.
    drop(unsafe { std::fs::File::from_raw_handle(w) });
    assert_eq!(p.wait().unwrap(), 0);
    let mut text = String::new();
    out.read_to_string(&mut text).unwrap();
    assert!(text.contains("MARK=ü and spaces"), "{text}");
    assert!(text.contains(r#"ARGS=["two words", "a \"quoted\" \\ arg\\"]"#), "{text}");
}

#[test]
fn the_completion_port_reports_each_process_and_the_end() {
    let job = Job::new(&JobPlan::bare()).unwrap();
    let (argv, env) = helper_argv("exit7");
    let cwd = cwd();
    let p = start(&spec(&argv, &env, &cwd), &job).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match job.next(500) {
            Some(Message::Empty) => break,
            Some(m) => seen.push(m),
            None => {}
        }
    }
    assert!(seen.contains(&Message::NewProcess(p.pid)), "{seen:?}");
    assert!(seen.iter().any(|m| matches!(m, Message::Exited { pid, .. } if *pid == p.pid)), "{seen:?}");
}

#[test]
fn closing_the_job_ends_a_grandchild_that_outlived_its_parent() {
    let job = Job::new(&JobPlan::bare()).unwrap();
    let (argv, env) = helper_argv("grandchild");
    let (mut out, w) = pipe();
    let cwd = cwd();
    let mut s = spec(&argv, &env, &cwd);
    s.stdio[1] = Some(w);
    let p = start(&s, &job).unwrap();
    // SAFETY: as above.
    drop(unsafe { std::fs::File::from_raw_handle(w) });
    assert_eq!(p.wait().unwrap(), 0);
    // The grandchild holds the pipe too: read until the child's line is complete.
    let mut text = String::new();
    let mut buf = [0u8; 256];
    let pid: u32 = loop {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the child wrote no pid: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(rest) = text.split("GRANDCHILD=").nth(1)
            && let Some((digits, _)) = rest.split_once(['\r', '\n'])
        {
            break digits.parse().unwrap();
        }
    };
    assert!(super::acl::alive_for_tests(pid), "the grandchild runs after its parent exited");
    drop(job);
    let deadline = Instant::now() + Duration::from_secs(10);
    while super::acl::alive_for_tests(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!super::acl::alive_for_tests(pid), "closing the job's last handle ended the grandchild");
}

/// The restricted-token tier's start: the token is made (default DACL included) and the
/// command starts with it (Wine checks nothing of the token: plumbing only).
#[test]
fn a_command_starts_with_the_restricted_token() {
    let cap = super::appcontainer::OwnedSid::parse(&crate::sid::capability_sid("palisade.workspace.test").0).unwrap();
    let run = super::appcontainer::OwnedSid::parse(&crate::sid::capability_sid("palisade.run.test").0).unwrap();
    let token = super::token::restricted(&cap, &run).unwrap();
    let job = Job::new(&JobPlan::bare()).unwrap();
    let (argv, env) = helper_argv("exit7");
    let cwd = cwd();
    let mut s = spec(&argv, &env, &cwd);
    s.token = Some(token.0);
    let p = start(&s, &job).unwrap();
    assert_eq!(p.wait().unwrap(), 7);
}

/// A fresh, empty folder for one test: `palisade-NAME-PID` in TEMP, made anew.
pub(super) fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether this is Wine (ntdll exports `wine_get_version`).
pub(super) fn under_wine() -> bool {
    super::appcontainer::Api::has("ntdll.dll", "wine_get_version")
}

/// The journal's host on a real file system: an entry placed is found, revoked is gone; a
/// placeholder is made with its deny entry already on it, and removed while empty. Windows
/// only: Wine accepts the calls but does not keep the entries (seen with Wine 8).
#[test]
fn acl_entries_and_placeholders_round_trip() {
    use crate::journal::{Entry, Host};
    if under_wine() {
        eprintln!("skipped under Wine, which keeps no ACL entries; the Windows workflow runs it");
        return;
    }
    use crate::plan::{Made, rights};
    let dir = fresh_dir("acl");
    let dir_text = dir.to_string_lossy().into_owned();
    let sid = crate::sid::capability_sid("palisade.workspace.test.acl").0;
    let grant = Entry {
        path: dir_text.clone(),
        kind: "allow".into(),
        sid: sid.clone(),
        mask: rights::MODIFY,
        flags: 0x3,
        on_link: false,
        capability: "palisade.workspace.test.acl".into(),
    };
    let mut acls = super::acl::Acls;
    assert_eq!(acls.present(&grant).unwrap(), Some(false));
    assert!(acls.apply(&grant).unwrap());
    assert_eq!(acls.present(&grant).unwrap(), Some(true));
    acls.revoke(&grant).unwrap();
    assert_eq!(acls.present(&grant).unwrap(), Some(false));
    let ph = format!("{dir_text}\\.vscode");
    let deny = Entry { path: ph.clone(), kind: "deny".into(), mask: rights::WRITE_ANY, flags: 0x3, ..grant.clone() };
    acls.make(&Made { path: ph.clone(), contents: None }, Some(&deny)).unwrap();
    assert_eq!(acls.present(&deny).unwrap(), Some(true), "made with its deny");
    acls.remove(&ph).unwrap();
    assert!(!std::path::Path::new(&ph).exists());
    assert_eq!(acls.present(&deny).unwrap(), None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file's second name has the first's identity and both count two links; a file alone
/// counts one; a missing file is an error that names it.
#[test]
fn file_identity_counts_hard_links() {
    use super::links::file_identity;
    let dir = fresh_dir("links");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    std::fs::write(&a, b"x").unwrap();
    std::fs::write(&c, b"y").unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    let (ia, ib, ic) = (file_identity(&a).unwrap(), file_identity(&b).unwrap(), file_identity(&c).unwrap());
    assert_eq!(ia, ib);
    assert_eq!(ia.links, 2);
    assert_eq!(ic.links, 1);
    assert_ne!((ia.volume, ia.index), (ic.volume, ic.index));
    let missing = file_identity(&dir.join("none")).unwrap_err();
    assert!(missing.to_string().contains("none"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The broker's pipe end to end (under Wine too): the service side made with its security
/// descriptor, a run's request over the pipe, the decision's refusal carried back whole
/// (nothing is registered for this profile, or Wine cannot say what the caller's token is),
/// a pipe served by another process than expected refused by the client, and the server
/// stopped by `wake`. No filter is added: every request is refused first.
#[test]
fn the_broker_answers_a_request_over_its_pipe() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let server = std::thread::spawn(move || super::broker_service::serve(&|| flag.load(Ordering::SeqCst)));
    let until = Instant::now() + Duration::from_secs(10);
    while !super::broker_client::available() {
        assert!(Instant::now() < until, "the broker's pipe never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (http, socks) =
        (std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let profile = format!("palisade.ws.{}.run{}", "0123456789abcdef0123456789abcdef", std::process::id());
    let me = Some(std::process::id());
    // A pipe served by another process than the one expected (the service's) is not used.
    let e = super::broker_client::open_served_by(&profile, 1, 2, Some(std::process::id() + 1)).unwrap_err();
    assert!(e.contains("refusing to use it"), "{e}");
    let (hp, sp) = (http.local_addr().unwrap().port(), socks.local_addr().unwrap().port());
    let e = super::broker_client::open_served_by(&profile, hp, sp, me).unwrap_err();
    assert!(e.starts_with("the broker refused the run's network: "), "{e}");
    assert!(e.contains("not registered") || e.contains("could not be identified"), "{e}");
    // A request for another process's run is refused for that, whatever the machine says.
    let other = format!("palisade.ws.{}.run{}", "0123456789abcdef0123456789abcdef", std::process::id() + 1);
    let e = super::broker_client::open_served_by(&other, 1, 2, me).unwrap_err();
    assert!(e.contains("belongs to process") || e.contains("could not be identified"), "{e}");
    stop.store(true, Ordering::SeqCst);
    super::broker_service::wake();
    server.join().unwrap().unwrap();
}

/// The wall check catches a wall that is not there: started without an AppContainer (as
/// under Wine, which enforces none), the probe reads the canary, and the check refuses,
/// naming it; the write check holds.
#[test]
fn the_wall_check_refuses_when_a_canary_is_readable_from_inside() {
    let base = fresh_dir("wall");
    let (state, temp) = (base.join("state"), base.join("temp"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&temp).unwrap();
    let probe = super::wall::Probe {
        security: None,
        token: None,
        desktop: None,
        mitigations: 0,
        desktop_app_breakaway_disabled: false,
        confined: true,
    };
    let e = super::wall::check(&probe, &temp, &state, &super::backend::system_root()).unwrap_err();
    assert!(e.contains("was readable from inside"), "{e}");
    assert!(e.contains("the run's private TEMP is writable"), "{e}");
    // Nothing is left behind: the canary and the probe's files are gone.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&temp).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&base);
}

/// `repair` removes the wall check's canary of a run that died during the check, and keeps
/// a live run's; the profile scan reads the user's profiles without failing (none under Wine).
#[test]
fn repair_removes_a_dead_runs_wall_canary_only() {
    let root = fresh_dir("repair");
    // Process ids are multiples of 4 on Windows: 4,294,967,291 is never one.
    let (dead, live) =
        (root.join("wall-canary-4294967291.txt"), root.join(format!("wall-canary-{}.txt", std::process::id())));
    std::fs::write(&dead, "x").unwrap();
    std::fs::write(&live, "x").unwrap();
    let undone = super::backend::Windows::new(root.clone()).repair().unwrap();
    assert!(!dead.exists() && live.exists(), "{:?}", undone.removed);
    assert!(undone.removed.iter().any(|r| r.ends_with("wall-canary-4294967291.txt")), "{:?}", undone.removed);
    let _ = super::registry::app_container_monikers();
    let _ = std::fs::remove_dir_all(&root);
}

//! The whole session (`palisade_sandbox::run`) through the job's plumbing, under Wine or on
//! Windows: the Windows policy loads, the job's completion port feeds the audit log, and a
//! monitor rule's kill ends the job. The test backend is the Windows backend without the
//! AppContainer, its ACL entries and its desktop (Wine has none of them): it makes no
//! enforcement claim.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_policy::ResolvedPolicy;
use palisade_policy::hostfs::HostFs;
use palisade_policy::load::{Environment, FsResolver, LoadOptions, load_on};
use palisade_policy::winpath::WinPath;
use palisade_sandbox::view::{Entry, FsView, ViewError};
use palisade_sandbox::{
    Backend, Enforcement, Exit, Limits, Probe, Refusal, Request, RunError, RunSpec, Strength, Wiring,
};

use super::backend::run_in_job;
use super::job::Job;
use crate::plan::{self, HostFacts, Tier, WindowsPlan};

/// A home, a workspace and a state folder under a fresh temporary folder, removed on drop.
struct Dirs(PathBuf);

impl Dirs {
    fn new(name: &str) -> Dirs {
        let root = super::tests::fresh_dir(&format!("wsession-{name}"));
        for d in ["home", "ws", "state", "tmp", "appdata"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Dirs(root)
    }

    fn env(&self) -> Environment {
        Environment {
            home: self.0.join("home"),
            cwd: self.0.join("ws"),
            tmp: self.0.join("tmp"),
            config_home: self.0.join("appdata"),
            state_home: self.0.join("state"),
            cache_home: self.0.join("state\\cache"),
            git_configs: Vec::new(),
            path: Vec::new(),
        }
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn w(p: &Path) -> WinPath {
    WinPath::parse(&p.to_string_lossy()).unwrap()
}

/// The Windows backend's session plumbing without its confinement (see the module).
struct Plumbing {
    root: PathBuf,
}

impl Backend for Plumbing {
    type Plan = WindowsPlan;

    fn probe(&self) -> Probe {
        Probe { platform: "plumbing".into(), required: Vec::new(), facts: Vec::new() }
    }
    fn preflight(&self) -> Result<(), Refusal> {
        Ok(())
    }
    fn plan(
        &self,
        policy: &ResolvedPolicy,
        _: &dyn HostFs,
        req: Request,
        _: Strength,
    ) -> Result<WindowsPlan, ViewError> {
        let facts = HostFacts {
            system_root: WinPath::parse("C:\\windows").unwrap(),
            program_dirs: Vec::new(),
            profile: w(&self.root.join("home")),
            temp: w(&std::env::temp_dir()),
            onedrive: Vec::new(),
            state: w(&self.root.join("state\\ws")),
        };
        let view = FsView {
            entries: vec![Entry::Host { path: policy.workspace.clone(), writable: true }],
            cwd: policy.workspace.clone(),
            tripwires: Vec::new(),
        };
        let mut plan = plan::build(plan::Input {
            view,
            workspace: &policy.workspace,
            argv: req.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            env: req.env,
            limits: Limits::of(policy),
            tmp: &req.tmp,
            facts: &facts,
            network: crate::plan::NetworkInput::Off,
            tier: Tier::AppContainer,
            builtin_read: &|_| false,
        })?;
        // Wine refuses these two start attributes (ERROR_NOT_SUPPORTED); the workflow tests
        // them on Windows.
        plan.launch.mitigations.clear();
        plan.launch.desktop_app_breakaway_disabled = false;
        Ok(plan)
    }
    fn view(plan: &WindowsPlan) -> &FsView {
        &plan.view
    }
    fn prepare(&mut self, _: &WindowsPlan) -> Result<Enforcement, Refusal> {
        Ok(Enforcement {
            mode: "plumbing (no AppContainer)".into(),
            limits: "job object".into(),
            ..Enforcement::default()
        })
    }
    fn spawn(&mut self, plan: &WindowsPlan, wiring: Wiring) -> Result<Exit, RunError> {
        let job = Arc::new(Job::new(&plan.job).map_err(|e| RunError::Setup(e.to_string()))?);
        let stopper = Arc::clone(&job);
        wiring.kill.arm(Box::new(move || stopper.terminate(137)));
        let temp = self.root.join("state\\tmp-run");
        std::fs::create_dir_all(&temp).unwrap();
        run_in_job(plan, wiring, job, None, None, &temp, None)
    }
    fn move_aside(
        _: palisade_sandbox::quarantine::Suspect<'_>,
        _: (i64, i64),
    ) -> std::io::Result<Vec<palisade_sandbox::quarantine::Moved>> {
        Ok(Vec::new())
    }
}

/// Runs the helper `what` through the session with `policy` added; the exit status and the
/// audit log's events.
fn session(name: &str, what: &str, policy: &str) -> (u8, Vec<serde_json::Value>) {
    let (argv, _) = super::tests::helper_argv(what);
    session_of(&Dirs::new(name), argv, policy)
}

/// Runs `argv` through the session in `dirs` with `policy` added.
fn session_of(dirs: &Dirs, argv: Vec<String>, policy: &str) -> (u8, Vec<serde_json::Value>) {
    let env = dirs.env();
    let file = dirs.0.join("state\\policy.toml");
    std::fs::write(&file, policy).unwrap();
    let host = FsResolver::default();
    let opts = LoadOptions { workspace: Some(env.cwd.clone()), policy_files: vec![file], ..Default::default() };
    let policy = load_on(&env, &opts, &host).unwrap_or_else(|e| panic!("the Windows policy does not load: {e}"));
    let audit = dirs.0.join("state\\audit.jsonl");
    let spec = RunSpec {
        argv: argv.into_iter().map(Into::into).collect(),
        audit: Some(audit.clone()),
        trace_exec: true,
        quiet: true,
        ..RunSpec::default()
    };
    let mut backend = Plumbing { root: dirs.0.clone() };
    let status = palisade_sandbox::run(&mut backend, spec, &env, &policy, &host).unwrap_or_else(|r| panic!("{r}"));
    let events = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
        .collect();
    (status, events)
}

#[test]
fn the_jobs_processes_reach_the_audit_log_and_the_exit_status_comes_back() {
    let (status, events) = session("audit", "child_then_exit3", "");
    assert_eq!(status, 3, "{events:#?}");
    let all: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "exec").collect();
    assert!(all.len() >= 2, "the command and its child: {events:#?}");
    // Under Wine on a loaded machine, a process the job reports can stay unreadable to
    // OpenProcess and to a process snapshot for as long as the watcher tries (seen in CI 2
    // times in about 20 runs, a record with no image, arguments or parent): such records
    // are left out here. On Windows every record must be whole (the workflow runs this).
    let wine = super::tests::under_wine();
    let execs: Vec<&serde_json::Value> = all
        .iter()
        .copied()
        .filter(|e| !(wine && e["path"] == "" && e["argv"].as_array().is_some_and(|a| a.is_empty())))
        .collect();
    let exe = std::env::current_exe().unwrap().file_name().unwrap().to_string_lossy().to_lowercase();
    assert!(execs.iter().all(|e| e["path"].as_str().unwrap_or_default().to_lowercase().ends_with(&exe)), "{all:#?}");
    // Each process's arguments, read from it (its command line, split as the C runtime
    // splits it), and the child's parent is the command.
    let with = |arg: &str| {
        execs
            .iter()
            .find(|e| e["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == arg)))
            .unwrap_or_else(|| panic!("no exec with {arg}: {execs:#?}"))
    };
    let parent = with("palisade-helper=child_then_exit3");
    if wine && execs.len() < 2 {
        eprintln!("the child's record was unreadable under Wine: {all:#?}");
    } else {
        let child = with("palisade-helper=exit7_later");
        assert_eq!(child["ppid"], parent["pid"], "{execs:#?}");
    }
    let end = events.iter().find(|e| e["kind"] == "session_end").expect("session_end");
    assert_eq!(end["exit_code"], 3, "{end}");
}

#[test]
fn a_kill_rule_ends_the_whole_job() {
    let policy = "[[monitor.rules]]\nname = \"two-execs\"\nwhen = \"execs > 1 in 60s\"\naction = \"kill\"\n";
    let started = std::time::Instant::now();
    let (status, events) = session("kill", "child_sleeps", policy);
    assert_eq!(status, 137, "{events:#?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the sleeping child was killed, not waited for");
    assert!(
        events.iter().any(|e| e["kind"] == "monitor_action" && e["rule"] == "two-execs" && e["action"] == "kill"),
        "{events:#?}"
    );
}

/// A batch file (how npm and the agents' CLIs are installed on Windows) runs through
/// cmd.exe, its arguments arriving whole, `&` included: cmd.exe runs nothing of them. (What
/// a batch file then does with `%~1`, which removes the quotes, is its own affair.)
#[test]
fn a_batch_file_runs_with_its_arguments_intact() {
    let dirs = Dirs::new("batch");
    let bat = dirs.0.join("ws\\tool.cmd");
    let out = dirs.0.join("ws\\out.txt");
    std::fs::write(&bat, "@echo off\r\necho 1=%1>> \"%~dp0out.txt\"\r\necho 2=%2>> \"%~dp0out.txt\"\r\nexit /b 4\r\n")
        .unwrap();
    let argv = vec![bat.to_string_lossy().into_owned(), "a b".into(), "x&echo injected".into()];
    let (status, events) = session_of(&dirs, argv, "");
    assert_eq!(status, 4, "{events:#?}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("1=\"a b\"") && text.contains("2=\"x&echo injected\""), "{text:?}");
    assert!(!text.lines().any(|l| l.trim() == "injected"), "{text:?}");
}

/// The whole Windows planning path on Windows paths: the built-in Windows policy loaded for
/// a workspace, the portable view built from it, the AppContainer plan from that.
#[test]
fn the_windows_policy_plans_a_workspace() {
    use palisade_sandbox::Backend;
    let dirs = Dirs::new("plan");
    let ws = dirs.0.join("ws");
    for d in [".git\\hooks", ".git\\objects", ".git\\refs\\heads", ".git\\info"] {
        std::fs::create_dir_all(ws.join(d)).unwrap();
    }
    std::fs::write(ws.join(".git\\HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(ws.join(".git\\config"), "[core]\n").unwrap();
    std::fs::write(ws.join(".env"), "TOKEN=x\n").unwrap();
    std::fs::create_dir_all(dirs.0.join("home\\.ssh")).unwrap();
    let env = dirs.env();
    let host = FsResolver::default();
    let opts = LoadOptions { workspace: Some(ws.clone()), ..Default::default() };
    let policy = load_on(&env, &opts, &host).unwrap_or_else(|e| panic!("{e}"));
    let req = Request {
        argv: vec!["cmd".into()],
        cwd: ws.clone(),
        env: Vec::new(),
        tmp: env.tmp.clone(),
        trace_exec: false,
        copies: None,
        session: false,
    };
    let backend = super::backend::Windows::new(dirs.0.join("state\\palisade"));
    let plan = backend.plan(&policy, &host, req, Strength::Full).unwrap_or_else(|e| panic!("{e}"));
    let key = |p: &Path| WinPath::parse(&p.to_string_lossy()).unwrap().key();
    let at =
        |p: &Path| plan.acl.iter().filter(|a| WinPath::parse(&a.path).unwrap().key() == key(p)).collect::<Vec<_>>();
    let ws_grant = at(&ws);
    assert!(
        ws_grant.iter().any(|a| a.kind == crate::plan::rights::AceKind::Allow && a.mask == crate::plan::rights::MODIFY),
        "{:#?}",
        plan.acl
    );
    // Protected beneath the workspace: git's configuration and hooks, the .env file; a
    // placeholder for a protected path that does not exist (.vscode).
    for p in [ws.join(".git\\config"), ws.join(".git\\hooks"), ws.join(".env")] {
        assert!(
            at(&p).iter().any(|a| a.mask == crate::plan::rights::WRITE_ANY),
            "{} is not protected: {:#?}",
            p.display(),
            plan.acl
        );
    }
    assert!(
        plan.made.iter().any(|m| WinPath::parse(&m.path).unwrap().key() == key(&ws.join(".vscode"))),
        "{:#?}",
        plan.made
    );
    // The secrets in the home: nothing grants them.
    assert!(at(&dirs.0.join("home\\.ssh")).is_empty());
    assert!(plan.acl.iter().all(|a| !key(Path::new(&a.path)).starts_with(&key(&dirs.0.join("home\\.ssh")))));
}

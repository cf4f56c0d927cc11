//! The Windows [`Backend`]: plans with [`crate::plan::build`], puts the plan's ACL entries
//! in place through the journal, and runs the command in its AppContainer and job.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use palisade_policy::hostfs::HostFs;
use palisade_policy::model::LayerKind;
use palisade_policy::winpath::WinPath;
use palisade_policy::{NetMode, ResolvedPolicy, WindowsTier};
use palisade_sandbox::quarantine::{Moved, Suspect};
use palisade_sandbox::view::ViewError;
use palisade_sandbox::{
    Backend, Enforcement, Exit, Limits, Mechanism, Probe, Refusal, Request, RunError, Strength, Wiring,
};
use windows_sys::Win32::Security::{SECURITY_CAPABILITIES, SID_AND_ATTRIBUTES};
use windows_sys::Win32::System::SystemServices::SE_GROUP_ENABLED;

use super::acl::Acls;
use super::appcontainer::{Api, OwnedSid};
use super::desktop::Desktop;
use super::job::{Job, Message};
use super::launch::{self, Spec};
use crate::journal::{self, Journal, Mode};
use crate::plan::{self, HostFacts, WindowsPlan};

/// The Windows backend. Its state (the journal, each workspace's private TEMP folders)
/// lives under `root` (`%LOCALAPPDATA%\palisade`).
#[derive(Debug)]
pub struct Windows {
    root: PathBuf,
}

impl Windows {
    /// A backend keeping its state under `root`.
    pub fn new(root: PathBuf) -> Windows {
        Windows { root }
    }

    /// The journal of host changes.
    pub fn journal_path(&self) -> PathBuf {
        self.root.join("journal.jsonl")
    }

    fn facts(&self, workspace: &Path) -> Result<HostFacts, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let path = |k: &str| -> Result<WinPath, String> {
            WinPath::parse(&var(k).ok_or_else(|| format!("%{k}% is not set"))?).map_err(|e| format!("%{k}%: {e}"))
        };
        let optional = |keys: &[&str]| {
            keys.iter().filter_map(|k| var(k)).filter_map(|v| WinPath::parse(&v).ok()).collect::<Vec<_>>()
        };
        let ws = WinPath::parse(&workspace.to_string_lossy()).map_err(|e| format!("the workspace: {e}"))?;
        let tag = crate::sid::path_tag(&ws.key());
        let state = WinPath::parse(&self.root.join("workspaces").join(tag).to_string_lossy())?;
        Ok(HostFacts {
            system_root: path("SystemRoot")?,
            program_dirs: optional(&["ProgramFiles", "ProgramFiles(x86)", "ProgramW6432", "ProgramData"]),
            profile: path("USERPROFILE")?,
            temp: path("TEMP")?,
            onedrive: optional(&["OneDrive", "OneDriveConsumer", "OneDriveCommercial"]),
            state,
        })
    }

    /// Whether the machine's administrator forbids ACL changes: `acl_changes = "forbid"` in
    /// `%ProgramData%\palisade\machine.toml`.
    pub fn acl_mode() -> Mode {
        let Some(pd) = std::env::var_os("ProgramData") else { return Mode::Apply };
        let text = std::fs::read_to_string(Path::new(&pd).join("palisade").join("machine.toml")).unwrap_or_default();
        let forbid = text.lines().any(|l| {
            let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            l == "acl_changes=\"forbid\""
        });
        if forbid { Mode::Forbid } else { Mode::Apply }
    }
}

impl Backend for Windows {
    type Plan = WindowsPlan;

    fn probe(&self) -> Probe {
        let api = Api::load();
        let job = Job::new(&plan::JobPlan::bare());
        let sec_env = Api::has("kernel32.dll", "CreateProcessSecurityEnvironment")
            || Api::has("kernelbase.dll", "CreateProcessSecurityEnvironment");
        Probe {
            platform: format!("windows {}", std::env::consts::ARCH),
            required: vec![
                Mechanism {
                    name: "AppContainer".into(),
                    available: api.is_ok(),
                    detail: match &api {
                        Ok(_) => "userenv.dll and kernelbase.dll have the profile and capability functions".into(),
                        Err(e) => format!("{e}: Windows 8 or later is needed"),
                    },
                },
                Mechanism {
                    name: "job objects".into(),
                    available: job.is_ok(),
                    detail: match &job {
                        Ok(_) => "a job with limits and a completion port was made".into(),
                        Err(e) => e.to_string(),
                    },
                },
            ],
            facts: vec![
                (
                    "tier".into(),
                    if api.is_ok() { "AppContainer (found by probing)".into() } else { "none: refusing".into() },
                ),
                (
                    "OS sandbox API".into(),
                    if sec_env {
                        "CreateProcessSecurityEnvironment found; not used yet (the AppContainer tier is)".into()
                    } else {
                        "not found on this Windows".into()
                    },
                ),
                (
                    "ACL changes".into(),
                    match Windows::acl_mode() {
                        Mode::Apply => "allowed; journaled in %LOCALAPPDATA%\\palisade\\journal.jsonl".into(),
                        Mode::Forbid => {
                            "forbidden by %ProgramData%\\palisade\\machine.toml: runs need their entries in place"
                                .into()
                        }
                    },
                ),
                (
                    "network".into(),
                    if super::broker_client::available() {
                        "off by default; the allowlist through the broker service (installed)".into()
                    } else {
                        "off only: the allowlist needs the broker service (an administrator runs `palisade setup` once)"
                            .into()
                    },
                ),
                ("denials".into(), "not read (Windows' access-check events are not read yet)".into()),
            ],
        }
    }

    fn preflight(&self) -> Result<(), Refusal> {
        Api::load().map(|_| ()).map_err(|e| {
            Refusal::new(format!("AppContainer is not available: {e}"), Some("Palisade needs Windows 10 or later"))
        })
    }

    fn plan(
        &self,
        policy: &ResolvedPolicy,
        host: &dyn HostFs,
        req: Request,
        strength: Strength,
    ) -> Result<WindowsPlan, ViewError> {
        if strength == Strength::Degraded {
            return Err(ViewError::Unrealisable {
                path: policy.workspace.clone(),
                reason: "Windows has no degraded mode: the AppContainer tier runs or nothing does".into(),
            });
        }
        let facts = self
            .facts(&policy.workspace)
            .map_err(|reason| ViewError::Unrealisable { path: policy.workspace.clone(), reason })?;
        let view = palisade_sandbox::view::build(policy, host, &req)?;
        let builtin = |p: &Path| policy.decide_path(p).rule.is_some_and(|r| r.origin.layer == LayerKind::Builtin);
        plan::build(plan::Input {
            view,
            workspace: &policy.workspace,
            argv: req.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            env: req.env,
            limits: Limits::of(policy),
            tmp: &req.tmp,
            facts: &facts,
            network: if !policy.publish.is_empty() {
                plan::NetworkInput::Publish
            } else if policy.mode() == NetMode::Allowlist {
                plan::NetworkInput::Allowlist { run: std::process::id(), gateway: None }
            } else {
                plan::NetworkInput::Off
            },
            tier: match policy.windows_tier() {
                WindowsTier::AppContainer => plan::Tier::AppContainer,
                WindowsTier::RestrictedToken => plan::Tier::RestrictedToken,
            },
            builtin_read: &builtin,
        })
    }

    fn view(plan: &WindowsPlan) -> &palisade_sandbox::view::FsView {
        &plan.view
    }

    fn prepare(&mut self, plan: &WindowsPlan) -> Result<Enforcement, Refusal> {
        // The allowlist's filters and loopback exemption are the broker service's: without
        // it, refused before anything is changed on the host.
        if plan.network.needs_broker && !super::broker_client::available() {
            return Err(Refusal::new(
                format!(
                    "the network allowlist needs Palisade's broker service (it adds the run's Windows Filtering Platform filters as an administrator), and nothing answers on {}",
                    crate::broker::PIPE
                ),
                Some("an administrator runs `palisade setup` once; or run with the network off (the default)"),
            ));
        }
        Ok(Enforcement {
            mode: "appcontainer".into(),
            landlock_abi: 0,
            missing: plan.missing.clone(),
            limits: "job object".into(),
            denials: "not recorded: Windows' access-check events are not read yet".into(),
        })
    }

    fn spawn(&mut self, plan: &WindowsPlan, wiring: Wiring) -> Result<Exit, RunError> {
        let step = |step: &str| {
            let step = step.to_owned();
            move |e: io::Error| RunError::Step { step, source: Box::new(e) }
        };
        // The run's own profile (the allowlist's) is deleted whatever happens from here on.
        let _run_profile = plan.network.needs_broker.then(|| RunProfile(plan.profile.clone()));
        // Who the command runs as: the AppContainer (its profile and capabilities, as the
        // system derives them: they must be the plan's, or the journal's entries would name
        // SIDs nobody holds), or the restricted token (whose restricting SID is the
        // workspace capability, read from the plan).
        let who = match plan.tier {
            plan::Tier::AppContainer => {
                let api =
                    Api::load().map_err(|e| RunError::Unsupported(format!("AppContainer is not available: {e}")))?;
                let profile = api
                    .profile(&plan.profile, "Palisade sandbox")
                    .map_err(step("creating the AppContainer profile"))?;
                if profile.string() != plan.profile_sid {
                    return Err(RunError::Setup(format!(
                        "Windows derived {} for the profile {}, the plan {}: refusing to run with ACL entries nobody holds",
                        profile.string(),
                        plan.profile,
                        plan.profile_sid
                    )));
                }
                let mut caps: Vec<OwnedSid> = Vec::new();
                for c in &plan.capabilities {
                    let sid = api.capability(&c.name).map_err(step("deriving a capability SID"))?;
                    if sid.string() != c.sid {
                        return Err(RunError::Setup(format!(
                            "Windows derived {} for the capability {}, the plan {}: refusing",
                            sid.string(),
                            c.name,
                            c.sid
                        )));
                    }
                    caps.push(sid);
                }
                Who::Container { profile, caps }
            }
            plan::Tier::RestrictedToken => {
                let cap =
                    plan.capabilities.iter().find(|c| c.holder == plan::Holder::Workspace).map(|c| c.sid.0.as_str());
                let cap = OwnedSid::parse(cap.unwrap_or_default()).map_err(step("reading the workspace capability"))?;
                // A SID of this run's own, restricting and in the default DACL: objects the
                // run makes can be opened by no other restricted process (another run's).
                let nanos =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
                let run = crate::sid::capability_sid(&format!("palisade.run.{}.{nanos}", std::process::id()));
                let run = OwnedSid::parse(&run.0).map_err(step("making the run's SID"))?;
                let token = super::token::restricted(&cap, &run).map_err(step("creating the restricted token"))?;
                Who::Restricted { cap, token }
            }
            plan::Tier::SecurityEnvironment => {
                return Err(RunError::Setup(
                    "the OS sandbox API tier is not built; Palisade does not choose it".into(),
                ));
            }
        };
        // The allowlist: the gateway's listeners here, then the broker's filters for the run's
        // own package (which it checks is registered, and these listeners ours); the proxy
        // variables name the ports bound.
        let mut wiring = wiring;
        let plan_with_ports;
        let mut plan = plan;
        let network = if plan.network.needs_broker {
            let bind = |what: &str| {
                std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| RunError::Step {
                    step: format!("listening for the gateway's {what}"),
                    source: Box::new(e),
                })
            };
            let (http, socks) = (bind("HTTP proxy")?, bind("SOCKS5")?);
            let port = |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
            let ports = plan::network::GatewayPorts { http: port(&http), socks: port(&socks) };
            // Copies held for the whole run: the ports stay this process's even if the gateway
            // stops, so no other program takes the address the filters permit.
            let held = (
                http.try_clone().map_err(step("keeping the gateway's HTTP port"))?,
                socks.try_clone().map_err(step("keeping the gateway's SOCKS5 port"))?,
            );
            let lease = super::broker_client::open(&plan.profile, ports.http, ports.socks).map_err(RunError::Setup)?;
            plan_with_ports = plan.with_gateway(ports);
            plan = &plan_with_ports;
            if let Some(serve) = wiring.gateway.take() {
                let listeners = palisade_gateway::server::Listeners {
                    http: Some(http),
                    socks: Some(socks),
                    dns_udp: None,
                    dns_tcp: None,
                    transparent: Vec::new(),
                };
                std::thread::Builder::new()
                    .name("palisade-gateway".into())
                    .spawn(move || serve(listeners))
                    .map_err(step("starting the gateway"))?;
            }
            Some((lease, held))
        } else {
            None
        };
        std::fs::create_dir_all(&self.root).map_err(step("making Palisade's state folder"))?;
        // A TEMP folder of this run's own, made fresh (never one that exists already).
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let temp = PathBuf::from(&plan.launch.temp_parent).join(format!("run-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&plan.launch.temp_parent).map_err(step("making the private TEMP folders' parent"))?;
        std::fs::create_dir(&temp).map_err(step("making the run's private TEMP folder"))?;
        let used = {
            // Set-up under the journal's lock: the placeholders first (each made with its deny
            // entry; those of overlapping runs joined), then every entry checked and the
            // missing ones placed.
            let mut j = Journal::open(&self.journal_path()).map_err(step("opening the journal"))?;
            let mut acls = Acls;
            let used = journal::make(&mut j, &mut acls, &plan.made, &plan.acl, std::process::id())
                .map_err(step("making the placeholders"))?;
            if let Err(e) = journal::ensure(&mut j, &mut acls, &plan.acl, Windows::acl_mode()) {
                let _ = journal::unmake(&mut j, &mut acls, &used, std::process::id());
                let _ = std::fs::remove_dir_all(&temp);
                return Err(RunError::Setup(format!("putting the workspace's ACL entries in place: {e}")));
            }
            used
        };
        let result = self.run(plan, wiring, &who, &temp, network.as_ref().map(|(lease, _)| lease));
        if let Ok(mut j) = Journal::open(&self.journal_path()) {
            let _ = journal::unmake(&mut j, &mut Acls, &used, std::process::id());
        }
        let _ = std::fs::remove_dir_all(&temp);
        // The run's network ends with it: the broker removes the exemption and the filters
        // when the lease's pipe closes; then the run's own profile goes (`_run_profile`).
        drop(network);
        result
    }

    fn move_aside(_suspect: Suspect<'_>, _since: (i64, i64)) -> io::Result<Vec<Moved>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "moving aside what git would run from a repository the sandbox made is not built on Windows yet",
        ))
    }
}

impl Windows {
    /// `palisade forget WORKSPACE`: revokes every ACL entry journaled for the workspace's
    /// capabilities (one per policy it ran with) and deletes its AppContainer profile.
    /// Entries of toolchain capabilities (shared by workspaces) are kept.
    ///
    /// # Errors
    /// The first failure, in words.
    pub fn forget(&self, workspace: &Path) -> Result<journal::Undone, String> {
        let ws = WinPath::parse(&workspace.to_string_lossy()).map_err(|e| format!("{}: {e}", workspace.display()))?;
        let tag = crate::sid::path_tag(&ws.key());
        let prefix = format!("{}.{tag}.", plan::WORKSPACE_CAPABILITY);
        let mut j = Journal::open(&self.journal_path()).map_err(|e| format!("opening the journal: {e}"))?;
        let undone = journal::forget(&mut j, &mut Acls, &prefix).map_err(|e| format!("revoking: {e}"))?;
        let api = Api::load()?;
        let _ = api.delete_profile(&format!("palisade.ws.{tag}"));
        let _ = std::fs::remove_dir_all(self.root.join("workspaces").join(tag));
        Ok(undone)
    }

    /// `palisade repair`: undoes what crashed runs left (see [`journal::repair`]).
    ///
    /// # Errors
    /// The first failure, in words.
    pub fn repair(&self) -> Result<journal::Undone, String> {
        use journal::Host as _;
        let mut j = Journal::open(&self.journal_path()).map_err(|e| format!("opening the journal: {e}"))?;
        let mut undone = journal::repair(&mut j, &mut Acls).map_err(|e| format!("repairing: {e}"))?;
        // The wall check's canaries of runs that died during it.
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid =
                    name.strip_prefix("wall-canary-").and_then(|r| r.strip_suffix(".txt")).and_then(|p| p.parse().ok());
                if pid.is_some_and(|p| !Acls.alive(p)) && std::fs::remove_file(e.path()).is_ok() {
                    undone.removed.push(e.path().display().to_string());
                }
            }
        }
        // The AppContainer profiles of allowlist runs that died before deleting theirs.
        if let Ok(api) = Api::load() {
            for name in super::registry::app_container_monikers() {
                let dead = crate::broker::run_profile_pid(&name).is_some_and(|p| !Acls.alive(p));
                if dead && api.delete_profile(&name).is_ok() {
                    undone.removed.push(format!("AppContainer profile {name}"));
                }
            }
        }
        Ok(undone)
    }

    fn run(
        &self,
        plan: &WindowsPlan,
        wiring: Wiring,
        who: &Who,
        temp: &Path,
        lease: Option<&super::broker_client::Lease>,
    ) -> Result<Exit, RunError> {
        let step = |step: &'static str| move |e: io::Error| RunError::Step { step: step.into(), source: Box::new(e) };
        let job = Arc::new(Job::new(&plan.job).map_err(step("creating the job object"))?);
        if let Some(lease) = lease {
            lease.watch(Arc::clone(&job));
        }
        let stopper = Arc::clone(&job);
        wiring.kill.arm(Box::new(move || stopper.terminate(137)));
        let name = format!("{}-{}", plan.profile, std::process::id());
        let mitigations = plan.launch.mitigations.iter().fold(0, |a, m| a | m.bit);
        // The desktop belongs to the AppContainer, or to the restricted token's capability;
        // the command (and the wall check before it) starts in one or with the other.
        let (owner, mut attrs, token) = match who {
            Who::Container { profile, caps } => (
                profile.as_psid(),
                caps.iter()
                    .map(|c| SID_AND_ATTRIBUTES { Sid: c.as_psid(), Attributes: SE_GROUP_ENABLED as u32 })
                    .collect::<Vec<_>>(),
                None,
            ),
            Who::Restricted { cap, token } => (cap.as_psid(), Vec::new(), Some(token.0)),
        };
        let desktop = Desktop::new(&name, owner).map_err(step("creating the run's desktop"))?;
        let security = match who {
            Who::Container { profile, .. } => Some(SECURITY_CAPABILITIES {
                AppContainerSid: profile.as_psid(),
                Capabilities: attrs.as_mut_ptr(),
                CapabilityCount: attrs.len() as u32,
                Reserved: 0,
            }),
            Who::Restricted { .. } => None,
        };
        let probe = super::wall::Probe {
            security: security.as_ref(),
            token,
            desktop: Some(&desktop.name),
            mitigations,
            desktop_app_breakaway_disabled: plan.launch.desktop_app_breakaway_disabled,
            // The restricted-token tier confines writes only.
            confined: security.is_some(),
        };
        wall(&probe, temp, &self.root)?;
        lease_alive(lease)?;
        run_in_job(plan, wiring, job, security.as_ref(), Some(&desktop.name), temp, token)
    }
}

/// The wall check ([`super::wall`]); what it could not check is said on standard error.
fn wall(probe: &super::wall::Probe<'_>, temp: &Path, state: &Path) -> Result<(), RunError> {
    let held = super::wall::check(probe, temp, state, &system_root()).map_err(RunError::Setup)?;
    for h in held.iter().filter(|h| h.contains("not checked")) {
        eprintln!("palisade: the wall check: {h}");
    }
    Ok(())
}

/// Refuses to start the command when the broker's lease broke before the start (its filters
/// are gone).
fn lease_alive(lease: Option<&super::broker_client::Lease>) -> Result<(), RunError> {
    match lease {
        Some(l) if !l.alive() => Err(RunError::Setup(
            "the broker service ended before the run started, and with it the run's network filters".into(),
        )),
        _ => Ok(()),
    }
}

/// A run's own AppContainer profile (the allowlist's), deleted when this is dropped.
struct RunProfile(String);

impl Drop for RunProfile {
    fn drop(&mut self) {
        if let Ok(api) = Api::load() {
            let _ = api.delete_profile(&self.0);
        }
    }
}

/// Who the command runs as.
#[derive(Debug)]
enum Who {
    /// In the workspace's AppContainer, with these capabilities.
    Container { profile: OwnedSid, caps: Vec<OwnedSid> },
    /// With a write-restricted token whose restricting SID is `cap`.
    Restricted { cap: OwnedSid, token: super::handle::Handle },
}

/// Starts the plan's command in `job` (already armed on the kill switch), reports the job's
/// messages, waits for the command, ends what it left in the job, and calls the wiring's
/// two moments. `security` is the AppContainer, `token` the restricted token (both `None`
/// only in the plumbing tests, which run under Wine and make no enforcement claim);
/// `desktop` the run's desktop.
///
/// # Errors
/// [`RunError::NotFound`] when the program does not exist; [`RunError::Step`] otherwise.
pub(super) fn run_in_job(
    plan: &WindowsPlan,
    wiring: Wiring,
    job: Arc<Job>,
    security: Option<&SECURITY_CAPABILITIES>,
    desktop: Option<&str>,
    temp: &Path,
    token: Option<windows_sys::Win32::Foundation::HANDLE>,
) -> Result<Exit, RunError> {
    let step = |step: &'static str| move |e: io::Error| RunError::Step { step: step.into(), source: Box::new(e) };
    let temp = temp.to_string_lossy().into_owned();
    let env: Vec<(String, String)> = plan
        .launch
        .env
        .iter()
        .map(|(k, v)| if k == "TEMP" || k == "TMP" { (k.clone(), temp.clone()) } else { (k.clone(), v.clone()) })
        .collect();
    let mitigations = plan.launch.mitigations.iter().fold(0, |a, m| a | m.bit);
    // The program, found on the user's own PATH and PATHEXT (Palisade's environment, not the
    // sandbox's, which a project's `env.set` could point into the workspace), never in the
    // workspace for a bare name; batch files through the system's own cmd.exe.
    let is_file = |p: &str| std::fs::metadata(p).is_ok_and(|m| m.is_file());
    let name = &plan.launch.argv[0];
    let host_var = |k: &str| std::env::var(k).unwrap_or_default();
    let pathext = Some(host_var("PATHEXT")).filter(|v| !v.is_empty()).unwrap_or_else(|| ".COM;.EXE;.BAT;.CMD".into());
    let Some(program) = crate::cmdline::find(name, &plan.launch.cwd, &host_var("PATH"), &pathext, &is_file) else {
        return Err(RunError::NotFound(format!("{name}: command not found on your PATH")));
    };
    let launch =
        crate::cmdline::launch(&program, &plan.launch.argv, &system_root()).map_err(RunError::CannotExecute)?;
    let spec = Spec {
        argv: &plan.launch.argv,
        launch: Some(&launch),
        cwd: &plan.launch.cwd,
        env: &env,
        stdio: [None; 3],
        security,
        mitigations,
        desktop_app_breakaway_disabled: plan.launch.desktop_app_breakaway_disabled,
        desktop,
        token,
    };
    (wiring.on_started)();
    let events = Arc::clone(&wiring.events);
    let watcher = Arc::clone(&job);
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    // The command's own command line is the one given to CreateProcessW: what the watcher
    // reports for it when the process cannot be read in time (under load, a command that
    // exits at once; under Wine, before it has run at all).
    let root: Arc<std::sync::OnceLock<(u32, String)>> = Arc::new(std::sync::OnceLock::new());
    let known = Arc::clone(&root);
    let monitor = std::thread::spawn(move || watch(&watcher, &*events, &finished, &known));
    let code = match launch::start(&spec, &job) {
        Ok(p) => {
            let _ = root.set((p.pid, launch.line.clone()));
            p.wait().map_err(step("waiting for the command"))
        }
        Err(e) if e.raw_os_error() == Some(2) || e.raw_os_error() == Some(3) => {
            Err(RunError::NotFound(format!("{}: command not found", plan.launch.argv[0])))
        }
        Err(e) => Err(RunError::Step { step: format!("starting {}", plan.launch.argv[0]), source: Box::new(e) }),
    };
    // The command's end is the run's end: what it left behind in the job ends too.
    job.terminate(1);
    done.store(true, Ordering::SeqCst);
    let _ = monitor.join();
    flush_console_input();
    (wiring.on_ended)();
    code.map(|c| Exit::Code(c as i32))
}

/// Reports the job's messages until it is empty, or until `done` is set and no message
/// comes for 100 ms (a command that never started leaves a job that never empties).
fn watch(
    job: &Job,
    events: &dyn palisade_sandbox::Events,
    done: &AtomicBool,
    root: &std::sync::OnceLock<(u32, String)>,
) {
    // The job's first process is the command: its command line is known (it is reported
    // as it was given; reading it from a process not yet started can take long, and the
    // next process's message would wait behind it). `launch::start` names it within
    // moments of the job's message.
    let mut first = true;
    let mut facts = move |pid: u32| {
        if std::mem::take(&mut first) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
            while root.get().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if let Some((_, line)) = root.get().filter(|(p, _)| *p == pid) {
                let parent = snapshot(pid).map_or(0, |(_, parent)| parent);
                return crate::monitor::ProcessFacts {
                    image: image_soon(pid),
                    command_line: Some(line.clone()),
                    parent,
                };
            }
        }
        process_facts(pid)
    };
    loop {
        match job.next(100) {
            None if done.load(Ordering::SeqCst) => return,
            Some(Message::Empty) => return,
            Some(m) => {
                // Borrowed, not moved: the same closure serves the next message.
                #[allow(clippy::needless_borrows_for_generic_args)]
                let event = crate::monitor::event_of(m, &mut facts);
                if let Some(e) = event {
                    events.event(e);
                }
            }
            None => {}
        }
    }
}

/// What can be read of a process the job just reported: its image, command line and parent.
fn process_facts(pid: u32) -> crate::monitor::ProcessFacts {
    let image = image_soon(pid);
    // As for the image, for up to 300 ms: a process may not have its parameters in place
    // when the message comes (seen under Wine, for a process started suspended and for one
    // its parent started without suspending it).
    let command_line = (0..30).find_map(|i| {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        command_line_of(pid)
    });
    // A process that became readable only while its command line was waited for (seen
    // under Wine on a loaded machine): its image once more.
    let image = image.or_else(|| command_line.as_ref().and_then(|_| image_of(pid).or_else(|| snapshot_name(pid))));
    let parent = snapshot(pid).map_or(0, |(_, parent)| parent);
    crate::monitor::ProcessFacts { image, command_line, parent }
}

/// The command line of process `pid` as it was given to `CreateProcessW`:
/// `NtQueryInformationProcess` with `ProcessCommandLineInformation` (Windows 8.1 and later:
/// a `UNICODE_STRING` followed by its text in the buffer given), else read from the
/// process's parameters block (which Wine needs: it does not answer that class).
fn command_line_of(pid: u32) -> Option<String> {
    use windows_sys::Wdk::System::Threading::{NtQueryInformationProcess, ProcessCommandLineInformation};
    use windows_sys::Win32::Foundation::UNICODE_STRING;
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_QUERY_INFORMATION, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_VM_READ,
    };
    // SAFETY: a query-only open; closed by `Handle`.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        return None;
    }
    let h = super::handle::Handle(h);
    // u64 units: aligned for the UNICODE_STRING at its start. 64 KiB holds the longest
    // command line Windows accepts (32,767 UTF-16 units).
    let mut buf = vec![0u64; 8192 + 4];
    let mut len = 0u32;
    // SAFETY: a valid handle; a writable buffer of the byte length given.
    let status = unsafe {
        NtQueryInformationProcess(
            h.0,
            ProcessCommandLineInformation,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut len,
        )
    };
    if status >= 0 {
        // SAFETY: on success the buffer starts with a UNICODE_STRING (aligned: u64 units)
        // whose text, of `Length` bytes, lies in the same buffer.
        let text = unsafe {
            let us = &*(buf.as_ptr().cast::<UNICODE_STRING>());
            (!us.Buffer.is_null()).then(|| std::slice::from_raw_parts(us.Buffer, usize::from(us.Length) / 2))
        };
        return text.map(String::from_utf16_lossy);
    }
    drop(h);
    // SAFETY: as above, with the rights to read the process's memory.
    let h = unsafe { OpenProcess(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ, 0, pid) };
    if h.is_null() {
        return None;
    }
    command_line_from_parameters(&super::handle::Handle(h))
}

/// The command line from the process's parameters block: `PROCESS_BASIC_INFORMATION`'s
/// `PebBaseAddress`, the PEB's `ProcessParameters` (offset 0x20 in a 64-bit PEB), its
/// `CommandLine` (offset 0x70; winternl.h's `PEB` and `RTL_USER_PROCESS_PARAMETERS`).
#[cfg(target_pointer_width = "64")]
fn command_line_from_parameters(h: &super::handle::Handle) -> Option<String> {
    use windows_sys::Wdk::System::Threading::{NtQueryInformationProcess, ProcessBasicInformation};
    use windows_sys::Win32::System::Diagnostics::Debug::ReadProcessMemory;
    /// `PROCESS_BASIC_INFORMATION` (winternl.h), without the PEB type.
    #[repr(C)]
    struct Basic {
        exit_status: i32,
        peb: usize,
        affinity: usize,
        base_priority: i32,
        pid: usize,
        parent: usize,
    }
    let read = |at: usize, out: &mut [u8]| {
        let mut got = 0usize;
        // SAFETY: a valid handle; the output buffer is writable for its length; the address
        // is the other process's, which the call checks.
        let ok = unsafe { ReadProcessMemory(h.0, at as *const _, out.as_mut_ptr().cast(), out.len(), &mut got) };
        ok != 0 && got == out.len()
    };
    let mut basic = Basic { exit_status: 0, peb: 0, affinity: 0, base_priority: 0, pid: 0, parent: 0 };
    let mut len = 0u32;
    // SAFETY: a valid handle; the structure the class names, of its size.
    let status = unsafe {
        NtQueryInformationProcess(
            h.0,
            ProcessBasicInformation,
            (&mut basic as *mut Basic).cast(),
            std::mem::size_of::<Basic>() as u32,
            &mut len,
        )
    };
    if status < 0 || basic.peb == 0 {
        return None;
    }
    let mut word = [0u8; 8];
    if !read(basic.peb + 0x20, &mut word) {
        return None;
    }
    let params = usize::from_ne_bytes(word);
    // UNICODE_STRING: Length (u16), MaximumLength (u16), padding, Buffer (pointer).
    let mut us = [0u8; 16];
    if params == 0 || !read(params + 0x70, &mut us) {
        return None;
    }
    let length = usize::from(u16::from_ne_bytes([us[0], us[1]]));
    let mut buffer = usize::from_ne_bytes(us[8..16].try_into().ok()?);
    // Until the process has started, its parameters may not be normalised yet: the text's
    // "pointer" is then an offset from the block (`Flags`, at offset 8, lacks
    // RTL_USER_PROC_PARAMS_NORMALIZED, 1).
    let mut flags = [0u8; 4];
    if !read(params + 8, &mut flags) {
        return None;
    }
    if u32::from_ne_bytes(flags) & 1 == 0 {
        buffer = buffer.checked_add(params)?;
    }
    if buffer == 0 || length > 65534 {
        return None;
    }
    let mut bytes = vec![0u8; length];
    if !read(buffer, &mut bytes) {
        return None;
    }
    let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect();
    // A command line holds no NUL: one that does was read before it was written.
    (!units.contains(&0)).then(|| String::from_utf16_lossy(&units))
}

#[cfg(not(target_pointer_width = "64"))]
fn command_line_from_parameters(_: &super::handle::Handle) -> Option<String> {
    None
}

/// The image path of a process the job just reported, or, where the process cannot be
/// opened for that, its image's file name from a process snapshot
/// (`CreateToolhelp32Snapshot`). Asked a few times over 300 ms: the message can come before
/// the new process can be queried (seen under Wine for a process its parent started without
/// suspending it: the first query fails, one 100 ms later succeeds).
fn image_soon(pid: u32) -> Option<String> {
    for _ in 0..30 {
        if let Some(p) = image_of(pid).or_else(|| snapshot_name(pid)) {
            return Some(p);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// The image file name of `pid` from a snapshot of the system's processes.
fn snapshot_name(pid: u32) -> Option<String> {
    snapshot(pid).map(|(name, _)| name)
}

/// The image file name and the parent's id of `pid`, from a snapshot of the system's
/// processes (`CreateToolhelp32Snapshot`).
fn snapshot(pid: u32) -> Option<(String, u32)> {
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
    };
    // SAFETY: a snapshot of processes; the handle is closed by `Handle`.
    let snap =
        super::handle::Handle::checked(unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) }, "snapshot").ok()?;
    // SAFETY: an all-zero PROCESSENTRY32W with its size set is what Process32FirstW takes.
    let mut entry: PROCESSENTRY32W = unsafe { std::mem::zeroed() };
    entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
    // SAFETY: a valid snapshot and entry.
    let mut ok = unsafe { Process32FirstW(snap.0, &mut entry) } != 0;
    while ok {
        if entry.th32ProcessID == pid {
            let len = entry.szExeFile.iter().position(|c| *c == 0).unwrap_or(entry.szExeFile.len());
            // Empty while the process is still being created.
            return (len > 0).then(|| (String::from_utf16_lossy(&entry.szExeFile[..len]), entry.th32ParentProcessID));
        }
        // SAFETY: as above.
        ok = unsafe { Process32NextW(snap.0, &mut entry) } != 0;
    }
    None
}

/// The image path of process `pid` (`QueryFullProcessImageNameW`).
pub fn image_of(pid: u32) -> Option<String> {
    use windows_sys::Win32::System::Threading::{
        OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION, QueryFullProcessImageNameW,
    };
    // SAFETY: a query-only open; closed by `Handle`.
    let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if h.is_null() {
        return None;
    }
    let h = super::handle::Handle(h);
    let mut buf = [0u16; 1024];
    let mut len = buf.len() as u32;
    // SAFETY: a valid handle and a buffer of `len` units.
    if unsafe { QueryFullProcessImageNameW(h.0, 0, buf.as_mut_ptr(), &mut len) } == 0 {
        return None;
    }
    Some(String::from_utf16_lossy(&buf[..len as usize]))
}

/// Discards what the run left in the console's input buffer: a process attached to the
/// user's console can queue keystrokes there (`WriteConsoleInputW`) that the user's shell
/// would read once Palisade exits (the Windows form of `TIOCSTI`). Type-ahead typed during
/// the run is discarded with it. Nothing when standard input is no console.
fn flush_console_input() {
    use windows_sys::Win32::System::Console::{
        FlushConsoleInputBuffer, GetConsoleMode, GetStdHandle, STD_INPUT_HANDLE,
    };
    // SAFETY: GetStdHandle has no preconditions; the mode query only reads the handle.
    unsafe {
        let h = GetStdHandle(STD_INPUT_HANDLE);
        let mut mode = 0;
        if !h.is_null() && GetConsoleMode(h, &mut mode) != 0 {
            FlushConsoleInputBuffer(h);
        }
    }
}

/// The Windows folder, from `GetSystemWindowsDirectoryW` (never an environment variable a
/// policy could set).
pub(super) fn system_root() -> String {
    use windows_sys::Win32::System::SystemInformation::GetSystemWindowsDirectoryW;
    let mut buf = [0u16; 260];
    // SAFETY: a buffer of the given length.
    let n = unsafe { GetSystemWindowsDirectoryW(buf.as_mut_ptr(), buf.len() as u32) } as usize;
    if n == 0 || n >= buf.len() {
        return "C:\\Windows".into();
    }
    String::from_utf16_lossy(&buf[..n])
}

//! The Linux executor: applies a [`Plan`] with namespaces, mounts, Landlock and seccomp, and
//! supervises the sandbox until it ends.

pub mod attach;
mod caps;
pub mod cgroup;
mod child;
mod commands;
pub mod control;
pub mod exectrace;
pub mod ffi;
pub mod kaudit;
mod landlock;
mod mounts;
mod net;
pub mod owner;
pub mod placeholders;
pub mod probe;
mod publish;
pub mod quarantine;
mod quota;
mod release;
pub mod spawn_request;
mod step;
mod terminal;
mod tripwire;
pub mod watch;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use self::control::GatewaySockets;
use self::control::{ErrorKind, Msg};
pub use self::landlock::{MINIMUM_ABI as LANDLOCK_MINIMUM_ABI, kernel_abi as landlock_abi};
use crate::plan::{Mode, Plan};
use crate::{Exit, RunError};
use palisade_sandbox::view::Entry;
use palisade_sandbox::{Events, SandboxEvent};

pub use palisade_sandbox::PtyUse;

/// Serves the gateway's listening sockets from outside the sandbox; runs on its own thread
/// for the life of the run. Supplied by the caller, so the executor never sees the policy.
pub type Gateway = Box<dyn FnOnce(GatewaySockets) + Send>;

/// Stops a running sandbox from any thread (a monitor rule's `kill`): the supervisor polls
/// it and kills the sandbox's init, and with it every process inside.
#[derive(Debug)]
pub struct KillSwitch {
    fd: OwnedFd,
}

impl KillSwitch {
    /// A switch not yet triggered, shared: give one clone to [`RunOptions::kill`] and keep
    /// the others to trigger it.
    ///
    /// # Errors
    /// The eventfd behind it cannot be created (`eventfd(2)`: `EMFILE`, `ENFILE`, `ENOMEM`).
    pub fn new() -> io::Result<std::sync::Arc<KillSwitch>> {
        Ok(std::sync::Arc::new(KillSwitch { fd: ffi::eventfd()? }))
    }

    /// Asks the supervisor to kill the sandbox now.
    pub fn trigger(&self) {
        let _ = ffi::write_all(self.fd.as_raw_fd(), &1u64.to_ne_bytes());
    }
}

/// How to run.
#[derive(Default)]
pub struct RunOptions {
    /// Give the command a pty (decided by the caller: when stdin is a terminal).
    pub pty: Option<PtyUse>,
    /// Serves the network, when the plan has one.
    pub gateway: Option<Gateway>,
    /// Serves the published ports, when the plan has some, given a way into the sandbox's
    /// network (sockets init makes there on request).
    pub publish: Option<palisade_sandbox::publish::Publisher>,
    /// Lets another thread stop the sandbox.
    pub kill: Option<std::sync::Arc<KillSwitch>>,
    /// Where the sandbox's reports go (execs when the plan traces them, decoys opened,
    /// limits reached, Landlock's denials), from whichever thread sees them.
    pub events: Option<std::sync::Arc<dyn Events>>,
    /// Called once the sandbox's first process exists (and its placeholders are made), while
    /// it builds the file system view, and before the command starts: from then on the
    /// caller may start threads (before it, `run` needs the process single-threaded).
    pub on_started: Option<Box<dyn FnOnce() + Send>>,
    /// Called once the sandbox has ended, before its placeholders are removed.
    pub on_ended: Option<Box<dyn FnOnce() + Send>>,
    /// The audit subscription ([`kaudit::open`]) through which Landlock's denials for the
    /// sandbox are read, when the caller could subscribe.
    pub denials: Option<OwnedFd>,
    /// Where to create the sandbox's cgroup ([`cgroup_layout`]); without one, memory and
    /// pids are held by rlimits and the watcher. Chosen by the caller, who records it.
    pub cgroup: Option<cgroup::Layout>,
    /// The placeholder registry ([`placeholders`]): a directory the sandbox cannot see.
    /// Needed when the plan has placeholders.
    pub placeholders: Option<std::path::PathBuf>,
    /// A warm session's commands (needed when the plan is a session's).
    pub serve: Option<palisade_sandbox::warm::Serve>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("pty", &self.pty)
            .field("gateway", &self.gateway.is_some())
            .field("publish", &self.publish.is_some())
            .field("kill", &self.kill.is_some())
            .field("events", &self.events.is_some())
            .field("on_started", &self.on_started.is_some())
            .field("on_ended", &self.on_ended.is_some())
            .field("denials", &self.denials.is_some())
            .field("cgroup", &self.cgroup)
            .field("placeholders", &self.placeholders)
            .field("serve", &self.serve.is_some())
            .finish()
    }
}

const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// The limit watcher's callback: a [`SandboxEvent::Limit`].
fn on_limit(events: &Option<std::sync::Arc<dyn Events>>) -> Option<watch::OnLimit> {
    let ev = events.clone()?;
    Some(std::sync::Arc::new(move |h: &watch::LimitHit| {
        ev.event(SandboxEvent::Limit { limit: h.limit.into(), detail: h.detail.clone() })
    }))
}

/// The audit subscription's reader: each denial a [`SandboxEvent::Denial`].
fn denial_reader(fd: Option<OwnedFd>, events: &Option<std::sync::Arc<dyn Events>>) -> Option<kaudit::Reader> {
    let (fd, ev) = (fd?, events.clone()?);
    Some(kaudit::Reader {
        fd,
        on_denial: std::sync::Arc::new(move |d: kaudit::Denial| {
            ev.event(SandboxEvent::Denial { blockers: d.blockers, object: d.object })
        }),
    })
}

/// A failed step and its error (kept as the source).
fn setup(stage: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> RunError {
    RunError::Step { step: stage.into(), source: e.into() }
}

/// Number of threads of this process (the executor forks, so it must be 1).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// Runs the plan to completion, in its mode, and returns how the command ended.
///
/// # Errors
/// [`RunError::Unsupported`] when the kernel refuses the namespaces (the caller may plan
/// again degraded); [`RunError::NotFound`] and [`RunError::CannotExecute`] for the command;
/// else the failed step.
pub fn run(plan: &Plan, opts: RunOptions) -> Result<Exit, RunError> {
    match plan.mode {
        Mode::Namespaces => run_namespaces(plan, opts),
        Mode::Degraded { .. } => run_on_host(plan, opts),
    }
}

/// The full sandbox: namespaces, a fresh root, Landlock and seccomp.
fn run_namespaces(plan: &Plan, mut opts: RunOptions) -> Result<Exit, RunError> {
    if thread_count() != 1 {
        return Err(RunError::Setup("the sandbox must be started from a single-threaded process".into()));
    }
    if plan.session && opts.serve.is_none() {
        return Err(RunError::Setup("a session's plan was given no commands to serve".into()));
    }
    let filter = bpf_filter(crate::seccomp::FilterOptions { notify_exec: plan.trace_exec, ..Default::default() })?;
    let strings = exec_strings(&plan.argv, &plan.env)?;
    let (ours, theirs) = ffi::seqpacket_pair().map_err(|e| setup("control socket", e))?;
    let publish = match plan.publish.is_empty() {
        true => None,
        false => Some(ffi::seqpacket_pair().map_err(|e| setup("the published ports' socket", e))?),
    };
    let cgroup = sandbox_cgroup(&plan.limits, opts.cgroup.take())?;
    let entry = match &cgroup {
        Some(c) => Some(c.entry().map_err(|e| setup("opening the sandbox's cgroup", e))?),
        None => None,
    };
    let (born_in, self_move): (Option<libc::c_int>, Vec<libc::c_int>) = match &entry {
        Some(cgroup::Entry::Born(dir)) => (Some(dir.as_raw_fd()), Vec::new()),
        Some(cgroup::Entry::SelfMove(tasks)) => (None, tasks.iter().map(|t| t.as_raw_fd()).collect()),
        None => (None, Vec::new()),
    };
    // Subscribed (by the caller) before the sandbox exists, so that no denial is missed.
    let audit = denial_reader(opts.denials.take(), &opts.events);
    // Made before the sandbox exists and released however the run ends (dropping `held`).
    let (held, adjusted) = hold_placeholders(plan, opts.placeholders.as_deref())?;
    let plan = adjusted.as_ref().unwrap_or(plan);

    let signals = terminal::SignalFd::new().map_err(|e| setup("signals", e))?;
    let quotas = quota::host_caps();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };

    // On cgroup v2 init is born in its cgroup; where `clone3` or `CLONE_INTO_CGROUP` is
    // refused (older kernels, container runtimes' filters), it is moved in below instead.
    let born = born_in.and_then(|dir| {
        // SAFETY: a fork-like clone (no new stack) in a single-threaded process: the child
        // runs on a copy of this stack and only calls `init_main`, which never returns.
        unsafe { ffi::clone_into_cgroup(NAMESPACES as u64, dir) }.ok()
    });
    let pid = match born {
        Some(pid) => pid as libc::c_long,
        // SAFETY: as above, with clone(2).
        None => unsafe {
            libc::syscall(
                libc::SYS_clone,
                (NAMESPACES | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        },
    };
    if pid == 0 {
        signals.unblock_in_child();
        drop(ours);
        let publish = publish.map(|(supervisor, init)| {
            drop(supervisor);
            init
        });
        let mut cmd =
            child::CommandArgs::new(theirs.as_raw_fd(), &filter, strings, opts.pty, &plan.view.cwd, &plan.landlock);
        cmd.trace_exec = plan.trace_exec;
        cmd.rlimits = rlimits(&plan.limits, cgroup.is_some());
        child::init_main(child::ChildArgs {
            plan,
            cmd,
            publish: publish.as_ref().map(|p| p.as_raw_fd()),
            quotas,
            cgroup_root: born.is_some() || !self_move.is_empty(),
            cgroup_tasks: self_move,
        });
    }
    drop(entry);
    if pid < 0 {
        let e = io::Error::last_os_error();
        return Err(RunError::Unsupported(format!("creating the sandbox's namespaces failed: {e}")));
    }
    let pid = pid as libc::pid_t;
    drop(theirs);
    let publish = publish.map(|(supervisor, _init)| supervisor);
    let guard = KillOnDrop(pid);

    write_id_maps(pid, uid, gid)
        .map_err(|e| RunError::Unsupported(format!("writing the user namespace's id maps: {e}")))?;
    let mut tmpfs: Vec<(std::path::PathBuf, u64)> = plan
        .view
        .entries
        .iter()
        .filter_map(|m| if let Entry::Private { path, size } = m { Some((path.clone(), *size)) } else { None })
        .collect();
    tmpfs.push(("/dev/shm".into(), plan.shm_size));
    let protections = held.as_ref().map(|h| Box::new(h.watcher()) as watch::ProtectionCheck);
    let watcher = start_watch(pid, &plan.limits, cgroup.clone(), tmpfs, true, protections, &opts)?;
    // Processes that exec'd in the sandbox, by host pid: a nested Landlock domain's creator
    // may be gone when its first denial is reported, but it was seen exec'ing.
    let execed = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::<u32>::new()));
    let seen = execed.clone();
    let denials = start_denials(audit, move |creator| {
        seen.lock().unwrap_or_else(|e| e.into_inner()).contains(&creator) || same_pid_ns(creator, pid)
    })?;
    control::send(ours.as_raw_fd(), &Msg::Go, &[]).map_err(|e| failed_start(&ours, e))?;
    // While init builds the file system view: whatever the caller records at the start
    // (git's change times), and the move into the cgroup when init could neither be born in
    // it nor move itself. The command starts only after both, on READY. (Init makes nothing
    // on the host, so the records see the host as the command will first find it.)
    if let Some(cg) = cgroup.as_ref().filter(|_| born.is_none() && self_move.is_empty()) {
        cg.attach(pid).map_err(|e| setup("moving the sandbox into its cgroup", e))?;
    }
    if let Some(f) = opts.on_started.take() {
        f();
    }
    // Init may have failed in the meantime: then its own report says why.
    control::send(ours.as_raw_fd(), &Msg::Ready, &[]).map_err(|e| failed_start(&ours, e))?;
    let on_exec = exec_recorder(opts.events.clone(), execed.clone());
    let (master, listeners, watch) = match await_exec(&ours, &mut |listener| {
        let f = on_exec.clone();
        let _ = std::thread::Builder::new()
            .name("palisade-exec".into())
            .spawn(move || exectrace::serve(listener, move |e| f(e)));
    }) {
        Ok(v) => v,
        Err(e) => {
            drop(guard);
            drop(held);
            return Err(e);
        }
    };
    if let (Some(serve), Some(listeners)) = (opts.gateway, listeners) {
        raise_open_files_limit();
        std::thread::Builder::new()
            .name("palisade-gateway".into())
            .spawn(move || serve(listeners))
            .map_err(|e| setup("starting the gateway", e))?;
    }
    if let (Some(serve), Some(sock)) = (opts.publish.take(), publish) {
        serve(publish::connector(sock));
    }
    if let Some(serve) = opts.serve.take().filter(|_| plan.session) {
        let sock = ours.try_clone().map_err(|e| setup("the session's control socket", e))?;
        let commands = commands::Session::start(sock, plan.network.is_some(), on_exec)
            .map_err(|e| setup("starting the session's command threads", e))?;
        (serve.on_serving)(commands);
    }
    let kill = opts.kill.as_ref().map(|k| k.fd.as_raw_fd());
    let on_open = |p: &Path| {
        if let Some(ev) = &opts.events {
            ev.event(SandboxEvent::Tripwire { path: p.to_path_buf() });
        }
    };
    let tripwires = watch.as_ref().map(|w| terminal::Tripwires {
        fd: w.as_raw_fd(),
        paths: &plan.view.tripwires,
        on_open: &on_open,
    });
    let status = terminal::supervise(terminal::Until::Child(pid), master, &signals, kill, tripwires);
    std::mem::forget(guard);
    if let Some(w) = watch {
        release::close_detached(w);
    }
    let hit = watcher.stop();
    denials.stop();
    let failed = !matches!(status, Ok(Exit::Code(0)));
    if hit.is_none() && cgroup.is_none() && failed {
        refused_memory(&plan.limits, on_limit(&opts.events).as_ref());
    }
    drop(cgroup);
    if let Some(f) = opts.on_ended.take() {
        f();
    }
    drop(held);
    status.map_err(|e| setup("supervising the sandbox", e))
}

/// What the exec tracers report: an `exec` event each, and the process remembered as the
/// sandbox's (for the denial reader).
fn exec_recorder(
    events: Option<std::sync::Arc<dyn Events>>,
    execed: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u32>>>,
) -> commands::OnExec {
    std::sync::Arc::new(move |e: exectrace::ExecInfo| {
        let mut set = execed.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= 65_536 {
            set.clear();
        }
        set.insert(e.host_pid);
        drop(set);
        if let Some(ev) = &events {
            ev.event(SandboxEvent::Exec { pid: e.pid, ppid: e.ppid, path: e.path, argv: e.argv, cwd: e.cwd });
        }
    })
}

/// Makes the plan's placeholders on the host and registers them for this run. Placeholders
/// that cannot be made because nothing can make a name there (the sandbox included) are
/// left out of the plan: the returned plan is the one to run.
fn hold_placeholders(
    plan: &Plan,
    registry: Option<&Path>,
) -> Result<(Option<placeholders::Held>, Option<Plan>), RunError> {
    let wanted: Vec<(std::path::PathBuf, palisade_policy::model::Placeholder)> = plan
        .view
        .entries
        .iter()
        .filter_map(|m| match m {
            Entry::Placeholder { path, kind } => Some((path.clone(), *kind)),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok((None, None));
    }
    let Some(dir) = registry else {
        return Err(RunError::Setup("the plan has placeholders but no placeholder registry was given".into()));
    };
    let (held, skipped) = placeholders::acquire(dir, &wanted).map_err(|e| {
        RunError::Setup(format!(
            "making the placeholders for protected paths that do not exist: {e}{}",
            if e.path.starts_with(dir) { " (set XDG_STATE_HOME to a writable directory)" } else { "" }
        ))
    })?;
    if skipped.is_empty() {
        return Ok((Some(held), None));
    }
    let mut adjusted = plan.clone();
    adjusted.view.entries.retain(|m| !matches!(m, Entry::Placeholder { path, .. } if skipped.contains(path)));
    Ok((Some(held), Some(adjusted)))
}

/// A message to init failed: init has ended, and said why (a set-up error) unless it was
/// killed; its report is what the user needs, not the broken pipe.
fn failed_start(sock: &OwnedFd, e: io::Error) -> RunError {
    match await_exec(sock, &mut |_| {}) {
        Err(report) => report,
        Ok(_) => setup("starting the sandbox: its init ended during set-up without a report", e),
    }
}

/// Where the sandbox's cgroup would go, for [`RunOptions::cgroup`]: only when memory or
/// pids are limited, and this user can get one (otherwise rlimits hold them).
pub fn cgroup_layout(limits: &crate::plan::Limits) -> Option<cgroup::Layout> {
    if limits.memory.is_none() && limits.pids.is_none() {
        return None;
    }
    cgroup::Layout::detect().ok()
}

/// The sandbox's cgroup, in `layout` when there is one.
fn sandbox_cgroup(
    limits: &crate::plan::Limits,
    layout: Option<cgroup::Layout>,
) -> Result<Option<std::sync::Arc<cgroup::Cgroup>>, RunError> {
    let Some(layout) = layout else { return Ok(None) };
    cgroup::Cgroup::create(&layout, limits.memory, limits.pids)
        .map(|c| Some(std::sync::Arc::new(c)))
        .map_err(|e| setup("creating the sandbox's cgroup", e))
}

/// The command's rlimits: file size, open files and CPU time always (per process; the
/// watcher adds up CPU time for the session); without a cgroup, also data memory and
/// processes (`RLIMIT_NPROC` counts the sandbox's own tasks: it is kept per user namespace).
/// Always, half of the user's queued signals and POSIX message-queue bytes (THREATS E-09):
/// both are counted per user, and a task may queue only while the user's count is below its
/// own limit (`inc_rlimit_get_ucounts`, kernel/ucount.c), so the sandbox's tasks can fill
/// at most half and the user's own processes keep the rest.
fn rlimits(l: &crate::plan::Limits, cgroup: bool) -> Vec<(libc::__rlimit_resource_t, u64)> {
    let mut v: Vec<(libc::__rlimit_resource_t, u64)> = [libc::RLIMIT_SIGPENDING, libc::RLIMIT_MSGQUEUE]
        .into_iter()
        .filter_map(|r| {
            let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit fills the struct it is given.
            let ok = unsafe { libc::getrlimit(r, &mut cur) } == 0;
            (ok && cur.rlim_cur != libc::RLIM_INFINITY).then(|| (r, (cur.rlim_cur / 2).max(1)))
        })
        .collect();
    if let Some(f) = l.file_size {
        v.push((libc::RLIMIT_FSIZE, f));
    }
    if let Some(n) = l.open_files {
        v.push((libc::RLIMIT_NOFILE, n));
    }
    if let Some(c) = l.cpu_time {
        // A second past the session's limit, so the watcher (which adds up every process)
        // normally acts first; the kernel's limit is the backstop.
        v.push((libc::RLIMIT_CPU, c.as_secs().max(1) + 1));
    }
    if !cgroup {
        if let Some(m) = l.memory {
            v.push((libc::RLIMIT_DATA, m));
        }
        if let Some(p) = l.pids {
            v.push((libc::RLIMIT_NPROC, p));
        }
    }
    v
}

/// Whether `pid` lives in the pid namespace of `init` (the sandbox).
fn same_pid_ns(pid: u32, init: libc::pid_t) -> bool {
    let ns = |p: String| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let theirs = ns(pid.to_string());
    theirs.is_some() && theirs == ns(init.to_string())
}

/// The thread that reads Landlock's denials, when audit can be read.
struct Denials {
    done: std::sync::Arc<watch::Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Denials {
    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.done.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Denials {
    /// A run abandoned during set-up stops the thread too.
    fn drop(&mut self) {
        self.halt();
    }
}

fn start_denials(
    audit: Option<kaudit::Reader>,
    is_ours: impl Fn(u32) -> bool + Send + 'static,
) -> Result<Denials, RunError> {
    let done = std::sync::Arc::new(watch::Stop::new().map_err(|e| setup("the denial reader", e))?);
    let Some(kaudit::Reader { fd, on_denial: f }) = audit else { return Ok(Denials { done, thread: None }) };
    let d = done.clone();
    let thread = std::thread::Builder::new()
        .name("palisade-denials".into())
        .spawn(move || kaudit::serve(fd, is_ours, f, &d))
        .map_err(|e| setup("starting the denial reader", e))?;
    Ok(Denials { done, thread: Some(thread) })
}

/// The watcher's thread and its stop flag.
struct Watcher {
    done: std::sync::Arc<watch::Stop>,
    thread: Option<std::thread::JoinHandle<Option<watch::LimitHit>>>,
}

impl Watcher {
    fn stop(mut self) -> Option<watch::LimitHit> {
        self.done.set();
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for Watcher {
    /// A run abandoned during set-up stops the thread too.
    fn drop(&mut self) {
        self.done.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_watch(
    init: libc::pid_t,
    limits: &crate::plan::Limits,
    cgroup: Option<std::sync::Arc<cgroup::Cgroup>>,
    tmpfs: Vec<(std::path::PathBuf, u64)>,
    tree: bool,
    protections: Option<watch::ProtectionCheck>,
    opts: &RunOptions,
) -> Result<Watcher, RunError> {
    let done = std::sync::Arc::new(watch::Stop::new().map_err(|e| setup("the limit watcher", e))?);
    let Some(kill) = opts.kill.clone() else { return Ok(Watcher { done, thread: None }) };
    let w = watch::Watch {
        init,
        limits: limits.clone(),
        cgroup,
        tmpfs,
        tree,
        kill,
        on_limit: on_limit(&opts.events),
        started: std::time::Instant::now(),
        protections,
    };
    let d = done.clone();
    let thread = std::thread::Builder::new()
        .name("palisade-limits".into())
        .spawn(move || w.run(&d))
        .map_err(|e| setup("starting the limit watcher", e))?;
    Ok(Watcher { done, thread: Some(thread) })
}

/// Without a cgroup, a process refused memory by `RLIMIT_DATA` fails on its own (an
/// allocation error) before the watcher sees the total. When the run failed and a process's
/// peak (which the kernel keeps for every reaped descendant) came within a quarter of the
/// limit, the limit is reported as the likely cause: an inference, said as one.
fn refused_memory(limits: &crate::plan::Limits, on_limit: Option<&watch::OnLimit>) {
    let (Some(m), Some(f)) = (limits.memory, on_limit) else { return };
    // SAFETY: getrusage into a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return;
    }
    let peak = (ru.ru_maxrss.max(0) as u64) * 1024;
    if peak >= m / 4 * 3 {
        f(&watch::LimitHit {
            limit: "memory",
            detail: format!(
                "the run failed after a process grew to {} MiB of its {} MiB memory limit: likely refused more",
                peak >> 20,
                m >> 20
            ),
        });
    }
}

/// The degraded mode: no namespaces; Landlock and seccomp over the host's file system. The
/// supervisor becomes a child subreaper so that whatever the command leaves behind, even in a
/// new session, is reparented to it and killed when the command ends.
fn run_on_host(plan: &Plan, mut opts: RunOptions) -> Result<Exit, RunError> {
    if thread_count() != 1 {
        return Err(RunError::Setup("the sandbox must be started from a single-threaded process".into()));
    }
    let filter = bpf_filter(crate::seccomp::FilterOptions {
        refuse_inet: true,
        refuse_unix_socket: true,
        notify_exec: false,
        own_process_only: true,
    })?;
    let strings = exec_strings(&plan.argv, &plan.env)?;
    let (ours, theirs) = ffi::seqpacket_pair().map_err(|e| setup("control socket", e))?;
    let signals = terminal::SignalFd::new().map_err(|e| setup("signals", e))?;
    let audit = denial_reader(opts.denials.take(), &opts.events);
    let pty = match opts.pty {
        Some(_) => Some(terminal::open_host_pty().map_err(|e| setup("creating the terminal", e))?),
        None => None,
    };
    // SAFETY: prctl with documented arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // SAFETY: fork in a single-threaded process; the child only runs `command_main`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        signals.unblock_in_child();
        // SAFETY: prctl with documented arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        drop(ours);
        let mut args =
            child::CommandArgs::new(theirs.as_raw_fd(), &filter, strings, opts.pty, &plan.view.cwd, &plan.landlock);
        // Without a user namespace RLIMIT_NPROC would count all of the user's processes.
        args.rlimits = rlimits(&plan.limits, false).into_iter().filter(|(r, _)| *r != libc::RLIMIT_NPROC).collect();
        child::command_main(&args, pty.as_ref().map(|(_, slave)| slave.as_raw_fd()));
    }
    if pid < 0 {
        return Err(setup("fork", io::Error::last_os_error()));
    }
    drop(theirs);
    if let Some(f) = opts.on_started.take() {
        f();
    }
    let (master, slave) = match pty {
        Some((m, s)) => (Some(m), Some(s)),
        None => (None, None),
    };
    drop(slave);
    let watcher = start_watch(pid, &plan.limits, None, Vec::new(), false, None, &opts)?;
    // Without a pid namespace, the command's own process created the sandbox's domain.
    let denials = start_denials(audit, move |creator| creator == pid as u32)?;
    let result = await_exec(&ours, &mut |_| {}).and_then(|_| {
        terminal::supervise(
            terminal::Until::Child(pid),
            master,
            &signals,
            opts.kill.as_ref().map(|k| k.fd.as_raw_fd()),
            None,
        )
        .map_err(|e| setup("supervising the command", e))
    });
    watcher.stop();
    denials.stop();
    kill_descendants();
    if let Some(f) = opts.on_ended.take() {
        f();
    }
    result
}

/// Each gateway tunnel holds two descriptors in the supervisor: the soft limit on open files
/// goes up to the hard limit, so the gateway's connection budget, not a default of 1,024, is
/// what binds. (The sandbox's own limit is unchanged: it was inherited at `clone`.)
fn raise_open_files_limit() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct; only the soft limit changes.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Kills and reaps every remaining child (orphans are reparented to us as subreaper).
fn kill_descendants() {
    for _ in 0..200 {
        let pids = watch::children_of(std::process::id() as libc::pid_t);
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: signalling and reaping our own children.
            unsafe {
                libc::kill(p, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(p, &mut st, 0);
            }
        }
    }
}

fn sock_filter(i: crate::bpf::Insn) -> libc::sock_filter {
    libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }
}

fn bpf_filter(opts: crate::seccomp::FilterOptions) -> Result<Vec<libc::sock_filter>, RunError> {
    Ok(crate::seccomp::filter(opts).map_err(|e| setup("seccomp", e))?.into_iter().map(sock_filter).collect())
}

pub(crate) type ExecStrings = (Vec<CString>, Vec<CString>, Option<String>);

/// argv and envp as C strings, and the `PATH` to search, prepared before forking.
fn exec_strings(argv: &[std::ffi::OsString], env: &[(String, String)]) -> Result<ExecStrings, RunError> {
    let cstrings = |v: Vec<Vec<u8>>| -> Result<Vec<CString>, RunError> {
        v.into_iter()
            .map(|b| CString::new(b).map_err(|_| RunError::Setup("an argument or variable contains a NUL byte".into())))
            .collect()
    };
    let a = cstrings(argv.iter().map(|a| a.as_bytes().to_vec()).collect())?;
    let e = cstrings(env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect())?;
    Ok((a, e, env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone())))
}

/// What the sandbox sent during set-up: the pty master, the gateway's listeners and the
/// tripwires' inotify descriptor, as far as they were sent.
type Received = (Option<OwnedFd>, Option<GatewaySockets>, Option<OwnedFd>);

/// Reads setup reports from the control socket until the command has `exec`ed (end of
/// stream), and returns what was sent. `on_tracer` gets the exec tracer's listener as soon as
/// it arrives: the command's own `execve` waits for it to be answered.
fn await_exec(sock: &OwnedFd, on_tracer: &mut dyn FnMut(OwnedFd)) -> Result<Received, RunError> {
    let mut master = None;
    let mut listeners = None;
    let mut watch = None;
    loop {
        let Some((m, fds)) = control::recv(sock.as_raw_fd()).map_err(|e| setup("control socket", e))? else {
            return Ok((master, listeners, watch));
        };
        match m {
            Msg::Pty => master = fds.into_iter().next(),
            Msg::Net => listeners = GatewaySockets::from_received(fds),
            Msg::Tripwires => watch = fds.into_iter().next(),
            Msg::ExecTracer => {
                if let Some(l) = fds.into_iter().next() {
                    on_tracer(l);
                }
            }
            Msg::Error(kind, text) => {
                return Err(match kind {
                    ErrorKind::NotFound => RunError::NotFound(text),
                    ErrorKind::CannotExecute => RunError::CannotExecute(text),
                    ErrorKind::Setup => RunError::Setup(text),
                });
            }
            // A session's init serves from now on: the socket stays open.
            Msg::Serving => return Ok((master, listeners, watch)),
            Msg::Go | Msg::Ready | Msg::Spawn(_) | Msg::Signal(..) | Msg::Exited(..) => {}
        }
    }
}

/// Kills and reaps the sandbox's init if setup is abandoned half way.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(self.0, &mut st, 0);
        }
    }
}

fn write_id_maps(pid: libc::pid_t, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    let base = format!("/proc/{pid}");
    std::fs::write(format!("{base}/setgroups"), "deny")?;
    std::fs::write(format!("{base}/uid_map"), format!("{uid} {uid} 1\n"))?;
    std::fs::write(format!("{base}/gid_map"), format!("{gid} {gid} 1\n"))?;
    Ok(())
}

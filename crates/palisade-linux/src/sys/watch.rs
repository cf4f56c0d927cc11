//! The limit watcher: a supervisor thread that stops the sandbox when one of its limits is
//! reached. The kernel holds every bound (cgroup memory and pids, rlimits, tmpfs sizes); the
//! watcher turns reaching one into a clean end of the whole run, with an event and a clear
//! exit status, and adds the bounds that are per session rather than per process (CPU time
//! of every process together; without a cgroup, memory and processes together).
//!
//! It samples every [`PERIOD`]: the wall clock; the cgroup's OOM and pids events; the
//! sandbox's processes, read from the sandbox's own `/proc` (through the command's
//! `/proc/PID/root`, so only they are seen); and how full the private tmpfs mounts are.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::KillSwitch;
use super::cgroup::Cgroup;
use crate::plan::Limits;

pub const PERIOD: Duration = Duration::from_millis(50);

/// Tells a supervisor thread to end, waking it at once: an eventfd that stays readable once
/// written. A thread waits on it alone ([`Stop::wait`]) or beside its own descriptor.
#[derive(Debug)]
pub struct Stop(OwnedFd);

impl Stop {
    pub fn new() -> std::io::Result<Stop> {
        super::ffi::eventfd().map(Stop)
    }

    pub fn set(&self) {
        let _ = super::ffi::write_all(self.0.as_raw_fd(), &1u64.to_ne_bytes());
    }

    pub fn is_set(&self) -> bool {
        self.wait_or(None, Duration::ZERO).0
    }

    /// Waits up to `timeout`; true when stopped.
    pub fn wait(&self, timeout: Duration) -> bool {
        self.wait_or(None, timeout).0
    }

    /// Waits up to `timeout` for the stop or for `fd` to be readable: (stopped, readable).
    pub fn wait_or(&self, fd: Option<RawFd>, timeout: Duration) -> (bool, bool) {
        let mut fds = [
            libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: fd.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
        ];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: a valid array of two pollfds (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n <= 0 {
            return (false, false);
        }
        (fds[0].revents != 0, fds[1].revents & libc::POLLIN != 0)
    }
}

/// A limit that stopped the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    /// `memory`, `pids`, `cpu_time`, `wall_time` or `tmp_size` (the `[process]` key), or
    /// `protection` (a placeholder was removed on the host while the sandbox ran).
    pub limit: &'static str,
    /// What happened, in a sentence for the user: "the run reached its wall-clock limit of
    /// 60 s".
    pub detail: String,
}

/// What the supervisor calls when a limit stops the run (from the watcher's thread).
pub type OnLimit = Arc<dyn Fn(&LimitHit) + Send + Sync>;

/// Says why a protection of the running sandbox is gone, if one is (a placeholder removed on
/// the host detaches the mount over it, and the path becomes creatable inside).
pub type ProtectionCheck = Box<dyn Fn() -> Option<String> + Send>;

pub struct Watch {
    pub init: libc::pid_t,
    pub limits: Limits,
    pub cgroup: Option<Arc<Cgroup>>,
    /// Private tmpfs mounts inside the sandbox and their sizes.
    pub tmpfs: Vec<(PathBuf, u64)>,
    /// Read the sandbox's processes (false in the degraded mode: no pid namespace).
    pub tree: bool,
    pub kill: Arc<KillSwitch>,
    pub on_limit: Option<OnLimit>,
    pub started: Instant,
    /// Checked at every sample; a lost protection stops the run (`protection`).
    pub protections: Option<ProtectionCheck>,
}

/// The sandbox's processes, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Threads (what `RLIMIT_NPROC` and `pids.max` count).
    pub tasks: u64,
    /// CPU time in clock ticks: user + system of each live process, plus what each reaped
    /// (so a process that ended still counts, through its parent or init).
    pub cpu_ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Adds one `/proc/PID/stat` line to `s`. The command name may hold spaces and parentheses;
/// the fields after its last `)` are fixed.
pub fn add_stat(s: &mut Sample, stat: &str) -> Option<()> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    // ... num_threads(17) ... rss(21).
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0) as u64);
    s.cpu_ticks += n(11)? + n(12)? + n(13)? + n(14)?;
    s.tasks += n(17)?;
    s.rss_pages += n(21)?;
    Some(())
}

/// Reads every process of the sandbox's `/proc` (seen at `proc_dir`).
pub fn sample(proc_dir: &Path) -> Option<Sample> {
    let mut s = Sample::default();
    for e in std::fs::read_dir(proc_dir).ok()?.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        // A process may end between the listing and the read.
        if let Ok(stat) = std::fs::read_to_string(proc_dir.join(name).join("stat")) {
            add_stat(&mut s, &stat);
        }
    }
    Some(s)
}

/// The children of `parent` (single-threaded): `/proc/PID/task/PID/children`, or where the
/// kernel lacks that file (`CONFIG_PROC_CHILDREN`), a scan of the host's `/proc`.
pub fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    match std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")) {
        Ok(list) => return list.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
        Err(_) if !Path::new(&format!("/proc/{parent}")).exists() => return Vec::new(),
        Err(_) => {}
    }
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<libc::pid_t>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// The host pid of `init`'s first child (the command).
fn child_of(init: libc::pid_t) -> Option<libc::pid_t> {
    children_of(init).into_iter().min()
}

fn used_bytes(path: &Path) -> Option<(u64, u64)> {
    let c = super::ffi::cstr(path).ok()?;
    // SAFETY: statfs into a zeroed struct with a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct of the type statfs fills.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let bsize = st.f_bsize as u64;
    // A tmpfs without a size reports no blocks at all: never "full".
    if st.f_blocks == 0 {
        return None;
    }
    Some(((st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * bsize, st.f_bavail as u64 * bsize))
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

impl Watch {
    /// Samples until `done` is set or a limit is hit; returns the hit.
    pub fn run(self, done: &Stop) -> Option<LimitHit> {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let mut command: Option<libc::pid_t> = None;
        loop {
            // One last look after the sandbox ended: an OOM kill of the command ends the run
            // before the next sample.
            let finished = done.is_set();
            let began = Instant::now();
            let result = self.check(&mut command, ticks, page, finished);
            // A sandbox with thousands of processes makes a sample expensive: keep the
            // watcher under about a tenth of a core.
            let pause = PERIOD.max(began.elapsed() * 10);
            if let Some(hit) = result {
                if let Some(f) = &self.on_limit {
                    f(&hit);
                }
                self.kill.trigger();
                return Some(hit);
            }
            if finished {
                return None;
            }
            done.wait(pause);
        }
    }

    /// One sample; once the sandbox has `ended`, only what outlives it (the cgroup's events).
    fn check(&self, command: &mut Option<libc::pid_t>, ticks: u64, page: u64, ended: bool) -> Option<LimitHit> {
        let l = &self.limits;
        let hit = |limit, detail: String| Some(LimitHit { limit, detail });
        if let Some(lost) = self.protections.as_ref().and_then(|f| if ended { None } else { f() }) {
            return hit("protection", lost);
        }
        if let Some(w) = l.wall_time
            && self.started.elapsed() >= w
        {
            return hit("wall_time", format!("the run reached its wall-clock limit of {}", secs(w)));
        }
        if let Some(cg) = &self.cgroup {
            let ev = cg.events();
            if ev.oom_kills > 0 {
                let m = l.memory.map_or_else(String::new, |m| format!(" of {}", mib(m)));
                return hit("memory", format!("the sandbox ran out of its memory{m} (the kernel's OOM killer acted)"));
            }
            if ev.pids_max > 0 {
                let n = l.pids.unwrap_or(0);
                return hit("pids", format!("the sandbox reached its limit of {n} processes and threads"));
            }
        }
        if !self.tree || ended {
            return None;
        }
        if command.is_none() {
            *command = child_of(self.init);
        }
        let root = PathBuf::from(format!("/proc/{}/root", (*command)?));
        let mut tmp_used = 0;
        for (path, size) in &self.tmpfs {
            let Some((used, avail)) = used_bytes(&root.join(path.strip_prefix("/").unwrap_or(path))) else { continue };
            tmp_used += used;
            if avail == 0 && used > 0 {
                return hit("tmp_size", format!("{} is full ({} of {})", path.display(), mib(used), mib(*size)));
            }
        }
        // The processes are read only for what needs them: CPU time, and without a cgroup,
        // tasks and memory.
        let needed = l.cpu_time.is_some() || (self.cgroup.is_none() && (l.pids.is_some() || l.memory.is_some()));
        if !needed {
            return None;
        }
        let s = sample(&root.join("proc"))?;
        if let Some(c) = l.cpu_time {
            let used = s.cpu_ticks / ticks;
            if Duration::from_secs(used) >= c {
                return hit("cpu_time", format!("the sandbox used its CPU time limit of {}", secs(c)));
            }
        }
        if self.cgroup.is_none() {
            // RLIMIT_NPROC refuses forks without a trace: a sandbox held within a few tasks of
            // its limit (failing forks make the count flicker just below it) has reached it.
            if let Some(n) = l.pids.filter(|n| s.tasks + (n / 32).max(1) >= *n) {
                return hit("pids", format!("the sandbox reached its limit of {n} processes and threads"));
            }
            if let Some(m) = l.memory {
                let total = s.rss_pages * page + tmp_used;
                if total >= m {
                    return hit(
                        "memory",
                        format!(
                            "the sandbox's processes and private files reached {} of its {} limit",
                            mib(total),
                            mib(m)
                        ),
                    );
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_hostile_names_parse_after_the_last_parenthesis() {
        let mut s = Sample::default();
        let line =
            "42 (a) b (c) R 1 42 42 0 -1 4194304 100 0 0 0 150 50 7 3 20 0 3 0 1000 1000000 2560 18446744073709551615";
        add_stat(&mut s, line).unwrap();
        assert_eq!(s, Sample { tasks: 3, cpu_ticks: 150 + 50 + 7 + 3, rss_pages: 2560 });
        assert!(add_stat(&mut s, "garbage").is_none());
    }

    #[test]
    fn our_own_proc_samples() {
        let s = sample(Path::new("/proc")).unwrap();
        assert!(s.tasks >= 1 && s.rss_pages > 0);
    }
}

//! What this kernel offers, for `palisade check` and for refusing to run without it.

use std::io;

use serde::Serialize;

/// One capability of the machine, and why it is missing when it is.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    /// Whether the machine offers it, to this process.
    pub available: bool,
    /// What was found (`ABI 6`), or, when it is missing, why, with the setting that would
    /// change that where one is known.
    pub detail: String,
}

/// What `palisade check` reports on Linux.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The kernel's release (`/proc/sys/kernel/osrelease`, e.g. `6.8.0-45-generic`); empty
    /// when unreadable.
    pub kernel: String,
    /// Whether this process can create the sandbox's user, mount, pid, net, ipc, uts and
    /// cgroup namespaces, tried with one `clone(2)`; when not, the sysctls, AppArmor or
    /// seccomp setting likely to blame.
    pub user_namespaces: Feature,
    /// The running kernel's Landlock ABI version (`landlock_create_ruleset(2)` with
    /// `LANDLOCK_CREATE_RULESET_VERSION`); 0 when Landlock is absent or not enabled.
    pub landlock_abi: i32,
    /// Whether that ABI is at least [`LANDLOCK_MINIMUM_ABI`], which `run` needs unless
    /// degraded runs are allowed.
    pub landlock: Feature,
    /// Whether seccomp filters are supported (`PR_GET_SECCOMP`), with the actions the kernel
    /// offers (`/proc/sys/kernel/seccomp/actions_avail`).
    pub seccomp: Feature,
    /// `dev.tty.legacy_tiocsti`: whether the `TIOCSTI` ioctl may still push input into a
    /// terminal; `None` when the kernel lacks the setting (before Linux 6.2).
    pub tiocsti_legacy: Option<bool>,
    /// `kernel.io_uring_disabled`: 0 (io_uring for all), 1 (only for processes with
    /// `CAP_SYS_ADMIN` or in the group `kernel.io_uring_group`) or 2 (for none); `None` when
    /// the kernel lacks the setting (before Linux 6.6).
    pub io_uring_disabled: Option<u32>,
    /// Which cgroup hierarchies `/sys/fs/cgroup` holds: `v2 (unified) ...` with its root's
    /// controllers, `hybrid: ...`, or `v1 or none`.
    pub cgroups: String,
    /// How resource limits are held.
    pub limits: String,
    /// Whether Landlock's denials can be recorded (`recorded`), or why not.
    pub denials: String,
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// Probes the kernel. Cheap: one short-lived child for the namespace test.
pub fn probe() -> Report {
    let abi = super::landlock_abi();
    Report {
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
        user_namespaces: userns(),
        landlock_abi: abi,
        landlock: if abi >= super::LANDLOCK_MINIMUM_ABI {
            Feature { available: true, detail: format!("ABI {abi}") }
        } else if abi == 0 {
            Feature {
                available: false,
                detail: "not enabled in this kernel (boot with lsm=...,landlock or use kernel 5.13+ with CONFIG_SECURITY_LANDLOCK)".into(),
            }
        } else {
            Feature {
                available: false,
                detail: format!(
                    "ABI {abi} is older than the ABI {} Palisade needs (kernel 6.2+)",
                    super::LANDLOCK_MINIMUM_ABI
                ),
            }
        },
        seccomp: seccomp(),
        tiocsti_legacy: read_trim("/proc/sys/dev/tty/legacy_tiocsti").map(|v| v == "1"),
        io_uring_disabled: read_trim("/proc/sys/kernel/io_uring_disabled").and_then(|v| v.parse().ok()),
        cgroups: cgroups(),
        limits: limits(),
        denials: super::kaudit::open()
            .map(|_| "recorded".to_owned())
            .unwrap_or_else(|why| format!("not recorded: {why}")),
    }
}

fn userns() -> Feature {
    // SAFETY: a fork-like clone whose child only calls _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (super::NAMESPACES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: exiting the probe child at once.
        unsafe { libc::_exit(0) };
    }
    if pid > 0 {
        let mut st = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut st, 0) };
        return Feature { available: true, detail: "user, mount, pid, net, ipc, uts and cgroup namespaces".into() };
    }
    let e = io::Error::last_os_error();
    let mut why = format!("creating namespaces failed: {e}");
    if read_trim("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        why.push_str("; kernel.unprivileged_userns_clone = 0 (sysctl -w kernel.unprivileged_userns_clone=1)");
    }
    if read_trim("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        why.push_str("; user.max_user_namespaces = 0 (sysctl -w user.max_user_namespaces=15000)");
    }
    if read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        why.push_str("; AppArmor restricts unprivileged user namespaces (add an AppArmor profile for palisade, or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)");
    }
    if e.raw_os_error() == Some(libc::EPERM)
        && read_trim("/proc/self/status").is_some_and(|s| s.contains("Seccomp:\t2"))
    {
        why.push_str("; this process already runs under a seccomp filter (a container runtime's?) that refuses clone with namespace flags");
    }
    Feature { available: false, detail: why }
}

fn seccomp() -> Feature {
    // SAFETY: PR_GET_SECCOMP takes no pointer.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if r < 0 {
        return Feature {
            available: false,
            detail: "the kernel has no seccomp support (CONFIG_SECCOMP_FILTER)".into(),
        };
    }
    let notif = read_trim("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    Feature { available: true, detail: format!("filter mode; actions: {notif}") }
}

fn cgroups() -> String {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
    if v2.exists() {
        let ctl = read_trim("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        format!("v2 (unified) at /sys/fs/cgroup; controllers: {ctl}")
    } else if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "hybrid: v1 controllers under /sys/fs/cgroup/<controller>, v2 at /sys/fs/cgroup/unified".into()
    } else {
        "v1 or none".into()
    }
}

/// How `run` holds resource limits on this machine, for this user.
fn limits() -> String {
    let held = match super::cgroup::Layout::detect() {
        Ok(super::cgroup::Layout::V2 { parent }) => {
            format!("memory and pids by a cgroup v2 under {}", parent.display())
        }
        Ok(super::cgroup::Layout::V1 { memory, .. }) => {
            format!("memory and pids by cgroup v1 under {}", memory.display())
        }
        Err(why) => format!(
            "memory and pids by rlimits and the watcher (RLIMIT_DATA per process; RLIMIT_NPROC, which does not bind root) because {why}"
        ),
    };
    format!(
        "{held}; CPU time by the watcher over every process, with RLIMIT_CPU behind it; file size by RLIMIT_FSIZE; /tmp by the tmpfs size"
    )
}

/// The Landlock ABI of the running kernel (one system call).
pub fn landlock_abi_now() -> i32 {
    super::landlock_abi()
}

pub use super::LANDLOCK_MINIMUM_ABI;

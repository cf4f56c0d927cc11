//! Per-user kernel counters capped inside the sandbox (THREATS E-09).
//!
//! The kernel counts some objects per user, across every process of that user: inotify
//! instances and watches, fanotify groups and marks, namespaces. A sandbox running as the
//! user could take them all (`inotify_init1` until `EMFILE`), and the user's own editor or
//! `tail -f` would then fail on the host. These counters are kept per user namespace, and
//! an object made in a child namespace counts at every level up to the initial one
//! (kernel/ucount.c, `inc_ucount`); each level's limit is `/proc/sys/user/max_*` read or
//! written from inside it, and a process that holds `CAP_SYS_RESOURCE` in the namespace may
//! set it. So init, which holds every capability in the sandbox's new user namespace, lowers
//! the sandbox's own limits before the command starts, and the command (no capabilities)
//! cannot raise them: whatever it does, the user keeps at least half of each quota.
//!
//! The namespace counters go to 0: seccomp already refuses every new namespace, and the
//! kernel's count then says the same.

use std::io;

/// A `/proc/sys/user` file and the value the sandbox gets.
pub type Cap = (&'static str, u64);

/// The counters halved: (file under `/proc/sys/user`, the host's own files that may hold a
/// lower limit for the initial namespace).
const HALVED: [(&str, &str); 4] = [
    ("max_inotify_instances", "/proc/sys/fs/inotify/max_user_instances"),
    ("max_inotify_watches", "/proc/sys/fs/inotify/max_user_watches"),
    ("max_fanotify_groups", "/proc/sys/fs/fanotify/max_user_groups"),
    ("max_fanotify_marks", "/proc/sys/fs/fanotify/max_user_marks"),
];

/// The namespace counters, set to 0.
const NAMESPACES: [&str; 8] = [
    "max_cgroup_namespaces",
    "max_ipc_namespaces",
    "max_mnt_namespaces",
    "max_net_namespaces",
    "max_pid_namespaces",
    "max_time_namespaces",
    "max_user_namespaces",
    "max_uts_namespaces",
];

/// The sandbox's limits given the host's: each halved counter at half the lowest limit the
/// user has (its own namespace's and the initial one's; at least 1, for the tripwires'
/// inotify instance), each namespace counter at 0. A counter the host does not have (an
/// older kernel) is left out. Pure: `read` gives a file's number, or `None`.
pub fn caps(read: impl Fn(&str) -> Option<u64>) -> Vec<Cap> {
    let mut out = Vec::new();
    for (name, global) in HALVED {
        let own = read(&format!("/proc/sys/user/{name}"));
        let Some(limit) = [own, read(global)].into_iter().flatten().min() else { continue };
        if own.is_some() {
            out.push((name, (limit / 2).max(1)));
        }
    }
    for name in NAMESPACES {
        if read(&format!("/proc/sys/user/{name}")).is_some() {
            out.push((name, 0));
        }
    }
    out
}

/// [`caps`] for this host, read by the supervisor (in the user's namespace) before `clone`.
pub fn host_caps() -> Vec<Cap> {
    caps(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
}

/// The caps' files, opened for writing by init in the sandbox's user namespace (where
/// `/proc/sys/user` is that namespace's, whatever `/proc` is mounted): opened before init
/// builds the view, written by [`apply`] after it.
///
/// # Errors
/// A file that cannot be opened, named.
pub fn open(caps: &[Cap]) -> io::Result<Vec<(std::fs::File, String, u64)>> {
    caps.iter()
        .map(|(name, value)| {
            let path = format!("/proc/sys/user/{name}");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map(|f| (f, path.clone(), *value))
                .map_err(|e| io::Error::new(e.kind(), format!("opening {path}: {e}")))
        })
        .collect()
}

/// Writes the caps; run by init (which holds `CAP_SYS_RESOURCE` in the sandbox's user
/// namespace) once it has built the view (it makes mount namespaces for that, which the
/// namespace caps would refuse) and before the command exists.
///
/// # Errors
/// A file that cannot be written, named with the value.
pub fn apply(files: Vec<(std::fs::File, String, u64)>) -> io::Result<()> {
    use std::io::Write;
    for (mut f, path, value) in files {
        f.write_all(value.to_string().as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("writing {value} to {path}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_the_lowest_limit_and_closes_namespaces() {
        let host = |p: &str| match p {
            "/proc/sys/user/max_inotify_instances" => Some(1000),
            "/proc/sys/fs/inotify/max_user_instances" => Some(128),
            "/proc/sys/user/max_inotify_watches" => Some(65_536),
            "/proc/sys/fs/inotify/max_user_watches" => Some(1_048_576),
            "/proc/sys/user/max_user_namespaces" | "/proc/sys/user/max_mnt_namespaces" => Some(63_000),
            // An instance limit of 1 still leaves the tripwires theirs.
            "/proc/sys/user/max_fanotify_groups" => Some(1),
            _ => None,
        };
        let c = caps(host);
        assert_eq!(
            c,
            vec![
                ("max_inotify_instances", 64),
                ("max_inotify_watches", 32_768),
                ("max_fanotify_groups", 1),
                ("max_mnt_namespaces", 0),
                ("max_user_namespaces", 0),
            ]
        );
        assert!(caps(|_| None).is_empty(), "a kernel without the counters gets none");
    }
}

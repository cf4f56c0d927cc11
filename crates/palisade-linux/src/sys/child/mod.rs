//! Code that runs inside the new namespaces: the sandbox's init (pid 1) and, forked from
//! it, the command's process. Nothing here returns: each path ends in `execve` or `_exit`.
//!
//! Init: waits for the supervisor's go-ahead (its uid/gid maps are written), builds the file
//! system view, forks the command, then reaps children and forwards signals until the
//! command exits, and exits with its status. When init exits, the kernel kills every other
//! process in the pid namespace; when the supervisor dies, `PR_SET_PDEATHSIG` kills init.
//!
//! Command: new session (no controlling terminal shared with the user), stdio, no other
//! descriptors, `no_new_privs`, Landlock, no capabilities, seccomp last, then `execve`.
//!
//! `init.rs` and `command.rs` hold each; here is what both use (their arguments, reporting a
//! failure to the supervisor). The messages are in [`super::control`].

mod command;
mod init;
mod serve;

pub use command::command_main;
pub use init::init_main;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::control::{self, ErrorKind, Msg};
use super::ffi;
use super::landlock;
use crate::Exit;

use super::mounts;
use crate::plan::{LandlockPlan, Plan};

/// What the command's process needs, prepared by the supervisor before `clone`/`fork`
/// (no lookups after).
pub struct CommandArgs<'a> {
    pub sock: RawFd,
    pub filter: &'a [libc::sock_filter],
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub path_env: Option<String>,
    pub pty: Option<super::PtyUse>,
    pub cwd: &'a Path,
    pub landlock: &'a LandlockPlan,
    /// Install the filter with a listener and pass it out (exec tracing).
    pub trace_exec: bool,
    /// Resource limits, each set as soft and hard limit (so the command cannot raise them);
    /// `RLIMIT_CPU`'s hard limit is a second above, so `SIGXCPU` comes before `SIGKILL`.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
}

impl<'a> CommandArgs<'a> {
    pub fn new(
        sock: RawFd,
        filter: &'a [libc::sock_filter],
        (argv, envp, path_env): super::ExecStrings,
        pty: Option<super::PtyUse>,
        cwd: &'a Path,
        landlock: &'a LandlockPlan,
    ) -> Self {
        CommandArgs { sock, filter, argv, envp, path_env, pty, cwd, landlock, trace_exec: false, rlimits: Vec::new() }
    }
}

/// What init needs: the plan for the file system view, and the command.
pub struct ChildArgs<'a> {
    pub plan: &'a Plan,
    pub cmd: CommandArgs<'a>,
    /// Init's end of the published ports' socket pair (see `super::publish`).
    pub publish: Option<RawFd>,
    /// cgroup v1: the `tasks` files init writes `0` to, moving itself into the sandbox's
    /// cgroups before anything else (see `super::cgroup::Entry::SelfMove`).
    pub cgroup_tasks: Vec<RawFd>,
    /// Init is in the sandbox's cgroup once it has written `cgroup_tasks` (born there, or
    /// moved by itself): it then makes that cgroup its cgroup namespace's root, so the
    /// command sees itself at `/` of every hierarchy.
    pub cgroup_root: bool,
    /// The per-user kernel counters' limits for the sandbox's user namespace (see
    /// `super::quota`), read by the supervisor in the user's namespace.
    pub quotas: Vec<super::quota::Cap>,
}

pub(super) fn report(sock: RawFd, kind: ErrorKind, text: &str) {
    let _ = control::send(sock, &Msg::Error(kind, text.into()), &[]);
}

pub(super) fn die(sock: RawFd, text: &str) -> ! {
    report(sock, ErrorKind::Setup, text);
    // SAFETY: _exit never returns and runs no destructors, as wanted after fork.
    unsafe { libc::_exit(125) }
}

pub(super) fn close_other_fds(keep: &[RawFd]) {
    let max = keep.iter().copied().max().unwrap_or(2).max(2);
    for fd in 3..=max {
        if !keep.contains(&fd) {
            // SAFETY: closing descriptors we do not use; failures (EBADF) are harmless.
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: close_range over descriptors above every one we keep.
    unsafe { libc::syscall(libc::SYS_close_range, (max + 1) as u32, u32::MAX, 0u32) };
}

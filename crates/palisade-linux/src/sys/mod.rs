//! The Linux executor: applies a [`Plan`] with namespaces, mounts, Landlock and seccomp, and
//! supervises the sandbox until it ends.

mod caps;
mod child;
pub mod ffi;
mod landlock;
mod mounts;
pub mod probe;
mod terminal;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use self::landlock::{MINIMUM_ABI as LANDLOCK_MINIMUM_ABI, kernel_abi as landlock_abi};
use crate::plan::{MountOp, Plan};
use crate::{Exit, RunError};

/// Which of the command's standard streams go to a pty served by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtyUse {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Give the command a pty (decided by the caller: when stdin is a terminal).
    pub pty: Option<PtyUse>,
}

const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

fn setup(stage: &str, e: impl std::fmt::Display) -> RunError {
    RunError::Setup(format!("{stage}: {e}"))
}

/// Number of threads of this process (the executor forks, so it must be 1).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// Runs the plan to completion and returns how the command ended.
pub fn run(plan: &Plan, opts: &RunOptions) -> Result<Exit, RunError> {
    if thread_count() != 1 {
        return Err(RunError::Setup("the sandbox must be started from a single-threaded process".into()));
    }
    let filter: Vec<libc::sock_filter> = crate::seccomp::filter()
        .map_err(|e| setup("seccomp", e))?
        .into_iter()
        .map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k })
        .collect();
    let cstrings = |v: Vec<Vec<u8>>| -> Result<Vec<CString>, RunError> {
        v.into_iter()
            .map(|b| CString::new(b).map_err(|_| RunError::Setup("an argument or variable contains a NUL byte".into())))
            .collect()
    };
    let argv = cstrings(plan.argv.iter().map(|a| a.as_bytes().to_vec()).collect())?;
    let envp = cstrings(plan.env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect())?;
    let path_env = plan.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
    let (ours, theirs) = ffi::seqpacket_pair().map_err(|e| setup("control socket", e))?;

    let signals = terminal::SignalFd::new().map_err(|e| setup("signals", e))?;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };

    // SAFETY: a fork-like clone (no new stack) in a single-threaded process: the child runs
    // on a copy of this stack and only calls `init_main`, which never returns.
    let pid = unsafe {
        libc::syscall(libc::SYS_clone, (NAMESPACES | libc::SIGCHLD) as libc::c_ulong, 0usize, 0usize, 0usize, 0usize)
    };
    if pid == 0 {
        signals.unblock_in_child();
        drop(ours);
        child::init_main(child::ChildArgs {
            plan,
            sock: theirs.as_raw_fd(),
            filter: &filter,
            argv,
            envp,
            path_env,
            pty: opts.pty,
            stdio_fds: [0, 1, 2],
        });
    }
    if pid < 0 {
        let e = io::Error::last_os_error();
        return Err(RunError::Namespaces(format!("creating the sandbox's namespaces failed: {e}")));
    }
    let pid = pid as libc::pid_t;
    drop(theirs);
    let guard = KillOnDrop(pid);

    write_id_maps(pid, uid, gid)
        .map_err(|e| RunError::Namespaces(format!("writing the user namespace's id maps: {e}")))?;
    ffi::send_with_fd(ours.as_raw_fd(), &[child::msg::GO], None).map_err(|e| setup("starting the sandbox", e))?;

    let mut master: Option<OwnedFd> = None;
    let mut buf = [0u8; 4096];
    loop {
        let (n, fd) = ffi::recv_with_fd(ours.as_raw_fd(), &mut buf).map_err(|e| setup("control socket", e))?;
        if n == 0 {
            break;
        }
        match buf[0] {
            child::msg::PTY => master = fd,
            child::msg::ERROR if n >= 2 => {
                let text = String::from_utf8_lossy(&buf[2..n]).into_owned();
                drop(guard);
                cleanup(plan);
                return Err(match buf[1] {
                    child::msg::KIND_NOT_FOUND => RunError::NotFound(text),
                    child::msg::KIND_CANNOT_EXECUTE => RunError::CannotExecute(text),
                    _ => RunError::Setup(text),
                });
            }
            _ => {}
        }
    }
    let status = terminal::supervise(pid, master, &signals);
    std::mem::forget(guard);
    cleanup(plan);
    status.map_err(|e| setup("supervising the sandbox", e))
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

/// Removes the placeholders the sandbox created on the host (only if still empty).
fn cleanup(plan: &Plan) {
    for op in &plan.mounts {
        if let MountOp::Placeholder { path } = op {
            remove_placeholder(path);
        }
    }
}

fn remove_placeholder(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let Ok(root) = std::fs::File::open("/") else {
        return;
    };
    let rel = parent.strip_prefix("/").unwrap_or(parent);
    let Ok(parent_fd) = ffi::open_beneath(root.as_raw_fd(), rel, libc::O_PATH | libc::O_DIRECTORY, 0) else {
        return;
    };
    let Ok(n) = CString::new(name.as_bytes()) else {
        return;
    };
    // Removed only if it is still the empty, mode-000 file the sandbox made.
    // SAFETY: zeroed stat buffer; fstatat without following links.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and buffer.
    let r = unsafe { libc::fstatat(parent_fd.as_raw_fd(), n.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size == 0 && st.st_mode & 0o777 == 0 {
        // SAFETY: valid descriptor and C string.
        unsafe { libc::unlinkat(parent_fd.as_raw_fd(), n.as_ptr(), 0) };
    }
}

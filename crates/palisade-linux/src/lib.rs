//! Palisade's Linux backend.
//!
//! [`plan`] (portable, pure) turns a resolved policy into a [`plan::Plan`]; the executor
//! (`sys`, Linux only) applies it with user, mount, pid, net, ipc, uts and cgroup
//! namespaces, a fresh root built by `pivot_root`, Landlock, seccomp and an init process, and
//! supervises the sandbox until it ends. The executor never reads the policy.

pub mod bpf;
pub mod host;
pub mod plan;
#[cfg(target_os = "linux")]
pub mod seccomp;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys;

#[cfg(target_os = "linux")]
pub use sys::watch::{LimitHit, OnLimit};
#[cfg(target_os = "linux")]
pub use sys::{
    Gateway, GatewaySockets, KillSwitch, PtyUse, RunOptions, cgroup, cgroup_layout, exectrace, ffi, kaudit,
    placeholders, probe, quarantine, run, run_degraded,
};

/// How the command ended: the portable type every backend returns.
pub use palisade_sandbox::Exit;

/// Why the command did not run (or ran no further than setup).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A step of building or supervising the sandbox failed, with the system's error (its
    /// `source`).
    #[error("setting up the sandbox failed: {step}: {source}")]
    Step {
        step: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Set-up failed in a way that has no system error (a precondition), or the sandbox
    /// reported its own failure in words (init's or the command's report).
    #[error("setting up the sandbox failed: {0}")]
    Setup(String),
    /// The kernel refused the namespaces.
    #[error("{0}")]
    Namespaces(String),
    /// The command does not exist inside the sandbox.
    #[error("{0}")]
    NotFound(String),
    /// The command exists but cannot be executed.
    #[error("{0}")]
    CannotExecute(String),
}

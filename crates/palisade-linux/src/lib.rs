#![deny(missing_docs)]

//! Palisade's Linux backend: [`Linux`] implements the portable run contract
//! ([`palisade_sandbox::Backend`]).
//!
//! [`plan`] (pure, builds on every OS) turns the portable view into a [`plan::Plan`]: mount
//! operations, Landlock rules, the network namespace's listeners, in one of two modes; the
//! executor (`sys`, Linux only) applies it with user, mount, pid, net, ipc, uts and cgroup
//! namespaces, a fresh root built by `pivot_root`, Landlock, seccomp and an init process, and
//! supervises the sandbox until it ends. The executor never reads the policy.

#[cfg(target_os = "linux")]
mod backend;
pub mod bpf;
pub mod host;
pub mod plan;
#[cfg(target_os = "linux")]
pub mod seccomp;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys;

#[cfg(target_os = "linux")]
pub use backend::Linux;
#[cfg(target_os = "linux")]
pub use sys::watch::{LimitHit, OnLimit};
#[cfg(target_os = "linux")]
pub use sys::{
    Gateway, GatewaySockets, KillSwitch, PtyUse, RunOptions, attach, cgroup, cgroup_layout, exectrace, ffi, kaudit,
    owner, placeholders, probe, quarantine, run,
};

/// How the command ended: the portable type every backend returns.
pub use palisade_sandbox::Exit;

/// Why the command did not run: the portable error every backend returns.
pub use palisade_sandbox::RunError;

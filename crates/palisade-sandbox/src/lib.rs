//! The portable run contract, shared by every backend (Linux today; Windows and macOS next).
//!
//! - [`run`] drives a session through any [`Backend`]: the request, the plan, the audit log
//!   and its live copies, the monitor and its [`KillSwitch`], the gateway, the degraded retry
//!   (only when the user named it), the exit status, what the run left behind.
//! - [`view`] is the portable half of planning: what the sandbox sees at each path, tested
//!   on any OS with an in-memory host.
//! - A backend implements [`Backend`] (`probe`, `preflight`, `plan`, `prepare`, `spawn`,
//!   `move_aside`) and reports [`SandboxEvent`]s through [`Events`]; it never sees the
//!   monitor or the audit log, and never decides a connection.
//! - [`Session`] turns those reports into audit records, the user's messages and the exit
//!   status ([`exit`]).

#![deny(missing_docs)]

mod backend;
mod copies;
mod event;
pub mod exit;
#[cfg(target_os = "linux")]
pub mod fdpass;
mod kill;
pub mod publish;
pub mod quarantine;
mod refusals;
mod report;
mod request;
mod run;
mod session;
#[cfg(feature = "testing")]
pub mod testing;
pub mod view;
#[cfg(target_os = "linux")]
pub mod warm;

pub use backend::{Backend, Enforcement, Gateway, Mechanism, Probe, PtyUse, Refusal, RunError, Strength, Wiring};
pub use event::{Events, SandboxEvent};
pub use exit::Exit;
pub use kill::{KillSwitch, Stopper};
pub use request::{Limits, Request};
#[cfg(target_os = "linux")]
pub use run::SessionSpec;
pub use run::{RunSpec, open_audit, run, sessions_dir};
pub use session::{Session, monitor};

//! Windows enforcement for Palisade: the portable view realised with an AppContainer per
//! workspace, ACL entries for capability SIDs derived from the workspace, and a job object
//! per run. See `docs/windows.md` for the mechanisms, what each protects against and which
//! tests prove it (and where those tests ran).
//!
//! - [`plan`]: the view turned into a [`plan::WindowsPlan`], by pure code (tested on every
//!   OS, with golden outputs).
//! - [`broker`]: the protocol of the service that adds a run's network filters, and its
//!   decision (what a caller may ask for).
//! - [`sid`]: capability and AppContainer SIDs derived from names.
//! - [`journal`]: every host change recorded before it is made; repair and forget.
//! - [`monitor`]: the job's completion-port messages as audit events.
//! - `sys` (Windows only): the system calls: the AppContainer profile, ACLs, the job object
//!   and its completion port, the launch. The `Windows` backend (on Windows only) lives
//!   there.

pub mod broker;
pub mod cmdline;
pub mod journal;
pub mod monitor;
pub mod plan;
pub mod sid;

#[cfg(windows)]
#[allow(unsafe_code)]
mod sys;

#[cfg(windows)]
pub use sys::backend::Windows;
#[cfg(windows)]
pub use sys::broker_setup::{
    SERVICE_ARGUMENT as BROKER_SERVICE_ARGUMENT, install as install_broker, remove as remove_broker,
    run_service as run_broker_service,
};
#[cfg(windows)]
pub use sys::links::{FileIdentity, file_identity};

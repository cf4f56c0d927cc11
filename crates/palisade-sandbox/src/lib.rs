//! The portable half of running a sandbox, shared by every backend (Linux today; Windows and
//! macOS next): what a running sandbox reports ([`SandboxEvent`], through [`Events`]), how it
//! ended ([`Exit`]), and the [`Session`] that turns those reports into audit records, the
//! user's messages and the exit status. A backend only has to call [`Events::event`]; it
//! never sees the policy, the monitor or the audit log.

#![deny(missing_docs)]

mod event;
mod exit;
mod session;

pub use event::{Events, SandboxEvent};
pub use exit::Exit;
pub use session::{Session, monitor};

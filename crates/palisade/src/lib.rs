//! Run a command in a Palisade sandbox from Rust.
//!
//! [`Sandbox`] holds the policy choices (a profile, grants, network hosts, limits: the same
//! options as `palisade run`, applied over the same layers: built-in defaults, your
//! configuration, the project's `.palisade.toml`); [`Sandbox::command`] gives a
//! [`Command`], built like [`std::process::Command`]; [`Command::spawn`] starts it and
//! returns a [`Child`]: its exit status, its stdio, and its [`Events`], the session's audit
//! records as they happen (`docs/events.md`).
//!
//! ```no_run
//! use palisade::Sandbox;
//!
//! # fn main() -> std::io::Result<()> {
//! let sandbox = Sandbox::new().workspace("/home/me/project").allow_net("index.crates.io");
//! let mut child = sandbox.command("cargo").arg("fetch").spawn()?;
//! for record in child.take_events().expect("events are on by default") {
//!     if let palisade::Event::Connection { target, allowed: false, .. } = record?.event {
//!         eprintln!("refused: {target}");
//!     }
//! }
//! let status = child.wait()?;
//! assert!(status.success());
//! # Ok(())
//! # }
//! ```
//!
//! # How it runs
//!
//! Each command gets its own supervisor: the `palisade` program, run as
//! `palisade run [policy options] --quiet --events 3 -- PROGRAM ARGS…`, with the audit
//! stream on a pipe mapped to its descriptor 3. The sandbox is set up in that process, not
//! in yours, so this crate keeps no global state and changes nothing in your process (no
//! signal handlers, no subreaper, no threads beyond the ones you ask for): it is safe to
//! use from many threads and from async code (feature `tokio`: `Command::spawn_async`, `AsyncChild`, `AsyncEvents`).
//! The supervisor is found on `PATH` unless you name it ([`Sandbox::with_program`]).
//!
//! # Warm sessions
//!
//! An agent that runs many short commands can pay the sandbox's start-up once:
//! [`Session::start`] brings up one sandbox with a [`Sandbox`]'s policy, and each
//! [`Session::command`] runs in it (`palisade run --session`) with its own stdio, working
//! directory and exit status. The session ends when the [`Session`] is dropped, or with your
//! process.
//!
//! # Exit status
//!
//! [`Child::wait`] returns the supervisor's status, which is the command's own, with the
//! conventions of `env` and container runtimes for what is not: 125 when Palisade refused
//! or failed to start the sandbox (its reason is on the child's stderr, and the hint how to
//! fix it), 126 when the program cannot be executed, 127 when it is not found in the
//! sandbox, 124 past the wall-clock limit, 128+N after signal N.
//!
//! # Platforms
//!
//! Linux (the supervisor enforces with namespaces, Landlock and seccomp; see
//! `palisade check`). Elsewhere [`Command::spawn`] fails with
//! [`std::io::ErrorKind::Unsupported`] until that platform's backend exists.

mod child;
mod command;
mod events;
mod sandbox;
mod session;
#[cfg(all(unix, feature = "tokio"))]
mod tokio_child;

pub use child::{Child, Output};
pub use command::Command;
pub use events::{Events, Record};
pub use palisade_monitor::Event;
pub use sandbox::Sandbox;
pub use session::Session;
#[cfg(all(unix, feature = "tokio"))]
pub use tokio_child::{AsyncChild, AsyncEvents};

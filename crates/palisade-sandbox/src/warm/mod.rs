//! Warm sessions: one sandbox (namespaces, file-system view, gateway, monitor, one audit log)
//! brought up once by `palisade session start`, then many commands run in it by
//! `palisade run --session NAME`, each in a new process group with its own stdio, terminal,
//! environment, working directory, exit status and exec records. An agent that runs
//! hundreds of short commands pays the sandbox's start-up once.
//!
//! The pieces, in data-flow order:
//!
//! - [`client`]: `run --session`'s side: connects to the session's socket, sends the
//!   command with its stdin, stdout and stderr (`SCM_RIGHTS`), forwards signals, and gets the
//!   pty master (when stdin is a terminal) and the exit status back.
//! - [`server`]: the session's side, a thread of the `session start` daemon: accepts only
//!   the same user (`SO_PEERCRED`), filters the command's environment through the policy,
//!   places its working directory as a cold run would, records `command` and
//!   `command_end`, and hands each command to the backend as a [`CommandRequest`].
//! - The backend ([`crate::Wiring::serve`]) starts each request inside the running sandbox,
//!   with the same Landlock rules, seccomp filter, rlimits and exec tracing as a cold run's
//!   command, and answers with [`CommandEvent`]s.
//! - [`wire`]: the frames between client and server.
//!
//! What commands of one session share, and what not, is in `docs/sessions.md`.

pub mod client;
pub mod server;
pub mod wire;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Exit, PtyUse, RunError};

/// Sends a signal (its number) to a started command's process group.
pub type Signaller = Arc<dyn Fn(i32) + Send + Sync>;

/// One command for a running session's backend to start.
pub struct CommandRequest {
    /// The session's number for it (1, 2, …), as its `command` record shows it.
    pub id: u64,
    /// The command and its arguments (never empty).
    pub argv: Vec<OsString>,
    /// Its whole environment, already filtered by the policy (the backend adds what a cold
    /// run's plan adds, such as the gateway's proxy variables).
    pub env: Vec<(String, String)>,
    /// Its working directory inside (already placed: the caller's when the view shows it,
    /// else the workspace).
    pub cwd: PathBuf,
    /// Which of its streams go to a pty made inside (the client relays it).
    pub pty: Option<PtyUse>,
    /// Its stdin, stdout and stderr: the client's own descriptors.
    pub stdio: [OwnedFd; 3],
    /// Where the backend answers, from the thread that called [`Commands::run`]:
    /// [`CommandEvent::Started`] then [`CommandEvent::Exited`], or [`CommandEvent::Failed`].
    pub reply: Reply,
}

/// Takes a [`CommandRequest`]'s answers.
pub type Reply = Box<dyn FnMut(CommandEvent) + Send>;

/// A serving session's backend: what the server asks of it.
pub trait Commands: Send + Sync {
    /// Starts `req` in the sandbox and answers through `req.reply`; returns once the
    /// command has ended (or did not start). Called on the client's own thread, several at
    /// once.
    fn run(&self, req: CommandRequest);
    /// Ends the session: the sandbox and every process in it (the backend's `spawn` then
    /// returns, status 0). Later requests fail.
    fn stop(&self);
}

impl std::fmt::Debug for CommandRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRequest")
            .field("id", &self.id)
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// The backend's answers about one [`CommandRequest`].
pub enum CommandEvent {
    /// It `exec`ed: the pty master when it has a pty, and how to signal it.
    Started {
        /// The pty master (opened in the sandbox's own devpts).
        pty: Option<OwnedFd>,
        /// Signals its process group.
        signal: Signaller,
    },
    /// It did not start: not found (127), cannot execute (126), or a failed step (125).
    Failed(RunError),
    /// It ended.
    Exited(Exit),
}

impl std::fmt::Debug for CommandEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandEvent::Started { pty, .. } => f.debug_struct("Started").field("pty", pty).finish(),
            CommandEvent::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            CommandEvent::Exited(e) => f.debug_tuple("Exited").field(e).finish(),
        }
    }
}

/// What a session asks of its backend: once the sandbox is built and a command could start,
/// the backend calls `on_serving` (from its own thread) with its [`Commands`]; the session
/// then takes clients and says it is ready.
pub struct Serve {
    /// Called once with the backend's way to run commands.
    pub on_serving: Box<dyn FnOnce(Arc<dyn Commands>) + Send>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Serve")
    }
}

/// The longest session name.
pub const MAX_NAME: usize = 40;

/// Checks a session name: 1 to [`MAX_NAME`] of `A-Z a-z 0-9 . _ -`, not starting with `.`
/// (it becomes a file name).
///
/// # Errors
/// What is wrong with it, in words.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a session name: use 1 to {MAX_NAME} letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    }
}

/// The directory of session sockets: `STATE/palisade/live` (`$XDG_STATE_HOME`), which the
/// built-in policy hides from every sandbox; mode 0700.
pub fn sockets_dir(state_home: &Path) -> PathBuf {
    state_home.join("palisade/live")
}

/// The socket of session `name` in [`sockets_dir`].
pub fn socket_path(state_home: &Path, name: &str) -> PathBuf {
    sockets_dir(state_home).join(format!("{name}.sock"))
}

/// A fresh session name: `s-` and 8 hex digits from the clock and the pid.
pub fn fresh_name() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mix = (t as u64) ^ ((std::process::id() as u64) << 32) ^ ((t >> 64) as u64);
    format!("s-{:08x}", (mix ^ (mix >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32)
}

/// Names of `argv` for records: each argument lossily as UTF-8.
pub(crate) fn lossy(argv: &[OsString]) -> Vec<String> {
    argv.iter().map(|a| a.to_string_lossy().into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_names_and_nothing_else() {
        for good in ["a", "s-0badf00d", "build_2.1", &"x".repeat(MAX_NAME)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "é", "a\n", &"x".repeat(MAX_NAME + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_name(&fresh_name()), Ok(()));
    }
}

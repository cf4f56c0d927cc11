//! [`Session`]: a warm sandbox for many commands (`palisade session start`).

use std::ffi::OsStr;
use std::io;
use std::process::Stdio;

use crate::{Command, Sandbox};

/// A warm session: one sandbox, built once with its [`Sandbox`]'s policy, in which each
/// [`Session::command`] runs as `palisade run --session NAME`: its own stdio, working
/// directory, exit status and exec records, at a fraction of a cold start's cost. Commands
/// of one session share its private `/tmp`, `/dev/shm` and home, and processes a command
/// leaves running (see `docs/sessions.md`).
///
/// The session ends with [`Session::stop`], when this value is dropped, or when your
/// process ends (it is the session's owner).
#[derive(Debug)]
pub struct Session {
    sandbox: Sandbox,
    name: String,
    stopped: bool,
}

impl Session {
    /// Starts a session with `sandbox`'s policy (`palisade session start --owner PID`, this
    /// process) and returns once it can take commands.
    ///
    /// # Errors
    /// The supervisor cannot be started, or refused (the error carries its message: a bad
    /// option, a missing kernel feature).
    pub fn start(sandbox: &Sandbox) -> io::Result<Session> {
        let mut cmd = std::process::Command::new(&sandbox.program);
        cmd.args(["session", "start", "--owner", &std::process::id().to_string()]);
        cmd.args(sandbox.options.iter().filter(|o| *o != "--allow-degraded"));
        cmd.envs(sandbox.supervisor_env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = cmd.output().map_err(|e| {
            io::Error::new(e.kind(), format!("starting the Palisade supervisor {}: {e}", sandbox.program.display()))
        })?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || name.is_empty() {
            return Err(io::Error::other(format!(
                "palisade session start failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Session { sandbox: sandbox.clone(), name, stopped: false })
    }

    /// The session's name (what `palisade run --session` takes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command to run in this session. Its environment is your process's (with what
    /// [`Command::env`] sets) filtered by the session's policy.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Command::in_session(self.sandbox.clone(), &self.name, program.as_ref())
    }

    /// Ends the session: every process in it is killed and its audit log closed.
    ///
    /// # Errors
    /// `palisade session stop` failed (the session had already ended, say).
    pub fn stop(mut self) -> io::Result<()> {
        self.stopped = true;
        stop(&self.sandbox, &self.name)
    }
}

fn stop(sandbox: &Sandbox, name: &str) -> io::Result<()> {
    let out = std::process::Command::new(&sandbox.program)
        .args(["session", "stop", name])
        .envs(sandbox.supervisor_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = stop(&self.sandbox, &self.name);
        }
    }
}

//! [`Command`]: one program to run in a sandbox, built like [`std::process::Command`].

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use crate::{Child, Output, Sandbox};

/// The descriptor the supervisor writes its audit stream to (`--events 3`).
const EVENTS_FD: i32 = 3;

/// A program and its arguments, to run in a sandbox with its [`Sandbox`]'s policy.
///
/// Like [`std::process::Command`]: stdio is inherited by [`Command::spawn`] and
/// [`Command::status`] and captured by [`Command::output`] unless set; the environment is
/// your process's, filtered by the policy (`[process.env]`), plus what [`Command::env`] sets.
#[derive(Debug)]
pub struct Command {
    sandbox: Sandbox,
    argv: Vec<OsString>,
    env: Vec<OsString>,
    cwd: Option<PathBuf>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    events: bool,
    /// Run in this warm session ([`crate::Session`]) instead of a sandbox of its own.
    session: Option<String>,
}

impl Command {
    pub(crate) fn new(sandbox: Sandbox, program: &OsStr) -> Command {
        Command {
            sandbox,
            argv: vec![program.to_owned()],
            env: Vec::new(),
            cwd: None,
            stdin: None,
            stdout: None,
            stderr: None,
            events: true,
            session: None,
        }
    }

    /// A command of the warm session `name`: no events stream (the session's audit log has
    /// its records), the session's policy.
    pub(crate) fn in_session(sandbox: Sandbox, name: &str, program: &OsStr) -> Command {
        let mut c = Command::new(sandbox, program);
        c.events = false;
        c.session = Some(name.to_owned());
        c
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.argv.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.argv.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets `key=value` in the sandbox (`palisade run --env KEY=VALUE`: set explicitly, so
    /// the policy's `[process.env] deny` patterns do not drop it).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Command {
        let mut kv = key.as_ref().to_owned();
        kv.push("=");
        kv.push(value);
        self.env.push(kv);
        self
    }

    /// Passes `key` from your process's environment, which the policy would otherwise drop
    /// (`palisade run --env KEY`).
    pub fn env_pass(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.env.push(key.as_ref().to_owned());
        self
    }

    /// The working directory, which must be visible in the sandbox (the workspace or a
    /// directory in it, unless granted); it is also the default workspace.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// The command's standard input.
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.stdin = Some(cfg.into());
        self
    }

    /// The command's standard output.
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.stdout = Some(cfg.into());
        self
    }

    /// The command's standard error, which also carries Palisade's own messages (why a
    /// sandbox was refused, with exit status 125).
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.stderr = Some(cfg.into());
        self
    }

    /// Whether to stream the session's audit records to [`Child::take_events`] (default:
    /// yes; always no for a warm [`crate::Session`]'s command). Without it nothing needs
    /// reading; the audit log has every record either way.
    pub fn events(&mut self, on: bool) -> &mut Command {
        self.events = on && self.session.is_none();
        self
    }

    /// The supervisor's arguments: `run`, the policy options, `--quiet` (the end-of-run
    /// summary is for people; the events carry it), the events descriptor, the command.
    fn supervisor_args(&self) -> Vec<OsString> {
        if let Some(name) = &self.session {
            let mut args: Vec<OsString> = vec!["run".into(), "--session".into(), name.into(), "--".into()];
            args.extend(self.argv.iter().cloned());
            return args;
        }
        let mut args: Vec<OsString> = vec!["run".into()];
        args.extend(self.sandbox.options.iter().cloned());
        for e in &self.env {
            args.push("--env".into());
            args.push(e.clone());
        }
        args.push("--quiet".into());
        if self.events {
            args.push("--events".into());
            args.push(EVENTS_FD.to_string().into());
        }
        args.push("--".into());
        args.extend(self.argv.iter().cloned());
        args
    }

    /// The supervisor's command, with the write end of the events pipe mapped to its
    /// descriptor 3; returns the read end. Stdio left unset is `default`'s.
    pub(crate) fn prepare(
        &mut self,
        default: fn() -> Stdio,
    ) -> io::Result<(std::process::Command, Option<std::fs::File>)> {
        let mut cmd = std::process::Command::new(&self.sandbox.program);
        cmd.args(self.supervisor_args());
        cmd.envs(self.sandbox.supervisor_env.iter().map(|(k, v)| (k, v)));
        if self.session.is_some() {
            // A session's command gets the client's environment through the session's
            // policy: what `env` sets goes there (`env_pass` needs nothing more).
            for kv in &self.env {
                let kv = kv.to_string_lossy();
                if let Some((k, v)) = kv.split_once('=') {
                    cmd.env(k, v);
                }
            }
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(self.stdin.take().unwrap_or_else(default));
        cmd.stdout(self.stdout.take().unwrap_or_else(default));
        cmd.stderr(self.stderr.take().unwrap_or_else(default));
        let events = if self.events { Some(map_events_pipe(&mut cmd)?) } else { None };
        Ok((cmd, events))
    }

    /// Starts the command in a new sandbox. Fails when the supervisor cannot be started
    /// (`palisade` not found: [`io::ErrorKind::NotFound`]); a sandbox Palisade refuses is a
    /// child that exits 125.
    pub fn spawn(&mut self) -> io::Result<Child> {
        let (mut cmd, events) = self.prepare(Stdio::inherit)?;
        let child = cmd.spawn().map_err(|e| spawn_error(&self.sandbox.program, e))?;
        // `cmd` (holding the pipe's write end) is dropped here: the events end when the
        // supervisor does.
        Ok(Child::new(child, events))
    }

    /// Runs the command to its end and returns its status (stdio inherited unless set).
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        self.events = false;
        self.spawn()?.wait()
    }

    /// Runs the command to its end with stdout and stderr captured (unless set) and stdin
    /// empty, and returns them with the status and the session's records.
    pub fn output(&mut self) -> io::Result<Output> {
        let (mut cmd, events) = self.prepare(Stdio::piped)?;
        if self.stdin.is_none() {
            cmd.stdin(Stdio::null());
        }
        let child = cmd.spawn().map_err(|e| spawn_error(&self.sandbox.program, e))?;
        drop(cmd);
        Child::new(child, events).wait_with_output()
    }

    #[cfg(all(unix, feature = "tokio"))]
    /// [`Command::spawn`] for tokio: the child and its events are awaited, never blocking a
    /// runtime thread. Needs a tokio runtime with I/O enabled.
    pub fn spawn_async(&mut self) -> io::Result<crate::AsyncChild> {
        let (cmd, events) = self.prepare(Stdio::inherit)?;
        let mut cmd = tokio::process::Command::from(cmd);
        let child = cmd.spawn().map_err(|e| spawn_error(&self.sandbox.program, e))?;
        drop(cmd);
        crate::AsyncChild::new(child, events)
    }
}

/// Names the supervisor in a failure to start it.
fn spawn_error(program: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("starting the Palisade supervisor {}: {e}", program.display()))
}

/// A pipe whose write end becomes the supervisor's descriptor [`EVENTS_FD`] (and no other
/// process's: both ends are close-on-exec in this process, and the mapping is made only in
/// the child, after fork).
#[cfg(unix)]
fn map_events_pipe(cmd: &mut std::process::Command) -> io::Result<std::fs::File> {
    use command_fds::{CommandFdExt, FdMapping};
    // std's pipe is close-on-exec from its creation on every Unix (pipe2 or the platform's
    // equivalent), so no other child can inherit it.
    let (read, write) = std::io::pipe()?;
    cmd.fd_mappings(vec![FdMapping { parent_fd: write.into(), child_fd: EVENTS_FD }])
        .map_err(|e| io::Error::other(format!("mapping the events pipe: {e}")))?;
    Ok(std::fs::File::from(std::os::fd::OwnedFd::from(read)))
}

#[cfg(not(unix))]
fn map_events_pipe(_: &mut std::process::Command) -> io::Result<std::fs::File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "Palisade has no sandbox backend for this platform yet"))
}

//! [`Child`]: a running sandboxed command, and [`Output`], a finished one.

use std::io::{self, Read};
use std::process::{ChildStderr, ChildStdin, ChildStdout, ExitStatus};

use crate::{Events, Record};

/// A command running in its sandbox, under its own Palisade supervisor.
///
/// As with [`std::process::Child`], dropping it neither waits for nor stops the command.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    events: Option<Events>,
    /// The command's stdin, when [`crate::Command::stdin`] was `Stdio::piped()`.
    pub stdin: Option<ChildStdin>,
    /// The command's stdout, when piped.
    pub stdout: Option<ChildStdout>,
    /// The command's stderr (and Palisade's messages), when piped.
    pub stderr: Option<ChildStderr>,
}

/// A finished command: its status, what it wrote, and its session's records.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Output {
    /// The exit status (see the crate's documentation for 124–127 and 128+N).
    pub status: ExitStatus,
    /// Its stdout, when captured.
    pub stdout: Vec<u8>,
    /// Its stderr and Palisade's messages, when captured.
    pub stderr: Vec<u8>,
    /// Every record the stream delivered (empty with `events(false)`).
    pub records: Vec<Record>,
}

impl Child {
    pub(crate) fn new(mut inner: std::process::Child, events: Option<std::fs::File>) -> Child {
        Child {
            stdin: inner.stdin.take(),
            stdout: inner.stdout.take(),
            stderr: inner.stderr.take(),
            events: events.map(Events::new),
            inner,
        }
    }

    /// The supervisor's process id (the command's own pid lives in the sandbox's namespace;
    /// the `exec` records name it).
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// The session's records as they happen; `None` after the first call or with
    /// `events(false)`.
    pub fn take_events(&mut self) -> Option<Events> {
        self.events.take()
    }

    /// Waits for the command and its sandbox to end. Closes the command's stdin first, as
    /// [`std::process::Child::wait`] does.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        self.inner.wait()
    }

    /// The status if the command has ended, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.inner.try_wait()
    }

    /// Asks the supervisor to stop the sandbox (SIGTERM): it forwards the signal to the
    /// command, stops whatever is left, and ends the session's log (`session_end`); the
    /// status is then 128+15 unless the command chose otherwise.
    #[cfg(unix)]
    pub fn terminate(&self) -> io::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.inner.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(io::Error::from)
    }

    /// Kills the supervisor (SIGKILL), which takes the sandbox with it; its log is left
    /// without `session_end`. Prefer [`Child::terminate`].
    pub fn kill(&mut self) -> io::Result<()> {
        self.inner.kill()
    }

    /// Waits for the command while reading its captured stdout and stderr and its records
    /// (each on its own thread, so a full pipe never stalls it).
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let events = self.events.take().map(|ev| std::thread::spawn(move || ev.filter_map(Result::ok).collect()));
        let stderr = self.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                err.read_to_end(&mut buf).map(|_| buf)
            })
        });
        let mut stdout = Vec::new();
        if let Some(mut out) = self.stdout.take() {
            out.read_to_end(&mut stdout)?;
        }
        let status = self.inner.wait()?;
        let stderr = match stderr {
            Some(t) => t.join().map_err(|_| io::Error::other("the stderr reader panicked"))??,
            None => Vec::new(),
        };
        let records = match events {
            Some(t) => t.join().map_err(|_| io::Error::other("the events reader panicked"))?,
            None => Vec::new(),
        };
        Ok(Output { status, stdout, stderr, records })
    }
}

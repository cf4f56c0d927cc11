//! [`AsyncChild`] and [`AsyncEvents`]: [`crate::Child`] and [`crate::Events`] for tokio.

use std::io;
use std::process::ExitStatus;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::unix::pipe;

use crate::Record;

/// A command running in its sandbox, for tokio ([`crate::Command::spawn_async`]).
#[derive(Debug)]
pub struct AsyncChild {
    /// The supervisor's process: its stdio, `wait().await`, `kill()`.
    pub child: tokio::process::Child,
    events: Option<AsyncEvents>,
}

impl AsyncChild {
    pub(crate) fn new(child: tokio::process::Child, events: Option<std::fs::File>) -> io::Result<AsyncChild> {
        let events = match events {
            Some(f) => {
                let rx = pipe::Receiver::from_owned_fd(f.into())?;
                Some(AsyncEvents { lines: BufReader::new(rx).lines() })
            }
            None => None,
        };
        Ok(AsyncChild { child, events })
    }

    /// The session's records as they happen; `None` after the first call.
    pub fn take_events(&mut self) -> Option<AsyncEvents> {
        self.events.take()
    }

    /// Waits for the command and its sandbox to end.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Asks the supervisor to stop the sandbox (SIGTERM); see [`crate::Child::terminate`].
    pub fn terminate(&self) -> io::Result<()> {
        let pid = self.child.id().ok_or_else(|| io::Error::other("the supervisor has already been reaped"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)
            .map_err(io::Error::from)
    }
}

/// The session's records, awaited one by one ([`crate::Events`] for tokio).
#[derive(Debug)]
pub struct AsyncEvents {
    lines: Lines<BufReader<pipe::Receiver>>,
}

impl AsyncEvents {
    /// The next record; `None` once the supervisor has exited.
    pub async fn next(&mut self) -> Option<io::Result<Record>> {
        match self.lines.next_line().await {
            Ok(Some(line)) => Some(crate::events::parse(&line)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

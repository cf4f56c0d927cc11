//! `palisade run --session NAME`: runs one command in a warm session (see
//! [`palisade_sandbox::warm`]). The client's own stdin, stdout and stderr go to the command;
//! when stdin is a terminal the command gets a pty made inside, which is relayed here as a
//! cold run relays its own (raw mode, window size); signals this process gets (`SIGINT`,
//! `SIGTERM`, `SIGHUP`, `SIGQUIT`, `SIGUSR1`, `SIGUSR2`) go to the command's process group.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::Path;

use palisade_sandbox::PtyUse;
use palisade_sandbox::warm::client;
use palisade_sandbox::warm::wire::{self, ClientMsg, RunMsg, ServerMsg};

use super::terminal::{self, SignalFd, Until};

/// Runs `argv` in session `name` (its socket under `state_home`) from `cwd`, and returns
/// the exit status: the command's, 128+N when signal N killed it, 125/126/127 when it did
/// not start (the reason is printed on stderr first).
///
/// # Errors
/// In words: no such session, or the session went away.
pub fn attach(state_home: &Path, name: &str, argv: Vec<OsString>, cwd: &Path) -> Result<u8, String> {
    let sock = client::connect(state_home, name)?;
    let pty = std::io::stdin().is_terminal().then(|| PtyUse {
        stdin: true,
        stdout: std::io::stdout().is_terminal(),
        stderr: std::io::stderr().is_terminal(),
    });
    // Blocked before the command exists, so that none is lost.
    let signals = SignalFd::new().map_err(|e| format!("blocking signals: {e}"))?;
    let run = ClientMsg::Run(RunMsg { argv, env: std::env::vars_os().collect(), cwd: cwd.to_path_buf(), pty });
    let (i, o, e) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let stdio = [i.as_fd(), o.as_fd(), e.as_fd()];
    wire::send_client(&sock, &run, &stdio).map_err(|e| format!("sending the command to session {name:?}: {e}"))?;
    let gone = || format!("session {name:?} ended before the command did");
    let master = match wire::recv_server(&sock).map_err(|e| format!("session {name:?}: {e}"))? {
        Some((ServerMsg::Started, fds)) => fds.into_iter().next(),
        Some((ServerMsg::Failed { status, message }, _)) => {
            eprintln!("palisade: {message}");
            return Ok(status);
        }
        Some((ServerMsg::Exited(e), _)) => return Ok(e.status()),
        Some((ServerMsg::Stopping, _)) | None => return Err(gone()),
    };
    let mut ended = || -> std::io::Result<Option<palisade_sandbox::Exit>> {
        match wire::recv_server(&sock)? {
            Some((ServerMsg::Exited(e), _)) => Ok(Some(e)),
            Some((ServerMsg::Failed { status, message }, _)) => {
                eprintln!("palisade: {message}");
                Ok(Some(palisade_sandbox::Exit::Code(status.into())))
            }
            Some(_) => Ok(None),
            None => Err(std::io::Error::other(gone())),
        }
    };
    let signal = |sig: i32| {
        let _ = wire::send_client(&sock, &ClientMsg::Signal(sig), &[]);
    };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let until = Until::Remote { sock: raw, ended: &mut ended, signal: &signal };
    terminal::supervise(until, master, &signals, None, None).map(|e| e.status()).map_err(|e| e.to_string())
}

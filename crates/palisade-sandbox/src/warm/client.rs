//! A warm session's client: `run --session` and `session stop`. It connects to the
//! session's socket, sends the command with its own stdin, stdout and stderr, and reads the
//! answers; the platform's front end relays the pty and the signals (see the Linux
//! backend's `attach`).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::wire::{self, ClientMsg, ServerMsg};

/// Connects to session `name`'s socket under `state_home`.
///
/// # Errors
/// In words, with what to do: no such session (or one that ended without removing its
/// socket), or the system's error.
pub fn connect(state_home: &Path, name: &str) -> Result<UnixStream, String> {
    super::check_name(name)?;
    let path = super::socket_path(state_home, name);
    UnixStream::connect(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
            "no session named {name:?} is running ({}: {e}); `palisade session list` shows the running ones",
            path.display()
        ),
        _ => format!("connecting to session {name:?} at {}: {e}", path.display()),
    })
}

/// Asks session `name` to stop; returns once it has said it is stopping.
///
/// # Errors
/// As [`connect`], or the session's answer.
pub fn stop(state_home: &Path, name: &str) -> Result<(), String> {
    let sock = connect(state_home, name)?;
    wire::send_client(&sock, &ClientMsg::Stop, &[]).map_err(|e| format!("asking session {name:?} to stop: {e}"))?;
    match wire::recv_server(&sock) {
        Ok(Some((ServerMsg::Stopping, _))) => Ok(()),
        Ok(Some((ServerMsg::Failed { message, .. }, _))) => Err(message),
        other => Err(format!("session {name:?} did not confirm the stop: {other:?}")),
    }
}

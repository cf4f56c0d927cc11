//! A warm session's commands, the supervisor's side ([`Commands`]): each request is handed to
//! init (`Msg::Spawn`, with its request in a memfd, a control socket of its own and its
//! stdio), which starts it as a cold run's command; its own socket brings the pty master,
//! the exec tracer's listener or its failure, then closes at `execve`; init reports its end
//! (`Msg::Exited`). [`Commands::stop`] closes the supervisor's side of the control socket
//! for writing, and init ends the sandbox.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

use palisade_sandbox::warm::{CommandEvent, CommandRequest, Commands};

use super::control::{self, ErrorKind, Msg};
use super::spawn_request::SpawnRequest;
use super::{exectrace, ffi};
use crate::{Exit, RunError};

/// Called with each exec the tracer of a command reports.
pub(super) type OnExec = Arc<dyn Fn(exectrace::ExecInfo) + Send + Sync>;

/// The commands waiting for their end, by id.
type Waiting = Arc<Mutex<HashMap<u64, Sender<Exit>>>>;

/// The session's commands over init's control socket.
pub(super) struct Session {
    sock: Arc<OwnedFd>,
    waiting: Waiting,
    /// The sandbox has the gateway (its proxy variables are added).
    network: bool,
    on_exec: OnExec,
}

impl Session {
    /// Starts reading init's reports of ends on a thread of its own.
    pub(super) fn start(sock: OwnedFd, network: bool, on_exec: OnExec) -> std::io::Result<Arc<Session>> {
        let s = Arc::new(Session { sock: Arc::new(sock), waiting: Arc::default(), network, on_exec });
        let (sock, waiting) = (s.sock.clone(), s.waiting.clone());
        std::thread::Builder::new().name("palisade-ends".into()).spawn(move || read_ends(&sock, &waiting))?;
        Ok(s)
    }
}

impl Commands for Session {
    fn run(&self, req: CommandRequest) {
        command(&self.sock, &self.waiting, req, self.network, &self.on_exec)
    }

    fn stop(&self) {
        // SAFETY: shutdown on a socket we hold; the descriptor stays valid.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_WR) };
    }
}

/// Init's reports of commands' ends, until init is gone (then every waiting command hears
/// that its channel closed).
fn read_ends(sock: &OwnedFd, waiting: &Waiting) {
    while let Ok(Some((m, _))) = control::recv(sock.as_raw_fd()) {
        if let Msg::Exited(id, exit) = m
            && let Some(tx) = waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
        {
            let _ = tx.send(exit);
        }
    }
    waiting.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// One command, from its request to its end.
fn command(sock: &Arc<OwnedFd>, waiting: &Waiting, req: CommandRequest, network: bool, on_exec: &OnExec) {
    let CommandRequest { id, argv, env, cwd, pty, stdio, mut reply } = req;
    let mut fail = |e: RunError| reply(CommandEvent::Failed(e));
    let request = match SpawnRequest::new(pty, &argv, &crate::plan::command_env(network, env), cwd) {
        Ok(r) => r,
        Err(e) => return fail(RunError::Setup(e)),
    };
    let (memfd, (ours, theirs)) = match ffi::memfd_with(c"palisade-command", &request.encode())
        .and_then(|m| Ok((m, ffi::seqpacket_pair()?)))
    {
        Ok(v) => v,
        Err(e) => return fail(RunError::Step { step: "passing the command to the sandbox".into(), source: e.into() }),
    };
    let (tx, ended) = channel();
    waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
    let fds = [memfd.as_raw_fd(), theirs.as_raw_fd(), stdio[0].as_raw_fd(), stdio[1].as_raw_fd(), stdio[2].as_raw_fd()];
    if let Err(e) = control::send(sock.as_raw_fd(), &Msg::Spawn(id), &fds) {
        waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        return fail(RunError::Step {
            step: "passing the command to the sandbox (has it ended?)".into(),
            source: e.into(),
        });
    }
    drop((memfd, theirs, stdio));
    let mut master = None;
    let mut error = None;
    loop {
        match control::recv(ours.as_raw_fd()) {
            Ok(Some((Msg::Pty, fds))) => master = fds.into_iter().next(),
            Ok(Some((Msg::ExecTracer, fds))) => {
                if let Some(listener) = fds.into_iter().next() {
                    let f = on_exec.clone();
                    let _ = std::thread::Builder::new()
                        .name("palisade-exec".into())
                        .spawn(move || exectrace::serve(listener, move |e| f(e)));
                }
            }
            Ok(Some((Msg::Error(kind, text), _))) => {
                error = Some(match kind {
                    ErrorKind::NotFound => RunError::NotFound(text),
                    ErrorKind::CannotExecute => RunError::CannotExecute(text),
                    ErrorKind::Setup => RunError::Setup(text),
                });
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if error.is_none() {
        let s = sock.clone();
        let signal = Arc::new(move |sig: i32| {
            let _ = control::send(s.as_raw_fd(), &Msg::Signal(id, sig), &[]);
        });
        reply(CommandEvent::Started { pty: master, signal });
    }
    let exit = ended.recv();
    reply(match (error, exit) {
        (Some(e), _) => CommandEvent::Failed(e),
        (None, Ok(exit)) => CommandEvent::Exited(exit),
        (None, Err(_)) => CommandEvent::Exited(Exit::Signal(libc::SIGKILL)),
    });
}

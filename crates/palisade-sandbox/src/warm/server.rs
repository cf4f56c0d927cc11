//! A warm session's server: the daemon's thread that accepts `run --session` clients on the
//! session's socket and turns each into a [`CommandRequest`] for the backend.
//!
//! Only the session's own user may connect: the socket's directory is mode 0700 and each
//! peer's uid is checked (`SO_PEERCRED`, unix(7)). A client that goes away takes its command
//! with it (its process group gets `SIGKILL`), as a closed terminal would; what the command
//! started in a process group of its own lives on until the session ends.

use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use palisade_monitor::{Event, Sink};

use super::wire::{self, ClientMsg, RunMsg, ServerMsg};
use super::{CommandEvent, CommandRequest, Commands, lossy};
use crate::RunError;
use crate::exit::{CANNOT_EXECUTE, FAILURE, NOT_FOUND};

/// Turns a client's environment into the command's (the policy's `[environment]`, `HOME`
/// and `TMPDIR`), as a cold run's request does.
pub type EnvFilter = Box<dyn Fn(Vec<(std::ffi::OsString, std::ffi::OsString)>) -> Vec<(String, String)> + Send + Sync>;

/// Places a client's working directory inside (see [`crate::view::FsView::cwd_for`]).
pub type CwdPlacer = Box<dyn Fn(&Path) -> PathBuf + Send + Sync>;

/// What the server needs of the session.
pub struct Context {
    /// The command's environment from the client's.
    pub env: EnvFilter,
    /// The command's working directory from the client's.
    pub cwd: CwdPlacer,
    /// Where `command` and `command_end` are recorded.
    pub sink: Arc<dyn Sink>,
    /// The backend, once it serves; taken when the session is stopped.
    pub commands: Mutex<Option<Arc<dyn Commands>>>,
}

impl Context {
    /// Stops the session (`session stop`, or its owner ended); idempotent.
    pub fn stop(&self) {
        let taken = self.commands.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(c) = taken {
            c.stop();
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

/// Serves `listener` until the process ends: one thread per client. Returns when accepting
/// fails for good.
pub fn serve(listener: UnixListener, ctx: Arc<Context>) {
    let me = rustix::process::getuid().as_raw();
    let ids = Arc::new(AtomicU64::new(1));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if peer_uid(&conn) != Some(me) {
            let _ = wire::send_server(
                &conn,
                &ServerMsg::Failed { status: FAILURE, message: "this session belongs to another user".into() },
                &[],
            );
            continue;
        }
        let (ctx, ids) = (ctx.clone(), ids.clone());
        let _ = std::thread::Builder::new().name("palisade-client".into()).spawn(move || client(conn, &ctx, &ids));
    }
}

/// The connected peer's uid (`SO_PEERCRED`: the credentials it had when it connected).
fn peer_uid(conn: &UnixStream) -> Option<u32> {
    rustix::net::sockopt::socket_peercred(conn).ok().map(|c| c.uid.as_raw())
}

/// One client, from its first frame to its command's end.
fn client(conn: UnixStream, ctx: &Arc<Context>, ids: &AtomicU64) {
    let failed = |message: String| {
        let _ = wire::send_server(&conn, &ServerMsg::Failed { status: FAILURE, message }, &[]);
    };
    let (run, fds) = match wire::recv_client(&conn) {
        Ok(Some((ClientMsg::Run(run), fds))) => (run, fds),
        Ok(Some((ClientMsg::Stop, _))) => {
            ctx.stop();
            let _ = wire::send_server(&conn, &ServerMsg::Stopping, &[]);
            return;
        }
        Ok(Some((ClientMsg::Signal(_), _))) => return failed("a signal before any command".into()),
        Ok(None) => return,
        Err(e) => return failed(format!("reading the request: {e}")),
    };
    let Ok::<[_; 3], _>(stdio) = fds.try_into() else {
        return failed("a command must come with exactly three descriptors: stdin, stdout and stderr".into());
    };
    if run.argv.is_empty() {
        return failed("no command given".into());
    }
    let id = ids.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let RunMsg { argv, env, cwd, pty } = run;
    let cwd = (ctx.cwd)(&cwd);
    ctx.sink.record(&Event::Command { id, argv: lossy(&argv), cwd: cwd.to_string_lossy().into_owned() });
    let commands = ctx.commands.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(commands) = commands else {
        let why = "the session is stopping".to_owned();
        end(ctx, id, started, None, Some(why.clone()));
        return failed(why);
    };
    let Ok(out) = conn.try_clone() else { return failed("duplicating the client's socket".into()) };
    let c = ctx.clone();
    let reply = move |event: CommandEvent| match event {
        CommandEvent::Started { pty, signal } => {
            let fds: Vec<_> = pty.iter().map(|m| m.as_fd()).collect();
            if wire::send_server(&out, &ServerMsg::Started, &fds).is_err() {
                signal(libc::SIGKILL);
            }
            if let Ok(watch) = out.try_clone() {
                let _ = std::thread::Builder::new()
                    .name("palisade-signals".into())
                    .spawn(move || relay_signals(&watch, &*signal));
            }
        }
        CommandEvent::Exited(exit) => {
            end(&c, id, started, Some(exit), None);
            let _ = wire::send_server(&out, &ServerMsg::Exited(exit), &[]);
        }
        CommandEvent::Failed(e) => {
            let status = match &e {
                RunError::NotFound(_) => NOT_FOUND,
                RunError::CannotExecute(_) => CANNOT_EXECUTE,
                _ => FAILURE,
            };
            end(&c, id, started, Some(crate::Exit::Code(status.into())), Some(e.to_string()));
            let _ = wire::send_server(&out, &ServerMsg::Failed { status, message: e.to_string() }, &[]);
        }
    };
    let env = (ctx.env)(env);
    commands.run(CommandRequest { id, argv, env, cwd, pty, stdio, reply: Box::new(reply) });
    // Its end is said; the client's frames after it are of no use, and closing ends the
    // signal relay.
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// Passes the client's signals on until it goes; a client gone before its command ended
/// takes the command's process group with it (`SIGKILL`; a signal for a command that has
/// ended reaches nothing).
fn relay_signals(conn: &UnixStream, signal: &(dyn Fn(i32) + Send + Sync)) {
    loop {
        match wire::recv_client(conn) {
            Ok(Some((ClientMsg::Signal(s), _))) if (1..=64).contains(&s) => signal(s),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                signal(libc::SIGKILL);
                return;
            }
        }
    }
}

fn end(ctx: &Context, id: u64, started: Instant, exit: Option<crate::Exit>, error: Option<String>) {
    let (exit_code, signal) = match exit {
        Some(crate::Exit::Code(c)) => (Some(c), None),
        Some(crate::Exit::Signal(s)) => (None, Some(s)),
        None => (Some(FAILURE.into()), None),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    ctx.sink.record(&Event::CommandEnd { id, exit_code, signal, duration_ms, error });
}

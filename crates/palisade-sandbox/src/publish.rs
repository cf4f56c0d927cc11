//! Published ports (`--publish`, `network.publish`): the user reaches a server started in
//! the sandbox (a dev server) through the host's loopback. The session listens on
//! `127.0.0.1:HOST_PORT` before the sandbox starts (so a port in use refuses the run, with
//! the reason); for each connection the backend gives a stream to the port on the sandbox's
//! own loopback ([`Connector`]), and the session carries the bytes both ways and records an
//! `inbound` event when it closes. Nothing is published unless the user asks; only the
//! host's loopback listens (never another interface); the project layer may not publish.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use palisade_monitor::{Event, Sink};
use palisade_policy::ResolvedPolicy;
use palisade_policy::model::Publish;

use crate::backend::Refusal;

/// Gives a stream connected to `port` on the sandbox's own loopback (IPv4, else IPv6), made
/// by the backend inside the sandbox's network; an error when nothing listens there.
pub type Connector = Arc<dyn Fn(u16) -> io::Result<TcpStream> + Send + Sync>;

/// Started by the backend once the sandbox's network exists, with its [`Connector`]; serves
/// the published ports from the session's threads until the session ends.
pub type Publisher = Box<dyn FnOnce(Connector) + Send>;

/// Connections carried at once per published port; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 64;

/// The connections being carried, so that the session can end them (and have each
/// recorded) before its `session_end`, which must be the log's last record.
#[derive(Debug, Default)]
pub struct Inbound {
    closing: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<Vec<(u64, TcpStream)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Inbound {
    fn register(&self, s: &TcpStream) -> Option<u64> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock `close` takes: no connection slips in after it.
        if self.closing.load(Ordering::SeqCst) {
            return None;
        }
        open.push((id, s.try_clone().ok()?));
        Some(id)
    }

    fn unregister(&self, id: u64) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
    }

    /// Refuses new connections, shuts the open ones (each is then recorded by its carrier)
    /// and waits up to `wait` for their records.
    pub fn close(&self, wait: std::time::Duration) {
        {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            self.closing.store(true, Ordering::SeqCst);
            for (_, s) in open.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let until = Instant::now() + wait;
        while Instant::now() < until && !self.open.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Listens on `127.0.0.1:HOST_PORT` for each published port of the policy.
///
/// # Errors
/// A [`Refusal`] naming the port and the system's error (`Address already in use`), with
/// how to choose another.
pub fn bind(policy: &ResolvedPolicy) -> Result<Vec<(TcpListener, Publish)>, Refusal> {
    policy
        .publish
        .iter()
        .map(|p| {
            let Publish { host_port, port } = p.value;
            TcpListener::bind(("127.0.0.1", host_port)).map(|l| (l, p.value)).map_err(|e| Refusal {
                message: format!("cannot publish port {port} ({}): listening on 127.0.0.1:{host_port}: {e}", p.origin),
                hint: Some(format!("choose another host port: --publish HOST_PORT:{port}")),
            })
        })
        .collect()
}

/// The [`Publisher`] for `listeners`: a thread per port accepting, two per connection
/// carrying bytes; every connection recorded to `sink` when it closes.
pub fn publisher(listeners: Vec<(TcpListener, Publish)>, sink: Arc<dyn Sink>, inbound: Arc<Inbound>) -> Publisher {
    Box::new(move |connect: Connector| {
        for (listener, p) in listeners {
            let (connect, sink, inbound) = (connect.clone(), sink.clone(), inbound.clone());
            let _ = std::thread::Builder::new()
                .name(format!("palisade-publish-{}", p.host_port))
                .spawn(move || accept_loop(listener, p, connect, sink, inbound));
        }
    })
}

fn accept_loop(listener: TcpListener, p: Publish, connect: Connector, sink: Arc<dyn Sink>, inbound: Arc<Inbound>) {
    let open = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        // After the session's end nothing is carried (nor recorded after `session_end`).
        let Some(id) = inbound.register(&client) else { continue };
        while open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (connect, sink, done, registry) = (connect.clone(), sink.clone(), open.clone(), inbound.clone());
        let spawned = std::thread::Builder::new().name("palisade-inbound".into()).spawn(move || {
            carry(client, p, &connect, &*sink);
            done.fetch_sub(1, Ordering::SeqCst);
            registry.unregister(id);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
            inbound.unregister(id);
        }
    }
}

/// Carries one connection into the sandbox and back, then records it.
fn carry(client: TcpStream, p: Publish, connect: &Connector, sink: &dyn Sink) {
    let started = Instant::now();
    let peer = client.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let record = |bytes_in, bytes_out, error| {
        sink.record(&Event::Inbound {
            port: p.port,
            host_port: p.host_port,
            peer: peer.clone(),
            bytes_in,
            bytes_out,
            duration_ms: started.elapsed().as_millis() as u64,
            error,
        })
    };
    let inner = match connect(p.port) {
        Ok(s) => s,
        Err(e) => {
            record(0, 0, Some(format!("connecting to port {} inside the sandbox: {e}", p.port)));
            return;
        }
    };
    let (Ok(client2), Ok(inner2)) = (client.try_clone(), inner.try_clone()) else {
        record(0, 0, Some("duplicating the sockets failed".into()));
        return;
    };
    let upstream = std::thread::Builder::new().name("palisade-inbound".into()).spawn(move || pipe(client2, inner2));
    let bytes_out = pipe(inner, client);
    let bytes_in = upstream.ok().and_then(|t| t.join().ok()).unwrap_or(0);
    record(bytes_in, bytes_out, None);
}

/// Copies `from` to `to` until `from` ends (or either fails), then shuts `to`'s writing
/// side, so the other direction sees the end; returns the bytes copied.
fn pipe(mut from: TcpStream, mut to: TcpStream) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
    total
}

//! What an allowed tunnel (CONNECT, SOCKS5 CONNECT, a transparent port) may carry. The first
//! bytes decide ([`crate::peek`]):
//!
//! - a TLS ClientHello: its server name, when it has one, must be the tunnel's name; then the
//!   bytes are spliced (what TLS hides is in ARCHITECTURE.md);
//! - an HTTP/1 request line: every request is parsed, checked against the tunnel's name and
//!   forwarded on its own ([`crate::forward`]);
//! - anything else, or a client that waits for the server to speak first: only where the policy
//!   lets raw TCP through to this name and port ([`Decider::raw_allowed`]).
//!
//! Refusals inside a tunnel are `request` events; the tunnel's `connection_end` says what it
//! carried.

use std::sync::Arc;

use palisade_monitor::Event;
use palisade_policy::Target;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::Parse;
use crate::decision::{Checked, Decider};
use crate::meter::{Rewind, idle_for};
use crate::peek::{Opening, classify};
use crate::server::{Activity, Opened, Shared, dial, record_end};

/// The longest opening read before deciding: a ClientHello fits in one TLS record (16 KiB
/// and its header), an HTTP request line in [`crate::http::MAX_HEAD`].
const MAX_OPENING: usize = 16 * 1024 + 5;

/// An allowed tunnel, about to carry its first bytes.
pub(crate) struct Tunnel {
    pub(crate) checked: Checked,
    pub(crate) opened: Opened,
    pub(crate) via: &'static str,
    /// The client side's counters from the tunnel's start.
    pub(crate) activity: Activity,
    /// The connection slot, held for as long as the tunnel lives (a CONNECT tunnel's is held
    /// by its proxy connection).
    pub(crate) slot: Option<OwnedSemaphorePermit>,
}

/// Whether `claimed` (a server name or `Host`) names the tunnel's target: the same host, and
/// the same port when it gives one. For a granted host loopback port, `localhost` and the
/// loopback addresses name the same place.
pub fn names(target: &Target, claimed: &str) -> bool {
    let Ok(t) = Target::parse(claimed, target.port) else { return false };
    let loopback = crate::decision::is_host_loopback;
    let same_host = t.host == target.host || (loopback(&t.host) && loopback(&target.host));
    same_host && t.port == target.port
}

/// Serves one tunnel until it ends, then records its `connection_end`.
pub(crate) async fn serve<S>(client: S, t: Tunnel, up: Option<TcpStream>, shared: Arc<Shared>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Tunnel { checked, opened, via, activity, slot } = t;
    let r = carry(client, &checked, &opened, via, &activity, up, &shared).await;
    record_end(&shared, &opened, &activity);
    drop(slot);
    r
}

/// Records a refusal inside the tunnel.
fn refuse(shared: &Shared, opened: &Opened, via: &str, what: &str, host: String, target: &Target, reason: String) {
    shared.record(Event::Request {
        connection: Some(opened.id),
        via: via.into(),
        method: what.into(),
        host,
        port: target.port,
        path: String::new(),
        allowed: false,
        reason,
        status: None,
        bytes_up: 0,
        bytes_down: 0,
        quiet: false,
    });
}

async fn read_some<S: AsyncRead + Unpin>(client: &mut S, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = client.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn carry<S>(
    mut client: S,
    checked: &Checked,
    opened: &Opened,
    via: &'static str,
    activity: &Activity,
    mut up: Option<TcpStream>,
    shared: &Arc<Shared>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let target = checked.target();
    let decider: &Decider = &shared.decider;
    let deadline = tokio::time::Instant::now() + shared.budgets().handshake;
    let mut buf = Vec::new();
    let raw = decider.raw_allowed(target);
    if raw.allowed {
        // Whoever speaks first decides: the server (SSH, SMTP) makes it raw TCP at once; the
        // client's first bytes are classified as below.
        let u = match up.take() {
            Some(u) => u,
            None => dial(checked).await?,
        };
        tokio::select! {
            r = read_some(&mut client, &mut buf) => {
                if r? == 0 {
                    return Ok(());
                }
                up = Some(u);
            }
            r = u.readable() => {
                r?;
                return splice(client, u, activity, shared).await;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let why = "neither side spoke within the handshake budget".to_owned();
                refuse(shared, opened, via, "-", target.host.to_string(), target, why);
                return Ok(());
            }
        }
    } else {
        match tokio::time::timeout_at(deadline, read_some(&mut client, &mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => return Ok(()),
            Err(_) => {
                let why = format!("nothing arrived within the handshake budget, and {}", raw.reason);
                refuse(shared, opened, via, "-", target.host.to_string(), target, why);
                return Ok(());
            }
        }
    }
    let opening = loop {
        match classify(&buf) {
            Ok(Parse::Done(o, _)) => break o,
            Ok(Parse::Incomplete) if buf.len() < MAX_OPENING => {
                match tokio::time::timeout_at(deadline, read_some(&mut client, &mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(Err(e)) => return Err(e),
                    _ => return Ok(()),
                }
            }
            Ok(Parse::Incomplete) => break Opening::Other,
            Err(e) => {
                refuse(shared, opened, via, "TLS", target.host.to_string(), target, e);
                return Ok(());
            }
        }
    };
    let client = Rewind::new(buf, client);
    match opening {
        Opening::Tls(Some(sni)) if !names(target, &sni) => {
            let why =
                format!("the TLS server name {sni} is not {}, the name this connection was allowed for", target.host);
            refuse(shared, opened, via, "TLS", sni, target, why);
            Ok(())
        }
        Opening::Tls(_) => {
            let u = match up {
                Some(u) => u,
                None => dial(checked).await?,
            };
            splice(client, u, activity, shared).await
        }
        Opening::Http => {
            let scope = crate::forward::Scope::Bound { checked: checked.clone(), conn: opened.id, via, spare: up };
            crate::forward::serve_http_boxed(client, scope, shared.clone(), activity.clone()).await
        }
        Opening::Other => {
            let raw = decider.raw_allowed(target);
            if !raw.allowed {
                refuse(shared, opened, via, "-", target.host.to_string(), target, raw.reason);
                return Ok(());
            }
            let u = match up {
                Some(u) => u,
                None => dial(checked).await?,
            };
            splice(client, u, activity, shared).await
        }
    }
}

/// Copies both ways until both sides close, the connection stays idle past the budget, or
/// the session's byte budget is spent (the client stream is metered).
pub(crate) async fn splice<S, U>(mut client: S, mut up: U, activity: &Activity, shared: &Shared) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // 16 KiB each way: a thousand raw tunnels then hold 32 MiB of buffers.
    const BUF: usize = 16 * 1024;
    tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, BUF, BUF) => r.map(|_| ()),
        _ = idle_for(&shared.meter, &activity.last, shared.budgets().idle) => {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))
        }
    }
}

//! The transparent ports: a connection's destination says where it goes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use palisade_monitor::Event;
use palisade_policy::{Host, Target};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::bound;
use crate::decision::Checked;
use crate::meter::Metered;
use crate::server::{Activity, Opened, Shared, check};

/// A connection to a transparent port: its destination says where it goes. A synthetic
/// address names the host the DNS stub handed it out for; the sandbox's own loopback means
/// the host's loopback port, when the policy grants it ([`Decider::loopback_grant`]).
/// Anything else is refused and recorded.
pub(crate) async fn transparent_conn(
    conn: TcpStream,
    shared: &Arc<Shared>,
    slot: OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let local = conn.local_addr()?;
    let ip = local.ip().to_canonical();
    let port = local.port();
    let mut conn = Metered::new(conn, shared.meter.clone());
    let refuse = |target: String, reason: String| {
        shared.record(Event::Connection {
            id: None,
            via: "transparent".into(),
            target,
            allowed: false,
            reason,
            error: None,
            quiet: false,
        });
    };
    let activity = Activity::of(&conn);
    let host_loopback = ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST;
    let (checked, opened) = if host_loopback {
        let Some(grant) = shared.decider.loopback_grant(port) else {
            let why = format!(
                "loopback port {port} inside the sandbox is not a service of the host's: grant one with --allow-net localhost:{port}"
            );
            refuse(SocketAddr::new(ip, port).to_string(), why.clone());
            tell_http_client(&mut conn, &why, shared.budgets().handshake).await;
            return Ok(());
        };
        let target = Target { host: Host::Ip(ip), port };
        let checked = Checked::granted(&target, &grant);
        let id = shared.next_id();
        shared.record(Event::Connection {
            id: Some(id),
            via: "transparent".into(),
            target: format!("host loopback port {port}"),
            allowed: true,
            reason: grant.rule,
            error: None,
            quiet: false,
        });
        (checked, Opened { id, target: target.to_string(), at: Instant::now() })
    } else {
        let Some(name) = shared.name_of(ip) else {
            let why = "no name was looked up for this address through the sandbox's DNS stub".to_owned();
            refuse(SocketAddr::new(ip, port).to_string(), why.clone());
            tell_http_client(&mut conn, &why, shared.budgets().handshake).await;
            return Ok(());
        };
        let target = Target { host: Host::Name(name), port };
        match check(shared, &target, "transparent").await {
            Ok(c) => c,
            Err(e) => {
                tell_http_client(&mut conn, &e.to_string(), shared.budgets().handshake).await;
                return Ok(());
            }
        }
    };
    let tunnel = bound::Tunnel { checked, opened, via: "transparent", activity, slot: Some(slot) };
    bound::serve(conn, tunnel, None, shared.clone()).await
}

/// A refused connection whose client speaks HTTP first gets a 403 that says why (plain
/// clients show it; the record has it too). Anything else is just closed. Waits at most a
/// second, and within the handshake budget, for the client's first bytes.
async fn tell_http_client<S>(conn: &mut S, why: &str, handshake: std::time::Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    let wait = handshake.min(std::time::Duration::from_secs(1));
    let mut buf = [0u8; 1024];
    let Ok(Ok(n)) = tokio::time::timeout(wait, conn.read(&mut buf)).await else { return };
    if !matches!(crate::peek::classify(&buf[..n]), Ok(crate::Parse::Done(crate::peek::Opening::Http, _))) {
        return;
    }
    // The gateway's own refusal, written by hyper as every other one is.
    let why = why.to_owned();
    let service = hyper::service::service_fn(move |_req| {
        let r = crate::http::refusal(http::StatusCode::FORBIDDEN, &why);
        async move { Ok::<_, std::convert::Infallible>(r) }
    });
    let io = hyper_util::rt::TokioIo::new(crate::meter::Rewind::new(buf[..n].to_vec(), conn));
    let _ = tokio::time::timeout(wait, hyper::server::conn::http1::Builder::new().serve_connection(io, service)).await;
}

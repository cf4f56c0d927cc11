//! The DNS stub's listeners (UDP and TCP on 127.0.0.53:53 inside the sandbox): every query
//! answered by [`crate::dns::answer`] and recorded.

use std::sync::Arc;

use palisade_monitor::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dns;
use crate::server::Shared;

fn answer_dns(shared: &Shared, msg: &[u8]) -> Option<Vec<u8>> {
    let mut pool = shared.pool.lock().unwrap_or_else(|e| e.into_inner());
    let (bytes, q) = dns::answer(msg, &shared.decider, &mut pool)?;
    drop(pool);
    let (allowed, reason, answer) = match q.answer {
        dns::Answer::Allowed { addr, reason } => (true, reason, addr.map(|a| a.to_string())),
        dns::Answer::Denied(reason) => (false, reason, None),
        dns::Answer::Malformed => (false, "malformed query".to_owned(), None),
    };
    shared.record(Event::Dns { name: q.name, qtype: q.qtype, allowed, reason, answer, quiet: false });
    Some(bytes)
}

pub(crate) async fn dns_udp(sock: std::net::UdpSocket, shared: Arc<Shared>) {
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(sock) = tokio::net::UdpSocket::from_std(sock) else { return };
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
        if let Some(reply) = answer_dns(&shared, &buf[..n]) {
            let _ = sock.send_to(&reply, from).await;
        }
    }
}

/// DNS over TCP: two-byte length, message; as many as the client sends, each within the
/// handshake budget.
pub(crate) async fn dns_tcp(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let handshake = shared.budgets().handshake;
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(handshake, conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(handshake, conn.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let Some(reply) = answer_dns(shared, &msg) else { return Ok(()) };
        conn.write_all(&(reply.len() as u16).to_be_bytes()).await?;
        conn.write_all(&reply).await?;
    }
}

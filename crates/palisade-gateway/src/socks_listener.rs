//! The SOCKS5 listener (RFC 1928): greeting and CONNECT parsed by [`crate::socks5`] within
//! the handshake budget, the target decided and recorded, then the tunnel to `bound`.
//! Refusals before there is a target (BIND, UDP ASSOCIATE, a bad name) are recorded too.

use std::sync::Arc;

use palisade_monitor::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::meter::Metered;
use crate::server::{Activity, Shared, check, dial, record_end};
use crate::{Parse, bound, socks5};

/// Reads until `parse` has a whole message, within the handshake budget.
async fn read_message<T>(
    conn: &mut Metered<TcpStream>,
    buf: &mut Vec<u8>,
    limit: usize,
    deadline: tokio::time::Instant,
    mut parse: impl FnMut(&[u8]) -> Result<Parse<T>, Option<Vec<u8>>>,
) -> Result<(T, usize), Option<Vec<u8>>> {
    loop {
        match parse(buf)? {
            Parse::Done(v, n) => return Ok((v, n)),
            Parse::Incomplete if buf.len() >= limit => return Err(None),
            Parse::Incomplete => {}
        }
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err(None),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// [`read_message`], and on a protocol error the refusal it carries is sent before `None`.
async fn read_or_refuse<T>(
    conn: &mut Metered<TcpStream>,
    buf: &mut Vec<u8>,
    limit: usize,
    deadline: tokio::time::Instant,
    parse: impl FnMut(&[u8]) -> Result<Parse<T>, Option<Vec<u8>>>,
) -> std::io::Result<Option<(T, usize)>> {
    match read_message(conn, buf, limit, deadline, parse).await {
        Ok(v) => Ok(Some(v)),
        Err(reply) => {
            if let Some(r) = reply {
                conn.write_all(&r).await?;
            }
            Ok(None)
        }
    }
}

pub(crate) async fn socks_conn(
    conn: TcpStream,
    shared: &Arc<Shared>,
    slot: OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let mut conn = Metered::new(conn, shared.meter.clone());
    let activity = Activity::of(&conn);
    let deadline = tokio::time::Instant::now() + shared.budgets().handshake;
    let mut buf = Vec::new();
    // A refusal before there is a target is recorded too (BIND, UDP ASSOCIATE, a bad name).
    let mut refused: Option<&'static str> = None;
    let record_refusal = |what: Option<&'static str>| {
        if let Some(what) = what {
            shared.record(Event::Connection {
                id: None,
                via: "socks5".into(),
                target: "-".into(),
                allowed: false,
                reason: format!("SOCKS5: {what}"),
                error: None,
                quiet: false,
            });
        }
    };
    let greeting = read_or_refuse(&mut conn, &mut buf, 512, deadline, |b| {
        socks5::greeting(b).map_err(|e| {
            refused = Some(e.what);
            e.reply
        })
    })
    .await?;
    let Some((answer, used)) = greeting else {
        record_refusal(refused);
        return Ok(());
    };
    conn.write_all(&answer).await?;
    buf.drain(..used);
    let request = read_or_refuse(&mut conn, &mut buf, 512, deadline, |b| {
        socks5::request(b).map_err(|e| {
            refused = Some(e.what);
            e.reply
        })
    })
    .await?;
    let Some((target, used)) = request else {
        record_refusal(refused);
        return Ok(());
    };
    let (checked, opened) = match check(shared, &target, "socks5").await {
        Ok(c) => c,
        Err(_) => {
            conn.write_all(&socks5::reply_bytes(socks5::reply::NOT_ALLOWED)).await?;
            return Ok(());
        }
    };
    let up = match dial(&checked).await {
        Ok(u) => u,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                socks5::reply::CONNECTION_REFUSED
            } else {
                socks5::reply::HOST_UNREACHABLE
            };
            conn.write_all(&socks5::reply_bytes(code)).await?;
            record_end(shared, &opened, &activity.starting_now());
            return Ok(());
        }
    };
    conn.write_all(&socks5::reply_bytes(socks5::reply::SUCCEEDED)).await?;
    let rest = buf.split_off(used);
    let tunnel = bound::Tunnel { checked, opened, via: "socks5", activity: activity.starting_now(), slot: Some(slot) };
    bound::serve(crate::meter::Rewind::new(rest, conn), tunnel, Some(up), shared.clone()).await
}

//! Serving the gateway's listeners: the HTTP proxy (CONNECT and plain) and SOCKS5, each
//! deciding through [`Decider::check`] and dialling only the [`Checked`] address.
//!
//! Runs on one thread with a single-threaded tokio runtime, outside the sandbox. Budgets: at
//! most [`Budgets::max_connections`] at once (more wait), and a handshake (request head,
//! SOCKS messages) must arrive within [`Budgets::handshake`], so a silent or slowloris client
//! costs a task and a timer, nothing more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade_policy::{HostName, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::decision::{Checked, Decider, Refusal, Resolver};
use crate::{Parse, http, socks5};

/// Listening sockets created inside the sandbox's network namespace, handed to the gateway.
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Option<std::net::TcpListener>,
    pub socks: Option<std::net::TcpListener>,
}

/// Per-session limits.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub max_connections: usize,
    pub handshake: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets { max_connections: 1024, handshake: Duration::from_secs(10) }
    }
}

/// Resolves with the system resolver (outside the sandbox).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, name: &HostName) -> std::io::Result<Vec<std::net::IpAddr>> {
        use std::net::ToSocketAddrs;
        Ok((name.as_str(), 0).to_socket_addrs()?.map(|a| a.ip()).collect())
    }
}

struct Shared {
    decider: Decider,
    budgets: Budgets,
    slots: Semaphore,
}

/// Serves the listeners until the process exits. Blocks the calling thread.
pub fn serve(listeners: Listeners, decider: Decider, budgets: Budgets) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let shared = Arc::new(Shared { decider, budgets, slots: Semaphore::new(budgets.max_connections) });
        let mut tasks = Vec::new();
        if let Some(l) = listeners.http {
            tasks.push(tokio::spawn(accept_loop(l, shared.clone(), Proto::Http)));
        }
        if let Some(l) = listeners.socks {
            tasks.push(tokio::spawn(accept_loop(l, shared.clone(), Proto::Socks)));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    Ok(())
}

#[derive(Clone, Copy)]
enum Proto {
    Http,
    Socks,
}

async fn accept_loop(l: std::net::TcpListener, shared: Arc<Shared>, proto: Proto) {
    if l.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(l) = TcpListener::from_std(l) else { return };
    loop {
        let Ok((conn, _)) = l.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(_slot) = shared.slots.acquire().await else { return };
            let _ = match proto {
                Proto::Http => http_conn(conn, &shared).await,
                Proto::Socks => socks_conn(conn, &shared).await,
            };
        });
    }
}

/// Decides and resolves off the async thread (resolution may block).
async fn check(shared: &Shared, target: &Target) -> Result<Checked, Refusal> {
    let (decider, target) = (shared.decider.clone(), target.clone());
    tokio::task::spawn_blocking(move || decider.check(&target, &SystemResolver))
        .await
        .unwrap_or_else(|_| Err(Refusal::Policy("internal error".into())))
}

/// Reads until `parse` has a whole message, within the handshake budget.
async fn read_message<T>(
    conn: &mut TcpStream,
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

async fn splice(mut client: TcpStream, upstream: SocketAddr, first: &[u8]) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    if !first.is_empty() {
        up.write_all(first).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut up).await?;
    Ok(())
}

async fn http_conn(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + shared.budgets.handshake;
    let mut buf = Vec::new();
    let (head, used) = match read_message(&mut conn, &mut buf, http::MAX_HEAD, deadline, |b| {
        http::head(b).map_err(|e| Some(http::forbidden(&e.to_string())))
    })
    .await
    {
        Ok(v) => v,
        Err(reply) => {
            if let Some(r) = reply {
                conn.write_all(&r).await?;
            }
            return Ok(());
        }
    };
    // A Host header that names another host than the request target is refused (C-07).
    if let Some(h) = &head.host_header {
        let same = Target::parse(h, head.target.port).map(|t| t.host == head.target.host).unwrap_or(false);
        if !same {
            conn.write_all(&http::forbidden("the Host header does not match the request target")).await?;
            return Ok(());
        }
    }
    let checked = match check(shared, &head.target).await {
        Ok(c) => c,
        Err(refusal) => {
            conn.write_all(&http::forbidden(&refusal.to_string())).await?;
            return Ok(());
        }
    };
    if head.connect {
        let mut up = match TcpStream::connect(checked.addr()).await {
            Ok(u) => u,
            Err(e) => {
                conn.write_all(
                    format!("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nX-Palisade-Error: {e}\r\n\r\n")
                        .as_bytes(),
                )
                .await?;
                return Ok(());
            }
        };
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
        up.write_all(&buf[used..]).await?;
        tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
        return Ok(());
    }
    // Plain HTTP: one request per upstream connection, so every request is decided.
    let forwarded = close_after(&buf[..used]);
    let mut first = forwarded;
    first.extend_from_slice(&buf[used..]);
    splice(conn, checked.addr(), &first).await
}

/// The request head with `Connection: close` instead of any keep-alive headers.
fn close_after(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(head.len() + 20);
    for line in text.split("\r\n") {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if matches!(name.as_str(), "connection" | "proxy-connection" | "keep-alive") || line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

async fn socks_conn(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + shared.budgets.handshake;
    let mut buf = Vec::new();
    let (answer, used) =
        match read_message(&mut conn, &mut buf, 512, deadline, |b| socks5::greeting(b).map_err(|e| e.reply)).await {
            Ok(v) => v,
            Err(reply) => {
                if let Some(r) = reply {
                    conn.write_all(&r).await?;
                }
                return Ok(());
            }
        };
    conn.write_all(&answer).await?;
    buf.drain(..used);
    let (target, used) =
        match read_message(&mut conn, &mut buf, 512, deadline, |b| socks5::request(b).map_err(|e| e.reply)).await {
            Ok(v) => v,
            Err(reply) => {
                if let Some(r) = reply {
                    conn.write_all(&r).await?;
                }
                return Ok(());
            }
        };
    let checked = match check(shared, &target).await {
        Ok(c) => c,
        Err(_) => {
            conn.write_all(&socks5::reply_bytes(socks5::reply::NOT_ALLOWED)).await?;
            return Ok(());
        }
    };
    let mut up = match TcpStream::connect(checked.addr()).await {
        Ok(u) => u,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                socks5::reply::CONNECTION_REFUSED
            } else {
                socks5::reply::HOST_UNREACHABLE
            };
            conn.write_all(&socks5::reply_bytes(code)).await?;
            return Ok(());
        }
    };
    conn.write_all(&socks5::reply_bytes(socks5::reply::SUCCEEDED)).await?;
    up.write_all(&buf[used..]).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_becomes_close() {
        let h = close_after(b"GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\nProxy-Connection: keep-alive\r\n\r\n");
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nConnection: close\r\n\r\n"
        );
    }
}

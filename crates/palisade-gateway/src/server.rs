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

use palisade_monitor::{Event, Sink};

use crate::decision::{Checked, Decider, Refusal, Resolver};
use crate::peek::{Opening, classify};
use crate::pool::Pool;
use crate::{Parse, dns, http, socks5};

/// Listening sockets created inside the sandbox's network namespace, handed to the gateway.
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Option<std::net::TcpListener>,
    pub socks: Option<std::net::TcpListener>,
    pub dns_udp: Option<std::net::UdpSocket>,
    pub dns_tcp: Option<std::net::TcpListener>,
    /// One per allowed port; a connection's destination (a synthetic address) names the host.
    pub transparent: Vec<std::net::TcpListener>,
}

/// Per-session limits.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Connections served at once; more wait for a slot.
    pub max_connections: usize,
    /// Time for a request head, SOCKS messages or a TLS ClientHello to arrive.
    pub handshake: Duration,
    /// A tunnel with no traffic either way for this long is closed.
    pub idle: Duration,
    /// Bytes sent out (client to upstream) over the whole session; past it, tunnels close.
    pub max_upload: u64,
    /// Bytes received (upstream to client) over the whole session.
    pub max_download: u64,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_connections: 1024,
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(600),
            max_upload: 4 << 30,
            max_download: 64 << 30,
        }
    }
}

/// What the session has moved so far.
#[derive(Debug, Default)]
pub struct Counters {
    pub up: std::sync::atomic::AtomicU64,
    pub down: std::sync::atomic::AtomicU64,
    /// Set once when the upload or download budget is first exceeded (reported once).
    pub up_spent: std::sync::atomic::AtomicBool,
    pub down_spent: std::sync::atomic::AtomicBool,
}

/// The session totals a byte rule watches: crossing one is reported at once as a `traffic`
/// event, while the bytes still flow.
#[derive(Default)]
pub struct Watch {
    pub marks_up: Vec<u64>,
    pub marks_down: Vec<u64>,
    pub sink: Option<Arc<dyn Sink>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("marks_up", &self.marks_up).field("marks_down", &self.marks_down).finish()
    }
}

impl Watch {
    fn moved(&self, up: bool, before: u64, after: u64) {
        let (marks, direction) = if up { (&self.marks_up, "upload") } else { (&self.marks_down, "download") };
        if let Some(sink) = &self.sink {
            if marks.iter().any(|m| before <= *m && *m < after) {
                sink.record(&Event::Traffic { direction: direction.into(), total: after });
            }
        }
    }
}

/// What one tunnel carried (kept when it ends in an error).
#[derive(Debug, Default)]
pub struct Moved {
    pub up: std::sync::atomic::AtomicU64,
    pub down: std::sync::atomic::AtomicU64,
}

/// An allowed connection, for its `connection_end`.
struct Opened {
    id: u64,
    target: String,
    at: std::time::Instant,
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
    /// True while every connection slot is taken (a `limit` event marks each episode).
    saturated: std::sync::atomic::AtomicBool,
    sink: Option<Arc<dyn Sink>>,
    decider: Decider,
    budgets: Budgets,
    slots: Semaphore,
    pool: std::sync::Mutex<Pool>,
    counters: Counters,
    watch: Watch,
    /// The last connection number handed out.
    last_id: std::sync::atomic::AtomicU64,
}

/// Serves the listeners until the process exits. Blocks the calling thread. Every DNS query
/// and every connection decision goes to `sink`.
pub fn serve(
    listeners: Listeners,
    decider: Decider,
    budgets: Budgets,
    sink: Option<Arc<dyn Sink>>,
    marks: (Vec<u64>, Vec<u64>),
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let pool = std::sync::Mutex::new(Pool::default());
        let counters = Counters::default();
        let watch = Watch { marks_up: marks.0, marks_down: marks.1, sink: sink.clone() };
        let shared = Arc::new(Shared {
            saturated: false.into(),
            sink,
            decider,
            budgets,
            slots: Semaphore::new(budgets.max_connections),
            pool,
            counters,
            watch,
            last_id: 0.into(),
        });
        let mut tasks = Vec::new();
        if let Some(l) = listeners.http {
            tasks.push(tokio::spawn(accept_loop(l, shared.clone(), Proto::Http)));
        }
        if let Some(l) = listeners.socks {
            tasks.push(tokio::spawn(accept_loop(l, shared.clone(), Proto::Socks)));
        }
        if let Some(l) = listeners.dns_tcp {
            tasks.push(tokio::spawn(accept_loop(l, shared.clone(), Proto::DnsTcp)));
        }
        for l in listeners.transparent {
            tasks.push(tokio::spawn(accept_loop(l, shared.clone(), Proto::Transparent)));
        }
        if let Some(u) = listeners.dns_udp {
            tasks.push(tokio::spawn(dns_udp(u, shared.clone())));
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
    DnsTcp,
    Transparent,
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
            let _slot = match shared.slots.try_acquire() {
                Ok(slot) => {
                    shared.saturated.store(false, std::sync::atomic::Ordering::Relaxed);
                    slot
                }
                Err(_) => {
                    if !shared.saturated.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        let n = shared.budgets.max_connections;
                        limit(
                            &shared,
                            "connections",
                            format!("all {n} connection slots are in use; new connections wait"),
                        );
                    }
                    let Ok(slot) = shared.slots.acquire().await else { return };
                    slot
                }
            };
            let _ = match proto {
                Proto::Http => http_conn(conn, &shared).await,
                Proto::Socks => socks_conn(conn, &shared).await,
                Proto::DnsTcp => dns_tcp(conn, &shared).await,
                Proto::Transparent => transparent_conn(conn, &shared).await,
            };
        });
    }
}

fn limit(shared: &Shared, what: &str, detail: String) {
    if let Some(sink) = &shared.sink {
        sink.record(&Event::Limit { limit: what.into(), detail });
    }
}

/// `tunnel`, reporting a byte budget the first time it is spent, and what the connection
/// carried when it ends.
async fn tunnel_reported(
    client: TcpStream,
    up: TcpStream,
    first: &[u8],
    shared: &Shared,
    opened: Opened,
) -> std::io::Result<()> {
    let moved = Moved::default();
    let r = tunnel(client, up, first, shared.budgets, &shared.counters, &shared.watch, &moved).await;
    if let Some(sink) = &shared.sink {
        use std::sync::atomic::Ordering::Relaxed;
        sink.record(&Event::ConnectionEnd {
            id: opened.id,
            target: opened.target,
            bytes_up: moved.up.load(Relaxed),
            bytes_down: moved.down.load(Relaxed),
            duration_ms: opened.at.elapsed().as_millis() as u64,
        });
    }
    if r.is_err() {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &shared.counters;
        let b = &shared.budgets;
        if c.up.load(Relaxed) > b.max_upload && !c.up_spent.swap(true, Relaxed) {
            limit(
                shared,
                "upload",
                format!("the session's upload budget of {} bytes is spent; tunnels close", b.max_upload),
            );
        }
        if c.down.load(Relaxed) > b.max_download && !c.down_spent.swap(true, Relaxed) {
            let detail = format!("the session's download budget of {} bytes is spent; tunnels close", b.max_download);
            limit(shared, "download", detail);
        }
    }
    r
}

/// Decides and resolves (off the async thread only when a lookup may block), and records the
/// decision.
async fn check(shared: &Shared, target: &Target, via: &str) -> Result<(Checked, Opened), Refusal> {
    let r = if !shared.decider.needs_resolution(target) {
        shared.decider.check(target, &SystemResolver)
    } else {
        let (decider, t) = (shared.decider.clone(), target.clone());
        tokio::task::spawn_blocking(move || decider.check(&t, &SystemResolver))
            .await
            .unwrap_or_else(|_| Err(Refusal::Policy("internal error".into())))
    };
    let id = r.is_ok().then(|| shared.last_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
    if let Some(sink) = &shared.sink {
        let (allowed, reason) = match &r {
            Ok(c) => (true, c.rule().to_owned()),
            Err(e) => (false, e.to_string()),
        };
        sink.record(&Event::Connection { id, via: via.into(), target: target.to_string(), allowed, reason });
    }
    let opened = Opened { id: id.unwrap_or(0), target: target.to_string(), at: std::time::Instant::now() };
    r.map(|c| (c, opened))
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

/// [`read_message`], and on a protocol error the refusal it carries is sent before `None`.
async fn read_or_refuse<T>(
    conn: &mut TcpStream,
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

async fn splice(
    client: TcpStream,
    upstream: SocketAddr,
    first: &[u8],
    shared: &Shared,
    opened: Opened,
) -> std::io::Result<()> {
    let up = TcpStream::connect(upstream).await?;
    tunnel_reported(client, up, first, shared, opened).await
}

/// Copies both ways until either side closes, a direction stays idle past the budget, or the
/// session's byte budget is spent. `first` (bytes already read from the client) goes first.
/// `moved` counts this tunnel's bytes; `watch` hears of session totals crossing its marks.
pub async fn tunnel(
    client: TcpStream,
    up: TcpStream,
    first: &[u8],
    b: Budgets,
    c: &Counters,
    watch: &Watch,
    moved: &Moved,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    if !first.is_empty() {
        let n = first.len() as u64;
        let before = c.up.fetch_add(n, Relaxed);
        watch.moved(true, before, before + n);
        moved.up.fetch_add(n, Relaxed);
        uw.write_all(first).await?;
    }
    #[allow(clippy::too_many_arguments)]
    async fn pump(
        from: &mut tokio::net::tcp::OwnedReadHalf,
        to: &mut tokio::net::tcp::OwnedWriteHalf,
        count: &std::sync::atomic::AtomicU64,
        mine: &std::sync::atomic::AtomicU64,
        limit: u64,
        idle: Duration,
        watch: &Watch,
        up: bool,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match tokio::time::timeout(idle, from.read(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle")),
            };
            if n == 0 {
                let _ = to.shutdown().await;
                return Ok(());
            }
            let before = count.fetch_add(n as u64, Relaxed);
            watch.moved(up, before, before + n as u64);
            if before + n as u64 > limit {
                return Err(std::io::Error::other("the session's byte budget is spent"));
            }
            to.write_all(&buf[..n]).await?;
            mine.fetch_add(n as u64, Relaxed);
        }
    }
    let upward = pump(&mut cr, &mut uw, &c.up, &moved.up, b.max_upload, b.idle, watch, true);
    let downward = pump(&mut ur, &mut cw, &c.down, &moved.down, b.max_download, b.idle, watch, false);
    tokio::try_join!(upward, downward)?;
    Ok(())
}

async fn http_conn(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + shared.budgets.handshake;
    let mut buf = Vec::new();
    let Some((head, used)) = read_or_refuse(&mut conn, &mut buf, http::MAX_HEAD, deadline, |b| {
        http::head(b).map_err(|e| Some(http::forbidden(&e.to_string())))
    })
    .await?
    else {
        return Ok(());
    };
    // A Host header that names another host than the request target is refused (C-07).
    if let Some(h) = &head.host_header {
        let same = Target::parse(h, head.target.port).map(|t| t.host == head.target.host).unwrap_or(false);
        if !same {
            conn.write_all(&http::forbidden("the Host header does not match the request target")).await?;
            return Ok(());
        }
    }
    let (checked, opened) = match check(shared, &head.target, if head.connect { "connect" } else { "http" }).await {
        Ok(c) => c,
        Err(refusal) => {
            conn.write_all(&http::forbidden(&refusal.to_string())).await?;
            return Ok(());
        }
    };
    if head.connect {
        let up = match TcpStream::connect(checked.addr()).await {
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
        return tunnel_reported(conn, up, &buf[used..], shared, opened).await;
    }
    // Plain HTTP: one request per upstream connection, so every request is decided.
    let forwarded = close_after(&buf[..used]);
    let mut first = forwarded;
    first.extend_from_slice(&buf[used..]);
    splice(conn, checked.addr(), &first, shared, opened).await
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
    let Some((answer, used)) =
        read_or_refuse(&mut conn, &mut buf, 512, deadline, |b| socks5::greeting(b).map_err(|e| e.reply)).await?
    else {
        return Ok(());
    };
    conn.write_all(&answer).await?;
    buf.drain(..used);
    let Some((target, used)) =
        read_or_refuse(&mut conn, &mut buf, 512, deadline, |b| socks5::request(b).map_err(|e| e.reply)).await?
    else {
        return Ok(());
    };
    let (checked, opened) = match check(shared, &target, "socks5").await {
        Ok(c) => c,
        Err(_) => {
            conn.write_all(&socks5::reply_bytes(socks5::reply::NOT_ALLOWED)).await?;
            return Ok(());
        }
    };
    let up = match TcpStream::connect(checked.addr()).await {
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
    tunnel_reported(conn, up, &buf[used..], shared, opened).await
}

fn answer_dns(shared: &Shared, msg: &[u8]) -> Option<Vec<u8>> {
    let mut pool = shared.pool.lock().unwrap_or_else(|e| e.into_inner());
    let (bytes, q) = dns::answer(msg, &shared.decider, &mut pool)?;
    drop(pool);
    if let Some(sink) = &shared.sink {
        let (allowed, reason, answer) = match q.answer {
            dns::Answer::Allowed { addr, reason } => (true, reason, addr.map(|a| a.to_string())),
            dns::Answer::Denied(reason) => (false, reason, None),
            dns::Answer::Malformed => (false, "malformed query".to_owned(), None),
        };
        sink.record(&Event::Dns { name: q.name, qtype: q.qtype, allowed, reason, answer });
    }
    Some(bytes)
}

async fn dns_udp(sock: std::net::UdpSocket, shared: Arc<Shared>) {
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
async fn dns_tcp(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(shared.budgets.handshake, conn.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(shared.budgets.handshake, conn.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let Some(reply) = answer_dns(shared, &msg) else { return Ok(()) };
        conn.write_all(&(reply.len() as u16).to_be_bytes()).await?;
        conn.write_all(&reply).await?;
    }
}

/// How long a transparent connection may stay silent before it is taken for a protocol in
/// which the server speaks first (SSH, SMTP).
const SERVER_FIRST_WAIT: Duration = Duration::from_millis(300);

/// A connection to a synthetic address: the name behind it, then its opening must agree
/// (TLS server name, HTTP Host), then the usual decision.
async fn transparent_conn(mut conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let local = conn.local_addr()?;
    let std::net::IpAddr::V4(v4) = local.ip() else { return Ok(()) };
    let name = {
        let pool = shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.name_of(v4).cloned()
    };
    // Not an address the DNS stub handed out: nothing to connect to.
    let Some(name) = name else { return Ok(()) };
    let target = Target { host: palisade_policy::Host::Name(name.clone()), port: local.port() };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let first = tokio::time::timeout(SERVER_FIRST_WAIT, conn.read(&mut chunk)).await;
    if let Ok(r) = first {
        let n = r?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let deadline = tokio::time::Instant::now() + shared.budgets.handshake;
        let opening = match read_message(&mut conn, &mut buf, http::MAX_HEAD, deadline, |b| {
            classify(b).map_err(|_| None)
        })
        .await
        {
            Ok((o, _)) => o,
            Err(_) => return Ok(()),
        };
        let claimed = match &opening {
            Opening::Tls(Some(sni)) => Some(sni.clone()),
            Opening::Http(Some(host)) => Some(host.clone()),
            _ => None,
        };
        if let Some(c) = claimed {
            let same = Target::parse(&c, target.port).map(|t| t.host == target.host).unwrap_or(false);
            if !same {
                if matches!(opening, Opening::Http(_)) {
                    conn.write_all(&http::forbidden(&format!(
                        "{c} does not match {name}, the name this address was given for"
                    )))
                    .await?;
                }
                return Ok(());
            }
        }
    }
    let (checked, opened) = match check(shared, &target, "transparent").await {
        Ok(c) => c,
        Err(_) => return Ok(()),
    };
    splice(conn, checked.addr(), &buf, shared, opened).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// A connected pair of TCP streams on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[test]
    fn tunnel_stops_at_the_upload_budget() {
        rt().block_on(async {
            let (mut client, client_side) = pair().await;
            let (upstream_side, mut upstream) = pair().await;
            let b = Budgets { max_upload: 100_000, ..Budgets::default() };
            let c = Counters::default();
            let (w, m) = (Watch::default(), Moved::default());
            let t = tunnel(client_side, upstream_side, b"first", b, &c, &w, &m);
            let writer = async {
                let chunk = vec![7u8; 10_000];
                for _ in 0..50 {
                    if client.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = client.shutdown().await;
            };
            let reader = async {
                let mut got = 0usize;
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = upstream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                got
            };
            let (r, _, got) = tokio::join!(t, writer, reader);
            assert!(r.is_err(), "the tunnel outlived its budget");
            assert!(got <= 100_000 + 16 * 1024, "{got} bytes went out past a 100 kB budget");
        });
    }

    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<Event>>);
    impl Sink for Recorder {
        fn record(&self, e: &Event) {
            self.0.lock().unwrap().push(e.clone());
        }
    }
    impl Recorder {
        fn limits(&self) -> Vec<String> {
            let events = self.0.lock().unwrap();
            events
                .iter()
                .filter_map(|e| if let Event::Limit { limit, .. } = e { Some(limit.clone()) } else { None })
                .collect()
        }
    }

    fn shared(b: Budgets, rec: &Arc<Recorder>) -> Arc<Shared> {
        Arc::new(Shared {
            saturated: false.into(),
            sink: Some(rec.clone()),
            decider: Decider::new(Default::default()),
            budgets: b,
            slots: Semaphore::new(b.max_connections),
            pool: Default::default(),
            counters: Default::default(),
            watch: Watch { marks_up: vec![20_000], marks_down: vec![], sink: Some(rec.clone()) },
            last_id: 0.into(),
        })
    }

    #[test]
    fn a_spent_budget_is_reported_once() {
        rt().block_on(async {
            let rec = Arc::new(Recorder::default());
            let sh = shared(Budgets { max_upload: 10_000, ..Budgets::default() }, &rec);
            for _ in 0..3 {
                let (mut client, client_side) = pair().await;
                let (upstream_side, _upstream) = pair().await;
                let writer = async {
                    let _ = client.write_all(&[1u8; 50_000]).await;
                    let _ = client.shutdown().await;
                };
                let opened = Opened { id: 1, target: "a.test:443".into(), at: std::time::Instant::now() };
                let (r, ()) = tokio::join!(tunnel_reported(client_side, upstream_side, b"", &sh, opened), writer);
                assert!(r.is_err(), "the tunnel outlived its budget");
            }
            assert_eq!(rec.limits(), ["upload"]);
        });
    }

    #[test]
    fn running_out_of_connection_slots_is_reported_once_per_episode() {
        rt().block_on(async {
            let rec = Arc::new(Recorder::default());
            let b = Budgets { max_connections: 1, handshake: Duration::from_millis(300), ..Budgets::default() };
            let sh = shared(b, &rec);
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(accept_loop(l, sh.clone(), Proto::DnsTcp));
            // Three silent DNS-over-TCP clients: one holds the slot, two wait.
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(TcpStream::connect(addr).await.unwrap());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(rec.limits(), ["connections"]);
            // The handshake budget frees the slots; a later burst is a new episode.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            drop(held);
            let _a = TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _b = TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(rec.limits(), ["connections", "connections"]);
        });
    }

    #[test]
    fn idle_tunnels_close() {
        rt().block_on(async {
            let (_client, client_side) = pair().await;
            let (upstream_side, _upstream) = pair().await;
            let b = Budgets { idle: Duration::from_millis(50), ..Budgets::default() };
            let c = Counters::default();
            let (w, m) = (Watch::default(), Moved::default());
            let r =
                tokio::time::timeout(Duration::from_secs(5), tunnel(client_side, upstream_side, b"", b, &c, &w, &m))
                    .await;
            assert!(matches!(r, Ok(Err(_))), "an idle tunnel stayed open");
        });
    }

    #[test]
    fn keep_alive_becomes_close() {
        let h = close_after(b"GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\nProxy-Connection: keep-alive\r\n\r\n");
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nConnection: close\r\n\r\n"
        );
    }
}

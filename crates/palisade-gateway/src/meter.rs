//! The session's budgets and what it has moved: every byte between a sandboxed client and
//! the gateway passes through a [`Metered`] stream, which counts it for the connection and the
//! session, fails the stream once the session's upload or download budget is spent (reported
//! once, as a `limit` event), reports byte marks a monitor rule watches (`traffic`), and keeps
//! the time of the last activity for the idle budget ([`idle_for`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use palisade_monitor::{Event, Sink};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-session limits (the `[network]` budget keys; defaults below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Connections served at once; more wait for a slot (`max_connections`).
    pub max_connections: usize,
    /// Time for a request head, SOCKS messages or a TLS ClientHello to arrive
    /// (`handshake_timeout`).
    pub handshake: Duration,
    /// A connection with no traffic either way for this long is closed (`idle_timeout`).
    pub idle: Duration,
    /// Bytes sent out (client to upstream) over the whole session; past it, connections
    /// close (`max_upload`).
    pub max_upload: u64,
    /// Bytes received (upstream to client) over the whole session (`max_download`).
    pub max_download: u64,
}

impl Budgets {
    /// The budgets a policy sets (`[network]` keys, defaults where absent).
    pub fn of(b: &palisade_policy::model::NetBudgets) -> Budgets {
        let (c, h, i, u, d) = b.effective();
        Budgets {
            max_connections: usize::try_from(c).unwrap_or(usize::MAX).min(1 << 20),
            handshake: h,
            idle: i,
            max_upload: u,
            max_download: d,
        }
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets::of(&Default::default())
    }
}

/// The session totals a byte rule watches: crossing one is reported at once as a `traffic`
/// event, while the bytes still flow.
#[derive(Default)]
pub struct Watch {
    /// Upload totals (bytes) to report when crossed.
    pub marks_up: Vec<u64>,
    /// Download totals (bytes) to report when crossed.
    pub marks_down: Vec<u64>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("marks_up", &self.marks_up).field("marks_down", &self.marks_down).finish()
    }
}

/// What one connection (or one request) carried, kept when it ends in an error.
#[derive(Debug, Default)]
pub struct Moved {
    /// Bytes from the client towards the origin.
    pub up: AtomicU64,
    /// Bytes from the origin towards the client.
    pub down: AtomicU64,
}

impl Moved {
    /// Bytes up so far.
    pub fn up(&self) -> u64 {
        self.up.load(Relaxed)
    }
    /// Bytes down so far.
    pub fn down(&self) -> u64 {
        self.down.load(Relaxed)
    }
}

/// The session's meter: budgets, totals, byte marks and where to report.
pub struct Meter {
    /// The session's budgets.
    pub budgets: Budgets,
    /// The byte totals a monitor rule watches.
    pub watch: Watch,
    /// Where `traffic` and `limit` events go.
    pub sink: Option<Arc<dyn Sink>>,
    up: AtomicU64,
    down: AtomicU64,
    up_spent: AtomicBool,
    down_spent: AtomicBool,
    epoch: Instant,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").field("budgets", &self.budgets).field("up", &self.up).field("down", &self.down).finish()
    }
}

impl Meter {
    /// A meter at zero.
    pub fn new(budgets: Budgets, watch: Watch, sink: Option<Arc<dyn Sink>>) -> Meter {
        Meter {
            budgets,
            watch,
            sink,
            up: 0.into(),
            down: 0.into(),
            up_spent: false.into(),
            down_spent: false.into(),
            epoch: Instant::now(),
        }
    }

    /// Session totals so far: (up, down).
    pub fn totals(&self) -> (u64, u64) {
        (self.up.load(Relaxed), self.down.load(Relaxed))
    }

    /// Counts `n` bytes one way; an error once the session's budget for that way is spent.
    pub fn count(&self, up: bool, n: u64) -> std::io::Result<()> {
        let (total, marks, budget, spent, direction) = if up {
            (&self.up, &self.watch.marks_up, self.budgets.max_upload, &self.up_spent, "upload")
        } else {
            (&self.down, &self.watch.marks_down, self.budgets.max_download, &self.down_spent, "download")
        };
        let before = total.fetch_add(n, Relaxed);
        let after = before.saturating_add(n);
        if let Some(sink) = &self.sink
            && marks.iter().any(|m| before <= *m && *m < after)
        {
            sink.record(&Event::Traffic { direction: direction.into(), total: after });
        }
        if after > budget {
            if !spent.swap(true, Relaxed)
                && let Some(sink) = &self.sink
            {
                let detail = format!("the session's {direction} budget of {budget} bytes is spent; connections close");
                sink.record(&Event::Limit { limit: direction.into(), detail });
            }
            return Err(std::io::Error::other(format!("the session's {direction} budget is spent")));
        }
        Ok(())
    }

    /// Milliseconds since the session's gateway started (for activity stamps).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A client stream that counts what passes, for the connection (`moved`) and the session
/// (`meter`), and stamps `last` (milliseconds, [`Meter::now_ms`]) on every transfer.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
    /// What this stream carried.
    pub moved: Arc<Moved>,
    /// When it last carried anything ([`Meter::now_ms`]).
    pub last: Arc<AtomicU64>,
}

impl<S> Metered<S> {
    /// Meters `inner` into `meter`.
    pub fn new(inner: S, meter: Arc<Meter>) -> Metered<S> {
        let last = Arc::new(AtomicU64::new(meter.now_ms()));
        Metered { inner, meter, moved: Arc::default(), last }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.last.store(self.meter.now_ms(), Relaxed);
            self.moved.up.fetch_add(n, Relaxed);
            self.meter.count(true, n)?;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            let n = *n as u64;
            if n > 0 {
                self.last.store(self.meter.now_ms(), Relaxed);
                self.moved.down.fetch_add(n, Relaxed);
                self.meter.count(false, n)?;
            }
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Completes once nothing has moved (per `last`) for `idle`: race it against the work.
pub async fn idle_for(meter: &Meter, last: &AtomicU64, idle: Duration) {
    let idle_ms = idle.as_millis().min(u128::from(u64::MAX)) as u64;
    loop {
        let quiet = meter.now_ms().saturating_sub(last.load(Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
    }
}

/// Bytes already read from a stream, given back before the rest of it.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: bytes::Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `prefix`, then the rest of `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Rewind<S> {
        Rewind { prefix: prefix.into(), inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An upstream stream that only counts: what it reads came down, what it writes went up.
#[derive(Debug)]
pub struct Tally<S> {
    inner: S,
    /// What it carried.
    pub moved: Arc<Moved>,
}

impl<S> Tally<S> {
    /// Counts what passes through `inner`.
    pub fn new(inner: S) -> Tally<S> {
        Tally { inner, moved: Arc::default() }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tally<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.moved.down.fetch_add((buf.filled().len() - before) as u64, Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tally<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            self.moved.up.fetch_add(*n as u64, Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

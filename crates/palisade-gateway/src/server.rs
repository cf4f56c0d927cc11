//! Serving the gateway's listeners: the accept loop and its connection slots, and what every
//! front end shares (`decide`, `check`, `dial`, the records). The front ends are their own
//! modules: the HTTP proxy (`forward`), SOCKS5 (`socks_listener`), the DNS stub
//! (`dns_listener`) and the transparent ports (`transparent`), each deciding through
//! [`Decider::check`] and dialling only the [`Checked`] address. What a tunnel then carries is
//! checked by `bound`.
//!
//! Runs on one thread with a single-threaded tokio runtime, outside the sandbox. Budgets: at
//! most [`Budgets::max_connections`] client connections at once (more wait), and a handshake
//! (request head, SOCKS messages, TLS ClientHello) must arrive within [`Budgets::handshake`],
//! so a silent or slowloris client costs a task and a timer, nothing more.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use palisade_monitor::{Event, Sink};
use palisade_policy::{Host, HostName, Target};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::decision::{Checked, Decider, Refusal, Resolver};
use crate::forward;
pub use crate::meter::{Budgets, Watch};
use crate::meter::{Meter, Metered, Moved};
use crate::pool::Pool;

/// Listening sockets created inside the sandbox's network namespace, handed to the gateway.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The HTTP proxy (`127.0.0.1:3128` inside).
    pub http: Option<std::net::TcpListener>,
    /// SOCKS5 (`127.0.0.1:1080` inside).
    pub socks: Option<std::net::TcpListener>,
    /// The DNS stub over UDP (`127.0.0.53:53` inside).
    pub dns_udp: Option<std::net::UdpSocket>,
    /// The DNS stub over TCP.
    pub dns_tcp: Option<std::net::TcpListener>,
    /// One or two (IPv4, IPv6 loopback) per allowed port; a connection's destination (a
    /// synthetic address, or the sandbox's loopback for a granted host port) says where it
    /// goes.
    pub transparent: Vec<std::net::TcpListener>,
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

/// What every task of one gateway shares.
pub(crate) struct Shared {
    /// True while every connection slot is taken (a `limit` event marks each episode).
    saturated: AtomicBool,
    /// Connections waiting for a slot.
    waiting: std::sync::atomic::AtomicUsize,
    /// True while accepting fails (out of descriptors; a `limit` event marks each episode).
    accept_failing: AtomicBool,
    pub(crate) sink: Option<Arc<dyn Sink>>,
    pub(crate) decider: Decider,
    pub(crate) meter: Arc<Meter>,
    slots: Arc<Semaphore>,
    pub(crate) pool: std::sync::Mutex<Pool>,
    /// The last connection number handed out.
    last_id: AtomicU64,
}

impl Shared {
    pub(crate) fn new(decider: Decider, meter: Meter) -> Shared {
        let n = meter.budgets.max_connections;
        Shared {
            saturated: false.into(),
            waiting: 0.into(),
            accept_failing: false.into(),
            sink: meter.sink.clone(),
            decider,
            meter: Arc::new(meter),
            slots: Arc::new(Semaphore::new(n)),
            pool: Default::default(),
            last_id: 0.into(),
        }
    }

    pub(crate) fn budgets(&self) -> Budgets {
        self.meter.budgets
    }

    pub(crate) fn record(&self, mut e: Event) {
        // A refusal the policy expects (`network.quiet`) is marked here, once for every
        // front end.
        match &mut e {
            Event::Connection { allowed: false, target, quiet, .. } => {
                *quiet = Target::parse(target, 0).is_ok_and(|t| self.decider.quiet(&t.host, Some(t.port)));
            }
            Event::Request { allowed: false, host, port, quiet, .. } => {
                *quiet = Target::parse(host, *port).is_ok_and(|t| self.decider.quiet(&t.host, Some(*port)));
            }
            Event::Dns { allowed: false, name, quiet, .. } => {
                *quiet = Target::parse(name.trim_end_matches('.'), 0).is_ok_and(|t| self.decider.quiet(&t.host, None));
            }
            _ => {}
        }
        if let Some(sink) = &self.sink {
            sink.record(&e);
        }
    }

    /// The name the DNS stub handed the synthetic address `ip` out for, if it did.
    pub(crate) fn name_of(&self, ip: IpAddr) -> Option<HostName> {
        let IpAddr::V4(v4) = ip else { return None };
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).name_of(v4).cloned()
    }

    /// The next connection number.
    pub(crate) fn next_id(&self) -> u64 {
        self.last_id.fetch_add(1, Relaxed) + 1
    }
}

/// An allowed connection, for its `connection_end`: the client stream's counters at the start.
pub(crate) struct Opened {
    pub(crate) id: u64,
    pub(crate) target: String,
    pub(crate) at: Instant,
}

/// The client side's counters, shared with its [`Metered`] stream.
#[derive(Clone)]
pub(crate) struct Activity {
    pub(crate) moved: Arc<Moved>,
    pub(crate) last: Arc<AtomicU64>,
    /// What `moved` held when this connection's accounting began (a CONNECT tunnel starts
    /// after the proxy's own request and response).
    pub(crate) base: (u64, u64),
}

impl Activity {
    pub(crate) fn of<S>(m: &Metered<S>) -> Activity {
        Activity { moved: m.moved.clone(), last: m.last.clone(), base: (0, 0) }
    }

    /// The same counters, accounting from now.
    pub(crate) fn starting_now(&self) -> Activity {
        Activity { base: (self.moved.up(), self.moved.down()), ..self.clone() }
    }

    pub(crate) fn carried(&self) -> (u64, u64) {
        (self.moved.up() - self.base.0, self.moved.down() - self.base.1)
    }
}

/// Records the `connection_end` of `opened`.
pub(crate) fn record_end(shared: &Shared, opened: &Opened, activity: &Activity) {
    let (up, down) = activity.carried();
    shared.record(Event::ConnectionEnd {
        id: opened.id,
        target: opened.target.clone(),
        bytes_up: up,
        bytes_down: down,
        duration_ms: opened.at.elapsed().as_millis() as u64,
    });
}

/// Serves the listeners until the process exits. Blocks the calling thread. Every DNS query,
/// connection and request decision goes to `sink`; `marks` are the session's byte totals
/// (up, down) a monitor rule watches.
pub fn serve(
    listeners: Listeners,
    decider: Decider,
    budgets: Budgets,
    sink: Option<Arc<dyn Sink>>,
    marks: (Vec<u64>, Vec<u64>),
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let watch = Watch { marks_up: marks.0, marks_down: marks.1 };
        let shared = Arc::new(Shared::new(decider, Meter::new(budgets, watch, sink)));
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
            tasks.push(tokio::spawn(crate::dns_listener::dns_udp(u, shared.clone())));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    Ok(())
}

#[derive(Clone, Copy)]
pub(crate) enum Proto {
    Http,
    Socks,
    DnsTcp,
    Transparent,
}

pub(crate) async fn accept_loop(l: std::net::TcpListener, shared: Arc<Shared>, proto: Proto) {
    if l.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(l) = TcpListener::from_std(l) else { return };
    loop {
        let conn = match l.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: retrying at once would spin.
                // Reported once per episode; the listener is tried again shortly.
                if !shared.accept_failing.swap(true, Relaxed) {
                    shared.record(Event::Limit {
                        limit: "descriptors".into(),
                        detail: format!("the gateway cannot accept connections: {e}; retrying every 100 ms"),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        shared.accept_failing.store(false, Relaxed);
        let _ = conn.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let Some(slot) = slot(&shared).await else { return };
            let _ = match proto {
                Proto::Http => forward::proxy_conn(conn, shared.clone(), slot).await,
                Proto::Socks => crate::socks_listener::socks_conn(conn, &shared, slot).await,
                Proto::DnsTcp => crate::dns_listener::dns_tcp(conn, &shared).await,
                Proto::Transparent => crate::transparent::transparent_conn(conn, &shared, slot).await,
            };
        });
    }
}

/// A connection slot, waiting for one when all are taken (reported once per episode). At
/// most as many connections wait as there are slots, each for at most the handshake
/// budget; beyond that a connection is closed at once, so waiting costs bounded descriptors.
async fn slot(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    match shared.slots.clone().try_acquire_owned() {
        Ok(slot) => {
            shared.saturated.store(false, Relaxed);
            Some(slot)
        }
        Err(_) => {
            let n = shared.budgets().max_connections;
            if !shared.saturated.swap(true, Relaxed) {
                shared.record(Event::Limit {
                    limit: "connections".into(),
                    detail: format!(
                        "all {n} connection slots are in use; up to {n} more wait, each at most the handshake budget"
                    ),
                });
            }
            if shared.waiting.fetch_add(1, Relaxed) >= n {
                shared.waiting.fetch_sub(1, Relaxed);
                return None;
            }
            let wait = tokio::time::timeout(shared.budgets().handshake, shared.slots.clone().acquire_owned()).await;
            shared.waiting.fetch_sub(1, Relaxed);
            wait.ok()?.ok()
        }
    }
}

/// Decides and resolves (off the async thread only when a lookup may block); records nothing.
pub(crate) async fn decide(shared: &Shared, target: &Target) -> Result<Checked, Refusal> {
    if !shared.decider.needs_resolution(target) {
        return shared.decider.check(target, &SystemResolver);
    }
    let (decider, t) = (shared.decider.clone(), target.clone());
    tokio::task::spawn_blocking(move || decider.check(&t, &SystemResolver))
        .await
        .unwrap_or_else(|_| Err(Refusal::Policy("internal error".into())))
}

/// [`decide`], and records the decision as a `connection` event. A synthetic address the
/// DNS stub handed out stands for its name (a SOCKS5 client that resolved the name itself).
pub(crate) async fn check(shared: &Shared, target: &Target, via: &str) -> Result<(Checked, Opened), Refusal> {
    let named;
    let target = match &target.host {
        Host::Ip(ip) => match shared.name_of(*ip) {
            Some(n) => {
                named = Target { host: Host::Name(n), port: target.port };
                &named
            }
            None => target,
        },
        Host::Name(_) => target,
    };
    let r = decide(shared, target).await;
    let id = r.is_ok().then(|| shared.next_id());
    // A name the policy allows that does not resolve is a failure of the upstream, not a
    // refusal: recorded as allowed, with the error (no rule counts it as denied).
    let (allowed, reason, error) = match &r {
        Ok(c) => (true, c.rule().to_owned(), None),
        Err(e @ Refusal::Resolve { .. }) => (true, "allowed by the policy".to_owned(), Some(e.to_string())),
        Err(e) => (false, e.to_string(), None),
    };
    shared.record(Event::Connection {
        id,
        via: via.into(),
        target: target.to_string(),
        allowed,
        reason,
        error,
        quiet: false,
    });
    let opened = Opened { id: id.unwrap_or(0), target: target.to_string(), at: Instant::now() };
    r.map(|c| (c, opened))
}

/// Connects to a checked address (each of its addresses in turn).
pub(crate) async fn dial(checked: &Checked) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in checked.addrs() {
        match TcpStream::connect(a).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::bound;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[derive(Default)]
    pub(crate) struct Recorder(pub(crate) std::sync::Mutex<Vec<Event>>);
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
        let sink: Arc<dyn Sink> = rec.clone();
        let watch = Watch { marks_up: vec![20_000], marks_down: vec![] };
        Arc::new(Shared::new(Decider::new(Default::default()), Meter::new(b, watch, Some(sink))))
    }

    /// A connected pair of TCP streams on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[test]
    fn a_tunnel_stops_at_the_upload_budget_which_is_reported_once() {
        rt().block_on(async {
            let rec = Arc::new(Recorder::default());
            let sh = shared(Budgets { max_upload: 100_000, ..Budgets::default() }, &rec);
            for _ in 0..3 {
                let (mut client, client_side) = pair().await;
                let (upstream_side, mut upstream) = pair().await;
                let m = Metered::new(client_side, sh.meter.clone());
                let activity = Activity::of(&m);
                let t = bound::splice(m, upstream_side, &activity, &sh);
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
                assert!(got <= 100_000 + 64 * 1024, "{got} bytes went out past a 100 kB budget");
            }
            assert_eq!(rec.limits(), ["upload"]);
            let traffic = rec.0.lock().unwrap().iter().filter(|e| matches!(e, Event::Traffic { .. })).count();
            assert_eq!(traffic, 1, "the 20 kB mark is crossed once");
        });
    }

    #[test]
    fn idle_tunnels_close() {
        rt().block_on(async {
            let rec = Arc::new(Recorder::default());
            let sh = shared(Budgets { idle: Duration::from_millis(50), ..Budgets::default() }, &rec);
            let (_client, client_side) = pair().await;
            let (upstream_side, _upstream) = pair().await;
            let m = Metered::new(client_side, sh.meter.clone());
            let activity = Activity::of(&m);
            let r = tokio::time::timeout(Duration::from_secs(5), bound::splice(m, upstream_side, &activity, &sh)).await;
            assert!(matches!(r, Ok(Err(_))), "an idle tunnel stayed open");
        });
    }

    #[test]
    fn waiting_for_a_slot_is_bounded_in_number_and_time() {
        rt().block_on(async {
            let rec = Arc::new(Recorder::default());
            let b = Budgets { max_connections: 1, handshake: Duration::from_millis(400), ..Budgets::default() };
            let sh = shared(b, &rec);
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(accept_loop(l, sh.clone(), Proto::DnsTcp));
            // One holds the slot (a silent DNS client, for the handshake budget), one waits,
            // and the third is closed at once.
            let _holder = TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _waiter = TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut third = TcpStream::connect(addr).await.unwrap();
            let closed = tokio::time::timeout(Duration::from_millis(200), third.read(&mut [0u8; 1])).await;
            assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a third connection waited: {closed:?}");
            assert_eq!(sh.waiting.load(Relaxed), 1);
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
}

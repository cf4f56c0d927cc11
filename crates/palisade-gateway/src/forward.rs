//! HTTP/1.1 through the gateway, request by request, with `hyper` on both sides: the client's
//! requests are parsed and framed by hyper's server, each is decided, rewritten for the origin
//! ([`crate::http::to_origin`]) and sent with hyper's client on a kept-alive upstream
//! connection; the response streams back. Nothing the client sends reaches an upstream
//! except as a request hyper parsed and this module allowed, so a second request hidden in
//! the first one's bytes (pipelining, smuggling) is decided like any other.
//!
//! Two scopes: the HTTP proxy ([`Scope::Proxy`]: absolute-form or `Host`, each request
//! decided by the policy, CONNECT opens a tunnel) and plaintext HTTP inside an allowed tunnel
//! ([`Scope::Bound`]: every request must name the tunnel's host and port).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use palisade_monitor::Event;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::decision::Checked;
use crate::http::{self as rules, Body, Error as HttpError, refusal};
use crate::meter::{Metered, Moved, idle_for};
use crate::server::{Activity, Opened, Shared, check, decide, dial, record_end};

/// Where the requests on one client connection may go.
pub(crate) enum Scope {
    /// The HTTP proxy: every request decided on its own target.
    Proxy,
    /// Inside a tunnel allowed for `checked` (connection `conn`): every request must name it.
    /// `spare` is an upstream connection already made for the tunnel, used first.
    Bound { checked: Checked, conn: u64, via: &'static str, spare: Option<TcpStream> },
}

/// An upstream connection kept alive between requests.
struct Upstream {
    checked: Checked,
    sender: SendRequest<Counted<Incoming>>,
}

/// The tunnel a connection's requests are bound to.
struct Bound {
    checked: Checked,
    /// The tunnel's `connection` id.
    conn: u64,
}

struct State {
    shared: Arc<Shared>,
    /// `http` for the proxy, else the tunnel's path.
    via: &'static str,
    /// `None` for the proxy.
    bound: Option<Bound>,
    /// The tunnel's upstream connection made before its first request, used first.
    spare: std::sync::Mutex<Option<TcpStream>>,
    upstream: tokio::sync::Mutex<Option<Upstream>>,
    activity: Activity,
    /// CONNECT tunnels opened on this connection, awaited before it ends.
    tunnels: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl State {
    /// The host and port a record names when the request named none it could be decided
    /// on: the tunnel's, or `-` on the proxy.
    fn default_target(&self) -> (String, u16) {
        match &self.bound {
            Some(b) => (b.checked.target().host.to_string(), b.checked.target().port),
            None => ("-".into(), 0),
        }
    }

    /// A `request` record for `method` to `host:port` on this connection.
    fn record(&self, method: &str, host: String, port: u16, path: String) -> Record {
        Record {
            shared: self.shared.clone(),
            connection: self.bound.as_ref().map(|b| b.conn),
            via: self.via,
            method: method.to_owned(),
            host,
            port,
            path,
            moved: Arc::default(),
        }
    }
}

/// A client connection to the HTTP proxy listener.
pub(crate) async fn proxy_conn(
    conn: TcpStream,
    shared: Arc<Shared>,
    slot: OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let conn = Metered::new(conn, shared.meter.clone());
    let activity = Activity::of(&conn);
    let r = serve_http(conn, Scope::Proxy, shared, activity).await;
    drop(slot);
    r
}

/// A boxed [`serve_http`], for use inside a tunnel (a CONNECT tunnel's task holds one, so the
/// future types would otherwise refer to themselves).
pub(crate) fn serve_http_boxed<S>(
    io: S,
    scope: Scope,
    shared: Arc<Shared>,
    activity: Activity,
) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(serve_http(io, scope, shared, activity))
}

/// Serves HTTP/1.1 on `io` until the client closes, the connection idles past the budget, or
/// a refusal closes it. CONNECT tunnels opened on it are awaited.
pub(crate) async fn serve_http<S>(io: S, scope: Scope, shared: Arc<Shared>, activity: Activity) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (via, bound, spare) = match scope {
        Scope::Proxy => ("http", None, None),
        Scope::Bound { checked, conn, via, spare } => (via, Some(Bound { checked, conn }), spare),
    };
    let state = Arc::new(State {
        shared: shared.clone(),
        via,
        bound,
        spare: std::sync::Mutex::new(spare),
        upstream: tokio::sync::Mutex::new(None),
        activity: activity.clone(),
        tunnels: Default::default(),
    });
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        })
    };
    let budgets = shared.budgets();
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(budgets.handshake)
        .max_header_size(rules::MAX_HEAD)
        .max_headers(rules::MAX_HEADERS)
        .preserve_header_case(true)
        .auto_date_header(false)
        // A client that shuts down its sending side after a request (`nc -N`, scripts) still
        // gets the response.
        .half_close(true);
    let conn = b.serve_connection(TokioIo::new(io), service).with_upgrades();
    let r = tokio::select! {
        r = conn => r,
        _ = idle_for(&shared.meter, &activity.last, budgets.idle) => Ok(()),
    };
    if let Err(e) = &r
        && (e.is_parse() || e.is_parse_too_large() || e.is_parse_status() || e.is_timeout())
    {
        let status = if e.is_parse_too_large() {
            Some(431)
        } else if e.is_timeout() {
            None
        } else {
            Some(400)
        };
        let (host, port) = state.default_target();
        state.record("-", host, port, String::new()).done(false, format!("malformed request: {e}"), status);
    }
    let tunnels: Vec<_> = std::mem::take(&mut *state.tunnels.lock().unwrap_or_else(|e| e.into_inner()));
    for t in tunnels {
        let _ = t.await;
    }
    Ok(())
}

/// What a `request` event says, filled in as the request goes.
struct Record {
    shared: Arc<Shared>,
    connection: Option<u64>,
    via: &'static str,
    method: String,
    host: String,
    port: u16,
    path: String,
    moved: Arc<Moved>,
}

impl Record {
    fn done(&self, allowed: bool, reason: String, status: Option<u16>) {
        self.shared.record(Event::Request {
            connection: self.connection,
            via: self.via.into(),
            method: self.method.clone(),
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            allowed,
            reason,
            status,
            bytes_up: self.moved.up(),
            bytes_down: self.moved.down(),
            quiet: false,
        });
    }
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let shared = &state.shared;
    let bound = state.bound.as_ref();
    if req.method() == Method::CONNECT {
        if bound.is_some() {
            return refuse_early(state, &req, "CONNECT inside a tunnel is refused".into(), StatusCode::FORBIDDEN);
        }
        return connect(state, req).await;
    }
    // `*` is OPTIONS's alone (RFC 9112 §3.2.4); found by the conversation fuzzer.
    if req.uri() == "*" && req.method() != Method::OPTIONS {
        let why = "the request target * is only for OPTIONS".to_owned();
        return refuse_early(state, &req, why, StatusCode::BAD_REQUEST);
    }
    let default_port = bound.map_or(80, |b| b.checked.target().port);
    // Inside a tunnel, a request without a host (HTTP/1.0) is for the tunnel's.
    let hostless = req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST);
    let target = match rules::request_target(req.uri(), req.headers(), default_port) {
        _ if hostless && bound.is_some() => bound.map(|b| b.checked.target().clone()).expect("bound"),
        Ok(t) => t,
        Err(HttpError::Bad(why)) => return refuse_early(state, &req, why, StatusCode::BAD_REQUEST),
        Err(HttpError::Refused(why)) => return refuse_early(state, &req, why, StatusCode::FORBIDDEN),
    };
    let path = rules::path_for_record(req.uri());
    let mut record = state.record(req.method().as_str(), target.host.to_string(), target.port, path);
    let (checked, rule) = match bound {
        Some(Bound { checked, .. }) => {
            let claimed = target.to_string();
            if !crate::bound::names(checked.target(), &claimed) {
                let why = format!(
                    "this connection was allowed for {} by {}; a request for {claimed} on it is refused",
                    checked.target(),
                    checked.rule()
                );
                record.done(false, why.clone(), Some(403));
                return refusal(StatusCode::FORBIDDEN, &why);
            }
            (checked.clone(), checked.rule().to_owned())
        }
        None => match decide(shared, &target).await {
            Ok(c) => {
                let rule = c.rule().to_owned();
                (c, rule)
            }
            // Allowed, but the name does not resolve: the origin failed, not the policy
            // (as for a tunnel: no denied_connections rule counts it).
            Err(e @ crate::decision::Refusal::Resolve { .. }) => {
                let why = e.to_string();
                record.done(true, why.clone(), Some(502));
                return refusal(StatusCode::BAD_GATEWAY, &why);
            }
            Err(e) => {
                let why = e.to_string();
                record.done(false, why.clone(), Some(403));
                return refusal(StatusCode::FORBIDDEN, &why);
            }
        },
    };
    let moved = record.moved.clone();
    let mut req = req;
    let client_upgrade = rules::websocket_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let body_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let req = rules::to_origin(req, &target).map(|b| {
        let mut c = Counted::new(b, moved.clone(), true, None);
        c.error = Some(body_error.clone());
        c
    });
    let sent = {
        let mut slot = state.upstream.lock().await;
        match ready(state, &mut slot, &checked).await {
            Ok(u) => {
                if record.connection.is_none() {
                    record.connection = u.1;
                }
                u.0.send_request(req)
            }
            Err(e) => {
                let why = format!("cannot connect to {}: {e}", checked.target());
                record.done(true, why.clone(), Some(502));
                return refusal(StatusCode::BAD_GATEWAY, &why);
            }
        }
    };
    match sent.await {
        Ok(mut resp) => {
            // A WebSocket the origin accepted: both upgraded connections are spliced.
            let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS && rules::websocket_upgrade(resp.headers());
            let websocket = match client_upgrade {
                Some(client) if switched => {
                    let origin = hyper::upgrade::on(&mut resp);
                    let (shared, activity) = (shared.clone(), state.activity.clone());
                    let task = tokio::spawn(async move {
                        if let (Ok(c), Ok(o)) = (client.await, origin.await) {
                            let _ = crate::bound::splice(TokioIo::new(c), TokioIo::new(o), &activity, &shared).await;
                        }
                    });
                    state.tunnels.lock().unwrap_or_else(|e| e.into_inner()).push(task);
                    true
                }
                _ if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let why = format!("the upstream {} switched protocols without being asked to", checked.target());
                    record.done(true, why.clone(), Some(502));
                    return refusal(StatusCode::BAD_GATEWAY, &why);
                }
                _ => false,
            };
            let (mut parts, body) = resp.into_parts();
            rules::strip_keeping_websocket(&mut parts.headers, websocket);
            let status = parts.status.as_u16();
            let end = Finish { record, rule, status };
            Response::from_parts(parts, Counted::new(body, moved, false, Some(end)).map_err(Into::into).boxed())
        }
        Err(e) => {
            // The client's body broke off (malformed chunks, the upload budget): its fault.
            if let Some(cause) = body_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let why = format!("the request body was refused: {cause}");
                record.done(false, why.clone(), Some(400));
                return refusal(StatusCode::BAD_REQUEST, &why);
            }
            let why = format!("the upstream {} failed: {}", checked.target(), chain(&e));
            record.done(true, why.clone(), Some(502));
            refusal(StatusCode::BAD_GATEWAY, &why)
        }
    }
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A refusal before a target is known or for a malformed request.
fn refuse_early(state: &State, req: &Request<Incoming>, why: String, status: StatusCode) -> Response<Body> {
    let (host, port) = match (&state.bound, req.uri().authority()) {
        (None, Some(a)) => (a.host().to_owned(), a.port_u16().unwrap_or(0)),
        _ => state.default_target(),
    };
    let path = rules::path_for_record(req.uri());
    state.record(req.method().as_str(), host, port, path).done(false, why.clone(), Some(status.as_u16()));
    refusal(status, &why)
}

/// An upstream connection to `checked`, ready for a request: the kept one when it goes to the
/// same place and is still open, else a new one (the tunnel's spare first). Returns the
/// sender and, for the proxy, the new upstream connection's number.
async fn ready<'a>(
    state: &State,
    slot: &'a mut Option<Upstream>,
    checked: &Checked,
) -> std::io::Result<(&'a mut SendRequest<Counted<Incoming>>, Option<u64>)> {
    let reusable = slot.as_ref().is_some_and(|u| &u.checked == checked && !u.sender.is_closed());
    if reusable {
        let u = slot.as_mut().expect("checked above");
        if u.sender.ready().await.is_ok() {
            return Ok((&mut slot.as_mut().expect("checked above").sender, None));
        }
    }
    *slot = None;
    let spare = state.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
    let stream = match spare {
        Some(s) => s,
        None => dial(checked).await?,
    };
    // The proxy's upstream connections are connections of their own; a tunnel's belong to it.
    let (opened, id) = if state.bound.is_none() {
        let id = state.shared.next_id();
        state.shared.record(Event::Connection {
            id: Some(id),
            via: "http".into(),
            target: checked.target().to_string(),
            allowed: true,
            reason: checked.rule().to_owned(),
            error: None,
            quiet: false,
        });
        (Some(Opened { id, target: checked.target().to_string(), at: Instant::now() }), Some(id))
    } else {
        (None, None)
    };
    let tally = crate::meter::Tally::new(stream);
    let moved = tally.moved.clone();
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .max_headers(rules::MAX_HEADERS)
        .handshake(TokioIo::new(tally))
        .await
        .map_err(std::io::Error::other)?;
    let shared = state.shared.clone();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
        if let Some(o) = opened {
            let a = Activity { moved, last: Arc::default(), base: (0, 0) };
            record_end(&shared, &o, &a);
        }
    });
    *slot = Some(Upstream { checked: checked.clone(), sender });
    Ok((&mut slot.as_mut().expect("just set").sender, id))
}

/// CONNECT on the proxy: decide, dial, answer 200, then serve the tunnel once hyper hands
/// over the connection.
async fn connect(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let shared = &state.shared;
    let target = match rules::connect_target(req.uri()) {
        Ok(t) => t,
        Err(e) => return refuse_early(state, &req, e.to_string(), StatusCode::BAD_REQUEST),
    };
    let (checked, opened) = match check(shared, &target, "connect").await {
        Ok(c) => c,
        Err(e) => return refusal(StatusCode::FORBIDDEN, &e.to_string()),
    };
    let up = match dial(&checked).await {
        Ok(u) => u,
        Err(e) => {
            record_end(shared, &opened, &state.activity.starting_now());
            return refusal(StatusCode::BAD_GATEWAY, &format!("cannot connect to {target}: {e}"));
        }
    };
    let (shared, activity) = (shared.clone(), state.activity.clone());
    let task = tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            record_end(&shared, &opened, &activity.starting_now());
            return;
        };
        let tunnel =
            crate::bound::Tunnel { checked, opened, via: "connect", activity: activity.starting_now(), slot: None };
        let _ = crate::bound::serve(TokioIo::new(upgraded), tunnel, Some(up), shared).await;
    });
    state.tunnels.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    Response::new(rules::full(Bytes::new()))
}

/// Records the `request` event when the response body ends (or is dropped).
struct Finish {
    record: Record,
    rule: String,
    status: u16,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.record.done(true, std::mem::take(&mut self.rule), Some(self.status));
    }
}

/// A body that counts its data bytes into `moved` (`up` for request bodies), and finishes
/// its request's record when dropped.
pub(crate) struct Counted<B> {
    inner: B,
    moved: Arc<Moved>,
    up: bool,
    _finish: Option<Finish>,
    /// Where the body's first error is kept, with its causes.
    error: Option<Arc<std::sync::Mutex<Option<String>>>>,
}

impl<B> Counted<B> {
    fn new(inner: B, moved: Arc<Moved>, up: bool, finish: Option<Finish>) -> Counted<B> {
        Counted { inner, moved, up, _finish: finish, error: None }
    }
}

impl<B: HttpBody<Data = Bytes> + Unpin> HttpBody for Counted<B>
where
    B::Error: std::error::Error,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    let n = d.len() as u64;
                    let counter = if self.up { &self.moved.up } else { &self.moved.down };
                    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(slot) = &self.error {
                    slot.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| chain(e));
                }
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

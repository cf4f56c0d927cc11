//! Harnesses for the fuzz targets in `fuzz/` (feature `fuzzing`; not part of the API).
//!
//! [`conversation`] plays arbitrary client bytes through the per-request HTTP path inside a
//! tunnel allowed for `a.test:80`, with a `hyper` origin on the other side that records what
//! it parsed: a fuzz target asserts that every request the origin saw names `a.test` in
//! origin-form, and that the origin could parse everything the gateway sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_policy::{LayerKind, Lexical, ResolveOptions, Target, Vars, parse_layer, resolve};

use crate::decision::Decider;
use crate::forward::{Scope, serve_http};
use crate::meter::{Budgets, Meter, Metered, Watch};
use crate::server::{Activity, Shared, SystemResolver};

/// What one conversation produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Bytes the client received.
    pub to_client: Vec<u8>,
    /// Requests the origin parsed: (method, URI, Host header).
    pub at_origin: Vec<(String, String, Option<String>)>,
    /// An error the origin's parser reported, if any.
    pub origin_error: Option<String>,
}

/// Sends `input` (then end of stream) into a tunnel allowed for `a.test:80` and returns what
/// happened. Bounded: every step has a short timeout.
pub fn conversation(input: &[u8]) -> Outcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let vars = Vars::with_defaults(std::path::Path::new("/home/u"), std::path::Path::new("/w/p"));
        let text = "[network]\nmode = \"allowlist\"\nallow = [\"a.test:80\"]\nhosts = { \"a.test\" = \"127.0.0.1\" }\nhandshake_timeout = \"1s\"\n";
        let layer = parse_layer(text, "fuzz.toml", LayerKind::User, &vars, &Lexical).expect("policy");
        let policy = resolve(std::path::Path::new("/w/p"), std::path::Path::new("/home/u"), vec![layer], ResolveOptions::default())
            .expect("policy");
        let decider = Decider::new(policy.rules);
        let target = Target::parse("a.test:80", 80).expect("target");
        let checked = decider.check(&target, &SystemResolver).expect("allowed");
        let budgets = Budgets { handshake: Duration::from_secs(1), ..Budgets::default() };
        let shared = Arc::new(Shared::new(decider, Meter::new(budgets, Watch::default(), None)));
        // The origin: a loopback TCP connection made here (the gateway never dials).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
        let up_gw = tokio::net::TcpStream::connect(l.local_addr().expect("address")).await.expect("connect");
        let (up_origin, _) = l.accept().await.expect("accept");
        let (client, gw_client) = {
            let c = l.local_addr().expect("address");
            let client = tokio::net::TcpStream::connect(c).await.expect("connect");
            (client, l.accept().await.expect("accept").0)
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let origin_error = Arc::new(Mutex::new(None));
        let origin = {
            let (seen, err) = (seen.clone(), origin_error.clone());
            let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let host = req.headers().get(http::header::HOST).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((req.method().to_string(), req.uri().to_string(), host));
                async move {
                    use http_body_util::BodyExt;
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(crate::http::full("ok")))
                }
            });
            async move {
                let r = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(up_origin), service)
                    .await;
                if let Err(e) = r
                    && (e.is_parse() || e.is_parse_too_large()) {
                        *err.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    }
            }
        };
        let meter = shared.meter.clone();
        let gateway = async move {
            let io = Metered::new(gw_client, meter);
            let activity = Activity::of(&io);
            let scope = Scope::Bound { checked, conn: 1, via: "fuzz", spare: Some(up_gw) };
            let _ = serve_http(io, scope, shared, activity).await;
        };
        let talk = async move {
            let (mut r, mut w) = client.into_split();
            let _ = w.write_all(input).await;
            let _ = w.shutdown().await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), r.read_to_end(&mut out)).await;
            out
        };
        let origin = tokio::spawn(origin);
        let (to_client, _) =
            tokio::join!(talk, tokio::time::timeout(Duration::from_secs(3), gateway));
        let _ = tokio::time::timeout(Duration::from_millis(200), origin).await;
        let at_origin = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        let origin_error = origin_error.lock().unwrap_or_else(|e| e.into_inner()).take();
        Outcome { to_client, at_origin, origin_error }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipelined_request_for_another_host_never_reaches_the_origin() {
        let o = conversation(
            b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\nGET /two HTTP/1.1\r\nHost: b.test\r\n\r\nPOST /three HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc",
        );
        let text = String::from_utf8_lossy(&o.to_client);
        assert_eq!(o.at_origin, [("GET".into(), "/one".into(), Some("a.test".into()))], "{text}");
        assert!(text.starts_with("HTTP/1.1 200 OK") && text.contains("403 Forbidden"), "{text}");
        assert_eq!(o.origin_error, None);
    }

    #[test]
    fn found_by_fuzzing() {
        // An asterisk-form target with another method than OPTIONS, without Host.
        let o = conversation(b"~!*I * HTTP/1.0\n\r\nM");
        assert_eq!((o.origin_error, o.at_origin.len()), (None, 0));
        let reply = String::from_utf8_lossy(&o.to_client).into_owned();
        assert!(reply.starts_with("HTTP/1.0 400") || reply.starts_with("HTTP/1.1 400"), "{reply}");
        // A client that shuts down its sending side after one request gets the response.
        let g = conversation(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
        assert!(String::from_utf8_lossy(&g.to_client).starts_with("HTTP/1.1 200 OK"));
        let o = conversation(b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n");
        assert_eq!(o.at_origin, [("OPTIONS".into(), "*".into(), Some("a.test".into()))]);
    }
}

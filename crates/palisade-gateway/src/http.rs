//! HTTP/1.1 request rules, on requests `hyper` has already parsed and framed: where a request
//! goes (absolute-form URI or `Host`, RFC 9112 §3.2), the origin-form it is forwarded in
//! (§3.2.1), the hop-by-hop headers a proxy drops (RFC 9110 §7.6.1), and the responses the
//! gateway writes itself.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use palisade_policy::Target;

/// The most a request head may take (request line and headers); a longer one gets a 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header lines a request may have; more gets a 431.
pub const MAX_HEADERS: usize = 100;

/// Errors of bodies on either side.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the gateway sends to a client.
pub type Body = BoxBody<Bytes, BoxError>;

/// Why a request is not forwarded, with the status it gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Malformed or not for a proxy: 400.
    #[error("{0}")]
    Bad(String),
    /// Well-formed but refused: 403.
    #[error("{0}")]
    Refused(String),
}

/// Where a non-CONNECT request goes, from its absolute-form URI or (origin-form) its `Host`;
/// a name without a port means `default_port` (80 for the proxy, the tunnel's port inside a
/// tunnel). An absolute-form URI and a `Host` header must name the same host and port.
/// `https://` URIs are refused (a client asks for a tunnel with CONNECT). Userinfo is refused.
pub fn request_target(uri: &Uri, headers: &HeaderMap, default_port: u16) -> Result<Target, Error> {
    let host = host_header(headers)?;
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(Error::Bad(format!("{scheme}:// URLs go through CONNECT, not a plain request")));
        }
        let authority = uri.authority().ok_or_else(|| Error::Bad("the URL has no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(Error::Bad("credentials in the URL are refused".into()));
        }
        let target = Target::parse(authority.as_str(), default_port).map_err(|_| Error::Bad(NOT_A_HOST_URL.into()))?;
        if let Some(h) = host {
            let named = Target::parse(h, default_port).map_err(|_| Error::Bad(NOT_A_HOST_HEADER.into()))?;
            if named != target {
                return Err(Error::Refused(format!("the Host header names {named}, not {target}, the URL's host")));
            }
        }
        return Ok(target);
    }
    if uri.authority().is_some() {
        return Err(Error::Bad("a host without a scheme is only for CONNECT".into()));
    }
    let h = host.ok_or_else(|| Error::Bad("no Host header".into()))?;
    Target::parse(h, default_port).map_err(|_| Error::Bad(NOT_A_HOST_HEADER.into()))
}

// What the client sent is not repeated in a refusal: it is recorded, and a URL or header may
// carry credentials.
const NOT_A_HOST_URL: &str = "the URL's host is not a valid host[:port]";
const NOT_A_HOST_HEADER: &str = "the Host header is not a valid host[:port]";

/// The `Host` header's value: at most one, visible ASCII.
fn host_header(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let mut all = headers.get_all(header::HOST).iter();
    let Some(first) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err(Error::Bad("more than one Host header".into()));
    }
    let text = first.to_str().map_err(|_| Error::Bad("the Host header is not visible ASCII".into()))?;
    Ok(Some(text.trim()))
}

/// The target of a CONNECT (authority-form, RFC 9112 §3.2.3).
pub fn connect_target(uri: &Uri) -> Result<Target, Error> {
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Error::Bad("credentials in the CONNECT target are refused".into()));
    }
    let authority = match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, Some(a), None) => a,
        (None, Some(a), Some(p)) if p.as_str().is_empty() || p.as_str() == "/" => a,
        _ => return Err(Error::Bad("CONNECT needs host:port (authority-form)".into())),
    };
    if authority.port_u16().is_none() {
        return Err(Error::Bad("CONNECT needs host:port, and names no port".into()));
    }
    Target::parse(authority.as_str(), 443).map_err(|_| Error::Bad("the CONNECT target is not a valid host:port".into()))
}

/// The origin-form of `uri` (path and query; `/` when empty; `*` stays `*`).
pub fn origin_form(uri: &Uri) -> Uri {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let pq = if pq.is_empty() { "/" } else { pq };
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// The path for the record: no query or fragment, at most 200 characters.
pub fn path_for_record(uri: &Uri) -> String {
    let p = uri.path();
    let mut s: String = p.chars().take(200).collect();
    if p.len() > s.len() {
        s.push('…');
    }
    s
}

/// Removes the headers that belong to one connection (RFC 9110 §7.6.1): those `Connection`
/// lists, and the standard hop-by-hop ones, including the proxy's own credentials. `Upgrade`
/// goes too: the gateway does not switch protocols on a forwarded request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
}

/// Whether a request (or a 101 response) asks to switch to WebSocket (RFC 6455 §4.1): the
/// only upgrade the gateway passes on. Others (`h2c`, which would carry requests for any
/// host in HTTP/2 frames) are dropped with the other hop-by-hop headers.
pub fn websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers.get_all(header::UPGRADE).iter().collect::<Vec<_>>();
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && upgrade.len() == 1 && upgrade[0].as_bytes().eq_ignore_ascii_case(b"websocket")
}

/// [`strip_hop_by_hop`], keeping a WebSocket upgrade (`Connection: upgrade`,
/// `Upgrade: websocket`) when `websocket`.
pub fn strip_keeping_websocket(headers: &mut HeaderMap, websocket: bool) {
    strip_hop_by_hop(headers);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// Rewrites a parsed client request into what the origin gets: origin-form, hop-by-hop
/// headers dropped (a WebSocket upgrade kept), `Host` naming `target` exactly as the client
/// wrote it when it did.
pub fn to_origin<B>(req: Request<B>, target: &Target) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    parts.uri = origin_form(&parts.uri);
    parts.version = http::Version::HTTP_11;
    let websocket = websocket_upgrade(&parts.headers);
    strip_keeping_websocket(&mut parts.headers, websocket);
    if !parts.headers.contains_key(header::HOST) {
        let text = if target.port == 80 { target.host.to_string() } else { target.to_string() };
        if let Ok(v) = HeaderValue::from_str(&text) {
            parts.headers.insert(header::HOST, v);
        }
    }
    Request::from_parts(parts, body)
}

/// A response the gateway writes itself; the reason goes in the body and in
/// `X-Palisade-Denied` (control characters removed), and the connection closes after it.
pub fn refusal(status: StatusCode, reason: &str) -> Response<Body> {
    let clean: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let body = format!("palisade: request refused: {clean}\n");
    let header: String = clean.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).collect();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Ok(v) = HeaderValue::from_str(&header) {
        h.insert("x-palisade-denied", v);
    }
    r
}

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: &[&str]) -> Result<Target, Error> {
        let mut h = HeaderMap::new();
        for v in host {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        request_target(&uri.parse().unwrap(), &h, 80)
    }

    #[test]
    fn absolute_and_origin_form() {
        assert_eq!(req("http://Example.COM:8080/x?y", &[]).unwrap().to_string(), "example.com:8080");
        assert_eq!(req("http://a.test/x", &["a.test"]).unwrap().to_string(), "a.test:80");
        assert_eq!(req("/", &["pypi.org"]).unwrap().to_string(), "pypi.org:80");
        assert_eq!(req("/", &["a.test:8080"]).unwrap().to_string(), "a.test:8080");
    }

    #[test]
    fn refused_and_malformed() {
        assert!(matches!(req("http://a.test:81/", &["127.0.0.2:81"]), Err(Error::Refused(_))));
        assert!(matches!(req("http://a.test:81/", &["a.test"]), Err(Error::Refused(_))), "port differs");
        for (uri, host) in [
            ("https://a.test/", &[][..]),
            ("http://user:pw@evil.test/", &[]),
            ("/", &[]),
            ("/", &["a.test", "b.test"]),
            ("/", &["a.test\u{1}"]),
        ] {
            let mut h = HeaderMap::new();
            for v in host {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.append(header::HOST, v);
                }
            }
            let r = request_target(&uri.parse().unwrap(), &h, 80);
            assert!(r.is_err(), "{uri} {host:?}: {r:?}");
            assert!(!r.unwrap_err().to_string().contains("a.test\u{1}"));
        }
    }

    #[test]
    fn connect_needs_host_and_port() {
        assert_eq!(connect_target(&"a.test:443".parse().unwrap()).unwrap().to_string(), "a.test:443");
        assert!(connect_target(&"a.test".parse().unwrap()).is_err());
        assert!(connect_target(&"http://a.test:443/".parse().unwrap()).is_err());
        for secret in ["user:s3cret@a.test:443", "http://alice:s3cret@a.test/p?k=s3cret"] {
            let e = connect_target(&secret.parse().unwrap()).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn forwarded_in_origin_form_without_hop_by_hop_headers() {
        let r = Request::builder()
            .uri("http://a.test:8080/v1/items?page=2")
            .header("host", "a.test:8080")
            .header("connection", "keep-alive, x-secret-hop")
            .header("x-secret-hop", "1")
            .header("proxy-authorization", "Basic eA==")
            .header("proxy-connection", "keep-alive")
            .header("upgrade", "h2c")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let t = Target::parse("a.test:8080", 80).unwrap();
        let o = to_origin(r, &t);
        assert_eq!(o.uri().to_string(), "/v1/items?page=2");
        let names: Vec<_> = o.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "accept"]);
        let o =
            to_origin(Request::builder().uri("http://a.test").body(()).unwrap(), &Target::parse("a.test", 80).unwrap());
        assert_eq!((o.uri().to_string().as_str(), o.headers()["host"].to_str().unwrap()), ("/", "a.test"));
        assert_eq!(path_for_record(&"http://a.test/p/q?token=s3cret".parse().unwrap()), "/p/q");
    }

    #[test]
    fn refusal_is_well_formed() {
        let r = refusal(StatusCode::FORBIDDEN, "deny \"evil.com\"\r\nX-Injected: 1");
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("x-injected").is_none());
        assert!(r.headers()["x-palisade-denied"].to_str().unwrap().starts_with("deny"));
    }
}

//! The HTTP proxy's front end: request heads parsed with `httparse`, the target taken from
//! `CONNECT host:port`, an absolute URI (`GET http://host/...`) or, for plain requests, the
//! `Host` header. Every request on a keep-alive connection goes through here again.

use palisade_policy::Target;

use crate::Parse;

/// The most a request head may take; a longer one is refused.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub target: Target,
    /// `CONNECT`: the rest of the connection is a tunnel.
    pub connect: bool,
    /// Value of the `Host` header, if any (checked against the target by the caller).
    pub host_header: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP: {0}")]
pub struct Error(pub String);

/// Parses one request head from `buf`.
pub fn head(buf: &[u8]) -> Result<Parse<Head>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Error("request head too large".into())),
        Ok(httparse::Status::Partial) => return Ok(Parse::Incomplete),
        Err(e) => return Err(Error(e.to_string())),
    };
    let method = req.method.unwrap_or_default().to_owned();
    let path = req.path.unwrap_or_default();
    let host_header = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_owned());
    let (target, connect) = if method == "CONNECT" {
        (Target::parse(path, 443).map_err(|e| Error(format!("CONNECT target: {e}")))?, true)
    } else if let Some(rest) = path.strip_prefix("http://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(Error("credentials in the URL are refused".into()));
        }
        (Target::parse(authority, 80).map_err(|e| Error(format!("URL host: {e}")))?, false)
    } else if path.starts_with('/') {
        let host = host_header.as_deref().ok_or_else(|| Error("no Host header".into()))?;
        (Target::parse(host, 80).map_err(|e| Error(format!("Host header: {e}")))?, false)
    } else {
        return Err(Error(format!("unsupported request target {path:?} (https:// URLs go through CONNECT)")));
    };
    Ok(Parse::Done(Head { method, target, connect, host_header }, used))
}

/// A 403 response that says which rule refused.
pub fn forbidden(reason: &str) -> Vec<u8> {
    let clean: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let body = format!("palisade: connection refused: {clean}\n");
    let header: String = clean.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).collect();
    format!(
        "HTTP/1.1 403 Forbidden\r\nX-Palisade-Denied: {header}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(b: &[u8]) -> Head {
        match head(b).unwrap() {
            Parse::Done(h, n) => {
                assert_eq!(n, b.len());
                h
            }
            Parse::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn connect_absolute_and_host_forms() {
        let h = done(b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n");
        assert!(h.connect);
        assert_eq!(h.target.to_string(), "api.example.com:443");
        let h = done(b"GET http://Example.COM:8080/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!((h.target.to_string(), h.connect), ("example.com:8080".to_owned(), false));
        let h = done(b"GET / HTTP/1.1\r\nHost: pypi.org\r\n\r\n");
        assert_eq!(h.target.to_string(), "pypi.org:80");
        assert_eq!(h.host_header.as_deref(), Some("pypi.org"));
    }

    #[test]
    fn incomplete_oversized_and_hostile() {
        let req = b"CONNECT a.example.com:443 HTTP/1.1\r\n\r\n";
        for i in 0..req.len() {
            assert_eq!(head(&req[..i]).unwrap(), Parse::Incomplete, "prefix {i}");
        }
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert!(head(&big).is_err());
        for bad in [
            &b"GET http://user:pw@evil.com/ HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"CONNECT evil.com\x00.good.com:443 HTTP/1.1\r\n\r\n",
            b"GET https://a.com/ HTTP/1.1\r\n\r\n",
            b"CONNECT *:443 HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x00\x05hello\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn forbidden_response_is_well_formed() {
        let r = String::from_utf8(forbidden("deny \"evil.com\"\r\nX-Injected: 1")).unwrap();
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(!r.contains("\r\nX-Injected"), "header injection: {r}");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}

//! What the first bytes of a transparent connection say about where it is going: the TLS
//! ClientHello's server name (`tls-parser`), an HTTP/1 request line, or something else. Every
//! tunnel requires the server name to match the name it was allowed for (THREATS C-07) and
//! hands HTTP to the per-request proxy.

use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_extensions, parse_tls_plaintext};

use crate::{Parse, http};

/// The protocol the client opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// TLS, with the server name it asks for (if any).
    Tls(Option<String>),
    /// HTTP/1.0 or 1.1 (its requests are then parsed and checked one by one).
    Http,
    /// Anything else (SSH and other protocols carry no name).
    Other,
}

/// Classifies the first bytes; [`Parse::Incomplete`] until a whole ClientHello or HTTP request
/// line has arrived. A TLS record that does not hold a well-formed ClientHello is an error.
/// The count in [`Parse::Done`] is informational: the caller replays every byte it read.
pub fn classify(buf: &[u8]) -> Result<Parse<Opening>, String> {
    let Some(&first) = buf.first() else { return Ok(Parse::Incomplete) };
    if first == 0x16 {
        return match parse_tls_plaintext(buf) {
            Err(tls_parser::nom::Err::Incomplete(_)) => Ok(Parse::Incomplete),
            Err(_) => Err("malformed TLS record".into()),
            Ok((rest, record)) => {
                let used = buf.len() - rest.len();
                for m in &record.msg {
                    if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = m {
                        return Ok(Parse::Done(Opening::Tls(server_name(ch.ext)?), used));
                    }
                }
                Err("the first TLS record is not a ClientHello".into())
            }
        };
    }
    http_request_line(buf)
}

/// Methods a lenient server takes even without a version (HTTP/0.9) or in odd case.
const METHODS: [&[u8]; 16] = [
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
];

/// Whatever an HTTP server might take for a request goes to hyper, which decides it or
/// refuses it; it never passes as raw bytes. The first line (ended by LF or a bare CR, after
/// empty lines, which servers skip, RFC 9112 §2.2) is read leniently, as the most lenient
/// servers do: whitespace of any kind between words, leading whitespace, NUL or a BOM
/// ignored. It is HTTP when its last word is an `HTTP/` version (any case, any version,
/// `PRI * HTTP/2.0` included), or when its first word is an HTTP method (any case) and the
/// second a path, `*` or a URL. A first line still arriving is waited for while it is
/// printable text, up to the head limit (then it is HTTP, for hyper to refuse). Anything else
/// is [`Opening::Other`] (binary protocols, `PING`, memcached's `get key`).
fn http_request_line(buf: &[u8]) -> Result<Parse<Opening>, String> {
    let start = buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
    let rest = &buf[start..];
    let end = rest.iter().position(|b| matches!(b, b'\r' | b'\n'));
    let line = &rest[..end.unwrap_or(rest.len())];
    let skip = |b: &u8| b.is_ascii_whitespace() || *b == 0 || *b == 0x0b || *b >= 0x80;
    let words: Vec<&[u8]> = line.split(|b| skip(b)).filter(|w| !w.is_empty()).collect();
    let is_version = |w: &[u8]| w.len() >= 5 && w[..5].eq_ignore_ascii_case(b"HTTP/");
    let is_method = |w: &[u8]| METHODS.iter().any(|m| m.eq_ignore_ascii_case(w));
    let is_target = |w: &[u8]| w.starts_with(b"/") || w == b"*" || w.windows(3).any(|x| x == b"://");
    let http = match words.as_slice() {
        [.., last] if words.len() >= 2 && is_version(last) => true,
        [first, second, ..] => is_method(first) && is_target(second),
        _ => false,
    };
    if http {
        return Ok(Parse::Done(Opening::Http, 0));
    }
    if end.is_none() {
        let text = line.iter().all(|b| (0x20..0x7f).contains(b) || skip(b));
        if line.is_empty() || text {
            return Ok(if buf.len() < http::MAX_HEAD {
                Parse::Incomplete
            } else if line.is_empty() {
                Parse::Done(Opening::Other, 0)
            } else {
                // A line too long to see whole is refused by hyper, never passed raw.
                Parse::Done(Opening::Http, 0)
            });
        }
    }
    Ok(Parse::Done(Opening::Other, 0))
}

fn server_name(ext: Option<&[u8]>) -> Result<Option<String>, String> {
    let Some(ext) = ext else { return Ok(None) };
    let (_, exts) = parse_tls_extensions(ext).map_err(|_| "malformed TLS extensions".to_string())?;
    for e in exts {
        if let TlsExtension::SNI(names) = e {
            for (kind, name) in names {
                if kind.0 == 0 {
                    let s = std::str::from_utf8(name).map_err(|_| "server name is not UTF-8".to_string())?;
                    return Ok(Some(s.to_owned()));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal TLS 1.2 ClientHello carrying `sni`.
    pub fn client_hello(sni: &str) -> Vec<u8> {
        let name = sni.as_bytes();
        let mut sni_ext = Vec::new();
        let list_len = 3 + name.len();
        sni_ext.extend_from_slice(&[0x00, 0x00]);
        sni_ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        sni_ext.extend_from_slice(&(list_len as u16).to_be_bytes());
        sni_ext.push(0);
        sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni_ext.extend_from_slice(name);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&sni_ext);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn sni_from_every_prefix() {
        let hello = client_hello("api.example.com");
        for i in 0..hello.len() {
            assert_eq!(classify(&hello[..i]).unwrap(), Parse::Incomplete, "prefix {i}");
        }
        assert_eq!(classify(&hello).unwrap(), Parse::Done(Opening::Tls(Some("api.example.com".into())), hello.len()));
    }

    #[test]
    fn http_other_and_malformed() {
        let req = b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n";
        assert_eq!(classify(req).unwrap(), Parse::Done(Opening::Http, 0));
        // Whatever a server might take for a request goes to hyper: leading empty lines,
        // other methods and cases, other versions, HTTP/2's preface.
        for http in [
            &b"PROPFIND /d HTTP/1.1\n"[..],
            b"\r\nGET /2 HTTP/1.1\r\n",
            b"\n\n\r\nget / http/1.1\r\n",
            b"GET / HTTP/1.2\r\n",
            b"PRI * HTTP/2.0\r\n",
            b"M-SEARCH * HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(http).unwrap(), Parse::Done(Opening::Http, 0), "{:?}", String::from_utf8_lossy(http));
        }
        let mut long = b"GET /".to_vec();
        long.resize(http::MAX_HEAD + 1, b'a');
        assert_eq!(classify(&long).unwrap(), Parse::Done(Opening::Http, 0), "an over-long request line");
        assert_eq!(classify(b"GET / HT").unwrap(), Parse::Done(Opening::Http, 0));
        assert_eq!(classify(b"SOME text still arriving").unwrap(), Parse::Incomplete);
        assert_eq!(classify(b"GE").unwrap(), Parse::Incomplete);
        assert_eq!(classify(b"\r\n").unwrap(), Parse::Incomplete);
        assert_eq!(classify(b"\0\0\0\x08").unwrap(), Parse::Done(Opening::Other, 0), "binary: not waited for");
        // Lenient servers' forms (found by a review): tabs, odd spacing, NUL or BOM first,
        // bare CR line ends, HTTP/0.9 with a URL.
        for http in [
            &b"GET\t/internal\tHTTP/1.1\r\n"[..],
            b"GET /internal HTTP/1.1 \r\n",
            b" GET /internal HTTP/1.1\r\n",
            b"\0GET / HTTP/1.1\r\n",
            b"\xef\xbb\xbfGET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\rHost: x\r\r",
            b"GET http://evil.test/x\r\n",
            b"get /\n",
            b"GET\x0b/ HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(http).unwrap(), Parse::Done(Opening::Http, 0), "{:?}", String::from_utf8_lossy(http));
        }
        for other in [&b"SSH-2.0-OpenSSH\r\n"[..], b"PING\r\n", b"get key\r\n", b"\0\0\0\x08\x04\xd2\x16/"] {
            assert_eq!(classify(other).unwrap(), Parse::Done(Opening::Other, 0), "{other:?}");
        }
        assert!(
            classify(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0, 0, 0]).is_err(),
            "a ServerHello is not a ClientHello"
        );
        let mut bad = client_hello("x.example.com");
        let n = bad.len();
        bad[n - 5] = 0xff;
        let _ = classify(&bad);
    }
}

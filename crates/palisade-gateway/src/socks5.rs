//! SOCKS5 (RFC 1928), server side, CONNECT only. Incremental: every parser returns
//! [`Parse::Incomplete`] until it has the whole message, so a client sending a byte at a time
//! (or nothing) is handled by the caller's timeout, never by guessing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_policy::{Host, Target};

use crate::Parse;

/// Reply codes (RFC 1928 §6).
pub mod reply {
    /// The connection is made.
    pub const SUCCEEDED: u8 = 0x00;
    /// General SOCKS server failure.
    pub const GENERAL_FAILURE: u8 = 0x01;
    /// Connection not allowed by ruleset: the policy refused it.
    pub const NOT_ALLOWED: u8 = 0x02;
    /// Host unreachable.
    pub const HOST_UNREACHABLE: u8 = 0x04;
    /// Connection refused by the destination.
    pub const CONNECTION_REFUSED: u8 = 0x05;
    /// Command not supported (BIND, UDP ASSOCIATE).
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    /// Address type not supported.
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

/// A protocol error: the reply to send (if any) before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SOCKS5: {what}")]
pub struct Error {
    /// What was wrong, in words (recorded).
    pub what: &'static str,
    /// Bytes to send back before closing.
    pub reply: Option<Vec<u8>>,
}

/// Parses the greeting; the answer is `[5, 0]` (no authentication) when the client offers it.
pub fn greeting(buf: &[u8]) -> Result<Parse<Vec<u8>>, Error> {
    let [ver, n, ..] = buf else { return Ok(Parse::Incomplete) };
    if *ver != 5 {
        return Err(Error { what: "not SOCKS version 5", reply: None });
    }
    let len = 2 + usize::from(*n);
    if buf.len() < len {
        return Ok(Parse::Incomplete);
    }
    if buf[2..len].contains(&0) {
        Ok(Parse::Done(vec![5, 0], len))
    } else {
        Err(Error { what: "the client offers no method without authentication", reply: Some(vec![5, 0xff]) })
    }
}

/// Parses a request; only CONNECT is accepted (BIND and UDP ASSOCIATE are refused).
pub fn request(buf: &[u8]) -> Result<Parse<Target>, Error> {
    if buf.len() < 4 {
        return Ok(Parse::Incomplete);
    }
    if buf[0] != 5 {
        return Err(Error { what: "not SOCKS version 5", reply: None });
    }
    let (host, addr_end) = match buf[3] {
        1 => {
            if buf.len() < 8 {
                return Ok(Parse::Incomplete);
            }
            (Host::Ip(IpAddr::V4(Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]))), 8)
        }
        4 => {
            if buf.len() < 20 {
                return Ok(Parse::Incomplete);
            }
            let mut o = [0u8; 16];
            o.copy_from_slice(&buf[4..20]);
            (Host::Ip(IpAddr::V6(Ipv6Addr::from(o)).to_canonical()), 20)
        }
        3 => {
            let Some(&n) = buf.get(4) else { return Ok(Parse::Incomplete) };
            let end = 5 + usize::from(n);
            if buf.len() < end {
                return Ok(Parse::Incomplete);
            }
            let name = std::str::from_utf8(&buf[5..end])
                .map_err(|_| Error { what: "host name is not UTF-8", reply: Some(reply_bytes(reply::NOT_ALLOWED)) })?;
            let host = Host::parse(name)
                .map_err(|_| Error { what: "not a host name", reply: Some(reply_bytes(reply::NOT_ALLOWED)) })?;
            (host, end)
        }
        _ => {
            return Err(Error { what: "address type", reply: Some(reply_bytes(reply::ADDRESS_TYPE_NOT_SUPPORTED)) });
        }
    };
    if buf.len() < addr_end + 2 {
        return Ok(Parse::Incomplete);
    }
    if buf[1] != 1 {
        return Err(Error {
            what: "only CONNECT is supported",
            reply: Some(reply_bytes(reply::COMMAND_NOT_SUPPORTED)),
        });
    }
    let port = u16::from_be_bytes([buf[addr_end], buf[addr_end + 1]]);
    if port == 0 {
        return Err(Error { what: "port 0", reply: Some(reply_bytes(reply::NOT_ALLOWED)) });
    }
    Ok(Parse::Done(Target { host, port }, addr_end + 2))
}

/// A reply with the given code and an all-zero IPv4 bound address.
pub fn reply_bytes(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_and_connect_by_name() {
        assert_eq!(greeting(&[5]).unwrap(), Parse::Incomplete);
        assert_eq!(greeting(&[5, 2, 2]).unwrap(), Parse::Incomplete);
        assert_eq!(greeting(&[5, 2, 2, 0]).unwrap(), Parse::Done(vec![5, 0], 4));
        assert_eq!(greeting(&[5, 1, 2]).unwrap_err().reply, Some(vec![5, 0xff]));
        assert!(greeting(&[4, 1, 0]).is_err());
        let mut req = vec![5, 1, 0, 3, 15];
        req.extend_from_slice(b"API.example.com");
        req.extend_from_slice(&443u16.to_be_bytes());
        for i in 0..req.len() {
            assert_eq!(request(&req[..i]).unwrap(), Parse::Incomplete, "prefix {i}");
        }
        let Parse::Done(t, used) = request(&req).unwrap() else { panic!() };
        assert_eq!((t.to_string(), used), ("api.example.com:443".to_owned(), req.len()));
    }

    #[test]
    fn addresses_and_refusals() {
        let v4 = [5, 1, 0, 1, 127, 0, 0, 1, 0, 22];
        assert_eq!(request(&v4).unwrap(), Parse::Done(Target::parse("127.0.0.1:22", 1).unwrap(), 10));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&80u16.to_be_bytes());
        let Parse::Done(t, _) = request(&v6).unwrap() else { panic!() };
        assert_eq!(t.to_string(), "10.0.0.1:80", "IPv4-mapped is IPv4");
        let bind = [5, 2, 0, 1, 1, 2, 3, 4, 0, 80];
        assert_eq!(request(&bind).unwrap_err().reply.unwrap()[1], reply::COMMAND_NOT_SUPPORTED);
        let udp = [5, 3, 0, 1, 1, 2, 3, 4, 0, 80];
        assert_eq!(request(&udp).unwrap_err().reply.unwrap()[1], reply::COMMAND_NOT_SUPPORTED);
        let bad_type = [5, 1, 0, 9, 0, 0];
        assert_eq!(request(&bad_type).unwrap_err().reply.unwrap()[1], reply::ADDRESS_TYPE_NOT_SUPPORTED);
        let mut nul = vec![5, 1, 0, 3, 13];
        nul.extend_from_slice(b"evil.com\0.com");
        nul.extend_from_slice(&[1, 187]);
        assert_eq!(request(&nul).unwrap_err().reply.unwrap()[1], reply::NOT_ALLOWED);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x % 7) as u8 | if x.is_multiple_of(3) { 0 } else { (x >> 8) as u8 }
                })
                .collect();
            let _ = greeting(&buf);
            let _ = request(&buf);
        }
    }
}

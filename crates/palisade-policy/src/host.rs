//! Host names, network targets and the allow/deny patterns that match them.
//!
//! Every name is normalised the same way before it is compared: IDNA to ASCII, lower case,
//! one trailing dot removed, no control, NUL or space bytes, DNS length limits, and no
//! all-numeric last label (`127.1`, `0x7f.1`), which some resolvers read as an IPv4 address.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// A normalised DNS name: ASCII, lower case, no trailing dot, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HostName(String);

impl HostName {
    /// Normalises `input` or says why it is not a usable host name.
    pub fn parse(input: &str) -> Result<HostName, String> {
        if input.is_empty() {
            return Err("empty host name".into());
        }
        if let Some(c) = input.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("host name contains a control or space character ({:?})", c));
        }
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() || trimmed.ends_with('.') {
            return Err(format!("`{}` is not a host name", input.escape_debug()));
        }
        let ascii = idna::domain_to_ascii(trimmed)
            .map_err(|_| format!("`{}` is not a valid (internationalised) host name", input.escape_debug()))?;
        if ascii.len() > 253 {
            return Err("host name is longer than 253 bytes".into());
        }
        for label in ascii.split('.') {
            if label.is_empty() {
                return Err(format!("`{}` has an empty label", input.escape_debug()));
            }
            if label.len() > 63 {
                return Err(format!("`{}` has a label longer than 63 bytes", input.escape_debug()));
            }
            if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("`{}` contains a character not allowed in a host name", input.escape_debug()));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!("`{}` has a label that starts or ends with `-`", input.escape_debug()));
            }
        }
        let last = ascii.rsplit('.').next().unwrap_or_default();
        if looks_numeric(last) {
            return Err(format!(
                "`{}` looks like an IP address in a non-standard form; write the address in dotted-decimal",
                input.escape_debug()
            ));
        }
        Ok(HostName(ascii))
    }

    /// The name as text: ASCII, lower case, no trailing dot (`xn--bcher-kva.example`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` is `suffix` or ends with `.suffix` (label boundary).
    pub fn is_within(&self, suffix: &HostName) -> bool {
        self.0 == suffix.0 || self.is_strictly_within(suffix)
    }

    /// True when `self` ends with `.suffix` (a proper subdomain).
    pub fn is_strictly_within(&self, suffix: &HostName) -> bool {
        self.0.len() > suffix.0.len()
            && self.0.ends_with(&suffix.0)
            && self.0.as_bytes()[self.0.len() - suffix.0.len() - 1] == b'.'
    }

    fn label_count(&self) -> usize {
        self.0.split('.').count()
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label that a WHATWG-style parser would read as a number (decimal, octal or hex).
fn looks_numeric(label: &str) -> bool {
    let hex = label.strip_prefix("0x").or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Parses an IP literal, mapping IPv4-mapped IPv6 (`::ffff:1.2.3.4`) to IPv4.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// What a network rule matches, before the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name.
    Name(HostName),
    /// Any proper subdomain of this name (`*.example.com`).
    Wildcard(HostName),
    /// Exactly this address.
    Ip(IpAddr),
    /// Any address in this network.
    Cidr(IpNet),
}

impl HostPattern {
    /// Whether `host` matches. Names match only name and wildcard patterns, addresses only
    /// address and network patterns: `localhost` never matches `127.0.0.1`.
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Name(n), Host::Name(h)) => n == h,
            (HostPattern::Wildcard(s), Host::Name(h)) => h.is_strictly_within(s),
            (HostPattern::Ip(a), Host::Ip(b)) => a == b,
            (HostPattern::Cidr(net), Host::Ip(b)) => net.contains(b),
            _ => false,
        }
    }

    /// True when every host this pattern matches is also matched by `other`.
    pub fn is_subset_of(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Name(a), HostPattern::Name(b)) => a == b,
            (HostPattern::Name(a), HostPattern::Wildcard(s)) => a.is_strictly_within(s),
            (HostPattern::Wildcard(a), HostPattern::Wildcard(s)) => a.is_within(s),
            (HostPattern::Ip(a), HostPattern::Ip(b)) => a == b,
            (HostPattern::Ip(a), HostPattern::Cidr(n)) => n.contains(a),
            (HostPattern::Cidr(a), HostPattern::Cidr(n)) => n.contains(a),
            _ => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(n) => write!(f, "{n}"),
            HostPattern::Wildcard(n) => write!(f, "*.{n}"),
            HostPattern::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            HostPattern::Ip(a) => write!(f, "{a}"),
            HostPattern::Cidr(n @ IpNet::V6(_)) => write!(f, "[{n}]"),
            HostPattern::Cidr(n) => write!(f, "{n}"),
        }
    }
}

/// A network rule's match: a host pattern and an optional port (none = every port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPattern {
    /// The host part: a name, `*.SUFFIX`, an address or a network.
    pub host: HostPattern,
    /// The port; `None` matches every port.
    pub port: Option<u16>,
}

impl NetPattern {
    /// Parses `HOST[:PORT]`, `*.SUFFIX[:PORT]`, `IP[:PORT]`, `[IPv6][:PORT]`, `CIDR[:PORT]`.
    pub fn parse(text: &str) -> Result<NetPattern, String> {
        let (host_part, port) = split_port(text)?;
        if host_part.is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        if host_part.contains('/') {
            let net: IpNet = host_part
                .parse()
                .map_err(|_| format!("`{host_part}` is not a network in CIDR form (e.g. 10.0.0.0/8)"))?;
            if net.prefix_len() == 0 {
                return Err(format!("`{host_part}` matches every address; list the networks you need"));
            }
            return Ok(NetPattern { host: HostPattern::Cidr(net.trunc()), port });
        }
        if let Some(ip) = parse_ip(host_part) {
            return Ok(NetPattern { host: HostPattern::Ip(ip), port });
        }
        if let Some(suffix) = host_part.strip_prefix("*.") {
            let name = HostName::parse(suffix)?;
            if name.label_count() < 2 {
                return Err(format!(
                    "`{host_part}` is too broad: a wildcard needs at least two labels after `*.` (e.g. *.example.com)"
                ));
            }
            return Ok(NetPattern { host: HostPattern::Wildcard(name), port });
        }
        if host_part.contains('*') {
            return Err(format!(
                "`{host_part}`: `*` is only allowed as a whole leading label (`*.example.com`); a bare `*` is never allowed"
            ));
        }
        Ok(NetPattern { host: HostPattern::Name(HostName::parse(host_part)?), port })
    }

    /// Whether `target` matches: the port, when the pattern names one, and the host
    /// ([`HostPattern::matches`]).
    pub fn matches(&self, target: &Target) -> bool {
        self.port.is_none_or(|p| p == target.port) && self.host.matches(&target.host)
    }

    /// True when every target this pattern matches is also matched by `other`.
    pub fn is_subset_of(&self, other: &NetPattern) -> bool {
        let port_ok = match (self.port, other.port) {
            (_, None) => true,
            (Some(a), Some(b)) => a == b,
            (None, Some(_)) => false,
        };
        port_ok && self.host.is_subset_of(&other.host)
    }
}

impl fmt::Display for NetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

impl Serialize for NetPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A host that a connection names: a normalised name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Host {
    /// A host name, normalised (`api.openai.com`).
    Name(HostName),
    /// An IP literal; an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is taken as IPv4.
    Ip(IpAddr),
}

impl Host {
    /// Parses a host without a port: an IP literal (IPv6 with or without brackets) or a
    /// name, normalised; the error says why it is neither.
    pub fn parse(text: &str) -> Result<Host, String> {
        let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        if let Some(ip) = parse_ip(bare) {
            return Ok(Host::Ip(ip));
        }
        Ok(Host::Name(HostName::parse(text)?))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => write!(f, "{n}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// A connection target: a host and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    /// The host the connection names.
    pub host: Host,
    /// The port it is to (`443`).
    pub port: u16,
}

impl Target {
    /// Parses `HOST:PORT`; without a port, `default_port` is used.
    pub fn parse(text: &str, default_port: u16) -> Result<Target, String> {
        let (host, port) = split_port(text)?;
        Ok(Target { host: Host::parse(host)?, port: port.unwrap_or(default_port) })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Splits `host:port`, `[v6]:port`, `[v6]`, bare IPv6 (`::1`, no port) and `[v6/len]:port`.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| format!("`{text}`: missing `]`"))?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host, Some(parse_port(p, text)?))),
                None => Err(format!("`{text}`: unexpected text after `]`")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (h, p) = text.split_once(':').unwrap_or((text, ""));
            Ok((h, Some(parse_port(p, text)?)))
        }
        // More than one colon and no brackets: an IPv6 address or network without a port.
        _ => Ok((text, None)),
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{whole}`: `{p}` is not a port (1-65535)")),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> String {
        HostName::parse(s).map(|h| h.0).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalisation() {
        assert_eq!(name("API.OpenAI.com."), "api.openai.com");
        assert_eq!(name("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(name("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(name("_acme.example.com"), "_acme.example.com");
        // Fullwidth dot and letters normalise through IDNA.
        assert_eq!(name("ｅｘａｍｐｌｅ．com"), "example.com");
    }

    #[test]
    fn hostile_names_rejected() {
        for bad in [
            "",
            ".",
            "a..b",
            "exa mple.com",
            "evil.com\0.good.com",
            "evil.com\n",
            "a.com..",
            "-a.com",
            "127.1",
            "0x7f.1",
            "1.2.3",
            "a/b",
            "a@b.com",
            "a.b.com:80:90",
        ] {
            assert!(HostName::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(HostName::parse(&long).is_err());
        let very_long = vec!["abcdefghij"; 30].join(".");
        assert!(HostName::parse(&very_long).is_err());
    }

    #[test]
    fn patterns_parse() {
        let p = NetPattern::parse("*.Example.com:443").unwrap();
        assert_eq!(p.to_string(), "*.example.com:443");
        assert_eq!(NetPattern::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(NetPattern::parse("[::1]:22").unwrap().to_string(), "[::1]:22");
        assert_eq!(NetPattern::parse("::ffff:1.2.3.4").unwrap().to_string(), "1.2.3.4");
        assert_eq!(NetPattern::parse("[fd00::/8]:443").unwrap().to_string(), "[fd00::/8]:443");
        for bad in
            ["*", "*.com", "*:443", "a.*.com", "ex*ample.com", "host:0", "host:65536", "host:", "0.0.0.0/0", ":443"]
        {
            assert!(NetPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn wildcard_is_label_bounded() {
        let p = NetPattern::parse("*.example.com").unwrap();
        let t = |s: &str| Target::parse(s, 443).unwrap();
        assert!(p.matches(&t("api.example.com")));
        assert!(p.matches(&t("a.b.example.com")));
        assert!(!p.matches(&t("example.com")));
        assert!(!p.matches(&t("evilexample.com")));
        assert!(!p.matches(&t("example.com.evil.net")));
    }

    #[test]
    fn ports_and_ips() {
        let p = NetPattern::parse("host.example:443").unwrap();
        assert!(p.matches(&Target::parse("host.example:443", 1).unwrap()));
        assert!(!p.matches(&Target::parse("host.example:22", 1).unwrap()));
        let net = NetPattern::parse("10.0.0.0/8").unwrap();
        assert!(net.matches(&Target::parse("10.9.9.9:1", 1).unwrap()));
        assert!(net.matches(&Target::parse("[::ffff:10.9.9.9]:1", 1).unwrap()));
        assert!(!net.matches(&Target::parse("11.0.0.1:1", 1).unwrap()));
        // A name never matches an address rule and an address never matches a name rule.
        assert!(!NetPattern::parse("localhost").unwrap().matches(&Target::parse("127.0.0.1:80", 1).unwrap()));
    }

    #[test]
    fn subsets() {
        let p = |s: &str| NetPattern::parse(s).unwrap();
        assert!(p("a.example.com:443").is_subset_of(&p("*.example.com")));
        assert!(p("*.a.example.com").is_subset_of(&p("*.example.com")));
        assert!(!p("example.com").is_subset_of(&p("*.example.com")));
        assert!(!p("a.example.com").is_subset_of(&p("*.example.com:443")));
        assert!(p("10.1.0.0/16").is_subset_of(&p("10.0.0.0/8")));
        assert!(!p("10.0.0.0/8").is_subset_of(&p("10.1.0.0/16")));
    }
}

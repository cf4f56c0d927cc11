//! Classes of address the gateway never dials unless the policy lists them (THREATS C-06):
//! loopback, private, link-local (cloud metadata at 169.254.169.254 among them), and other
//! special-purpose ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is special, or `None` for an ordinary public address.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [127, ..] => "loopback",
        [10, ..] | [192, 168, ..] => "private network",
        [172, b, ..] if (16..32).contains(&b) => "private network",
        [169, 254, 169, 254] => "cloud metadata service",
        [169, 254, ..] => "link-local",
        [100, b, ..] if (64..128).contains(&b) => "shared address space (CGNAT)",
        [0, ..] => "this network",
        [192, 0, 0, _] => "IETF protocol assignments",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking",
        [a, ..] if a >= 224 => "multicast or reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "unique local (private)"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation"
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64: the embedded IPv4 address decides.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return special_v4(v4);
    } else if s[0] == 0x2002 {
        // 6to4: likewise.
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return special_v4(v4);
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &str) -> Option<&'static str> {
        special(s.parse().unwrap())
    }

    #[test]
    fn classes() {
        for a in [
            "127.0.0.1",
            "127.77.0.5",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
        ] {
            assert!(sp(a).is_some(), "{a} should be special");
        }
        for a in ["1.1.1.1", "172.32.0.1", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert_eq!(sp(a), None, "{a}");
        }
        assert_eq!(sp("169.254.169.254"), Some("cloud metadata service"));
        assert_eq!(sp("::ffff:10.0.0.1"), Some("private network"));
    }
}

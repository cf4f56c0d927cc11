//! The network decisions beyond one target and port, kept here beside [`Rules::decide_net`]
//! so that every consumer (the gateway, `policy explain`) asks the same code: a name on any
//! port (the DNS stub), the host's own loopback (granted by port, never by the project file),
//! and what an allowed connection may carry (TLS and HTTP only, or any protocol).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::decide::NetReason;
use crate::host::{Host, HostName, HostPattern, Target};
use crate::model::{NetMode, NetRule, Rules};

/// The name that always means the host's own loopback (RFC 6761 §6.3).
pub const LOCALHOST: &str = "localhost";

/// `localhost`, `127.0.0.1` or `::1`: the host's own loopback, one place by three names.
pub fn is_host_loopback(host: &Host) -> bool {
    match host {
        Host::Name(n) => n.as_str() == LOCALHOST,
        Host::Ip(ip) => *ip == IpAddr::V4(Ipv4Addr::LOCALHOST) || *ip == IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// A decision on a name alone (every port): what the DNS stub answers.
#[derive(Debug, Clone)]
pub struct NameDecision<'a> {
    /// Whether the name may be resolved.
    pub allowed: bool,
    /// `DeniedBy` a deny rule without a port; `AllowedBy` an allow rule for the name on some
    /// port; `ModeNone`; `NotListed`.
    pub reason: NetReason<'a>,
}

/// A grant of one of the host's loopback ports ([`Rules::loopback_grant`]).
#[derive(Debug, Clone)]
pub struct LoopbackGrant<'a> {
    /// Where the port may be reached, in order (`localhost`: `127.0.0.1`, then `::1`).
    pub ips: Vec<IpAddr>,
    /// The last granting rule (the one that wins).
    pub rule: &'a NetRule,
}

/// What an allowed connection to a target may carry ([`Rules::carries`]).
#[derive(Debug, Clone)]
pub enum Carries<'a> {
    /// Any protocol: the rule names this port, and it is not 80 or 443.
    Any(&'a NetRule),
    /// TLS and HTTP only, because the port is 80 or 443.
    WebPort,
    /// TLS and HTTP only, because the allowing rule names no port.
    NoPortNamed(&'a NetRule),
    /// Nothing: the target is not allowed.
    Nothing,
}

impl Carries<'_> {
    /// Why only TLS and HTTP pass to `target`, in words; `None` when any protocol may, or
    /// nothing may.
    pub fn restriction(&self, target: &Target) -> Option<String> {
        match self {
            Carries::WebPort => Some(format!("only TLS and HTTP are let through on port {}", target.port)),
            Carries::NoPortNamed(r) => Some(format!(
                "only TLS and HTTP are let through: allow {:?} names no port; to carry another protocol, allow {}:{} by its port",
                r.origin.text, target.host, target.port
            )),
            Carries::Any(_) | Carries::Nothing => None,
        }
    }
}

impl Rules {
    /// May a name be resolved? Yes when some allow rule matches it on some port and no deny
    /// rule without a port refuses it.
    pub fn decide_name(&self, name: &HostName) -> NameDecision<'_> {
        let host = Host::Name(name.clone());
        let (allowed, reason) = if self.mode() == NetMode::None {
            (false, NetReason::ModeNone { set_by: self.net_mode.as_ref() })
        } else if let Some(r) = self.net_deny.iter().find(|r| r.pattern.port.is_none() && r.pattern.host.matches(&host))
        {
            (false, NetReason::DeniedBy(r))
        } else if let Some(r) = self.net_allow.iter().rev().find(|r| r.pattern.host.matches(&host)) {
            (true, NetReason::AllowedBy(r))
        } else {
            (false, NetReason::NotListed)
        };
        NameDecision { allowed, reason }
    }

    /// The `network.quiet` entry a refused destination matches (`host` on `port`, or the
    /// host on any port when `port` is `None`, as for a DNS query): its refusal is
    /// expected, recorded without counting for monitor rules.
    pub fn quiet(&self, host: &Host, port: Option<u16>) -> Option<&NetRule> {
        self.net_quiet.iter().find(|r| {
            r.pattern.host.matches(host) && (port.is_none() || r.pattern.port.is_none() || r.pattern.port == port)
        })
    }

    /// The grant of the host's loopback port `port`: an allow rule of a trusted layer (never
    /// the project file) naming `localhost`, `127.0.0.1` or `[::1]` (or a network holding
    /// them) with that port, and no deny rule of any layer naming the port by any of those
    /// names. `None` when the network is off or nothing grants it.
    pub fn loopback_grant(&self, port: u16) -> Option<LoopbackGrant<'_>> {
        if self.mode() == NetMode::None {
            return None;
        }
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let name = Host::Name(HostName::parse(LOCALHOST).expect("a valid name"));
        let named = [name.clone(), Host::Ip(v4), Host::Ip(v6)];
        let denied =
            named.iter().any(|h| self.net_deny.iter().any(|r| r.pattern.matches(&Target { host: h.clone(), port })));
        if denied {
            return None;
        }
        let mut ips = Vec::new();
        let mut rule = None;
        for r in self.net_allow.iter().rev() {
            if !r.origin.layer.is_trusted() || r.pattern.port.is_some_and(|p| p != port) {
                continue;
            }
            let found: Vec<IpAddr> = match &r.pattern.host {
                HostPattern::Name(_) if r.pattern.host.matches(&name) => vec![v4, v6],
                HostPattern::Ip(_) | HostPattern::Cidr(_) => {
                    [v4, v6].into_iter().filter(|ip| r.pattern.host.matches(&Host::Ip(*ip))).collect()
                }
                _ => continue,
            };
            for ip in found {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
                rule.get_or_insert(r);
            }
        }
        Some(LoopbackGrant { ips, rule: rule? })
    }

    /// What an allowed connection to `target` may carry: bytes other than TLS or HTTP only
    /// where the allowing rule names the port and the port is not 80 or 443 (those carry
    /// HTTP and TLS, which the gateway checks request by request and by server name).
    pub fn carries(&self, target: &Target) -> Carries<'_> {
        match self.decide_net(target).reason {
            NetReason::AllowedBy(_) if matches!(target.port, 80 | 443) => Carries::WebPort,
            NetReason::AllowedBy(r) if r.pattern.port.is_some() => Carries::Any(r),
            NetReason::AllowedBy(r) => Carries::NoPortNamed(r),
            _ => Carries::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{LayerKind, Lexical, ResolveOptions, Vars, parse_layer, resolve};

    fn rules(layers: &[(LayerKind, &str)]) -> Rules {
        let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/p"));
        let layers =
            layers.iter().map(|(k, t)| parse_layer(t, "t.toml", k.clone(), &vars, &Lexical).unwrap()).collect();
        resolve(Path::new("/w/p"), Path::new("/home/u"), layers, ResolveOptions::default()).unwrap().rules
    }

    fn t(s: &str) -> Target {
        Target::parse(s, 443).unwrap()
    }

    #[test]
    fn names_carries_and_loopback_grants() {
        let r = rules(&[(
            LayerKind::User,
            "[network]\nmode = \"allowlist\"\nallow = [\"github.com\", \"git.test:22\", \"localhost:8080\", \"127.0.0.1:9090\", \"a.test:443\"]\ndeny = [\"[::1]:9090\", \"evil.github.com\"]\n",
        )]);
        assert!(r.decide_name(&HostName::parse("github.com").unwrap()).allowed);
        assert!(!r.decide_name(&HostName::parse("evil.github.com").unwrap()).allowed);
        assert!(matches!(r.carries(&t("git.test:22")), Carries::Any(_)));
        assert!(matches!(r.carries(&t("github.com:22")), Carries::NoPortNamed(_)));
        assert!(matches!(r.carries(&t("a.test:443")), Carries::WebPort));
        assert!(matches!(r.carries(&t("other.test:22")), Carries::Nothing));
        let g = r.loopback_grant(8080).unwrap();
        assert_eq!(g.ips, [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        assert!(r.loopback_grant(9090).is_none(), "a deny naming it as [::1] refuses the place");
        assert!(r.loopback_grant(8081).is_none());
        assert!(is_host_loopback(&t("localhost:1").host) && !is_host_loopback(&t("127.0.0.2:1").host));
    }

    #[test]
    fn a_project_rule_never_grants_the_host_loopback() {
        let r = rules(&[
            (LayerKind::User, "[network]\nmode = \"allowlist\"\nallow = [\"127.0.0.0/8\"]\n"),
            (LayerKind::Project, "[network]\nallow = [\"127.0.0.1:8080\"]\n"),
        ]);
        // The user's network rule grants every port; the project's narrower one adds nothing.
        assert_eq!(r.loopback_grant(8080).unwrap().rule.origin.layer, LayerKind::User);
        let only_project = Rules {
            net_allow: r.net_allow.iter().filter(|x| x.origin.layer == LayerKind::Project).cloned().collect(),
            ..r.clone()
        };
        assert!(only_project.loopback_grant(8080).is_none());
    }
}

//! The one decision function: every path out (DNS, transparent TCP, HTTP, SOCKS5) asks here,
//! and only an address this module checked can be dialled ([`Checked`]).
//!
//! Rules, in order: the policy's network decision for the name (or IP literal) and port
//! (names normalised, label-boundary wildcards, deny beats allow, IP literals only by IP
//! rules); then the name is resolved once, through the policy's `hosts` mapping if it has
//! one, and an address in a special range (loopback, private, link-local, metadata, ...) is
//! refused unless the policy lists that address itself or maps the name to it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use palisade_policy::{Carries, Host, HostName, NetMode, NetReason, Rules, Target};

use crate::addr::special;

/// Resolves names for the gateway (outside the sandbox). A trait so tests use a table.
pub trait Resolver {
    /// Every address `name` resolves to, in the resolver's order.
    fn resolve(&self, name: &HostName) -> std::io::Result<Vec<IpAddr>>;
}

/// A refusal, with the reason shown to the client and recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The policy does not allow the target.
    #[error("{0}")]
    Policy(String),
    /// The name resolved only to addresses the gateway does not dial.
    #[error("{name} resolves to {ip}, a {class} address, which the policy does not list")]
    Special {
        /// The name asked for.
        name: String,
        /// The first special address it resolved to.
        ip: IpAddr,
        /// Its class, in words (`loopback`, `cloud metadata service`).
        class: &'static str,
    },
    /// Resolution failed.
    #[error("cannot resolve {name}: {why}")]
    Resolve {
        /// The name asked for.
        name: String,
        /// The resolver's error.
        why: String,
    },
}

/// An address the gateway checked for a target: the only thing a dialler accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    target: Target,
    addr: SocketAddr,
    /// Another address to try when `addr` refuses: `[::1]` after `127.0.0.1` for a granted
    /// `localhost` port (a dev server may listen on either).
    fallback: Option<SocketAddr>,
    /// The rule that allowed it, for the record.
    rule: String,
}

impl Checked {
    fn new(target: &Target, addr: SocketAddr, rule: String) -> Checked {
        Checked { target: target.clone(), addr, fallback: None, rule }
    }

    /// The first address to dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A granted host loopback port ([`Decider::loopback_grant`]) for `target`.
    pub fn granted(target: &Target, grant: &LoopbackGrant) -> Checked {
        let mut addrs = grant.addrs.iter().copied();
        let addr =
            addrs.next().unwrap_or_else(|| SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), target.port));
        Checked { target: target.clone(), addr, fallback: addrs.next(), rule: grant.rule.clone() }
    }

    /// The addresses to dial, in order.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.addr).chain(self.fallback)
    }
    /// The target as the client named it.
    pub fn target(&self) -> &Target {
        &self.target
    }
    /// The rule that allowed it, in words.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

pub use palisade_policy::{LOCALHOST, is_host_loopback};

/// A grant of one of the host's loopback ports to the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackGrant {
    /// Where to connect on the host, in order.
    pub addrs: Vec<SocketAddr>,
    /// The rule, for the record.
    pub rule: String,
}

/// The gateway's view of the policy.
#[derive(Debug, Clone)]
pub struct Decider {
    rules: Rules,
}

/// A decision with its reason in words (rule and layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether it may go.
    pub allowed: bool,
    /// The rule and layer that decided, or why nothing allowed it.
    pub reason: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", if self.allowed { "allowed" } else { "denied" }, self.reason)
    }
}

impl Decider {
    /// The decider for a resolved policy's rules.
    pub fn new(rules: Rules) -> Decider {
        Decider { rules }
    }

    /// Whether a refusal of `host` (on `port`; any port for a DNS query) is expected
    /// (`network.quiet`), so that it is recorded as quiet.
    pub fn quiet(&self, host: &palisade_policy::Host, port: Option<u16>) -> bool {
        self.rules.quiet(host, port).is_some()
    }

    /// May a connection go to `target`? (Before any resolution.)
    pub fn decide(&self, target: &Target) -> Verdict {
        let d = self.rules.decide_net(target);
        let reason = match &d.reason {
            NetReason::ModeNone { .. } => "the network mode is none".to_owned(),
            NetReason::DeniedBy(r) => format!("deny {:?} ({})", r.origin.text, r.origin),
            NetReason::AllowedBy(r) => format!("allow {:?} ({})", r.origin.text, r.origin),
            NetReason::NotListed => format!("{target} is not on the allowlist"),
        };
        Verdict { allowed: d.allowed, reason }
    }

    /// May the DNS stub answer `name`? ([`Rules::decide_name`].)
    pub fn name_allowed(&self, name: &HostName) -> Verdict {
        let d = self.rules.decide_name(name);
        let reason = match &d.reason {
            NetReason::ModeNone { .. } => "the network mode is none".to_owned(),
            NetReason::DeniedBy(r) => format!("deny {:?} ({})", r.origin.text, r.origin),
            NetReason::AllowedBy(r) => format!("allow {:?} ({})", r.origin.text, r.origin),
            NetReason::NotListed => format!("{name} is not on the allowlist"),
        };
        Verdict { allowed: d.allowed, reason }
    }

    /// May the bytes inside a connection to `target` be something other than TLS or HTTP
    /// (SSH, a database protocol, a server that speaks first)? Only when the rule that allows
    /// the target names its port, and the port is not 80 or 443: those ports carry HTTP and
    /// TLS, which the gateway checks request by request and by server name.
    pub fn raw_allowed(&self, target: &Target) -> Verdict {
        let carries = self.rules.carries(target);
        match &carries {
            Carries::Any(r) => Verdict {
                allowed: true,
                reason: format!("allow {:?} ({}) names port {}", r.origin.text, r.origin, target.port),
            },
            Carries::WebPort | Carries::NoPortNamed(_) => {
                Verdict { allowed: false, reason: carries.restriction(target).unwrap_or_default() }
            }
            Carries::Nothing => self.decide(target),
        }
    }

    /// The grant of the host's loopback port `port` ([`Rules::loopback_grant`]), as
    /// addresses to dial and the rule in words.
    pub fn loopback_grant(&self, port: u16) -> Option<LoopbackGrant> {
        let g = self.rules.loopback_grant(port)?;
        Some(LoopbackGrant {
            addrs: g.ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
            rule: format!("allow {:?} ({})", g.rule.origin.text, g.rule.origin),
        })
    }

    /// Whether [`Decider::check`] would call the resolver for `target` (a name the policy's
    /// `hosts` does not map); when not, it never blocks.
    pub fn needs_resolution(&self, target: &Target) -> bool {
        match &target.host {
            Host::Ip(_) => false,
            Host::Name(n) => !self.rules.hosts.iter().any(|m| &m.name == n),
        }
    }

    /// Decides `target`, resolves it once, checks the address, and returns what to dial.
    ///
    /// The host's own loopback is one place whatever it is called (`localhost`,
    /// `127.0.0.1`, `[::1]`): reachable on a port only by [`Decider::loopback_grant`].
    pub fn check(&self, target: &Target, resolver: &dyn Resolver) -> Result<Checked, Refusal> {
        if is_host_loopback(&target.host) {
            if self.rules.mode() == NetMode::None {
                return Err(Refusal::Policy("the network mode is none".into()));
            }
            return match self.loopback_grant(target.port) {
                Some(mut g) => {
                    // The family asked for first.
                    if let Host::Ip(ip) = target.host {
                        g.addrs.sort_by_key(|a| a.ip() != ip);
                    }
                    Ok(Checked::granted(target, &g))
                }
                None => Err(Refusal::Policy(format!(
                    "{target} is the host's loopback, which only your own policy or the command line can grant (e.g. --allow-net localhost:{})",
                    target.port
                ))),
            };
        }
        let v = self.decide(target);
        if !v.allowed {
            return Err(Refusal::Policy(v.reason));
        }
        let name = match &target.host {
            // Allowed IP literals were listed by an IP or CIDR rule: dial them as they are.
            Host::Ip(ip) => {
                return Ok(Checked::new(target, SocketAddr::new(*ip, target.port), v.reason));
            }
            Host::Name(n) => n,
        };
        if let Some(m) = self.rules.hosts.iter().rev().find(|m| &m.name == name) {
            return Ok(Checked::new(target, SocketAddr::new(m.addr, target.port), v.reason));
        }
        let addrs =
            resolver.resolve(name).map_err(|e| Refusal::Resolve { name: name.to_string(), why: e.to_string() })?;
        let mut refused = None;
        for ip in addrs {
            let ip = ip.to_canonical();
            match special(ip) {
                None => return Ok(Checked::new(target, SocketAddr::new(ip, target.port), v.reason)),
                Some(class) => {
                    // A special address is dialled only if the policy lists it as an address.
                    if self.decide(&Target { host: Host::Ip(ip), port: target.port }).allowed {
                        return Ok(Checked::new(target, SocketAddr::new(ip, target.port), v.reason));
                    }
                    refused.get_or_insert(Refusal::Special { name: name.to_string(), ip, class });
                }
            }
        }
        Err(refused.unwrap_or(Refusal::Resolve { name: name.to_string(), why: "no address".into() }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use palisade_policy::{LayerKind, Lexical, ResolveOptions, Vars, parse_layer, resolve};

    use super::*;

    struct Table(HashMap<&'static str, Vec<&'static str>>);

    impl Resolver for Table {
        fn resolve(&self, name: &HostName) -> std::io::Result<Vec<IpAddr>> {
            let v = self.0.get(name.as_str()).ok_or_else(|| std::io::Error::other("NXDOMAIN"))?;
            Ok(v.iter().map(|a| a.parse().unwrap()).collect())
        }
    }

    fn decider(net: &str) -> Decider {
        let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/p"));
        let l = parse_layer(net, "t.toml", LayerKind::User, &vars, &Lexical).unwrap();
        let p = resolve(Path::new("/w/p"), Path::new("/home/u"), vec![l], ResolveOptions::default()).unwrap();
        Decider::new(p.rules)
    }

    fn table() -> Table {
        Table(HashMap::from([
            ("api.example.com", vec!["93.184.216.34"]),
            ("rebind.example.com", vec!["127.0.0.1"]),
            ("meta.example.com", vec!["169.254.169.254", "::ffff:10.0.0.1"]),
            ("mixed.example.com", vec!["10.0.0.1", "93.184.216.35"]),
        ]))
    }

    fn t(s: &str) -> Target {
        Target::parse(s, 443).unwrap()
    }

    const POLICY: &str = r#"
[network]
mode = "allowlist"
allow = ["api.example.com:443", "*.example.com:443", "10.9.0.0/16:5432", "git.internal:22"]
deny = ["evil.example.com"]
hosts = { "git.internal" = "10.9.0.7" }
"#;

    #[test]
    fn allowed_names_resolve_to_public_addresses() {
        let d = decider(POLICY);
        let c = d.check(&t("api.example.com:443"), &table()).unwrap();
        assert_eq!(c.addr(), "93.184.216.34:443".parse().unwrap());
        assert!(c.rule().starts_with("allow") && c.rule().contains("example.com"), "{}", c.rule());
        assert_eq!(
            d.check(&t("mixed.example.com:443"), &table()).unwrap().addr(),
            "93.184.216.35:443".parse().unwrap()
        );
    }

    #[test]
    fn ports_deny_and_unlisted_names() {
        let d = decider(POLICY);
        assert!(matches!(d.check(&t("api.example.com:22"), &table()), Err(Refusal::Policy(_))));
        assert!(matches!(d.check(&t("evil.example.com:443"), &table()), Err(Refusal::Policy(r)) if r.contains("deny")));
        assert!(matches!(d.check(&t("other.org:443"), &table()), Err(Refusal::Policy(_))));
    }

    #[test]
    fn special_addresses_are_not_dialled_unless_listed() {
        let d = decider(POLICY);
        assert!(matches!(
            d.check(&t("rebind.example.com:443"), &table()),
            Err(Refusal::Special { class: "loopback", .. })
        ));
        assert!(matches!(
            d.check(&t("meta.example.com:443"), &table()),
            Err(Refusal::Special { class: "cloud metadata service", .. })
        ));
        // IP literals need an IP rule; a listed one is dialled as it is.
        assert!(matches!(d.check(&t("127.0.0.1:443"), &table()), Err(Refusal::Policy(_))));
        assert_eq!(d.check(&t("10.9.1.2:5432"), &table()).unwrap().addr(), "10.9.1.2:5432".parse().unwrap());
        // A hosts mapping counts as listing: no resolution, the mapped address.
        assert_eq!(d.check(&t("git.internal:22"), &table()).unwrap().addr(), "10.9.0.7:22".parse().unwrap());
    }

    #[test]
    fn raw_tcp_needs_a_rule_naming_a_port_other_than_80_and_443() {
        let d = decider(POLICY);
        assert!(d.raw_allowed(&t("git.internal:22")).allowed);
        assert!(d.raw_allowed(&t("10.9.1.2:5432")).allowed);
        let on_443 = d.raw_allowed(&t("api.example.com:443"));
        assert!(!on_443.allowed && on_443.reason.contains("port 443"), "{on_443}");
        let d = decider("[network]\nmode = \"allowlist\"\nallow = [\"github.com\", \"a.test:80\"]\n");
        let any = d.raw_allowed(&t("github.com:22"));
        assert!(!any.allowed && any.reason.contains("github.com:22 by its port"), "{any}");
        assert!(!d.raw_allowed(&t("a.test:80")).allowed);
        assert!(!d.raw_allowed(&t("other.test:22")).allowed);
    }

    #[test]
    fn the_host_loopback_is_one_place_granted_only_by_a_trusted_layer() {
        let d = decider("[network]\nmode = \"allowlist\"\nallow = [\"localhost:11434\"]\ndeny = [\"[::1]:11434\"]\n");
        let g = d.loopback_grant(11434);
        assert!(g.is_none(), "a deny rule naming the place by any name refuses it");
        let d = decider("[network]\nmode = \"allowlist\"\nallow = [\"localhost:11434\", \"127.0.0.1:8080\"]\n");
        let g = d.loopback_grant(11434).unwrap();
        assert_eq!(g.addrs, ["127.0.0.1:11434".parse().unwrap(), "[::1]:11434".parse().unwrap()]);
        assert_eq!(d.loopback_grant(8080).unwrap().addrs, ["127.0.0.1:8080".parse().unwrap()]);
        assert!(d.loopback_grant(11435).is_none());
        for name in ["localhost:11434", "127.0.0.1:11434", "localhost:8080"] {
            assert_eq!(d.check(&t(name), &table()).unwrap().target(), &t(name), "{name}");
        }
        assert_eq!(
            d.check(&t("[::1]:11434"), &table()).unwrap().addr(),
            "[::1]:11434".parse().unwrap(),
            "the family asked for first"
        );
        assert!(d.check(&t("localhost:11435"), &table()).is_err());
        assert!(d.check(&t("127.0.0.2:11434"), &table()).is_err());
        // A project rule never grants, even when a layer below allows the name.
        let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/p"));
        let user = parse_layer(
            "[network]\nmode = \"allowlist\"\nallow = [\"a.test\"]\n",
            "u.toml",
            LayerKind::User,
            &vars,
            &Lexical,
        )
        .unwrap();
        let project =
            parse_layer("[network]\nallow = [\"a.test:80\"]\n", "p.toml", LayerKind::Project, &vars, &Lexical).unwrap();
        let p =
            resolve(Path::new("/w/p"), Path::new("/home/u"), vec![user, project], ResolveOptions::default()).unwrap();
        let mut rules = p.rules;
        rules.net_allow[1].pattern = palisade_policy::NetPattern::parse("localhost:8080").unwrap();
        assert!(Decider::new(rules).loopback_grant(8080).is_none());
    }

    #[test]
    fn dns_answers_only_names_allowed_somewhere() {
        let d = decider(POLICY);
        let n = |s: &str| HostName::parse(s).unwrap();
        assert!(d.name_allowed(&n("api.example.com")).allowed);
        assert!(d.name_allowed(&n("x.example.com")).allowed);
        assert!(!d.name_allowed(&n("evil.example.com")).allowed);
        assert!(!d.name_allowed(&n("example.com")).allowed);
        assert!(!d.name_allowed(&n("attacker.tld")).allowed);
        assert!(!decider("[network]\nmode = \"none\"\nallow = [\"a.com\"]\n").name_allowed(&n("a.com")).allowed);
    }
}

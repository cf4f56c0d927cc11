//! The DNS stub inside the sandbox: allowed names get a synthetic loopback address (AAAA and
//! other types an empty answer), everything else NXDOMAIN. No query ever leaves the machine,
//! so data hidden in labels goes nowhere (THREATS C-03); every query is reported.

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord, TYPE};

use palisade_policy::HostName;

use crate::decision::Decider;
use crate::pool::Pool;

/// What a query asked and how it was answered, for the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name as asked (escaped presentation form), or empty when unreadable.
    pub name: String,
    /// The query type (`TYPE(A)`, `TYPE(AAAA)`, ...).
    pub qtype: String,
    /// How the stub answered.
    pub answer: Answer,
}

/// How the DNS stub answered a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An allowed name, with its synthetic address for A queries.
    Allowed {
        /// The synthetic address (A queries only; AAAA get an empty answer).
        addr: Option<std::net::Ipv4Addr>,
        /// The rule that allowed the name.
        reason: String,
    },
    /// NXDOMAIN, and why.
    Denied(String),
    /// The message was not a well-formed single-question query.
    Malformed,
}

/// TTL of synthetic answers.
pub const TTL: u32 = 60;

/// Answers one DNS message. `None` when not even a header could be read (nothing to answer).
pub fn answer(msg: &[u8], decider: &Decider, pool: &mut Pool) -> Option<(Vec<u8>, Query)> {
    let Ok(q) = Packet::parse(msg) else {
        return formerr(msg);
    };
    if q.has_flags(PacketFlag::RESPONSE) || q.opcode() != OPCODE::StandardQuery || q.questions.len() != 1 {
        return formerr(msg);
    }
    let question = &q.questions[0];
    let asked = question.qname.to_string();
    let qtype = format!("{:?}", question.qtype);
    let mut reply = Packet::new_reply(q.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if q.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(question.clone());
    let name = HostName::parse(&asked);
    let verdict = match &name {
        Ok(n) if question.qclass == QCLASS::CLASS(CLASS::IN) => decider.name_allowed(n),
        Ok(_) => crate::decision::Verdict { allowed: false, reason: "only class IN is answered".into() },
        Err(e) => crate::decision::Verdict { allowed: false, reason: format!("not a host name: {e}") },
    };
    let answer = match (verdict.allowed, name) {
        (true, Ok(n)) => {
            let mut addr = None;
            if question.qtype == QTYPE::TYPE(TYPE::A) {
                match pool.assign(&n) {
                    Some(a) => {
                        addr = Some(a);
                        let rr = ResourceRecord::new(
                            question.qname.clone(),
                            CLASS::IN,
                            TTL,
                            RData::A(A { address: a.into() }),
                        );
                        reply.answers.push(rr);
                    }
                    None => *reply.rcode_mut() = RCODE::ServerFailure,
                }
            }
            Answer::Allowed { addr, reason: verdict.reason }
        }
        _ => {
            *reply.rcode_mut() = RCODE::NameError;
            Answer::Denied(verdict.reason)
        }
    };
    let bytes = reply.build_bytes_vec_compressed().ok()?;
    Some((bytes, Query { name: asked, qtype, answer }))
}

/// FORMERR with the request's id, when at least the id could be read.
fn formerr(msg: &[u8]) -> Option<(Vec<u8>, Query)> {
    let id = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
    let mut reply = Packet::new_reply(id);
    *reply.rcode_mut() = RCODE::FormatError;
    let bytes = reply.build_bytes_vec().ok()?;
    Some((bytes, Query { name: String::new(), qtype: String::new(), answer: Answer::Malformed }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use palisade_policy::{LayerKind, Lexical, ResolveOptions, Vars, parse_layer, resolve};
    use simple_dns::{Name, Question};

    use super::*;

    fn decider() -> Decider {
        let text = "[network]\nmode = \"allowlist\"\nallow = [\"api.example.com:443\", \"*.pkg.dev\"]\ndeny = [\"bad.pkg.dev\"]\n";
        let vars = Vars::with_defaults(Path::new("/home/u"), Path::new("/w/p"));
        let l = parse_layer(text, "t", LayerKind::User, &vars, &Lexical).unwrap();
        Decider::new(
            resolve(Path::new("/w/p"), Path::new("/home/u"), vec![l], ResolveOptions::default()).unwrap().rules,
        )
    }

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(Name::new_unchecked(name), QTYPE::TYPE(qtype), QCLASS::CLASS(CLASS::IN), false));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn allowed_names_get_synthetic_addresses() {
        let (d, mut pool) = (decider(), Pool::default());
        let (bytes, q) = answer(&query("API.Example.com", TYPE::A), &d, &mut pool).unwrap();
        let r = Packet::parse(&bytes).unwrap();
        assert_eq!(r.id(), 0x1234);
        assert_eq!(r.rcode(), RCODE::NoError);
        assert_eq!(r.answers.len(), 1);
        let RData::A(a) = &r.answers[0].rdata else { panic!("not an A record") };
        let addr = std::net::Ipv4Addr::from(a.address);
        assert_eq!(addr.octets()[..2], [127, 77]);
        assert_eq!(q.answer, Answer::Allowed { addr: Some(addr), reason: q.answer_reason() });
        assert_eq!(pool.name_of(addr).unwrap().as_str(), "api.example.com");
        // AAAA: an empty answer, so clients fall back to IPv4.
        let (bytes, _) = answer(&query("api.example.com", TYPE::AAAA), &d, &mut pool).unwrap();
        let r = Packet::parse(&bytes).unwrap();
        assert_eq!((r.rcode(), r.answers.len()), (RCODE::NoError, 0));
    }

    #[test]
    fn denied_and_exfiltrating_names_get_nxdomain() {
        let (d, mut pool) = (decider(), Pool::default());
        for name in [
            "attacker.tld",
            "bad.pkg.dev",
            "6a6f686e2073656372657420.attacker.tld",
            "example.com",
            "api.example.com.evil.net",
        ] {
            let (bytes, q) = answer(&query(name, TYPE::A), &d, &mut pool).unwrap();
            assert_eq!(Packet::parse(&bytes).unwrap().rcode(), RCODE::NameError, "{name}");
            assert!(matches!(q.answer, Answer::Denied(_)), "{name}");
        }
        assert!(pool.is_empty(), "denied names must not take addresses");
    }

    #[test]
    fn hostile_messages_are_answered_or_dropped_never_a_panic() {
        let (d, mut pool) = (decider(), Pool::default());
        assert!(answer(&[], &d, &mut pool).is_none());
        assert!(answer(&[0x12], &d, &mut pool).is_none());
        let (bytes, q) = answer(&[0x12, 0x34, 0xff], &d, &mut pool).unwrap();
        assert_eq!(Packet::parse(&bytes).unwrap().rcode(), RCODE::FormatError);
        assert_eq!(q.answer, Answer::Malformed);
        // A label containing a dot, and one with a NUL byte: not host names.
        let mut p = Packet::new_query(7);
        let labels =
            [simple_dns::Label::new(&b"api.example"[..]).unwrap(), simple_dns::Label::new(&b"com"[..]).unwrap()];
        p.questions.push(Question::new(
            Name::new_with_labels(&labels),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let (bytes, _) = answer(&p.build_bytes_vec().unwrap(), &d, &mut pool).unwrap();
        assert_eq!(Packet::parse(&bytes).unwrap().rcode(), RCODE::NameError);
        for seed in 0..2000u32 {
            let mut m = query("x.pkg.dev", TYPE::A);
            let i = (seed as usize * 7) % m.len();
            m[i] ^= (seed as u8).wrapping_mul(31) | 1;
            let _ = answer(&m, &d, &mut pool);
        }
    }

    impl Query {
        fn answer_reason(&self) -> String {
            match &self.answer {
                Answer::Allowed { reason, .. } | Answer::Denied(reason) => reason.clone(),
                Answer::Malformed => String::new(),
            }
        }
    }
}

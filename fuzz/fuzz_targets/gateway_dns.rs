//! Any bytes sent to the DNS stub get an answer or nothing, never a panic; an answer always
//! parses as a DNS message, and a denied name never takes a synthetic address.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use palisade_gateway::decision::Decider;
use palisade_gateway::dns::{Answer, answer};
use palisade_gateway::pool::Pool;
use palisade_policy::*;

fuzz_target!(|data: &[u8]| {
    let vars = Vars::with_defaults(Path::new("/h"), Path::new("/w/p"));
    let text = "[network]\nmode = \"allowlist\"\nallow = [\"*.example.com\"]\n";
    let layer = parse_layer(text, "f", LayerKind::User, &vars, &Lexical).unwrap();
    let p = resolve(Path::new("/w/p"), Path::new("/h"), vec![layer], ResolveOptions::default()).unwrap();
    let (d, mut pool) = (Decider::new(p.rules), Pool::default());
    if let Some((bytes, q)) = answer(data, &d, &mut pool) {
        assert!(simple_dns::Packet::parse(&bytes).is_ok());
        if let Answer::Denied(_) = q.answer {
            assert!(pool.is_empty());
        }
    }
});

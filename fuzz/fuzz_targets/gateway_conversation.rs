//! Arbitrary client bytes inside a tunnel allowed for `a.test:80`, through hyper and the
//! per-request checks, to a hyper origin: every request the origin parses names `a.test` in
//! origin-form, and the origin can parse everything the gateway sends. Nothing hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::fuzzing::conversation;
use palisade_policy::Target;

fuzz_target!(|data: &[u8]| {
    let o = conversation(data);
    assert_eq!(o.origin_error, None, "the origin could not parse what the gateway sent");
    for (method, uri, host) in &o.at_origin {
        assert!(uri.starts_with('/') || (uri == "*" && method == "OPTIONS"), "{method} {uri}");
        let host = host.as_deref().expect("a Host header");
        let t = Target::parse(host, 80).expect("a valid Host");
        assert_eq!(t.host.to_string(), "a.test", "{host}");
        assert_eq!(t.port, 80, "{host}");
    }
});

//! Host and pattern parsing never panics, and whatever parses prints back to a form that
//! parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::{NetPattern, Target};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = NetPattern::parse(text) {
        let again = NetPattern::parse(&p.to_string()).expect("a printed pattern parses");
        assert_eq!(again, p);
    }
    if let Ok(t) = Target::parse(text, 443) {
        let again = Target::parse(&t.to_string(), 1).expect("a printed target parses");
        assert_eq!(again, t);
        let _ = p_matches(&t);
    }
});

fn p_matches(t: &Target) -> bool {
    NetPattern::parse("*.example.com:443").map(|p| p.matches(t)).unwrap_or(false)
}

//! Where a request goes: `request_target` and `connect_target` on arbitrary URIs and `Host`
//! values never panic, and what they accept round-trips (the target parses back to itself);
//! a refusal never carries a control character into a header.
#![no_main]

use ::http::header::{HOST, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use palisade_gateway::http;
use palisade_policy::Target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (uri, host) = text.split_once('\n').unwrap_or((&text, ""));
    let mut headers = HeaderMap::new();
    for h in host.split('\n').filter(|h| !h.is_empty()) {
        if let Ok(v) = HeaderValue::from_str(h) {
            headers.append(HOST, v);
        }
    }
    if let Ok(u) = uri.parse::<::http::Uri>() {
        if let Ok(t) = http::request_target(&u, &headers, 80) {
            assert_eq!(Target::parse(&t.to_string(), 80).unwrap(), t);
            let o = http::to_origin(::http::Request::builder().uri(u.clone()).body(()).unwrap(), &t);
            assert!(o.uri().to_string().starts_with('/') || o.uri() == "*", "{}", o.uri());
        }
        if let Ok(t) = http::connect_target(&u) {
            assert_eq!(Target::parse(&t.to_string(), 443).unwrap(), t);
        }
    }
    let r = http::refusal(::http::StatusCode::FORBIDDEN, &text);
    for v in r.headers().values() {
        assert!(!v.as_bytes().iter().any(|b| b.is_ascii_control()));
    }
});

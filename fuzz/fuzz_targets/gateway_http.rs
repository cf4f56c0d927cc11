//! HTTP request-head parsing never panics and never claims more bytes than given; the 403
//! response never carries a control character into its header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::{Parse, http};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parse::Done(_, n)) = http::head(data) {
        assert!(n <= data.len() && n <= data.len().max(http::MAX_HEAD));
    }
    let reason = String::from_utf8_lossy(data);
    let resp = http::forbidden(&reason);
    let text = String::from_utf8_lossy(&resp);
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(head.matches("\r\n").count(), 4, "exactly five header lines");
});

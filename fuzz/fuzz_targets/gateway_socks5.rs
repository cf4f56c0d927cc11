//! SOCKS5 greeting and request parsing never panic, never claim more bytes than given, and
//! accept only CONNECT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::{Parse, socks5};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parse::Done(_, n)) = socks5::greeting(data) {
        assert!(n <= data.len());
    }
    if let Ok(Parse::Done(_, n)) = socks5::request(data) {
        assert!(n <= data.len());
        assert_eq!(data[1], 1, "only CONNECT is accepted");
    }
});

//! Classifying a tunnel's first bytes (TLS ClientHello, HTTP request line, other) never
//! panics and never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_gateway::{Parse, peek};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parse::Done(_, n)) = peek::classify(data) {
        assert!(n <= data.len());
    }
});

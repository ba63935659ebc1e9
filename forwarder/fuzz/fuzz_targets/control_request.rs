//! Arbitrary bytes as a control socket request: the decoder never panics, and what it
//! accepts is a request it can describe.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = forwarder::api::control::parse(data) {
        let _ = format!("{req:?}");
    }
});

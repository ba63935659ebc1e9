//! The SNI/Host classifier fed arbitrary payloads cut into up to four segments: it never
//! panics, and any name it reports lies within what it was given.
#![no_main]

use forwarder_common::classify::{Outcome, run_segments};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the cut points.
    let (cuts, payload) = data.split_at(data.len().min(2));
    let mut segs: Vec<&[u8]> = Vec::new();
    let mut rest = payload;
    for c in cuts {
        let at = (*c as usize * 8).min(rest.len());
        let (a, b) = rest.split_at(at);
        segs.push(a);
        rest = b;
    }
    segs.push(rest);
    let (outcome, name) = run_segments(&segs);
    if let Some(Outcome::TlsName(n) | Outcome::HttpName(n)) = outcome {
        assert_eq!(n.len, name.len());
        assert!(name.len() <= payload.len());
    }
});

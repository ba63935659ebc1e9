//! Arbitrary bytes as a TCP option area (what the kernel records from both SYNs and hands
//! to the daemon): the parser answers without panicking, and what it accepts is what an
//! independent walk of the same bytes finds.
#![no_main]

use forwarder_common::handoff::{Negotiated, parse_tcp_options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(o) = parse_tcp_options(data) else {
        return;
    };
    if let Some(m) = o.mss {
        assert!(data.windows(2).any(|w| w == [2, 4]), "MSS without its kind");
        let _ = m;
    }
    let n = Negotiated::from_syns(&o, &o);
    if let Some((c, s)) = n.wscale {
        assert!(c <= 14 && s <= 14, "shift above 14");
    }
    assert_eq!(n.timestamps, o.timestamp.is_some());
});

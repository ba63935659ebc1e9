//! Arbitrary bytes as an Ethernet frame: whatever the parser accepts must lie within the
//! frame, and the MSS scan over it must stay within the TCP header.
#![no_main]

use forwarder_common::{
    PROTO_TCP,
    packet::{PacketInfo, TCP_HLEN, find_mss, parse_ethernet},
};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8], info: &PacketInfo) {
    let l4 = info.l4();
    let l4_len = info.l4_len as usize;
    assert!(info.l3() < l4, "l3 {} not before l4 {l4}", info.l3());
    assert!(
        l4 + l4_len <= data.len(),
        "l4 {l4} + l4_len {l4_len} beyond {} bytes",
        data.len()
    );
    if info.proto == PROTO_TCP {
        let hlen = info.tcp_hlen as usize;
        assert!(hlen >= TCP_HLEN, "tcp_hlen {hlen} < {TCP_HLEN}");
        assert!(hlen <= l4_len, "tcp_hlen {hlen} > l4_len {l4_len}");
        if let Some((off, _)) = find_mss(data, l4, hlen) {
            assert!(
                off + 2 <= data.len(),
                "MSS at {off} beyond {} bytes",
                data.len()
            );
            assert!(
                off + 2 <= l4 + hlen,
                "MSS at {off} outside the TCP header ({l4}+{hlen})"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = parse_ethernet(data) {
        check(data, &info);
    }
});

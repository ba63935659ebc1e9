use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

#[test]
fn the_syn_guard_holds_while_the_rate_is_exceeded_and_for_a_while_after() {
    let mut g = SynGuard::default();
    let ms = 1_000_000u64;
    let t0 = 1_000 * ms;
    // 1000 per second: 100 per window pass, the 101st sets the guard.
    for i in 0..100 {
        assert!(!syn_guard_tick(&mut g, t0 + i, 1000), "SYN {i}");
    }
    assert!(syn_guard_tick(&mut g, t0 + 100, 1000));
    // It holds for SYN_FLOOD_HOLD_NS, even at a trickle.
    assert!(syn_guard_tick(&mut g, t0 + 5_000 * ms, 1000));
    assert!(!syn_guard_tick(&mut g, t0 + 100 + SYN_FLOOD_HOLD_NS, 1000));
    // A slow, steady rate never sets it.
    let mut g = SynGuard::default();
    for i in 0..1000u64 {
        assert!(!syn_guard_tick(&mut g, t0 + i * 2 * ms, 1000));
    }
}

#[test]
fn counter_names_are_snake_case() {
    assert_eq!(Counter::XdpRx.name(), "xdp_rx");
    assert_eq!(Counter::XdpPassIpOptions.name(), "xdp_pass_ip_options");
    assert_eq!(
        Counter::ClassifyNotTlsOrHttp.name(),
        "classify_not_tls_or_http"
    );
    for c in Counter::ALL {
        let n = c.name();
        assert!(
            n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && !n.starts_with('_')
                && !n.ends_with('_')
                && !n.contains("__"),
            "{c:?}: {n}"
        );
    }
}

#[test]
fn counter_count_is_the_list() {
    assert_eq!(COUNTER_COUNT as usize, Counter::ALL.len());
    assert_eq!(
        Counter::ALL[Counter::ALL.len() - 1] as u32 + 1,
        COUNTER_COUNT
    );
}

fn v4(a: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(a), 0, 0, 0]
}

#[test]
fn address_words_are_the_packet_bytes() {
    let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    assert_eq!(addr_words(a), (v4([192, 0, 2, 7]), FAMILY_V4));
    assert_eq!(words_to_addr(v4([192, 0, 2, 7]), FAMILY_V4), Some(a));
    let a6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x1234, 0x5678);
    let (w, f) = addr_words(IpAddr::V6(a6));
    assert_eq!(f, FAMILY_V6);
    let mut bytes = [0u8; 16];
    for (chunk, w) in bytes.chunks_exact_mut(4).zip(w) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    assert_eq!(bytes, a6.octets());
    assert_eq!(words_to_addr(w, FAMILY_V6), Some(IpAddr::V6(a6)));
    assert_eq!(words_to_addr([0; 4], 0), None);
    assert_eq!(words_to_addr([1; 4], 5), None);
}

#[test]
fn the_reverse_key_is_the_other_entrys_key() {
    let client = v4([198, 51, 100, 1]);
    let public = v4([203, 0, 113, 1]);
    let backend = v4([10, 8, 0, 2]);
    let (cport, pport, bport) = (40000u16.to_be(), 443u16.to_be(), 8443u16.to_be());
    let fwd_key = FlowKey {
        src: client,
        dst: public,
        sport: cport,
        dport: pport,
        proto: PROTO_TCP,
        family: FAMILY_V4,
        _pad: [0; 2],
    };
    let fwd = FlowValue {
        nat_addr: backend,
        nat_port: bport,
        direction: DIR_TO_BACKEND,
        ..FlowValue::default()
    };
    let rev_key = FlowKey {
        src: backend,
        dst: client,
        sport: bport,
        dport: cport,
        ..fwd_key
    };
    let rev = FlowValue {
        nat_addr: public,
        nat_port: pport,
        direction: DIR_TO_CLIENT,
        ..FlowValue::default()
    };
    assert_eq!(fwd_key.reversed(&fwd), rev_key);
    assert_eq!(rev_key.reversed(&rev), fwd_key);
    // In place, over whatever the destination held.
    let mut out = FlowKey {
        _pad: [0xff; 2],
        ..FlowKey::default()
    };
    fwd_key.reverse_into(&fwd, &mut out);
    assert_eq!(out, rev_key);
    rev_key.reverse_into(&rev, &mut out);
    assert_eq!(out, fwd_key);
}

#[test]
fn counters_are_dense_and_named_uniquely() {
    for (i, c) in Counter::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i, "{c:?} out of place");
        for other in &Counter::ALL[..i] {
            assert_ne!(c.name(), other.name());
        }
    }
}

#[test]
fn address_words_round_trip() {
    for a in ["203.0.113.7", "2001:db8::1", "::ffff:1.2.3.4", "fd00::2"] {
        let a: IpAddr = a.parse().unwrap();
        let (w, f) = addr_words(a);
        assert_eq!(words_to_addr(w, f), Some(a));
    }
    assert_eq!(words_to_addr([0; 4], 0), None);
}

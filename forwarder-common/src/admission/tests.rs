use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::{FAMILY_V6, addr_words};

fn bogon(s: &str) -> bool {
    let (w, f) = addr_words(s.parse::<IpAddr>().unwrap());
    is_bogon_source(f, &w)
}

#[test]
fn addresses_no_client_has_are_bogons() {
    for a in [
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "127.255.0.9",
        "169.254.1.1",
        "224.0.0.1",
        "239.1.2.3",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:198.51.100.7",
        "::198.51.100.7",
        "fe80::1",
        "febf::1",
        "ff02::1",
        "ff05::2",
    ] {
        assert!(bogon(a), "{a}");
    }
    for a in [
        "1.1.1.1",
        "10.8.0.2",
        "100.64.0.1",
        "169.253.255.255",
        "169.255.0.1",
        "198.51.100.7",
        "223.255.255.255",
        "2001:db8::1",
        "fec0::1",
        "fc00::1",
        "64:ff9b::1.2.3.4",
    ] {
        assert!(!bogon(a), "{a}");
    }
}

#[test]
fn an_ipv6_source_is_keyed_by_its_prefix() {
    let (a, f) = addr_words("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap());
    let (b, _) = addr_words("2001:db8:1:2::7".parse().unwrap());
    let (c, _) = addr_words("2001:db8:1:3::7".parse().unwrap());
    assert_eq!(source_key(f, &a, 64), source_key(f, &b, 64));
    assert_eq!(
        source_key(f, &a, 0),
        source_key(f, &b, 0),
        "0 is the default /64"
    );
    assert_ne!(source_key(f, &a, 64), source_key(f, &c, 64));
    assert_eq!(source_key(f, &b, 48), source_key(f, &c, 48));
    assert_ne!(source_key(f, &a, 128), source_key(f, &b, 128));
    let k = source_key(f, &a, 56);
    let (want, _) = addr_words("2001:db8:1::".parse().unwrap());
    assert_eq!(k.addr, want);
    let (v4, f4) = addr_words(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
    assert_eq!(
        source_key(f4, &v4, 64).addr,
        v4,
        "IPv4 keeps the full address"
    );
}

#[test]
fn a_reset_counts_only_inside_what_the_connection_carried() {
    // Sent up to 1000, the receiver acknowledged 600.
    assert!(end_in_window(1000, 1000, Some(600)));
    assert!(end_in_window(600, 1000, Some(600)));
    assert!(end_in_window(800, 1000, Some(600)));
    assert!(end_in_window(1000 + SEQ_SLACK, 1000, Some(600)));
    assert!(!end_in_window(599, 1000, Some(600)));
    assert!(!end_in_window(1001 + SEQ_SLACK, 1000, Some(600)));
    assert!(!end_in_window(0x8000_0000, 1000, Some(600)));
    // Nothing acknowledged yet: only from what was sent on.
    assert!(end_in_window(1000, 1000, None));
    assert!(!end_in_window(999, 1000, None));
    // Around the wrap.
    assert!(end_in_window(5, 10, Some(u32::MAX - 5)));
    assert!(!end_in_window(u32::MAX - 6, 10, Some(u32::MAX - 5)));
    // An acknowledgment beyond what was sent does not widen the window.
    assert!(!end_in_window(999, 1000, Some(2000)));
    assert_eq!(seq_end(u32::MAX, 1, false, false), 0);
    assert_eq!(seq_end(7, 0, true, false), 8);
    assert_eq!(seq_end(7, 10, false, true), 18);
}

proptest! {
    /// A blind guess lands in the window with odds of at most (in flight + slack) / 2^32.
    #[test]
    fn the_window_is_exactly_in_flight_plus_slack(sent in any::<u32>(), in_flight in 0u32..1 << 20, off in any::<u32>()) {
        let acked = sent.wrapping_sub(in_flight);
        let seq = acked.wrapping_add(off);
        prop_assert_eq!(end_in_window(seq, sent, Some(acked)), off <= in_flight + SEQ_SLACK);
    }

    #[test]
    fn prefix_keys_agree_with_std(a in any::<u128>(), b in any::<u128>(), bits in 1u8..=128) {
        let (wa, f) = addr_words(IpAddr::V6(Ipv6Addr::from(a)));
        let (wb, _) = addr_words(IpAddr::V6(Ipv6Addr::from(b)));
        let mask = u128::MAX << (128 - bits as u32);
        prop_assert_eq!(f, FAMILY_V6);
        prop_assert_eq!(
            source_key(f, &wa, bits) == source_key(f, &wb, bits),
            a & mask == b & mask
        );
    }
}

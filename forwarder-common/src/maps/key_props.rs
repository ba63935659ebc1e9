use core::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn family() -> impl Strategy<Value = u8> {
    prop_oneof![Just(FAMILY_V4), Just(FAMILY_V6)]
}

/// Address words as the kernel writes them: IPv4 in the first word, the rest zero.
fn words(family: u8, w: [u32; 4]) -> [u32; 4] {
    if family == FAMILY_V4 {
        [w[0], 0, 0, 0]
    } else {
        w
    }
}

fn key(src: [u32; 4], dst: [u32; 4], ports: (u16, u16), proto: u8, family: u8) -> FlowKey {
    FlowKey {
        src: words(family, src),
        dst: words(family, dst),
        sport: ports.0,
        dport: ports.1,
        proto,
        family,
        _pad: [0; 2],
    }
}

proptest! {
    #[test]
    fn addresses_round_trip(v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>()) {
        for a in [IpAddr::from(v4), IpAddr::from(v6)] {
            let (w, f) = addr_words(a);
            prop_assert_eq!(words_to_addr(w, f), Some(a));
        }
    }

    #[test]
    fn words_round_trip(w in any::<[u32; 4]>(), f in family()) {
        let w = words(f, w);
        let a = words_to_addr(w, f).expect("a known family");
        prop_assert_eq!(addr_words(a), (w, f));
    }

    /// Reversing a connection's key twice, through the entries both directions hold,
    /// gives the key back; the reply key's addresses are the translated ones.
    #[test]
    fn reversing_twice_is_the_identity(
        client in any::<[u32; 4]>(),
        public in any::<[u32; 4]>(),
        backend in any::<[u32; 4]>(),
        ports in any::<(u16, u16, u16)>(),
        proto in prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP)],
        f in family(),
    ) {
        let (cport, pport, bport) = ports;
        let fwd_key = key(client, public, (cport, pport), proto, f);
        let fwd = FlowValue {
            nat_addr: words(f, backend),
            nat_port: bport,
            direction: DIR_TO_BACKEND,
            ..FlowValue::default()
        };
        let rev_key = fwd_key.reversed(&fwd);
        prop_assert_eq!(rev_key, key(backend, client, (bport, cport), proto, f));
        let rev = FlowValue {
            nat_addr: fwd_key.dst,
            nat_port: fwd_key.dport,
            direction: DIR_TO_CLIENT,
            ..FlowValue::default()
        };
        prop_assert_eq!(rev_key.reversed(&rev), fwd_key);
    }
}

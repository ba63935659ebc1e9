//! The shapes' frames: checksums, sources, flags, pairs and ports.

use super::*;
use crate::traffic::flood_frames::{SPOOF_TTL, checksums_ok};

fn aim() -> Aim {
    Aim {
        ns: String::new(),
        iface: String::new(),
        macs: Macs {
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
        },
        vps_v4: Ipv4Addr::new(203, 0, 113, 1),
        vps_v6: "2001:db8:1::1".parse().unwrap(),
        tcp_port: 443,
        udp_port: 443,
        vps_tunnel: Ipv4Addr::new(10, 8, 0, 1),
        home_tunnel: Ipv4Addr::new(10, 8, 0, 2),
        probe_ports: 32768..=60999,
    }
}

/// (source address, TCP flags or 0 for UDP, source port) of an Ethernet frame.
fn fields(f: &[u8]) -> (IpAddr, u8, u16, u8) {
    if f[12..14] == [0x08, 0x00] {
        let ip = &f[14..];
        let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
        let l4 = &ip[20..];
        let flags = if ip[9] == 6 { l4[13] } else { 0 };
        (src, flags, u16::from_be_bytes([l4[0], l4[1]]), ip[8])
    } else {
        let ip = &f[14..];
        let src: [u8; 16] = ip[8..24].try_into().unwrap();
        let l4 = &ip[40..];
        let flags = if ip[6] == 6 { l4[13] } else { 0 };
        (
            IpAddr::V6(Ipv6Addr::from(src)),
            flags,
            u16::from_be_bytes([l4[0], l4[1]]),
            ip[7],
        )
    }
}

#[test]
fn every_shape_sends_valid_frames_of_its_kind() {
    let aim = aim();
    for shape in Shape::ALL {
        let mut s = Shaper::new(&aim, shape);
        for _ in 0..64 {
            let u = s.next_unit();
            for f in std::iter::once(&u.first).chain(u.then.as_ref()) {
                assert!(checksums_ok(f), "{shape:?}: bad checksum");
                let (src, flags, _, ttl) = fields(f);
                assert_eq!(ttl, SPOOF_TTL, "{shape:?}");
                match shape.kind() {
                    Kind::Bogon => assert!(
                        match src {
                            IpAddr::V4(a) =>
                                a == aim.vps_tunnel
                                    || a == aim.home_tunnel
                                    || a == aim.vps_v4
                                    || a.is_loopback()
                                    || a.is_multicast()
                                    || a.is_unspecified()
                                    || a.is_link_local(),
                            IpAddr::V6(a) => a.is_loopback() || a.is_unicast_link_local(),
                        },
                        "{shape:?}: {src}"
                    ),
                    _ => match src {
                        IpAddr::V4(a) => {
                            assert!(!a.is_private() && !a.is_loopback(), "{shape:?}: {a}");
                            assert_ne!(a.octets()[..3], [203, 0, 113]);
                        }
                        IpAddr::V6(a) => assert_eq!(a.segments()[..4], SPOOF_PREFIX_V6),
                    },
                }
                if shape.is_udp() {
                    assert_eq!(flags, 0);
                }
            }
            let (a, fa, pa, _) = fields(&u.first);
            assert!(
                aim.source_ports(shape).contains(&pa),
                "{shape:?}: port {pa}"
            );
            match shape {
                Shape::Syn | Shape::Syn6Prefix => assert_eq!(fa, TCP_SYN),
                Shape::Ack | Shape::Ack6Prefix | Shape::ProbeAcks => assert_eq!(fa, TCP_ACK),
                Shape::Rst => assert_eq!(fa, TCP_RST),
                Shape::Fin => assert_eq!(fa, TCP_FIN),
                Shape::Data => assert_eq!(fa, TCP_ACK | TCP_PSH),
                _ => {}
            }
            if let Some(t) = &u.then {
                let (b, fb, pb, _) = fields(t);
                assert_eq!(a, b, "{shape:?}: a pair comes from one source");
                match shape {
                    Shape::SynTwice => assert_eq!(u.first, *t),
                    Shape::RstThenSyn => {
                        assert_eq!((fa, fb), (TCP_RST, TCP_SYN));
                        assert_ne!(pa, pb);
                        assert!(aim.source_ports(shape).contains(&pb));
                    }
                    Shape::UdpPair => assert_eq!(pa, pb),
                    other => panic!("{other:?} sends no pairs"),
                }
            }
        }
    }
}

#[test]
fn probe_acks_sweep_the_local_port_range() {
    let aim = aim();
    let mut s = Shaper::new(&aim, Shape::ProbeAcks);
    let ports: Vec<u16> = (0..28233).map(|_| fields(&s.next_unit().first).2).collect();
    assert_eq!(ports[0], 32768);
    assert_eq!(ports[28231], 60999);
    assert_eq!(ports[28232], 32768);
    // Every other shape's range lies below it, and none overlaps another.
    let mut ends: Vec<_> = Shape::ALL
        .iter()
        .filter(|s| **s != Shape::ProbeAcks)
        .map(|s| aim.source_ports(*s))
        .collect();
    ends.sort_by_key(|r| *r.start());
    assert!(ends.windows(2).all(|w| w[0].end() < w[1].start()));
    assert!(ends.last().is_some_and(|r| *r.end() < 32768));
}

#[test]
fn the_udp_trigger_is_an_initial_sized_long_header_of_an_unknown_version() {
    let p = unknown_version_long_header(7);
    assert_eq!(p.len(), 1200);
    assert_eq!(p[0] & 0x80, 0x80);
    assert_ne!(&p[1..5], &[0, 0, 0, 1]);
    assert_eq!(Shape::from_name("udp-pair"), Some(Shape::UdpPair));
    assert!(
        Shape::ALL
            .iter()
            .all(|s| Shape::from_name(s.name()) == Some(*s))
    );
}

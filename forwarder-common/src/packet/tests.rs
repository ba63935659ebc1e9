extern crate std;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::{FAMILY_V4, PROTO_TCP};

fn tcp_syn_v4(opts: &[u8]) -> Vec<u8> {
    let tcp_len = 20 + opts.len();
    let mut p = Vec::new();
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    let tot = (20 + tcp_len) as u16;
    p[16..18].copy_from_slice(&tot.to_be_bytes());
    p.extend_from_slice(&[203, 0, 113, 2, 203, 0, 113, 1]);
    p.extend_from_slice(&[0xc0, 0x00, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0]);
    p.push(((tcp_len / 4) as u8) << 4);
    p.extend_from_slice(&[TCP_SYN, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(opts);
    p
}

#[test]
fn parses_ipv4_tcp_syn() {
    let p = tcp_syn_v4(&[2, 4, 0x05, 0xb4]);
    let info = parse_ethernet(&p[..]).unwrap();
    assert_eq!(info.family, FAMILY_V4);
    assert_eq!(info.proto, PROTO_TCP);
    assert_eq!(u16::from_be(info.dport), 443);
    assert_eq!(info.tcp_flags, TCP_SYN);
    assert_eq!(info.dst[0].to_ne_bytes(), [203, 0, 113, 1]);
    assert_eq!(
        find_mss(&p[..], info.l4(), info.tcp_hlen as usize),
        Some((14 + 20 + 22, 1460))
    );
}

#[test]
fn mss_after_nops_and_other_options() {
    let p = tcp_syn_v4(&[1, 1, 4, 2, 2, 4, 0x23, 0x28]);
    let info = parse_ethernet(&p[..]).unwrap();
    assert_eq!(
        find_mss(&p[..], info.l4(), info.tcp_hlen as usize).map(|m| m.1),
        Some(9000)
    );
    // Past the scanned options the segment is left alone rather than scanned forever.
    let p = tcp_syn_v4(&[
        1, 1, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 0x23, 0x28, 1, 0,
    ]);
    let info = parse_ethernet(&p[..]).unwrap();
    assert_eq!(find_mss(&p[..], info.l4(), info.tcp_hlen as usize), None);
}

#[test]
fn truncated_and_lying_headers_are_malformed() {
    let p = tcp_syn_v4(&[2, 4, 0x05, 0xb4]);
    for cut in 0..p.len() {
        let r = parse_ethernet(&p[..cut]);
        assert!(r.is_err(), "accepted a frame cut at {cut}");
    }
    let mut bad_ihl = p.clone();
    bad_ihl[14] = 0x44;
    assert_eq!(parse_ethernet(&bad_ihl[..]), Err(Skip::Malformed));
    let mut options = p.clone();
    options[14] = 0x46;
    assert_eq!(parse_ethernet(&options[..]), Err(Skip::IpOptions));
    let mut frag = p.clone();
    frag[20] = 0x20; // more fragments
    assert_eq!(parse_ethernet(&frag[..]), Err(Skip::Fragment));
    let mut doff = p.clone();
    doff[14 + 20 + 12] = 0x40;
    assert_eq!(parse_ethernet(&doff[..]), Err(Skip::Malformed));
    let mut arp = p.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(parse_ethernet(&arp[..]), Err(Skip::NotIp));
}

#[test]
fn malformed_mss_options_are_not_guessed() {
    for opts in [
        &[2u8, 3, 5, 0][..],
        &[2, 0, 0, 0],
        &[8, 40, 0, 0],
        &[0, 2, 4, 5],
    ] {
        let p = tcp_syn_v4(opts);
        let info = parse_ethernet(&p[..]).unwrap();
        assert_eq!(
            find_mss(&p[..], info.l4(), info.tcp_hlen as usize),
            None,
            "{opts:?}"
        );
    }
}

proptest! {
    #[test]
    fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(info) = parse_ethernet(&data[..]) {
            // Whatever is accepted lies within the frame.
            prop_assert!(info.l4() + info.l4_len as usize <= data.len());
            let _ = find_mss(&data[..], info.l4(), info.tcp_hlen as usize);
        }
        let _ = parse_ip(&data[..]);
    }

    #[test]
    fn mss_found_within_the_scanned_options(nops in 0usize..MAX_TCP_OPTIONS, mss in any::<u16>()) {
        let mut opts: Vec<u8> = std::vec![1; nops];
        opts.extend_from_slice(&[2, 4]);
        opts.extend_from_slice(&mss.to_be_bytes());
        while !opts.len().is_multiple_of(4) { opts.push(0); }
        prop_assume!(opts.len() <= 40);
        let p = tcp_syn_v4(&opts);
        let info = parse_ethernet(&p[..]).unwrap();
        prop_assert_eq!(find_mss(&p[..], info.l4(), info.tcp_hlen as usize).map(|m| m.1), Some(mss));
    }
}

#[test]
fn impossible_tcp_flag_combinations_are_malformed() {
    let with_flags = |f: u8| {
        let mut p = tcp_syn_v4(&[]);
        p[14 + 20 + 13] = f;
        p
    };
    for (name, f, ok) in [
        ("SYN", TCP_SYN, true),
        ("SYN+ACK", TCP_SYN | TCP_ACK, true),
        ("ACK", TCP_ACK, true),
        ("FIN+ACK", TCP_FIN | TCP_ACK, true),
        ("PSH+ACK", 0x08 | TCP_ACK, true),
        ("RST", TCP_RST, true),
        ("RST+ACK", TCP_RST | TCP_ACK, true),
        ("SYN+ECE+CWR", TCP_SYN | 0xc0, true),
        ("SYN+FIN", TCP_SYN | TCP_FIN, false),
        ("SYN+RST", TCP_SYN | TCP_RST, false),
        ("null", 0, false),
        ("FIN", TCP_FIN, false),
        ("Xmas (FIN+PSH+URG)", TCP_FIN | 0x08 | 0x20, false),
        ("all", 0xff, false),
    ] {
        assert_eq!(tcp_flags_valid(f), ok, "{name}");
        let r = parse_ethernet(&with_flags(f)[..]);
        assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
        if !ok {
            assert_eq!(r.unwrap_err(), Skip::Malformed, "{name}");
        }
    }
}

proptest! {
    #[test]
    fn a_tcp_segment_parses_exactly_when_its_flags_can_be_real(f in any::<u8>()) {
        let mut p = tcp_syn_v4(&[]);
        p[14 + 20 + 13] = f;
        let real = if f & TCP_SYN != 0 {
            f & (TCP_FIN | TCP_RST) == 0
        } else {
            f & TCP_ACK != 0 || f & TCP_RST != 0
        };
        prop_assert_eq!(parse_ethernet(&p[..]).is_ok(), real);
    }
}

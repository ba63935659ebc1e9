use std::net::Ipv4Addr;

use forwarder_common::{
    FAMILY_V6, PROTO_TCP,
    handoff::{HANDOFF_PAYLOAD_MAX, TCP_OPTIONS_MAX},
};

use super::*;

const LINUX_SYN: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
];

fn key(v6: bool) -> FlowKey {
    let (src, dst, family) = if v6 {
        let a = |last: u8| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            b[15] = last;
            let mut w = [0u32; 4];
            for (i, c) in b.chunks(4).enumerate() {
                w[i] = u32::from_ne_bytes(c.try_into().unwrap());
            }
            w
        };
        (a(2), a(1), FAMILY_V6)
    } else {
        (
            [u32::from(Ipv4Addr::new(203, 0, 113, 2)).to_be(), 0, 0, 0],
            [u32::from(Ipv4Addr::new(203, 0, 113, 1)).to_be(), 0, 0, 0],
            FAMILY_V4,
        )
    };
    FlowKey {
        src,
        dst,
        sport: 40000u16.to_be(),
        dport: 443u16.to_be(),
        proto: PROTO_TCP,
        family,
        _pad: [0; 2],
    }
}

fn handshake(syn: &[u8], synack: &[u8], isn: u32) -> Handshake {
    let mut h = Handshake {
        syn_opts: [0; TCP_OPTIONS_MAX],
        synack_opts: [0; TCP_OPTIONS_MAX],
        syn_len: syn.len() as u8,
        synack_len: synack.len() as u8,
        synack_seen: 1,
        _pad: 0,
        syn_seq: isn.to_be(),
        synack_seq: 0x5000_0000u32.to_be(),
    };
    h.syn_opts[..syn.len()].copy_from_slice(syn);
    h.synack_opts[..synack.len()].copy_from_slice(synack);
    h
}

fn event(kind: u32, seq: u32, payload: &[u8], opts: &[u8]) -> HandoffEvent {
    let mut e = HandoffEvent {
        kind,
        host_id: 2,
        key: key(false),
        seq: seq.to_be(),
        ack: 0x5000_0001u32.to_be(),
        offset_flags: 0,
        window: 502u16.to_be(),
        opts_len: opts.len() as u32,
        payload_len: payload.len() as u32,
        _pad: 0,
        opts: [0; TCP_OPTIONS_MAX],
        payload: [0; HANDOFF_PAYLOAD_MAX],
    };
    e.opts[..opts.len()].copy_from_slice(opts);
    e.payload[..payload.len()].copy_from_slice(payload);
    e
}

/// A data segment's options: NOP, NOP, timestamps (TSval 777, TSecr 9000).
fn ts_opts() -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&777u32.to_be_bytes());
    o.extend_from_slice(&9000u32.to_be_bytes());
    o
}

#[test]
fn a_rebuild_continues_where_the_client_is() {
    let synack = [
        2, 4, 0x05, 0x64, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0x12, 0x34, 1, 3, 3, 9,
    ];
    let hs = handshake(&LINUX_SYN, &synack, 1000);
    let ev = event(HANDOFF_LOCAL, 1001, b"hello", &ts_opts());
    let r = Rebuild::new(&ev, &hs, &[]).unwrap();
    assert_eq!(r.local, "203.0.113.1:443".parse().unwrap());
    assert_eq!(r.peer, "203.0.113.2:40000".parse().unwrap());
    assert_eq!(r.snd_nxt, 0x5000_0001, "the backend's next byte");
    assert_eq!(r.rcv_nxt, 1006, "past the held-back segment");
    assert_eq!(r.negotiated.wscale, Some((7, 9)));
    assert!(r.negotiated.sack && r.negotiated.timestamps);
    assert_eq!(r.negotiated.client_mss, 1460);
    assert_eq!(
        r.snd_wnd,
        502 << 7,
        "the client's window, scaled by its shift"
    );
    assert_eq!(
        r.tsval,
        Some(9001),
        "just past the backend's last timestamp"
    );
    assert_eq!(r.payload, b"hello");
}

#[test]
fn earlier_segments_are_replayed_first_and_must_be_complete() {
    let hs = handshake(&LINUX_SYN, &LINUX_SYN, 1000);
    let ev = event(HANDOFF_LOCAL, 1004, b"lo", &[]);
    let r = Rebuild::new(&ev, &hs, b"hel").unwrap();
    assert_eq!(r.payload, b"hello");
    assert_eq!(
        Rebuild::new(&ev, &hs, b"he"),
        Err(RebuildError::MissingBytes)
    );
    assert_eq!(Rebuild::new(&ev, &hs, &[]), Err(RebuildError::MissingBytes));
}

#[test]
fn what_cannot_be_rebuilt_is_refused() {
    let ev = event(HANDOFF_LOCAL, 1001, b"x", &[]);
    let mut no_synack = handshake(&LINUX_SYN, &[], 1000);
    no_synack.synack_seen = 0;
    assert_eq!(
        Rebuild::new(&ev, &no_synack, &[]),
        Err(RebuildError::NoSynAck)
    );
    // A SYN without options and a SYN-ACK never seen: nothing to tell it from a real one
    // but the flag.
    let mut bare = handshake(&[], &[], 1000);
    bare.synack_seen = 0;
    assert_eq!(Rebuild::new(&ev, &bare, &[]), Err(RebuildError::NoSynAck));
    // An acknowledgment of anything but the backend's ISN + 1: made up.
    for ack in [0, 0x5000_0000, 0x5000_0002, 0x2000_0000] {
        let mut forged = event(HANDOFF_LOCAL, 1001, b"x", &[]);
        forged.ack = u32::to_be(ack);
        assert_eq!(
            Rebuild::new(&forged, &handshake(&[], &[], 1000), &[]),
            Err(RebuildError::Unproven),
            "ack {ack:#x}"
        );
    }
    assert_eq!(
        Rebuild::new(&ev, &handshake(&[3, 3], &LINUX_SYN, 1000), &[]),
        Err(RebuildError::BadOptions("SYN"))
    );
    let bad = event(HANDOFF_LOCAL, 1001, b"x", &[8, 10, 0, 0]);
    assert_eq!(
        Rebuild::new(&bad, &handshake(&LINUX_SYN, &LINUX_SYN, 1000), &[]),
        Err(RebuildError::BadOptions("segment"))
    );
    // Lengths that lie are cut to the arrays, never trusted.
    let mut lying = event(HANDOFF_LOCAL, 1001, b"x", &[]);
    lying.payload_len = u32::MAX;
    lying.opts_len = 200;
    let mut hs = handshake(&LINUX_SYN, &LINUX_SYN, 1000);
    hs.syn_len = 255;
    let _ = Rebuild::new(&lying, &hs, &[]);
}

#[test]
fn no_options_no_scaling() {
    let hs = handshake(&[], &[], 1000);
    let r = Rebuild::new(&event(HANDOFF_LOCAL, 1001, b"x", &ts_opts()), &hs, &[]).unwrap();
    assert_eq!(r.negotiated.wscale, None);
    assert_eq!(r.snd_wnd, 502);
    assert_eq!(r.tsval, None, "timestamps were not negotiated");
    assert_eq!(r.negotiated.client_mss, 536);
}

#[test]
fn ipv6_addresses() {
    let mut ev = event(HANDOFF_LOCAL, 1001, b"x", &[]);
    ev.key = key(true);
    let r = Rebuild::new(&ev, &handshake(&[], &[], 1000), &[]).unwrap();
    assert_eq!(r.local, "[2001:db8::1]:443".parse().unwrap());
    assert_eq!(r.peer, "[2001:db8::2]:40000".parse().unwrap());
}

#[test]
fn pending_segments_in_order_within_bounds() {
    let t = Instant::now();
    let mut p = Pending::default();
    p.add(&event(HANDOFF_SEGMENT, 1001, b"abc", &[]), t);
    p.add(&event(HANDOFF_SEGMENT, 1004, b"def", &[]), t);
    assert_eq!(p.take(&event(HANDOFF_LOCAL, 1007, b"g", &[])), b"abcdef");
    assert!(p.is_empty(), "taken");
    // A gap loses the connection's bytes: nothing half is replayed.
    p.add(&event(HANDOFF_SEGMENT, 1001, b"abc", &[]), t);
    p.add(&event(HANDOFF_SEGMENT, 1010, b"def", &[]), t);
    assert!(p.take(&event(HANDOFF_LOCAL, 1013, b"g", &[])).is_empty());
    // Old entries expire.
    p.add(&event(HANDOFF_SEGMENT, 1001, b"abc", &[]), t);
    p.expire(t + PENDING_TTL);
    assert!(p.is_empty());
    // At most PENDING_PER_SOURCE connections of one client address...
    for port in 0..(PENDING_PER_SOURCE + 10) as u16 {
        let mut e = event(HANDOFF_SEGMENT, 1001, b"a", &[]);
        e.key.sport = port;
        p.add(&e, t);
    }
    assert_eq!(p.len(), PENDING_PER_SOURCE);
    // ...and PENDING_MAX in all.
    for i in 0..(PENDING_MAX + 10) as u32 {
        let mut e = event(HANDOFF_SEGMENT, 1001, b"a", &[]);
        e.key.src[0] = i.to_be() ^ 0x0a00_0000;
        p.add(&e, t);
    }
    assert_eq!(p.len(), PENDING_MAX);
}

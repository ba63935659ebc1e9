//! QUIC classification through the real kernel object (BPF_PROG_TEST_RUN) and the daemon's
//! decoder: a new QUIC connection's Initials are forwarded unchanged and copied to the
//! daemon, the daemon's verdict attributes the connection at its next packet with the
//! counts so far, and non-QUIC datagrams, garbage, the rate limit, a missing verdict and a
//! `drop` policy each have their defined outcome.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use forwarder::daemon::quic::{Decision, Pending, QuicStats};
use forwarder_common::{
    CLASS_DONE, CLASS_PENDING, Counter, FLOW_F_CUT, FLOW_F_QUIC, HOST_FIRST_CONFIGURED,
    HOST_UNKNOWN, POLICY_DROP, QUIC_V_NAME, QUIC_V_UNDECODABLE, QUIC_VERDICT_WAIT_NS, QuicVerdict,
    quic::{VERSION_1, VERSION_2, crypto_frame, seal_initial},
    samples::browser_hello,
};
use integration_tests::bpf::*;

const APP: u32 = HOST_FIRST_CONFIGURED;
const WILD: u32 = HOST_FIRST_CONFIGURED + 1;
const BLOCKED: u32 = HOST_FIRST_CONFIGURED + 2;

fn harness(
    tc_only: bool,
) -> (
    Harness,
    std::collections::HashMap<forwarder_common::HostKey, u32>,
) {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("BPF_PROG_TEST_RUN needs root (CAP_BPF + CAP_NET_ADMIN)");
    }
    let mut h = Harness::new(tc_only).expect("loading the kernel object");
    let table = h
        .set_hosts(&["app.example.com", "*.example.org", "blocked.example.com"])
        .unwrap();
    h.set_host_policy(BLOCKED, POLICY_DROP).unwrap();
    h.set_quic_rate(1000, 100).unwrap();
    (h, table)
}

fn v4(a: std::net::Ipv4Addr) -> IpAddr {
    a.into()
}

/// A client datagram through the public side (XDP, or tc in tc-only mode): the verdict
/// and the packet as it leaves.
fn ingress(h: &Harness, tc_only: bool, p: &Pkt) -> (u32, Vec<u8>) {
    if tc_only {
        h.tc_ingress(&p.frame())
    } else {
        let (verdict, _, out) = h.xdp(&p.frame());
        (verdict, out)
    }
}

fn forwarded(tc_only: bool) -> u32 {
    if tc_only { TC_ACT_REDIRECT } else { XDP_PASS }
}

/// The Initial datagrams of a client whose ClientHello (post-quantum sized) names
/// `name`, split over two packets.
fn initials(version: u32, dcid: &[u8], name: &str) -> Vec<Vec<u8>> {
    let ch = browser_hello(name.as_bytes(), 0x4a4a, 1216, 4)[5..].to_vec();
    assert!(ch.len() > 1300);
    vec![
        seal_initial(version, dcid, &[9; 8], 0, &crypto_frame(0, &ch[..1100])),
        seal_initial(version, dcid, &[9; 8], 1, &crypto_frame(1100, &ch[1100..])),
    ]
}

/// What the daemon does with the copied Initials: decode them and write the verdict.
fn daemon(
    h: &mut Harness,
    pending: &mut Pending,
    table: &std::collections::HashMap<forwarder_common::HostKey, u32>,
) -> Vec<QuicVerdict> {
    let stats = QuicStats::default();
    let mut out = Vec::new();
    for ev in h.quic_initials() {
        let d = &ev.data[..ev.len as usize];
        if let Decision::Verdict(v) = pending.feed(&ev.key, d, Instant::now(), &stats, |k| {
            table.get(k).copied()
        }) {
            h.set_quic_verdict(&ev.key, v).unwrap();
            out.push(v);
        }
    }
    out
}

fn udp_key(client: (IpAddr, u16), public: (IpAddr, u16)) -> forwarder_common::FlowKey {
    forwarder_common::FlowKey {
        proto: forwarder_common::PROTO_UDP,
        ..flow_key(client, public)
    }
}

/// The client -> public entry of the UDP flow, in whichever table holds it.
fn udp_flow(
    h: &Harness,
    client: (IpAddr, u16),
    public: (IpAddr, u16),
) -> Option<forwarder_common::FlowValue> {
    let key = udp_key(client, public);
    h.flow_in(forwarder_common::FLOWS_MAP, &key)
        .or_else(|| h.flow_in(forwarder_common::NEW_FLOWS_MAP, &key))
}

fn ip_len(p: &Pkt) -> u64 {
    p.ip().len() as u64
}

#[test]
fn a_quic_connection_is_attributed_with_everything_counted_before() {
    for tc_only in [false, true] {
        for (version, name, host) in [
            (VERSION_1, "app.example.com", APP),
            (VERSION_2, "cdn.eu.example.org", WILD),
        ] {
            let (mut h, table) = harness(tc_only);
            let mut pending = Pending::default();
            let client = (v4(CLIENT4), 50443);
            let public = (v4(PUBLIC4), UDP_PUBLIC_PORT);
            let backend = (v4(BACKEND4), UDP_BACKEND_PORT);
            let mut to_backend = 0;
            let datagrams = initials(version, &[0x11; 8], name);
            for (i, d) in datagrams.iter().enumerate() {
                let p = Pkt::udp(client.0, client.1, public.0, public.1, d);
                let (verdict, out) = ingress(&h, tc_only, &p);
                assert_eq!(verdict, forwarded(tc_only), "Initial {i} forwarded");
                // Forwarded unchanged but for the translation, checksums right.
                let want = p.with(client, backend).frame();
                assert_eq!(&out[14..], &want[14..], "Initial {i} translated");
                verify_checksums(&out[14..]).unwrap();
                to_backend += ip_len(&p);
            }
            let flow = udp_flow(&h, client, public).unwrap();
            assert_eq!(flow.class_state, CLASS_PENDING);
            assert_eq!(flow.host_id, HOST_UNKNOWN);
            assert_ne!(flow.flags & FLOW_F_QUIC, 0);
            assert_eq!(flow.quic_initials, 2);
            assert_eq!(h.counter(Counter::QuicInitials), 2);

            // The copies are the datagrams, byte for byte, under the client's flow key.
            let verdicts = daemon(&mut h, &mut pending, &table);
            assert_eq!(
                verdicts,
                [QuicVerdict {
                    code: QUIC_V_NAME,
                    host_id: host
                }],
                "{name}"
            );
            // Home answers (counted under unknown until the verdict is taken) ...
            let reply = Pkt::udp(backend.0, backend.1, client.0, client.1, &[0xc0; 1200]);
            assert_eq!(h.tunnel(&reply.ip()).0, TC_ACT_REDIRECT);
            // ... and the client's next packet takes the verdict.
            let next = Pkt::udp(client.0, client.1, public.0, public.1, &[0x40; 60]);
            assert_eq!(ingress(&h, tc_only, &next).0, forwarded(tc_only));
            to_backend += ip_len(&next);
            let key = udp_key(client, public);
            assert!(!h.quic_verdict_pending(&key), "verdict taken");
            let flow = udp_flow(&h, client, public).unwrap();
            assert_eq!((flow.class_state, flow.host_id), (CLASS_DONE, host));
            let s = h.quic_host_stats(host);
            assert_eq!(
                (
                    s.connections,
                    s.packets_to_backend,
                    s.bytes_to_backend,
                    s.packets_to_client,
                    s.bytes_to_client
                ),
                (1, 3, to_backend, 1, ip_len(&reply)),
                "{name}: totals moved to the host"
            );
            let u = h.quic_host_stats(HOST_UNKNOWN);
            assert_eq!(
                (
                    u.packets_to_backend,
                    u.bytes_to_backend,
                    u.packets_to_client
                ),
                (0, 0, 0),
                "nothing left under unknown"
            );
            assert_eq!(h.counter(Counter::ClassifiedQuic), 1);
            let tcp = h.host_stats(host);
            assert_eq!(
                (
                    tcp.connections,
                    tcp.packets_to_backend,
                    tcp.packets_to_client
                ),
                (0, 0, 0),
                "QUIC is counted apart from TCP"
            );
            // Later packets are counted under the host and not copied.
            assert_eq!(ingress(&h, tc_only, &next).0, forwarded(tc_only));
            assert_eq!(h.quic_host_stats(host).packets_to_backend, 4);
            assert_eq!(h.counter(Counter::QuicInitials), 2);
        }
    }
}

#[test]
fn datagrams_that_are_not_quic_are_unknown_at_once_and_never_copied() {
    for tc_only in [false, true] {
        let (mut h, _) = harness(tc_only);
        let public = (v4(PUBLIC4), UDP_PUBLIC_PORT);
        // A DNS-sized datagram, a short-header packet, and a padded long header of an
        // unknown version.
        let mut unknown_version = vec![0xc3, 0xff, 0, 0, 0x1d];
        unknown_version.resize(1250, 0);
        for (port, payload) in [
            (40001, b"query".to_vec()),
            (40002, vec![0x40; 1300]),
            (40003, unknown_version),
        ] {
            let client = (v4(CLIENT4), port);
            let p = Pkt::udp(client.0, client.1, public.0, public.1, &payload);
            assert_eq!(ingress(&h, tc_only, &p).0, forwarded(tc_only));
            let flow = udp_flow(&h, client, public).unwrap();
            assert_eq!((flow.class_state, flow.host_id), (CLASS_DONE, HOST_UNKNOWN));
        }
        assert!(h.quic_initials().is_empty());
        assert_eq!(h.counter(Counter::ClassifyNotTlsOrHttp), 3);

        // With classification off, even a real Initial is not copied.
        h.set_quic_rate(0, 0).unwrap();
        let client = (v4(CLIENT4), 40004);
        let d = &initials(VERSION_1, &[1; 8], "app.example.com")[0];
        let p = Pkt::udp(client.0, client.1, public.0, public.1, d);
        assert_eq!(ingress(&h, tc_only, &p).0, forwarded(tc_only));
        assert!(h.quic_initials().is_empty());
        assert_eq!(
            udp_flow(&h, client, public).unwrap().class_state,
            CLASS_DONE
        );
    }
}

#[test]
fn garbage_initials_a_flood_and_a_silent_daemon_have_defined_outcomes() {
    let tc_only = false;
    let (mut h, table) = harness(tc_only);
    let mut pending = Pending::default();
    let public = (v4(PUBLIC4), UDP_PUBLIC_PORT);

    // An Initial-looking datagram that does not decrypt: undecodable.
    let client = (v4(CLIENT4), 41000);
    let mut fake = vec![
        0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x44, 0xd0,
    ];
    fake.resize(1200, 0x5a);
    let p = Pkt::udp(client.0, client.1, public.0, public.1, &fake);
    assert_eq!(ingress(&h, tc_only, &p).0, XDP_PASS);
    let v = daemon(&mut h, &mut pending, &table);
    assert_eq!(v[0].code, QUIC_V_UNDECODABLE);
    assert_eq!(ingress(&h, tc_only, &p).0, XDP_PASS, "still forwarded");
    let flow = udp_flow(&h, client, public).unwrap();
    assert_eq!((flow.class_state, flow.host_id), (CLASS_DONE, HOST_UNKNOWN));
    assert_eq!(h.counter(Counter::ClassifyQuicUndecodable), 1);

    // No verdict ever comes: the connection stays pending until the wait is over, then is
    // unknown for good.
    let client = (v4(CLIENT4), 43000);
    let d = &initials(VERSION_1, &[8; 8], "app.example.com")[0];
    let p = Pkt::udp(client.0, client.1, public.0, public.1, d);
    assert_eq!(ingress(&h, tc_only, &p).0, XDP_PASS);
    let _ = h.quic_initials();
    let short = Pkt::udp(client.0, client.1, public.0, public.1, &[0x41; 40]);
    assert_eq!(ingress(&h, tc_only, &short).0, XDP_PASS);
    assert_eq!(
        udp_flow(&h, client, public).unwrap().class_state,
        CLASS_PENDING
    );
    std::thread::sleep(Duration::from_nanos(QUIC_VERDICT_WAIT_NS) + Duration::from_millis(100));
    assert_eq!(ingress(&h, tc_only, &short).0, XDP_PASS);
    let flow = udp_flow(&h, client, public).unwrap();
    assert_eq!((flow.class_state, flow.host_id), (CLASS_DONE, HOST_UNKNOWN));
    assert_eq!(h.counter(Counter::ClassifyQuicTimeout), 1);

    // A flood of Initials beyond the hand-off's burst: the excess connections are not
    // copied, are counted, and go on as unknown.
    h.set_quic_rate(1, 5).unwrap();
    let d = &initials(VERSION_1, &[7; 8], "app.example.com")[0];
    for port in 42000..42020 {
        let p = Pkt::udp(v4(CLIENT4), port, public.0, public.1, d);
        assert_eq!(ingress(&h, tc_only, &p).0, XDP_PASS);
    }
    let copied = h.quic_initials().len();
    assert!(
        (5..=6).contains(&copied),
        "burst of 5 (+1 refill): {copied}"
    );
    assert_eq!(h.counter(Counter::QuicRateLimited) as usize, 20 - copied);
    let refused = udp_flow(&h, (v4(CLIENT4), 42019), public).unwrap();
    assert_eq!(
        (refused.class_state, refused.host_id),
        (CLASS_DONE, HOST_UNKNOWN)
    );
}

#[test]
fn a_quic_connection_to_a_dropped_host_is_cut() {
    for tc_only in [false, true] {
        let (mut h, table) = harness(tc_only);
        let mut pending = Pending::default();
        let client = (v4(CLIENT4), 44000);
        let public = (v4(PUBLIC4), UDP_PUBLIC_PORT);
        for d in initials(VERSION_1, &[3; 8], "blocked.example.com") {
            let p = Pkt::udp(client.0, client.1, public.0, public.1, &d);
            assert_eq!(ingress(&h, tc_only, &p).0, forwarded(tc_only));
        }
        assert_eq!(daemon(&mut h, &mut pending, &table)[0].host_id, BLOCKED);
        let next = Pkt::udp(client.0, client.1, public.0, public.1, &[0x40; 60]);
        let drop = if tc_only { TC_ACT_SHOT } else { XDP_DROP };
        assert_eq!(ingress(&h, tc_only, &next).0, drop, "the deciding packet");
        let flow = udp_flow(&h, client, public).unwrap();
        assert_ne!(flow.flags & FLOW_F_CUT, 0);
        assert_eq!(flow.host_id, BLOCKED);
        // Later datagrams go to the VPS's own stack untranslated (which refuses them).
        let (verdict, out) = ingress(&h, tc_only, &next);
        let pass = if tc_only { TC_ACT_OK } else { XDP_PASS };
        assert_eq!(verdict, pass);
        assert_eq!(&out[14..], &next.ip()[..], "untranslated");
        assert_eq!(h.counter(Counter::PolicyCut), 1);
    }
}

//! Host policy `local` against forged sources, in the real kernel object under
//! BPF_PROG_TEST_RUN: a connection is handed to the daemon only once a client segment
//! acknowledged the backend's SYN-ACK; a request for a `local` host from a source nothing
//! proved is dropped, nothing of it reaches the daemon, and none of its later packets is
//! left to the VPS's stack (which would answer the forged source).

use std::net::IpAddr;

use forwarder_common::{
    CFG_F_LOCAL_POLICY, Counter, FLOW_F_CUT, FLOW_F_LOCAL, HOST_FIRST_CONFIGURED, POLICY_LOCAL,
};
use integration_tests::bpf::*;

fn harness(tc_only: bool) -> Harness {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("BPF_PROG_TEST_RUN needs root (CAP_BPF + CAP_NET_ADMIN)");
    }
    let mut h = Harness::new(tc_only).expect("loading the kernel object");
    h.set_hosts(&["local.example.test"]).unwrap();
    h.set_host_policy(HOST_FIRST_CONFIGURED, POLICY_LOCAL)
        .unwrap();
    h.set_config_flags(CFG_F_LOCAL_POLICY).unwrap();
    h
}

fn ingress(h: &Harness, tc_only: bool, frame: &[u8]) -> u32 {
    if tc_only {
        h.tc_ingress(frame).0
    } else {
        h.xdp(frame).0
    }
}

fn v4(a: std::net::Ipv4Addr) -> IpAddr {
    a.into()
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: local.example.test\r\n\r\n";

#[test]
fn a_forged_source_naming_a_local_host_is_dropped_without_a_hand_off() {
    for tc_only in [false, true] {
        // Each case: whether home's SYN-ACK came, and the ack the forged request carries.
        for (answered, ack, case) in [
            (false, 0x2000_0000, "home never answered"),
            (false, 1, "home never answered, ack 1 (ISN 0 + 1)"),
            (true, 0x5000_0000, "home answered, ack of its ISN"),
            (true, 0x5000_0002, "home answered, ack past its ISN + 1"),
        ] {
            let mut h = harness(tc_only);
            let (pass, drop) = if tc_only {
                (TC_ACT_REDIRECT, TC_ACT_SHOT)
            } else {
                (XDP_PASS, XDP_DROP)
            };
            let (client, public) = ((v4(CLIENT4), 40000), (v4(PUBLIC4), 443));
            // A SYN without options, as a spoofing tool sends it.
            let syn = Pkt::tcp(client.0, client.1, public.0, public.1, SYN).seq(0x1000_0000);
            assert_eq!(ingress(&h, tc_only, &syn.frame()), pass, "{case}: SYN");
            if answered {
                let synack =
                    Pkt::tcp(v4(BACKEND4), 443, client.0, client.1, SYN | ACK).seq(0x5000_0000);
                assert_eq!(h.tunnel(&synack.ip()).0, TC_ACT_REDIRECT, "{case}");
            }
            let request = Pkt::tcp(client.0, client.1, public.0, public.1, ACK | PSH)
                .seq(0x1000_0001)
                .ack(ack)
                .payload(REQUEST);
            assert_eq!(
                ingress(&h, tc_only, &request.frame()),
                drop,
                "tc_only {tc_only}, {case}: the request is dropped"
            );
            assert!(
                h.handoff_events().is_empty(),
                "tc_only {tc_only}, {case}: nothing handed to the daemon"
            );
            // The flow table stops it first: the request does not complete the handshake,
            // so it never reaches the name reader (whose own proof check,
            // `handoff::proven`, covers flows confirmed otherwise, e.g. re-created ones).
            assert_eq!(h.counter(Counter::DropUnconfirmed), 1, "{case}");
            assert_eq!(h.counter(Counter::PolicyLocal), 0, "{case}");
            // Later packets go nowhere either (the VPS's stack never sees them, so it sends
            // no RST to the forged source).
            for _ in 0..3 {
                assert_eq!(
                    ingress(&h, tc_only, &request.frame()),
                    drop,
                    "tc_only {tc_only}, {case}: a retransmission"
                );
            }
            assert_eq!(h.counter(Counter::DropUnconfirmed), 4, "{case}");
            let flow = h.forward_flow(client, public).expect("flow entry");
            assert_eq!(
                flow.flags & (FLOW_F_CUT | FLOW_F_LOCAL),
                0,
                "tc_only {tc_only}, {case}: nothing cut or handed over"
            );
        }
    }
}

#[test]
fn segments_before_the_name_go_to_the_daemon_only_once_the_handshake_is_proven() {
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        let (client, public) = ((v4(CLIENT4), 40001), (v4(PUBLIC4), 443));
        let syn = Pkt::tcp(client.0, client.1, public.0, public.1, SYN).seq(0x1000_0000);
        ingress(&h, tc_only, &syn.frame());
        let synack = Pkt::tcp(v4(BACKEND4), 443, client.0, client.1, SYN | ACK).seq(0x5000_0000);
        h.tunnel(&synack.ip());
        // The first part of a request with a made-up acknowledgment: it goes home (the
        // host is not known yet), but not to the daemon's table of pending bytes.
        let part = Pkt::tcp(client.0, client.1, public.0, public.1, ACK | PSH)
            .seq(0x1000_0001)
            .ack(0x2000_0000)
            .payload(b"GET / HTTP/1.1\r\nHost: local.exa");
        ingress(&h, tc_only, &part.frame());
        assert!(
            h.handoff_events().is_empty(),
            "tc_only {tc_only}: an unproven segment was handed over"
        );
        // The real client's (the ack of home's ISN + 1) is.
        let mut h = harness(tc_only);
        ingress(&h, tc_only, &syn.frame());
        h.tunnel(&synack.ip());
        let part = part.ack(0x5000_0001);
        ingress(&h, tc_only, &part.frame());
        assert_eq!(h.handoff_events().len(), 1, "tc_only {tc_only}");
    }
}

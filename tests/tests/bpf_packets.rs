//! The real kernel object under BPF_PROG_TEST_RUN: for each named input packet, the
//! verdict and the exact output bytes, checksums verified from scratch.

use std::net::IpAddr;

use forwarder_common::{Counter, META_MAGIC};
use integration_tests::bpf::*;

fn harness(tc_translate: bool) -> Harness {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("BPF_PROG_TEST_RUN needs root (CAP_BPF + CAP_NET_ADMIN)");
    }
    Harness::new(tc_translate).expect("loading the kernel object")
}

/// A client packet through the public side: XDP, or tc in tc-only mode. The verdict and the
/// packet as it leaves.
fn ingress(h: &Harness, tc_only: bool, frame: &[u8]) -> (u32, Vec<u8>) {
    if tc_only {
        h.tc_ingress(frame)
    } else {
        let (verdict, _, out) = h.xdp(frame);
        (verdict, out)
    }
}

fn v4(a: std::net::Ipv4Addr) -> IpAddr {
    a.into()
}
fn v6(a: std::net::Ipv6Addr) -> IpAddr {
    a.into()
}

/// Client -> public packets and what they must become; `answered_by`: the backend whose
/// SYN-ACK comes back out of the tunnel next.
struct Case {
    name: &'static str,
    input: Pkt,
    expected: Pkt,
    answered_by: Option<(IpAddr, u16)>,
}

fn forward_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (fam, client, public, backend, mss_in, mss_out) in [
        ("v4", v4(CLIENT4), v4(PUBLIC4), v4(BACKEND4), 1460, MSS4),
        ("v6", v6(CLIENT6), v6(PUBLIC6), v6(BACKEND6), 1440, MSS6),
    ] {
        let syn = Pkt::tcp(client, 40000, public, 443, SYN)
            .seq(OPEN_ISN)
            .options(mss_option(mss_in));
        cases.push(Case {
            answered_by: Some((backend, 443)),
            name: if fam == "v4" {
                "v4 SYN, MSS 1460 clamped"
            } else {
                "v6 SYN, MSS 1440 clamped"
            },
            expected: syn
                .with((client, 40000), (backend, 443))
                .options(mss_option(mss_out)),
            input: syn,
        });
        let small = Pkt::tcp(client, 40001, public, 443, SYN).options(mss_option(1200));
        cases.push(Case {
            answered_by: None,
            name: if fam == "v4" {
                "v4 SYN, small MSS kept"
            } else {
                "v6 SYN, small MSS kept"
            },
            expected: small.with((client, 40001), (backend, 443)),
            input: small,
        });
        let data = Pkt::tcp(client, 40000, public, 443, ACK | PSH)
            .payload(b"\x16\x03\x01\x00\x05hello, odd length!");
        cases.push(Case {
            answered_by: None,
            name: if fam == "v4" { "v4 data" } else { "v6 data" },
            expected: data.with((client, 40000), (backend, 443)),
            input: data,
        });
        let fin = Pkt::tcp(client, 40000, public, 443, FIN | ACK);
        cases.push(Case {
            answered_by: None,
            name: if fam == "v4" { "v4 FIN" } else { "v6 FIN" },
            expected: fin.with((client, 40000), (backend, 443)),
            input: fin,
        });
        let udp = Pkt::udp(client, 50000, public, UDP_PUBLIC_PORT, b"query");
        cases.push(Case {
            answered_by: None,
            name: if fam == "v4" {
                "v4 UDP, port translated"
            } else {
                "v6 UDP, port translated"
            },
            expected: udp.with((client, 50000), (backend, UDP_BACKEND_PORT)),
            input: udp,
        });
    }
    let mut nocsum = Pkt::udp(
        v4(CLIENT4),
        50001,
        v4(PUBLIC4),
        UDP_PUBLIC_PORT,
        b"no checksum",
    );
    nocsum.udp_no_csum = true;
    cases.push(Case {
        answered_by: None,
        name: "v4 UDP without checksum stays without",
        expected: nocsum.with((v4(CLIENT4), 50001), (v4(BACKEND4), UDP_BACKEND_PORT)),
        input: nocsum,
    });
    cases
}

fn check(name: &str, got: &[u8], want: &[u8]) {
    if let Err(e) = verify_checksums(got) {
        panic!("{name}: {e}\n got: {got:02x?}");
    }
    assert_eq!(got, want, "{name}: output bytes differ");
}

#[test]
fn xdp_translates_client_packets_toward_the_backend() {
    let h = harness(false);
    for c in forward_cases() {
        let (verdict, meta, out) = h.xdp(&c.input.frame());
        assert_eq!(verdict, XDP_PASS, "{}: verdict", c.name);
        assert_eq!(meta.len(), 16, "{}: metadata {meta:02x?}", c.name);
        assert_eq!(
            u32::from_ne_bytes(meta[0..4].try_into().unwrap()),
            META_MAGIC,
            "{}",
            c.name
        );
        assert_eq!(
            u32::from_ne_bytes(meta[4..8].try_into().unwrap()),
            h.tunnel_ifindex,
            "{}",
            c.name
        );
        assert_eq!(
            &out[..14],
            &c.input.frame()[..14],
            "{}: Ethernet header changed",
            c.name
        );
        check(c.name, &out[14..], &c.expected.ip());
        if let Some(backend) = c.answered_by {
            h.answer(&c.input, backend);
        }
    }
    assert!(h.counter(Counter::MssClamped) >= 2);
    assert_eq!(
        h.counter(Counter::XdpToTunnel),
        forward_cases().len() as u64
    );
}

#[test]
fn tc_only_mode_translates_the_same_way() {
    let h = harness(true);
    for c in forward_cases() {
        let (verdict, out) = h.tc_ingress(&c.input.frame());
        assert_eq!(verdict, TC_ACT_REDIRECT, "{}: verdict", c.name);
        check(c.name, &out[14..], &c.expected.ip());
        if let Some(backend) = c.answered_by {
            h.answer(&c.input, backend);
        }
    }
    assert_eq!(
        h.counter(Counter::TcTranslated),
        forward_cases().len() as u64
    );
}

#[test]
fn tc_ingress_leaves_unmarked_packets_alone_when_xdp_runs() {
    let h = harness(false);
    let p = Pkt::tcp(v4(CLIENT4), 40000, v4(PUBLIC4), 443, SYN)
        .options(mss_option(1460))
        .frame();
    assert_eq!(h.tc_ingress(&p), (TC_ACT_OK, p.clone()));
}

#[test]
fn tunnel_translates_replies_back_to_the_public_address() {
    let h = harness(false);
    for (fam, client, public, backend, mss_in, mss_out) in [
        ("v4", v4(CLIENT4), v4(PUBLIC4), v4(BACKEND4), 1460, MSS4),
        ("v6", v6(CLIENT6), v6(PUBLIC6), v6(BACKEND6), 1440, MSS6),
    ] {
        // The client's SYN creates the flow.
        let (v, _, _) = h.xdp(
            &Pkt::tcp(client, 41000, public, 443, SYN)
                .options(mss_option(1460))
                .frame(),
        );
        assert_eq!(v, XDP_PASS);
        let replies = [
            (
                "SYN-ACK, MSS clamped",
                Pkt::tcp(backend, 443, client, 41000, SYN | ACK).options(mss_option(mss_in)),
                Some(mss_out),
            ),
            (
                "data",
                Pkt::tcp(backend, 443, client, 41000, ACK | PSH).payload(&[0x42; 777]),
                None,
            ),
            (
                "FIN",
                Pkt::tcp(backend, 443, client, 41000, FIN | ACK),
                None,
            ),
        ];
        for (what, reply, mss) in replies {
            let name = format!("{fam} {what}");
            let mut expected = reply.with((public, 443), (client, 41000));
            if let Some(m) = mss {
                expected = expected.options(mss_option(m));
            }
            let (verdict, out) = h.tunnel(&reply.ip());
            assert_eq!(
                verdict, TC_ACT_REDIRECT,
                "{name}: verdict, output {out:02x?}"
            );
            // The link-layer header stays in place for redirect_neigh to fill in.
            let ethertype: [u8; 2] = if fam == "v4" {
                [0x08, 0x00]
            } else {
                [0x86, 0xdd]
            };
            assert_eq!(&out[12..14], &ethertype, "{name}: ethertype");
            check(&name, &out[14..], &expected.ip());
        }
    }
    // UDP replies come back from the backend port and leave from the public port.
    let (v, _, _) =
        h.xdp(&Pkt::udp(v4(CLIENT4), 50000, v4(PUBLIC4), UDP_PUBLIC_PORT, b"q").frame());
    assert_eq!(v, XDP_PASS);
    let reply = Pkt::udp(
        v4(BACKEND4),
        UDP_BACKEND_PORT,
        v4(CLIENT4),
        50000,
        b"answer",
    );
    let (verdict, out) = h.tunnel(&reply.ip());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check(
        "v4 UDP reply",
        &out[14..],
        &reply
            .with((v4(PUBLIC4), UDP_PUBLIC_PORT), (v4(CLIENT4), 50000))
            .ip(),
    );
}

#[test]
fn tunnel_passes_traffic_of_unknown_flows() {
    let h = harness(false);
    // Home talking to the VPS itself (a health check, an SSH session): not ours.
    let own = Pkt::tcp(v4(BACKEND4), 443, v4(CLIENT4), 41999, ACK).ip();
    let (verdict, out) = h.tunnel(&own);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(&out[14..], &own[..]);
    assert_eq!(h.counter(Counter::TunnelPass), 1);
}

#[test]
fn packets_without_a_rule_pass_untouched() {
    let h = harness(false);
    let cases = [
        (
            "SSH to the VPS",
            Pkt::tcp(v4(CLIENT4), 40000, v4(PUBLIC4), 22, SYN)
                .options(mss_option(1460))
                .frame(),
        ),
        (
            "443 to another address",
            Pkt::tcp(v4(CLIENT4), 40000, v4(BACKEND4), 443, SYN).frame(),
        ),
        (
            "UDP to the WireGuard port",
            Pkt::udp(v4(CLIENT4), 51820, v4(PUBLIC4), 51820, b"wg").frame(),
        ),
        (
            "v6 TCP 80 (no rule)",
            Pkt::tcp(v6(CLIENT6), 40000, v6(PUBLIC6), 80, SYN).frame(),
        ),
    ];
    for (name, frame) in cases {
        let (verdict, meta, out) = h.xdp(&frame);
        assert_eq!(verdict, XDP_PASS, "{name}");
        assert!(meta.is_empty(), "{name}: metadata attached");
        assert_eq!(out, frame, "{name}: modified");
    }
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(h.xdp(&arp), (XDP_PASS, vec![], arp.clone()));
    assert_eq!(h.counter(Counter::XdpPassNotIp), 1);
    assert_eq!(h.counter(Counter::XdpPassNoRule), 4);
}

#[test]
fn a_rule_in_local_fallback_passes_new_connections_and_keeps_forwarding_old_ones() {
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        let run = |h: &Harness, frame: &[u8]| ingress(h, tc_only, frame);
        let (pass, forwarded) = if tc_only {
            (TC_ACT_OK, TC_ACT_REDIRECT)
        } else {
            (XDP_PASS, XDP_PASS)
        };
        // A connection to home, established before the backend went down.
        let old = Pkt::tcp(v4(CLIENT4), 41000, v4(PUBLIC4), 443, SYN)
            .seq(OPEN_ISN)
            .options(mss_option(1460));
        let (v, out) = run(&h, &old.frame());
        assert_eq!(v, forwarded);
        assert_ne!(out, old.frame(), "the SYN was not translated");
        h.answer(&old, (v4(BACKEND4), 443));
        h.set_rule_flags(v4(PUBLIC4), 443, forwarder_common::RULE_F_FALLBACK_LOCAL)
            .unwrap();
        // New connections (and whatever else has no flow) go to the VPS untouched.
        for p in [
            Pkt::tcp(v4(CLIENT4), 41001, v4(PUBLIC4), 443, SYN).options(mss_option(1460)),
            Pkt::tcp(v4(CLIENT4), 41002, v4(PUBLIC4), 443, ACK | PSH).payload(b"GET / HTTP/1.1"),
        ] {
            let frame = p.frame();
            assert_eq!(run(&h, &frame), (pass, frame.clone()), "tc_only {tc_only}");
        }
        let c = if tc_only {
            Counter::TcPassFallback
        } else {
            Counter::XdpPassFallback
        };
        assert_eq!(h.counter(c), 2, "tc_only {tc_only}");
        // The established one keeps going home.
        let data = Pkt::tcp(v4(CLIENT4), 41000, v4(PUBLIC4), 443, ACK | PSH).payload(b"more");
        let (v, out) = run(&h, &data.frame());
        assert_eq!(v, forwarded);
        assert_eq!(
            &out[14..],
            &data.with((v4(CLIENT4), 41000), (v4(BACKEND4), 443)).ip()[..],
            "tc_only {tc_only}: the established flow was not translated"
        );
        // Back to normal: new connections are forwarded again.
        h.set_rule_flags(v4(PUBLIC4), 443, 0).unwrap();
        let again = Pkt::tcp(v4(CLIENT4), 41003, v4(PUBLIC4), 443, SYN).options(mss_option(1460));
        let (v, out) = run(&h, &again.frame());
        assert_eq!(v, forwarded);
        assert_ne!(out, again.frame());
    }
}

#[test]
fn new_connections_beyond_a_clients_limit_are_dropped_before_the_tunnel() {
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        // One per second, two at once: a third SYN right away is refused.
        h.set_conn_limit(1, 2).unwrap();
        let run = |h: &Harness, frame: &[u8]| -> u32 {
            if tc_only {
                h.tc_ingress(frame).0
            } else {
                h.xdp(frame).0
            }
        };
        let (ok, refused) = if tc_only {
            (TC_ACT_REDIRECT, TC_ACT_SHOT)
        } else {
            (XDP_PASS, XDP_DROP)
        };
        let syn = |client, port| {
            Pkt::tcp(client, port, v4(PUBLIC4), 443, SYN)
                .options(mss_option(1460))
                .frame()
        };
        assert_eq!(run(&h, &syn(v4(CLIENT4), 42000)), ok);
        assert_eq!(run(&h, &syn(v4(CLIENT4), 42001)), ok);
        assert_eq!(
            run(&h, &syn(v4(CLIENT4), 42002)),
            refused,
            "tc_only {tc_only}"
        );
        // A retransmitted SYN of an admitted connection is not a new connection.
        assert_eq!(run(&h, &syn(v4(CLIENT4), 42000)), ok);
        // Other clients have their own allowance.
        let other = std::net::Ipv4Addr::new(198, 18, 0, 99);
        assert_eq!(run(&h, &syn(v4(other), 42000)), ok);
        let c = if tc_only {
            Counter::TcDropRateLimit
        } else {
            Counter::XdpDropRateLimit
        };
        assert_eq!(h.counter(c), 1, "tc_only {tc_only}");
    }
}

#[test]
fn malformed_fragmented_and_optioned_packets_get_defined_verdicts() {
    let h = harness(false);
    let good = Pkt::tcp(v4(CLIENT4), 40000, v4(PUBLIC4), 443, ACK)
        .payload(b"data")
        .frame();
    let mut cases: Vec<(&str, Vec<u8>, u32, Counter)> = Vec::new();
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    cases.push(("IHL below 5", ihl, XDP_DROP, Counter::XdpDropMalformed));
    let mut tot = good.clone();
    tot[16..18].copy_from_slice(&2000u16.to_be_bytes());
    cases.push((
        "total length beyond the frame",
        tot,
        XDP_DROP,
        Counter::XdpDropMalformed,
    ));
    let mut doff = good.clone();
    doff[14 + 20 + 12] = 0xf0;
    cases.push((
        "TCP data offset beyond the packet",
        doff,
        XDP_DROP,
        Counter::XdpDropMalformed,
    ));
    cases.push((
        "truncated TCP header",
        good[..14 + 20 + 10].to_vec(),
        XDP_DROP,
        Counter::XdpDropMalformed,
    ));
    let mut frag = good.clone();
    frag[20] = 0x20; // more fragments
    cases.push(("first fragment", frag, XDP_PASS, Counter::XdpPassFragment));
    let mut later = good.clone();
    later[21] = 0x10; // offset 128
    cases.push(("later fragment", later, XDP_PASS, Counter::XdpPassFragment));
    let mut opts = good.clone();
    opts[14] = 0x46;
    cases.push(("IPv4 options", opts, XDP_PASS, Counter::XdpPassIpOptions));
    let mut hbh = Pkt::tcp(v6(CLIENT6), 40000, v6(PUBLIC6), 443, SYN).frame();
    hbh[14 + 6] = 0; // next header: hop-by-hop
    cases.push((
        "IPv6 extension header",
        hbh,
        XDP_PASS,
        Counter::XdpPassIpOptions,
    ));
    let mut v6frag = Pkt::tcp(v6(CLIENT6), 40000, v6(PUBLIC6), 443, SYN).frame();
    v6frag[14 + 6] = 44;
    cases.push((
        "IPv6 fragment header",
        v6frag,
        XDP_PASS,
        Counter::XdpPassFragment,
    ));
    for (name, frame, verdict, counter) in cases {
        let before = h.counter(counter);
        let (v, meta, out) = h.xdp(&frame);
        assert_eq!(v, verdict, "{name}");
        assert!(meta.is_empty(), "{name}: metadata attached");
        if v == XDP_PASS {
            assert_eq!(out, frame, "{name}: modified");
        }
        assert_eq!(
            h.counter(counter),
            before + 1,
            "{name}: not counted as {counter:?}"
        );
    }
    assert_eq!(
        h.counter(Counter::XdpToTunnel),
        0,
        "something malformed was forwarded"
    );
}

#[test]
fn a_host_with_the_drop_policy_is_cut_and_its_next_packet_goes_to_the_vps_untouched() {
    use forwarder_common::{HOST_DROP_POLICY, HOST_FIRST_CONFIGURED, POLICY_DROP};
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        h.set_hosts(&["blocked.example.test", "ok.example.test"])
            .unwrap();
        h.set_host_policy(HOST_FIRST_CONFIGURED, POLICY_DROP)
            .unwrap();
        let run = |h: &Harness, frame: &[u8]| ingress(h, tc_only, frame);
        let (pass, forwarded, dropped) = if tc_only {
            (TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT)
        } else {
            (XDP_PASS, XDP_PASS, XDP_DROP)
        };
        for (port, host, cut) in [
            (42000, "blocked.example.test", true),
            (42001, "ok.example.test", false),
        ] {
            let syn = Pkt::tcp(v4(CLIENT4), port, v4(PUBLIC4), 443, SYN)
                .seq(OPEN_ISN)
                .options(mss_option(1460));
            assert_eq!(run(&h, &syn.frame()).0, forwarded, "{host}: SYN");
            h.answer(&syn, (v4(BACKEND4), 443));
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let data = Pkt::tcp(v4(CLIENT4), port, v4(PUBLIC4), 443, ACK | PSH)
                .payload(request.as_bytes());
            let (v, out) = run(&h, &data.frame());
            if cut {
                // The request never reaches home.
                assert_eq!(v, dropped, "tc_only {tc_only}: {host}");
                // What the client sends next (the retransmission) goes to the VPS's own
                // stack untranslated; having no socket for it, the VPS answers with a RST.
                let frame = data.frame();
                assert_eq!(run(&h, &frame), (pass, frame.clone()), "tc_only {tc_only}");
            } else {
                assert_eq!(v, forwarded, "tc_only {tc_only}: {host}");
                assert_eq!(
                    &out[14..],
                    &data.with((v4(CLIENT4), port), (v4(BACKEND4), 443)).ip()[..],
                    "tc_only {tc_only}: {host} was not forwarded"
                );
            }
            let flow = h
                .forward_flow((v4(CLIENT4), port), (v4(PUBLIC4), 443))
                .unwrap_or_else(|| {
                    panic!(
                        "tc_only {tc_only}: {host}: no flow entry {} {} {:?}",
                        h.flow_entries(forwarder_common::FLOWS_MAP),
                        h.flow_entries(forwarder_common::NEW_FLOWS_MAP),
                        Counter::ALL
                            .iter()
                            .map(|c| (c.name(), h.counter(*c)))
                            .filter(|x| x.1 != 0)
                            .collect::<Vec<_>>()
                    )
                });
            assert_eq!(
                flow.flags & forwarder_common::FLOW_F_CUT != 0,
                cut,
                "{host}"
            );
        }
        assert_eq!(h.counter(Counter::PolicyCut), 1, "tc_only {tc_only}");
        let passed = if tc_only {
            Counter::TcPassCut
        } else {
            Counter::XdpPassCut
        };
        assert_eq!(h.counter(passed), 1, "tc_only {tc_only}");
        assert_eq!(
            h.host_stats(HOST_FIRST_CONFIGURED).drops[HOST_DROP_POLICY],
            1,
            "tc_only {tc_only}: the cut is counted under its host"
        );
    }
}

#[test]
fn a_local_host_is_held_back_and_handed_to_the_daemon_with_its_handshake_and_earlier_bytes() {
    use forwarder_common::{
        CFG_F_LOCAL_POLICY, FLOW_F_CUT, FLOW_F_HANDOFF_WAIT, FLOW_F_LOCAL, HOST_FIRST_CONFIGURED,
        POLICY_LOCAL,
        handoff::{HANDOFF_LOCAL, HANDOFF_SEGMENT, parse_tcp_options},
    };
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        h.set_hosts(&["local.example.test"]).unwrap();
        h.set_host_policy(HOST_FIRST_CONFIGURED, POLICY_LOCAL)
            .unwrap();
        h.set_config_flags(CFG_F_LOCAL_POLICY).unwrap();
        let run = |h: &Harness, frame: &[u8]| ingress(h, tc_only, frame);
        let (forwarded, dropped) = if tc_only {
            (TC_ACT_REDIRECT, TC_ACT_SHOT)
        } else {
            (XDP_PASS, XDP_DROP)
        };
        let (client, public) = ((v4(CLIENT4), 42100), (v4(PUBLIC4), 443));
        let isn = 0x1000_0000u32;
        let syn = Pkt::tcp(client.0, client.1, public.0, public.1, SYN)
            .seq(isn)
            .options(mss_option(1460));
        assert_eq!(run(&h, &syn.frame()).0, forwarded, "tc_only {tc_only}: SYN");
        // The backend's SYN-ACK, with options of its own (MSS 1380, wscale 9, no SACK).
        let synack = Pkt::tcp(v4(BACKEND4), 443, client.0, client.1, SYN | ACK)
            .options(vec![2, 4, 0x05, 0x64, 1, 3, 3, 9])
            .seq(OPEN_SERVER_ISN)
            .ack(isn + 1);
        let (v, _) = h.tunnel(&synack.ip());
        assert_eq!(v, TC_ACT_REDIRECT, "tc_only {tc_only}: SYN-ACK");
        let hs = h.handshake(client, public).expect("handshake recorded");
        assert_eq!(u32::from_be(hs.syn_seq), isn);
        let syn_opts = parse_tcp_options(&hs.syn_opts[..hs.syn_len as usize]).unwrap();
        assert_eq!(
            (syn_opts.mss, syn_opts.wscale, syn_opts.sack_permitted),
            (Some(1460), Some(7), true),
            "the client's own MSS, before clamping"
        );
        let synack_opts = parse_tcp_options(&hs.synack_opts[..hs.synack_len as usize]).unwrap();
        assert_eq!((synack_opts.mss, synack_opts.wscale), (Some(1380), Some(9)));

        // The request in two segments; the name is only complete in the second.
        let (first, second) = (
            &b"GET / HTTP/1.1\r\nHost: local.exa"[..],
            &b"mple.test\r\nAccept: */*\r\n\r\n"[..],
        );
        let seg1 = Pkt::tcp(client.0, client.1, public.0, public.1, ACK | PSH)
            .seq(isn + 1)
            .ack(OPEN_SERVER_ISN + 1)
            .payload(first);
        let (v, out) = run(&h, &seg1.frame());
        assert_eq!(
            v, forwarded,
            "tc_only {tc_only}: the first segment goes home"
        );
        assert_eq!(&out[14..], &seg1.with(client, (v4(BACKEND4), 443)).ip()[..]);
        let seg2 = Pkt::tcp(client.0, client.1, public.0, public.1, ACK | PSH)
            .seq(isn + 1 + first.len() as u32)
            .ack(OPEN_SERVER_ISN + 1)
            .payload(second);
        let (v, _) = run(&h, &seg2.frame());
        assert_eq!(
            v, dropped,
            "tc_only {tc_only}: the naming segment is held back"
        );

        let events = h.handoff_events();
        assert_eq!(events.len(), 2, "tc_only {tc_only}");
        let key = flow_key(client, public);
        assert_eq!(events[0].kind, HANDOFF_SEGMENT);
        assert_eq!(events[0].payload(), first);
        assert_eq!(events[0].seq(), isn + 1);
        assert_eq!(events[1].kind, HANDOFF_LOCAL);
        assert_eq!(events[1].host_id, HOST_FIRST_CONFIGURED);
        assert_eq!(events[1].payload(), second);
        assert_eq!(events[1].seq(), isn + 1 + first.len() as u32);
        assert_eq!(events[1].ack(), OPEN_SERVER_ISN + 1);
        assert_eq!(events[1].window(), 64240);
        for e in &events {
            assert_eq!(e.key, key);
        }
        let flow = h.forward_flow(client, public).unwrap();
        assert_eq!(
            flow.flags & (FLOW_F_CUT | FLOW_F_LOCAL | FLOW_F_HANDOFF_WAIT),
            FLOW_F_CUT | FLOW_F_LOCAL | FLOW_F_HANDOFF_WAIT
        );

        // Until the daemon's socket exists, the client's packets are dropped (the VPS's
        // stack would reset them), and the backend's never reach the client again.
        let again = seg2.frame();
        assert_eq!(run(&h, &again).0, dropped, "tc_only {tc_only}: waiting");
        assert_eq!(h.counter(Counter::DropHandoffWait), 1);
        let home = Pkt::tcp(v4(BACKEND4), 443, client.0, client.1, ACK).seq(OPEN_SERVER_ISN + 1);
        assert_eq!(h.tunnel(&home.ip()).0, TC_ACT_SHOT, "tc_only {tc_only}");
        assert_eq!(h.counter(Counter::TunnelDropCut), 1);
        assert_eq!(h.counter(Counter::PolicyLocal), 1);
        assert_eq!(h.counter(Counter::HandoffLost), 0);
    }
}

#[test]
fn without_a_local_host_nothing_is_recorded_for_the_hand_off() {
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        h.set_hosts(&["a.example.test"]).unwrap();
        let (client, public) = ((v4(CLIENT4), 42200), (v4(PUBLIC4), 443));
        let syn = Pkt::tcp(client.0, client.1, public.0, public.1, SYN).options(mss_option(1460));
        ingress(&h, tc_only, &syn.frame());
        let seg = Pkt::tcp(client.0, client.1, public.0, public.1, ACK | PSH)
            .seq(0x1000_0001)
            .payload(b"GET / HTTP/1.1\r\nHo");
        ingress(&h, tc_only, &seg.frame());
        assert!(h.handshake(client, public).is_none(), "tc_only {tc_only}");
        assert!(h.handoff_events().is_empty(), "tc_only {tc_only}");
    }
}

#[test]
fn under_a_syn_flood_unknown_addresses_get_through_only_on_a_real_retransmission() {
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        h.set_hosts(&["app.example.test"]).unwrap();
        // Two SYNs within 100 ms are "more than 10 per second".
        h.set_syn_flood_threshold(10).unwrap();
        let (forwarded, dropped) = if tc_only {
            (TC_ACT_REDIRECT, TC_ACT_SHOT)
        } else {
            (XDP_PASS, XDP_DROP)
        };
        let syn = |src: IpAddr, port: u16, seq: u32| {
            Pkt::tcp(src, port, v4(PUBLIC4), 443, SYN)
                .seq(seq)
                .options(mss_option(1460))
                .frame()
        };
        // A client that completed a handshake before the flood.
        let client = v4(CLIENT4);
        h.open(
            tc_only,
            (client, 41000),
            (v4(PUBLIC4), 443),
            (v4(BACKEND4), 443),
        );

        // The flood: every SYN from an address of its own, none sent twice.
        let mut verdicts = Vec::new();
        for i in 0..50u16 {
            let src: IpAddr = std::net::Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8).into();
            verdicts.push(ingress(&h, tc_only, &syn(src, 1024 + i, 7)).0);
        }
        let through = verdicts.iter().filter(|v| **v == forwarded).count();
        assert!(
            through <= 2,
            "tc_only {tc_only}: {through} of the flood got through"
        );
        assert!(h.counter(Counter::SynFloodDrop) >= 48);

        // The known client is not held up.
        assert_eq!(
            ingress(&h, tc_only, &syn(client, 41001, 9)).0,
            forwarded,
            "tc_only {tc_only}: known client"
        );
        // A flood tool sending each SYN twice in a row, or a RST first, earns nothing:
        // the RST has no flow and marks nothing.
        let twice = v4(std::net::Ipv4Addr::new(198, 19, 8, 8));
        assert_eq!(ingress(&h, tc_only, &syn(twice, 50001, 1)).0, dropped);
        assert_eq!(
            ingress(&h, tc_only, &syn(twice, 50001, 1)).0,
            dropped,
            "tc_only {tc_only}: the same SYN at once"
        );
        assert_eq!(h.counter(Counter::SynFloodRetryRefused), 1);
        let rst_first = v4(std::net::Ipv4Addr::new(198, 19, 9, 9));
        let rst = Pkt::tcp(rst_first, 50002, v4(PUBLIC4), 443, RST | ACK).frame();
        assert_eq!(
            ingress(&h, tc_only, &rst).0,
            dropped,
            "tc_only {tc_only}: RST"
        );
        assert_eq!(h.counter(Counter::DropNoFlow), 1);
        assert_eq!(
            ingress(&h, tc_only, &syn(rst_first, 50002, 3)).0,
            dropped,
            "tc_only {tc_only}: SYN after a RST"
        );
        // A new client gets through on its retransmission: the same SYN (port and
        // sequence number), a TCP stack's initial timeout later (one second; the guard
        // takes half of it).
        let newcomer = v4(std::net::Ipv4Addr::new(198, 19, 7, 7));
        assert_eq!(ingress(&h, tc_only, &syn(newcomer, 50000, 5)).0, dropped);
        std::thread::sleep(std::time::Duration::from_millis(600));
        // Keep the flood's rate above the threshold across the pause.
        for i in 0..5u16 {
            let src: IpAddr = std::net::Ipv4Addr::new(198, 18, 200, i as u8).into();
            ingress(&h, tc_only, &syn(src, 3000 + i, 7));
        }
        assert_eq!(
            ingress(&h, tc_only, &syn(newcomer, 50000, 6)).0,
            dropped,
            "tc_only {tc_only}: another SYN is not a retransmission"
        );
        let retry_newcomer = v4(std::net::Ipv4Addr::new(198, 19, 7, 8));
        assert_eq!(
            ingress(&h, tc_only, &syn(retry_newcomer, 50000, 5)).0,
            dropped
        );
        std::thread::sleep(std::time::Duration::from_millis(600));
        for i in 0..5u16 {
            let src: IpAddr = std::net::Ipv4Addr::new(198, 18, 201, i as u8).into();
            ingress(&h, tc_only, &syn(src, 3000 + i, 7));
        }
        assert_eq!(
            ingress(&h, tc_only, &syn(retry_newcomer, 50000, 5)).0,
            forwarded,
            "tc_only {tc_only}: the retransmitted SYN"
        );
        assert_eq!(h.counter(Counter::SynFloodRetryPass), 1);

        // Off: nothing is held back.
        h.set_syn_flood_threshold(0).unwrap();
        let before = h.counter(Counter::SynFloodDrop);
        for i in 0..20u16 {
            let src: IpAddr = std::net::Ipv4Addr::new(198, 18, 100, i as u8).into();
            assert_eq!(ingress(&h, tc_only, &syn(src, 2000 + i, 7)).0, forwarded);
        }
        assert_eq!(h.counter(Counter::SynFloodDrop), before);
    }
}

/// Connection events do not wake the daemon up one by one (in a VM each wake-up is an
/// exit to the hypervisor, several µs): an edge-triggered epoll on the ring buffer, as
/// tokio registers it, sees nothing until `EVENTS_WAKE_BYTES` are waiting; the daemon
/// drains the ring on a timer below that.
#[test]
fn connection_events_wake_the_reader_only_when_the_ring_fills() {
    use std::os::fd::AsRawFd;

    let mut h = harness(false);
    h.set_hosts(&["app.example.test"]).unwrap();
    let events = h.events_fd();
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: 1,
    };
    assert_eq!(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, events.as_raw_fd(), &mut ev) },
        0
    );
    let woken = || {
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 1];
        unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 1, 0) }
    };
    let hello = forwarder_common::samples::browser_hello(b"app.example.test", 0x3a3a, 32, 5);
    let p4: IpAddr = PUBLIC4.into();
    let classify = |h: &Harness, i: u32| {
        let c: IpAddr = std::net::Ipv4Addr::new(198, 18, 50 + (i / 30000) as u8, 7).into();
        let port = 20000 + (i % 30000) as u16;
        let syn = Pkt::tcp(c, port, p4, 443, SYN)
            .seq(1000)
            .options(mss_option(1460));
        assert_eq!(h.xdp(&syn.frame()).0, XDP_PASS);
        h.answer(&syn, (BACKEND4.into(), 443));
        let data = Pkt::tcp(c, port, p4, 443, ACK | PSH)
            .seq(1001)
            .payload(&hello)
            .frame();
        assert_eq!(h.xdp(&data).0, XDP_PASS);
    };
    let classified = h.counter(Counter::ClassifiedTls);
    classify(&h, 0);
    assert_eq!(h.counter(Counter::ClassifiedTls), classified + 1);
    assert_eq!(woken(), 0, "one event woke the reader up");
    // The first event whose record reaches the mark wakes the reader up.
    let needed =
        forwarder_common::EVENTS_WAKE_BYTES.div_ceil(forwarder_common::EVENT_RECORD_BYTES) as u32;
    for i in 1..needed - 1 {
        classify(&h, i);
    }
    assert_eq!(woken(), 0, "woken up before the ring filled");
    classify(&h, needed);
    assert_eq!(woken(), 1, "{needed} events waiting and no wake-up");
    classify(&h, needed + 1);
    assert_eq!(woken(), 0, "woken up again by an event beyond the mark");
    assert_eq!(h.counter(Counter::EventsLost), 0);
    unsafe { libc::close(ep) };
}

/// A client whose source port comes round again while the entries of its earlier
/// connection on that port are still in the table (the server closed first, so the client
/// keeps no TIME_WAIT): the new SYN starts a new connection, classified and counted as such.
#[test]
fn a_syn_on_the_ports_of_an_ended_connection_starts_a_new_one() {
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        h.set_hosts(&["app.example.test", "blog.example.test"])
            .unwrap();
        let (c, p, port) = (v4(CLIENT4), v4(PUBLIC4), 47000);
        let connect = |h: &Harness, host: &str| {
            let syn = Pkt::tcp(c, port, p, 443, SYN)
                .seq(5000)
                .options(mss_option(1460));
            ingress(h, tc_only, &syn.frame());
            let synack = Pkt::tcp(v4(BACKEND4), 443, c, port, SYN | ACK).seq(0x7000_0000);
            assert_eq!(h.tunnel(&synack.ip()).0, TC_ACT_REDIRECT);
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let data = Pkt::tcp(c, port, p, 443, ACK | PSH)
                .seq(5001)
                .ack(0x7000_0001)
                .payload(request.as_bytes());
            ingress(h, tc_only, &data.frame());
        };
        let close = |h: &Harness| {
            // Home closes first, then the client.
            let fin = Pkt::tcp(v4(BACKEND4), 443, c, port, FIN | ACK).ip();
            h.tunnel(&fin);
            let fin = Pkt::tcp(c, port, p, 443, FIN | ACK).seq(6000).frame();
            ingress(h, tc_only, &fin);
        };
        connect(&h, "app.example.test");
        close(&h);
        let first = h.forward_flow((c, port), (p, 443)).expect("flow");
        assert_ne!(first.flags & forwarder_common::FLOW_F_END_REPORTED, 0);
        connect(&h, "blog.example.test");
        let second = h.forward_flow((c, port), (p, 443)).expect("flow");
        assert_eq!(
            second.host_id,
            forwarder_common::HOST_FIRST_CONFIGURED + 1,
            "tc_only {tc_only}: the new connection is blog's"
        );
        assert_eq!(second.flags & forwarder_common::FLOW_F_END_REPORTED, 0);
        assert_eq!(h.counter(Counter::FlowsCreated), 2, "tc_only {tc_only}");
        // Both went through the table of opening connections into the established one;
        // the first one's entries are gone from both.
        assert_eq!(h.counter(Counter::FlowsConfirmed), 2, "tc_only {tc_only}");
        assert_eq!(h.flow_entries(forwarder_common::FLOWS_MAP), 2);
        assert_eq!(h.flow_entries(forwarder_common::NEW_FLOWS_MAP), 0);
        assert_eq!(h.counter(Counter::ClassifiedHttp), 2, "tc_only {tc_only}");
        assert_eq!(
            h.host_stats(forwarder_common::HOST_FIRST_CONFIGURED)
                .connections,
            1
        );
        assert_eq!(
            h.host_stats(forwarder_common::HOST_FIRST_CONFIGURED + 1)
                .connections,
            1
        );
        // A SYN retransmitted on a live connection is not a new one.
        let syn = Pkt::tcp(c, port, p, 443, SYN)
            .seq(5000)
            .options(mss_option(1460));
        ingress(&h, tc_only, &syn.frame());
        assert_eq!(h.counter(Counter::FlowsCreated), 2, "tc_only {tc_only}");
    }
}

/// New connections start in a table of their own and move to the established table only
/// once the backend answered and the client's next packet shows it saw the answer: a TCP
/// ACK of the backend's SYN-ACK (a blind ACK, or data with any other number, is dropped:
/// a spoofer's SYN opens nothing more), or, for UDP, a conversation: two answers and the
/// client's datagram after them. Packets are translated the same way in either table.
#[test]
fn connections_move_to_the_established_table_once_the_backend_answered() {
    use forwarder_common::{FLOWS_MAP, NEW_FLOWS_MAP};
    for tc_only in [false, true] {
        let h = harness(tc_only);
        let (c, p, b, port) = (v4(CLIENT4), v4(PUBLIC4), v4(BACKEND4), 46000);
        let at = |what: &str| format!("tc_only {tc_only}: {what}");
        let send = |pkt: &Pkt, what: &str| {
            let (v, out) = ingress(&h, tc_only, &pkt.frame());
            let want = if tc_only { TC_ACT_REDIRECT } else { XDP_PASS };
            assert_eq!(v, want, "{}", at(what));
            check(&at(what), &out[14..], &pkt.with((c, port), (b, 443)).ip());
        };
        let table = |what: &str| {
            let key = flow_key((c, port), (p, 443));
            let new = h.flow_in(NEW_FLOWS_MAP, &key);
            let est = h.flow_in(FLOWS_MAP, &key);
            assert!(new.is_none() || est.is_none(), "{}: in both", at(what));
            match (new, est) {
                (Some(_), None) => "opening",
                (None, Some(_)) => "established",
                _ => panic!("{}: in no table", at(what)),
            }
        };
        let dropped = if tc_only { TC_ACT_SHOT } else { XDP_DROP };
        send(&Pkt::tcp(c, port, p, 443, SYN).seq(100), "SYN");
        assert_eq!(table("after the SYN"), "opening");
        // An ACK before any SYN-ACK: a spoofer's blind guess, which goes nowhere.
        let blind = Pkt::tcp(c, port, p, 443, ACK).seq(101).ack(0x5000_0001);
        assert_eq!(
            ingress(&h, tc_only, &blind.frame()).0,
            dropped,
            "{}",
            at("blind ACK")
        );
        assert_eq!(table("after a blind ACK"), "opening");
        let synack = Pkt::tcp(b, 443, c, port, SYN | ACK)
            .seq(0x5000_0000)
            .ack(101);
        let (v, out) = h.tunnel(&synack.ip());
        assert_eq!(v, TC_ACT_REDIRECT, "{}", at("SYN-ACK"));
        check(
            &at("SYN-ACK"),
            &out[14..],
            &synack.with((p, 443), (c, port)).ip(),
        );
        assert_eq!(table("after the SYN-ACK"), "opening");
        let wrong = Pkt::tcp(c, port, p, 443, ACK | PSH)
            .seq(101)
            .ack(0x1234_5678)
            .payload(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            ingress(&h, tc_only, &wrong.frame()).0,
            dropped,
            "{}",
            at("wrong ACK")
        );
        assert_eq!(table("after an ACK of another number"), "opening");
        assert_eq!(h.counter(Counter::FlowsConfirmed), 0);
        assert_eq!(h.counter(Counter::DropUnconfirmed), 2, "{}", at("dropped"));
        send(
            &Pkt::tcp(c, port, p, 443, ACK).seq(101).ack(0x5000_0001),
            "third ACK",
        );
        assert_eq!(table("after the third ACK"), "established");
        assert_eq!(h.counter(Counter::FlowsConfirmed), 1, "{}", at("confirmed"));
        assert_eq!(
            h.flow_entries(NEW_FLOWS_MAP),
            0,
            "{}",
            at("opening entries left")
        );
        assert_eq!(
            h.flow_entries(FLOWS_MAP),
            2,
            "{}",
            at("established entries")
        );
        // Counts made while opening moved along: 2 client packets went through so far.
        let fwd = h
            .flow_in(FLOWS_MAP, &flow_key((c, port), (p, 443)))
            .unwrap();
        assert_eq!(fwd.packets, 2, "{}", at("packets carried over"));
        // Both directions go on through the established entries.
        send(
            &Pkt::tcp(c, port, p, 443, ACK | PSH)
                .seq(101)
                .ack(0x5000_0001)
                .payload(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n"),
            "request",
        );
        let reply = Pkt::tcp(b, 443, c, port, ACK | PSH).payload(b"HTTP/1.1 200 OK\r\n\r\n");
        let (v, out) = h.tunnel(&reply.ip());
        assert_eq!(v, TC_ACT_REDIRECT, "{}", at("reply"));
        check(
            &at("reply"),
            &out[14..],
            &reply.with((p, 443), (c, port)).ip(),
        );

        // UDP: the backend's answer, then the client's next datagram.
        let (uc, up, ub) = (50001, UDP_PUBLIC_PORT, UDP_BACKEND_PORT);
        let udp_key = forwarder_common::FlowKey {
            proto: forwarder_common::PROTO_UDP,
            ..flow_key((c, uc), (p, up))
        };
        let udp_table = || {
            let new = h.flow_in(NEW_FLOWS_MAP, &udp_key).is_some();
            let est = h.flow_in(FLOWS_MAP, &udp_key).is_some();
            (new, est)
        };
        let q = Pkt::udp(c, uc, p, up, b"query");
        ingress(&h, tc_only, &q.frame());
        ingress(&h, tc_only, &q.frame());
        assert_eq!(udp_table(), (true, false), "{}", at("UDP before an answer"));
        let answer = Pkt::udp(b, ub, c, uc, b"answer");
        assert_eq!(h.tunnel(&answer.ip()).0, TC_ACT_REDIRECT);
        assert_eq!(udp_table(), (true, false), "{}", at("UDP answered"));
        // One answer is what a spoofer can get out of home (a version negotiation, an
        // error): the client speaking again after it proves nothing yet.
        ingress(&h, tc_only, &q.frame());
        assert_eq!(udp_table(), (true, false), "{}", at("UDP answered once"));
        assert_eq!(h.tunnel(&answer.ip()).0, TC_ACT_REDIRECT);
        ingress(&h, tc_only, &q.frame());
        assert_eq!(udp_table(), (false, true), "{}", at("UDP conversation"));
        assert_eq!(h.counter(Counter::FlowsConfirmed), 2);
    }
}

/// A connection whose entries a full established table evicted: its next packet may
/// re-create them only while the table is nearly full, within the budget; home's RST to a
/// re-created flow (home has no such connection: the packet was made up) goes nowhere and
/// takes the entries with it.
#[test]
fn evicted_connections_are_re_created_only_under_pressure_and_home_resets_go_nowhere() {
    use forwarder_common::{FLOW_F_RECREATED, FLOWS_MAP, NEW_FLOWS_MAP};
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        let (c, p, b) = (v4(CLIENT4), v4(PUBLIC4), v4(BACKEND4));
        let (forwarded, dropped) = if tc_only {
            (TC_ACT_REDIRECT, TC_ACT_SHOT)
        } else {
            (XDP_PASS, XDP_DROP)
        };
        let at = |what: &str| format!("tc_only {tc_only}: {what}");
        let data =
            |port: u16| Pkt::tcp(c, port, p, 443, ACK | PSH).payload(b"more of an old connection");
        // Room in the table: a mid-connection packet without a flow is made up.
        h.set_recreate(100, false).unwrap();
        assert_eq!(
            ingress(&h, tc_only, &data(48000).frame()).0,
            dropped,
            "{}",
            at("no pressure")
        );
        assert_eq!(h.counter(Counter::DropNoFlow), 1);
        assert_eq!(h.flow_entries(NEW_FLOWS_MAP), 0);
        // Nearly full: the same packet re-creates its flow and goes home, translated.
        h.set_recreate(100, true).unwrap();
        let (v, out) = ingress(&h, tc_only, &data(48000).frame());
        assert_eq!(v, forwarded, "{}", at("under pressure"));
        check(
            &at("re-created"),
            &out[14..],
            &data(48000).with((c, 48000), (b, 443)).ip(),
        );
        assert_eq!(h.counter(Counter::FlowsRecreated), 1);
        let fwd = h
            .flow_in(NEW_FLOWS_MAP, &flow_key((c, 48000), (p, 443)))
            .unwrap();
        assert_ne!(fwd.flags & FLOW_F_RECREATED, 0);
        // Home knows the connection: its answer goes to the client, and the client's next
        // packet moves the flow to the established table.
        let reply = Pkt::tcp(b, 443, c, 48000, ACK | PSH).payload(b"ok");
        let (v, out) = h.tunnel(&reply.ip());
        assert_eq!(v, TC_ACT_REDIRECT, "{}", at("home's answer"));
        check(
            &at("answer"),
            &out[14..],
            &reply.with((p, 443), (c, 48000)).ip(),
        );
        assert_eq!(ingress(&h, tc_only, &data(48000).frame()).0, forwarded);
        let fwd = h.flow_in(FLOWS_MAP, &flow_key((c, 48000), (p, 443)));
        assert!(
            fwd.is_some_and(|f| f.flags & FLOW_F_RECREATED == 0),
            "{}",
            at("confirmed")
        );
        // A made-up one: home resets it, the RST is dropped, the entries go.
        assert_eq!(ingress(&h, tc_only, &data(48001).frame()).0, forwarded);
        let rst = Pkt::tcp(b, 443, c, 48001, RST | ACK);
        assert_eq!(h.tunnel(&rst.ip()).0, TC_ACT_SHOT, "{}", at("home's RST"));
        assert_eq!(h.counter(Counter::TunnelDropRecreatedRst), 1);
        assert!(
            h.forward_flow((c, 48001), (p, 443)).is_none(),
            "{}",
            at("entries left")
        );
        // A RST never re-creates anything; nor does anything once the budget is spent.
        let lone = Pkt::tcp(c, 48002, p, 443, RST | ACK);
        assert_eq!(ingress(&h, tc_only, &lone.frame()).0, dropped);
        h.set_recreate(1, true).unwrap();
        let mut through = 0;
        for port in 48100..48110 {
            if ingress(&h, tc_only, &data(port).frame()).0 == forwarded {
                through += 1;
            }
        }
        assert!(
            through <= 2,
            "{}: {through} of 10 past a budget of 1/s",
            at("budget")
        );
    }
}

/// The TCP/UDP pseudo header of the IP packet `ip`.
fn pseudo_header(ip: &[u8]) -> (usize, Vec<u8>) {
    let mut ph = Vec::new();
    let l4 = if ip[0] >> 4 == 4 {
        ph.extend_from_slice(&ip[12..20]);
        ph.extend_from_slice(&[0, ip[9]]);
        ph.extend_from_slice(&((ip.len() - 20) as u16).to_be_bytes());
        20
    } else {
        ph.extend_from_slice(&ip[8..40]);
        ph.extend_from_slice(&((ip.len() - 40) as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, ip[6]]);
        40
    };
    (l4, ph)
}

/// Where the L4 checksum of the frame `f` is.
fn csum_at(f: &[u8]) -> usize {
    let (l4, _) = pseudo_header(&f[14..]);
    let proto = if f[14] >> 4 == 4 {
        f[14 + 9]
    } else {
        f[14 + 6]
    };
    14 + l4
        + if proto == forwarder_common::PROTO_TCP {
            16
        } else {
            6
        }
}

/// The checksum field a stack that leaves the checksum to offload writes
/// (`CHECKSUM_PARTIAL`): the pseudo-header sum, not complemented, big-endian.
fn partial_field(f: &[u8]) -> u16 {
    !inet_csum(&[&pseudo_header(&f[14..]).1])
}

fn ones_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// A frame whose checksum was left to offload (its field the pseudo-header sum, as a local
/// stack sends it over a veth) is translated by XDP's arithmetic for complete checksums,
/// which is wrong for it; XDP hands the correction to tc in the metadata. Applied the way
/// `bpf_l4_csum_replace` treats a `CHECKSUM_PARTIAL` skb (`BPF_F_PSEUDO_HDR`: the field
/// moves by to - from), it gives the translated packet's pseudo-header sum, and the
/// checksum the kernel completes from it at transmit gives the expected bytes exactly.
/// Frames with complete checksums carry no correction.
///
/// The tc half cannot run under BPF_PROG_TEST_RUN: the skb it builds is always
/// `CHECKSUM_NONE` (its `__sk_buff` context sets neither `ip_summed` nor `csum`) and has
/// no XDP metadata; `tests/tests/checksum_offload.rs` runs it on real frames.
#[test]
fn xdp_hands_tc_the_correction_for_a_checksum_left_to_offload() {
    for partial in [false, true] {
        let h = harness(false);
        for c in forward_cases() {
            let mut frame = c.input.frame();
            let ck = csum_at(&frame);
            if partial && !c.input.udp_no_csum {
                let p = partial_field(&frame);
                frame[ck..ck + 2].copy_from_slice(&p.to_be_bytes());
            }
            let (verdict, meta, out) = h.xdp(&frame);
            assert_eq!(verdict, XDP_PASS, "{}: verdict", c.name);
            assert_eq!(meta.len(), 16, "{}: metadata {meta:02x?}", c.name);
            let l3_off = u16::from_ne_bytes(meta[12..14].try_into().unwrap());
            assert_eq!(usize::from(l3_off), ck - 14, "{}: checksum offset", c.name);
            let fix = u16::from_be_bytes(meta[14..16].try_into().unwrap());
            let want = c.expected.frame();
            if !partial || c.input.udp_no_csum {
                assert_eq!(fix, 0, "{}: a complete checksum needs no repair", c.name);
                check(c.name, &out[14..], &want[14..]);
            } else {
                assert_ne!(fix, 0, "{}: no correction for a partial checksum", c.name);
                assert_eq!(
                    out[..ck],
                    want[..ck],
                    "{}: bytes before the checksum",
                    c.name
                );
                assert_eq!(out[ck + 2..], want[ck + 2..], "{}: bytes after it", c.name);
                let field = u16::from_be_bytes([out[ck], out[ck + 1]]);
                let repaired = ones_add(field, fix);
                let expect = partial_field(&want);
                assert!(
                    repaired == expect
                        || [repaired, expect].iter().all(|v| *v == 0 || *v == 0xffff),
                    "{}: repaired field {repaired:#06x}, the translated packet's pseudo-header \
                     sum is {expect:#06x}",
                    c.name
                );
                // The completion at transmit (skb_checksum_help, WireGuard's encryption, a
                // device): the sum from csum_start to the end, field included, complemented.
                let mut done = out.clone();
                done[ck..ck + 2].copy_from_slice(&repaired.to_be_bytes());
                let l4 = 14 + pseudo_header(&done[14..]).0;
                let full = inet_csum(&[&done[l4..]]);
                done[ck..ck + 2].copy_from_slice(&full.to_be_bytes());
                check(c.name, &done[14..], &want[14..]);
            }
            if let Some(backend) = c.answered_by {
                h.answer(&c.input, backend);
            }
        }
        assert_eq!(
            h.counter(Counter::XdpToTunnel),
            forward_cases().len() as u64,
            "partial {partial}"
        );
    }
}

/// What becomes of a connection in `unknown_policy` tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Its name was read: host `id`, forwarded.
    Named(u32),
    /// Its name was read: a host whose policy is `drop`, cut.
    PolicyCut(u32),
    /// No name could be read: `unknown`.
    Unknown,
}

/// A client's payload segment: offset from the connection's first data byte, bytes, TCP
/// flags.
type Segment = (u32, Vec<u8>, u8);

/// Client connections whose first payload the reader must name, give up on or refuse:
/// each as its payload segments, of which the last decides.
fn unknown_policy_cases() -> Vec<(&'static str, Vec<Segment>, Outcome)> {
    use forwarder_common::{
        HOST_FIRST_CONFIGURED,
        samples::{browser_exts, browser_hello, client_hello},
    };
    let ok = HOST_FIRST_CONFIGURED + 1;
    let blocked = HOST_FIRST_CONFIGURED;
    let data = ACK | PSH;
    let seg = |off: u32, b: &[u8]| (off, b.to_vec(), data);
    // A request spread over more segments than the reader follows (MAX_SEGMENTS = 4).
    let lines = [
        "GET / HTTP/1.1\r\n",
        "X-A: 1\r\n",
        "X-B: 2\r\n",
        "X-C: 3\r\n",
    ];
    let mut split = Vec::new();
    let mut off = 0;
    for l in lines {
        split.push(seg(off, l.as_bytes()));
        off += l.len() as u32;
    }
    let many_lines = format!(
        "GET / HTTP/1.1\r\n{}Host: blocked.example.test\r\n\r\n",
        // Lines that could be Host, so the reader looks at each.
        "h-x: y\r\n".repeat(70)
    );
    let head = b"GET / HTTP/1.1\r\nX: aa";
    vec![
        (
            "a ClientHello naming a forwarded host",
            vec![seg(0, &browser_hello(b"ok.example.test", 0x3a3a, 32, 5))],
            Outcome::Named(ok),
        ),
        (
            "a request for a dropped host, carrying the FIN",
            vec![(
                0,
                b"GET / HTTP/1.1\r\nHost: blocked.example.test\r\n\r\n".to_vec(),
                data | FIN,
            )],
            Outcome::PolicyCut(blocked),
        ),
        (
            "a ClientHello without SNI",
            vec![seg(0, &client_hello(&browser_exts(0x3a3a, 32), 32))],
            Outcome::Unknown,
        ),
        (
            "neither TLS nor HTTP",
            vec![seg(0, b"SSH-2.0-OpenSSH_9.6\r\n")],
            Outcome::Unknown,
        ),
        (
            "a request split over more segments than the reader follows",
            split,
            Outcome::Unknown,
        ),
        (
            "more than 64 header lines before Host",
            vec![seg(0, many_lines.as_bytes())],
            Outcome::Unknown,
        ),
        (
            "a sequence gap",
            vec![
                seg(0, b"GET / HTTP/1.1\r\n"),
                seg(26, b"Host: blocked.example.test\r\n\r\n"),
            ],
            Outcome::Unknown,
        ),
        (
            "a first payload ahead of the stream's start",
            vec![seg(40, b"GET / HTTP/1.1\r\nHost: ok.example.test\r\n\r\n")],
            Outcome::Unknown,
        ),
        (
            "new bytes behind a repeated one",
            vec![
                seg(0, head),
                seg(
                    head.len() as u32 - 1,
                    b"a\r\nHost: blocked.example.test\r\n\r\n",
                ),
            ],
            Outcome::Unknown,
        ),
    ]
}

#[test]
fn unknown_policy_drop_cuts_tcp_connections_whose_host_cannot_be_read() {
    use forwarder_common::{
        FLOW_F_CUT, HOST_DROP_POLICY, HOST_FIRST_CONFIGURED, HOST_UNKNOWN, POLICY_DROP,
        RULE_F_UNKNOWN_DROP,
    };
    for tc_only in [false, true] {
        for unknown_drop in [true, false] {
            let mut h = harness(tc_only);
            h.set_hosts(&["blocked.example.test", "ok.example.test"])
                .unwrap();
            h.set_host_policy(HOST_FIRST_CONFIGURED, POLICY_DROP)
                .unwrap();
            if unknown_drop {
                h.set_rule_flags(v4(PUBLIC4), 443, RULE_F_UNKNOWN_DROP)
                    .unwrap();
            }
            let (pass, forwarded, dropped) = if tc_only {
                (TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT)
            } else {
                (XDP_PASS, XDP_PASS, XDP_DROP)
            };
            let public = (v4(PUBLIC4), 443);
            let backend = (v4(BACKEND4), 443);
            let mut unknown_cuts = 0;
            for (i, (name, segments, outcome)) in unknown_policy_cases().into_iter().enumerate() {
                let what = format!("tc_only {tc_only}, unknown_drop {unknown_drop}: {name}");
                let client = (v4(CLIENT4), 43000 + i as u16);
                h.open(tc_only, client, public, backend);
                let cut = match outcome {
                    Outcome::Named(_) => false,
                    Outcome::PolicyCut(_) => true,
                    Outcome::Unknown => unknown_drop,
                };
                let last = segments.len() - 1;
                for (n, (off, bytes, flags)) in segments.iter().enumerate() {
                    let p = Pkt::tcp(client.0, client.1, public.0, public.1, *flags)
                        .seq(OPEN_ISN.wrapping_add(1).wrapping_add(*off))
                        .payload(bytes);
                    let (v, out) = ingress(&h, tc_only, &p.frame());
                    if n < last || !cut {
                        assert_eq!(v, forwarded, "{what}: segment {n}");
                        assert_eq!(
                            &out[14..],
                            &p.with(client, backend).ip()[..],
                            "{what}: segment {n} was not forwarded as it came"
                        );
                    } else {
                        // The segment that decided does not go home, and what the client
                        // sends next goes untranslated to the VPS's own stack (a RST).
                        assert_eq!(v, dropped, "{what}: the deciding segment");
                        let frame = p.frame();
                        assert_eq!(
                            ingress(&h, tc_only, &frame),
                            (pass, frame.clone()),
                            "{what}"
                        );
                    }
                }
                let flow = h.forward_flow(client, public).expect("flow entry");
                assert_eq!(flow.flags & FLOW_F_CUT != 0, cut, "{what}: cut");
                let host = match outcome {
                    Outcome::Named(id) | Outcome::PolicyCut(id) => id,
                    Outcome::Unknown => HOST_UNKNOWN,
                };
                assert_eq!(flow.host_id, host, "{what}: host");
                if outcome == Outcome::Unknown && unknown_drop {
                    unknown_cuts += 1;
                }
            }
            let what = format!("tc_only {tc_only}, unknown_drop {unknown_drop}");
            assert_eq!(h.counter(Counter::PolicyUnknownCut), unknown_cuts, "{what}");
            assert_eq!(
                h.host_stats(HOST_UNKNOWN).drops[HOST_DROP_POLICY],
                unknown_cuts,
                "{what}: the cuts are counted under unknown"
            );
            assert_eq!(h.counter(Counter::PolicyCut), 1, "{what}");
        }
    }
}

#[test]
fn unknown_policy_drop_spares_a_connection_that_ends_before_any_payload() {
    use forwarder_common::{FLOW_F_CUT, HOST_UNKNOWN, RULE_F_UNKNOWN_DROP};
    for tc_only in [false, true] {
        let mut h = harness(tc_only);
        h.set_rule_flags(v4(PUBLIC4), 443, RULE_F_UNKNOWN_DROP)
            .unwrap();
        let client = (v4(CLIENT4), 44100);
        let public = (v4(PUBLIC4), 443);
        h.open(tc_only, client, public, (v4(BACKEND4), 443));
        // A port check: connect, then close without a byte.
        let fin = Pkt::tcp(client.0, client.1, public.0, public.1, ACK | FIN);
        let forwarded = if tc_only { TC_ACT_REDIRECT } else { XDP_PASS };
        assert_eq!(
            ingress(&h, tc_only, &fin.frame()).0,
            forwarded,
            "tc_only {tc_only}"
        );
        let flow = h.forward_flow(client, public).unwrap();
        assert_eq!(flow.flags & FLOW_F_CUT, 0, "tc_only {tc_only}");
        assert_eq!(flow.host_id, HOST_UNKNOWN);
        assert_eq!(h.counter(Counter::PolicyUnknownCut), 0);
    }
}

#[test]
fn unknown_policy_drop_cuts_udp_flows_and_quic_connections_left_unknown() {
    use forwarder_common::{
        FLOW_F_CUT, FlowKey, HOST_DROP_POLICY, HOST_UNKNOWN, PROTO_UDP, QUIC_V_NO_SNI,
        QUIC_V_UNDECODABLE, QuicVerdict, RULE_F_UNKNOWN_DROP,
    };
    // Long header, Initial, version 1, padded as clients must.
    let mut initial = vec![0xc0, 0, 0, 0, 1, 8];
    initial.resize(1200, 0x5a);
    for tc_only in [false, true] {
        let (pass, forwarded, dropped) = if tc_only {
            (TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT)
        } else {
            (XDP_PASS, XDP_PASS, XDP_DROP)
        };
        let mut h = harness(tc_only);
        h.set_rule_flags_of(PROTO_UDP, v4(PUBLIC4), UDP_PUBLIC_PORT, RULE_F_UNKNOWN_DROP)
            .unwrap();
        h.set_quic_rate(1000, 100).unwrap();
        let public = (v4(PUBLIC4), UDP_PUBLIC_PORT);
        let udp_key = |client: (IpAddr, u16)| FlowKey {
            proto: PROTO_UDP,
            ..flow_key(client, public)
        };
        let flow_of = |h: &Harness, client| {
            let key = udp_key(client);
            h.flow_in(forwarder_common::FLOWS_MAP, &key)
                .or_else(|| h.flow_in(forwarder_common::NEW_FLOWS_MAP, &key))
                .expect("UDP flow entry")
        };
        let next =
            |client: (IpAddr, u16)| Pkt::udp(client.0, client.1, public.0, public.1, &[0x40; 60]);
        let mut cuts = 0;
        // A datagram that does not start a QUIC connection: cut at once.
        let client = (v4(CLIENT4), 45000);
        assert_eq!(
            ingress(&h, tc_only, &next(client).frame()).0,
            dropped,
            "tc_only {tc_only}: not QUIC"
        );
        cuts += 1;
        // QUIC without a name, or Initials the daemon cannot decode: the Initial goes home
        // (it is not held back while the daemon reads it), the verdict cuts at the next
        // datagram, and later ones go to the VPS's own stack.
        for (port, code) in [(45001, QUIC_V_NO_SNI), (45002, QUIC_V_UNDECODABLE)] {
            let client = (v4(CLIENT4), port);
            let first = Pkt::udp(client.0, client.1, public.0, public.1, &initial);
            assert_eq!(
                ingress(&h, tc_only, &first.frame()).0,
                forwarded,
                "tc_only {tc_only}: Initial"
            );
            h.set_quic_verdict(&udp_key(client), QuicVerdict { code, host_id: 0 })
                .unwrap();
            let p = next(client);
            assert_eq!(
                ingress(&h, tc_only, &p.frame()).0,
                dropped,
                "tc_only {tc_only}: verdict {code}"
            );
            let frame = p.frame();
            assert_eq!(ingress(&h, tc_only, &frame), (pass, frame.clone()));
            cuts += 1;
            let flow = flow_of(&h, client);
            assert_ne!(flow.flags & FLOW_F_CUT, 0);
            assert_eq!(flow.host_id, HOST_UNKNOWN);
        }
        // The hand-off's rate exhausted: a new QUIC connection's Initial is not read, and
        // not forwarded either.
        h.set_quic_rate(1, 1).unwrap();
        let _ = h.quic_initials();
        for port in [45003, 45004] {
            let client = (v4(CLIENT4), port);
            let first = Pkt::udp(client.0, client.1, public.0, public.1, &initial);
            let (v, _) = ingress(&h, tc_only, &first.frame());
            if v == dropped {
                cuts += 1;
                assert_ne!(flow_of(&h, client).flags & FLOW_F_CUT, 0);
            }
        }
        assert!(
            h.counter(Counter::QuicRateLimited) >= 1,
            "tc_only {tc_only}"
        );
        // QUIC classification off: no UDP flow can be named, none goes home.
        h.set_quic_rate(0, 0).unwrap();
        let client = (v4(CLIENT4), 45005);
        assert_eq!(
            ingress(&h, tc_only, &next(client).frame()).0,
            dropped,
            "tc_only {tc_only}: QUIC off"
        );
        cuts += 1;
        assert_eq!(
            h.counter(Counter::PolicyUnknownCut),
            cuts,
            "tc_only {tc_only}"
        );
        assert_eq!(
            h.quic_host_stats(HOST_UNKNOWN).drops[HOST_DROP_POLICY],
            cuts
        );
    }
}

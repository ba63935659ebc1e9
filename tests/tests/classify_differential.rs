//! The kernel's name reader against the host-side parser it is built from: generated first
//! payloads (browser-like ClientHellos with random extension order, GREASE, key-share size
//! and split points; HTTP requests; broken and random input) go through the real object
//! with BPF_PROG_TEST_RUN, and the host the kernel attributes each connection to must be
//! the one `forwarder_common::classify` + `host::match_name` give on the host.

use std::{collections::HashMap, net::IpAddr};

use forwarder_common::{
    CLASS_DONE, HOST_OTHER, HOST_UNKNOWN, HostKey,
    classify::{Outcome, run_segments},
    host::{NameMatch, match_name},
    samples::{browser_hello, client_hello, http_request},
};
use integration_tests::bpf::*;
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};

const HOSTS: &[&str] = &[
    "app.example.test",
    "*.example.test",
    "*.svc.example.test",
    "media.example.test",
];

/// Names the generator picks from: configured, wildcard-matched, unconfigured, and not
/// host names at all.
const NAMES: &[&str] = &[
    "app.example.test",
    "APP.Example.TEST",
    "app.example.test.",
    "media.example.test",
    "blog.example.test",
    "a.b.svc.example.test",
    "example.test",
    "unlisted.example.org",
    "x",
    "bad..example.test",
    "bad_name.example.test",
    "spa ce.example.test",
    ".leading.example.test",
];

/// What the host-side parser says the kernel must attribute the connection to: the host id,
/// or `None` while the name is still incomplete (the flow stays pending).
fn expected(segments: &[Vec<u8>], table: &HashMap<HostKey, u32>) -> Option<u32> {
    let segs: Vec<&[u8]> = segments.iter().map(|s| s.as_slice()).collect();
    let (outcome, name) = run_segments(&segs);
    match outcome? {
        Outcome::TlsName(_) | Outcome::HttpName(_) => {
            Some(
                match match_name(&name[..], 0, name.len(), |k| table.get(k).copied()) {
                    NameMatch::Host(id) => id,
                    // The kernel counts a name it cannot use as "other" (counter
                    // classify_bad_name).
                    NameMatch::Other | NameMatch::Bad => HOST_OTHER,
                },
            )
        }
        _ => Some(HOST_UNKNOWN),
    }
}

/// Splits `payload` at the given points (sorted, deduplicated, inside the payload).
fn split(payload: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = points
        .iter()
        .map(|p| p % payload.len().max(1))
        .filter(|&p| p > 0)
        .collect();
    cuts.sort();
    cuts.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts {
        out.push(payload[from..c].to_vec());
        from = c;
    }
    out.push(payload[from..].to_vec());
    out
}

fn payloads() -> impl Strategy<Value = Vec<u8>> {
    let name = proptest::sample::select(NAMES);
    prop_oneof![
        // Browser-like ClientHellos, small to post-quantum sized.
        (
            name.clone(),
            0u16..16,
            prop_oneof![0usize..64, 1100usize..1300],
            0usize..12
        )
            .prop_map(|(n, g, ks, at)| {
                let grease = 0x0a0a + g * 0x1010;
                browser_hello(n.as_bytes(), grease, ks, at)
            }),
        // A ClientHello without server_name.
        Just(client_hello(&[], 0)),
        // A ClientHello with one byte changed.
        (name.clone(), any::<usize>(), any::<u8>()).prop_map(|(n, at, v)| {
            let mut ch = browser_hello(n.as_bytes(), 0x1a1a, 32, 3);
            let i = at % ch.len();
            ch[i] = v;
            ch
        }),
        // HTTP requests, Host anywhere, with a port now and then.
        (name, 0usize..8, proptest::option::of(1u16..)).prop_map(|(n, before, port)| {
            let host = match port {
                Some(p) => format!("{n}:{p}"),
                None => n.to_string(),
            };
            http_request(&host, before)
        }),
        // Anything.
        proptest::collection::vec(any::<u8>(), 1..600),
    ]
}

fn run(tc_only: bool, cases: u32) {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("BPF_PROG_TEST_RUN needs root (CAP_BPF + CAP_NET_ADMIN)");
    }
    let mut h = Harness::new(tc_only).expect("loading the kernel object");
    let table = h.set_hosts(HOSTS).expect("host table");
    let client = IpAddr::V4(CLIENT4);
    let public = IpAddr::V4(PUBLIC4);
    let port = std::cell::Cell::new(20000u16);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (payloads(), proptest::collection::vec(any::<usize>(), 0..3));
    let checked = std::cell::Cell::new(0u32);
    let seen = std::cell::RefCell::new(HashMap::<Option<u32>, u32>::new());
    let result = runner.run(&strategy, |(payload, points)| {
        port.set(port.get() + 1);
        let port = port.get();
        let segments = split(&payload, &points);
        let send = |p: Pkt| {
            let frame = p.frame();
            let verdict = if tc_only {
                h.tc_ingress(&frame).0
            } else {
                h.xdp(&frame).0
            };
            let want = if tc_only { TC_ACT_REDIRECT } else { XDP_PASS };
            assert_eq!(verdict, want, "verdict");
        };
        let isn = 0x4000_0000u32;
        let syn = Pkt::tcp(client, port, public, 443, SYN).seq(isn);
        send(syn.clone());
        // Home's SYN-ACK: the segments' acknowledgment completes the handshake.
        h.answer(&syn, (backend_of(client), 443));
        let mut seq = isn + 1;
        for s in &segments {
            send(
                Pkt::tcp(client, port, public, 443, ACK | PSH)
                    .seq(seq)
                    .payload(s),
            );
            seq += s.len() as u32;
        }
        let flow = h
            .forward_flow((client, port), (public, 443))
            .expect("flow entry");
        let got = (flow.class_state == CLASS_DONE).then_some(flow.host_id);
        let want = expected(&segments, &table);
        prop_assert_eq!(
            got,
            want,
            "segments of {:?}: {:?}",
            segments.iter().map(|s| s.len()).collect::<Vec<_>>(),
            String::from_utf8_lossy(&payload)
        );
        checked.set(checked.get() + 1);
        *seen.borrow_mut().entry(want).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("kernel and host parser disagree: {e}");
    }
    assert!(checked.get() >= cases, "{} cases checked", checked.get());
    // The generated input must reach every kind of verdict, or the agreement means little.
    let seen = seen.into_inner();
    eprintln!("verdicts (host id -> cases): {seen:?}");
    let mut wanted: Vec<Option<u32>> = vec![Some(HOST_UNKNOWN), Some(HOST_OTHER)];
    wanted.extend(table.values().map(|&id| Some(id)));
    for w in wanted {
        assert!(seen.contains_key(&w), "no case ended as {w:?}: {seen:?}");
    }
}

#[test]
fn xdp_reader_agrees_with_the_host_parser() {
    run(false, 400);
}

#[test]
fn tc_reader_agrees_with_the_host_parser() {
    run(true, 150);
}

/// Files of a fuzz target's corpus: its checked-in seeds and what the smoke runs of
/// `cargo xtask test` kept (`corpus/<target>/...`, present after a fuzz run).
fn fuzz_inputs(target: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../forwarder-common/fuzz");
    let mut dirs = vec![root.join("seeds").join(target)];
    let corpus = root.join("corpus").join(target);
    dirs.push(corpus.clone());
    if let Ok(rd) = std::fs::read_dir(&corpus) {
        dirs.extend(
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            if e.path().is_file()
                && let Ok(b) = std::fs::read(e.path())
            {
                out.push(b);
            }
        }
    }
    out
}

/// The classifier's fuzz corpus replayed through the kernel's reader, cut into segments
/// the way the fuzz target cuts it: the kernel and the host parser give each the same
/// host.
#[test]
fn the_classify_fuzz_corpus_gets_the_same_host_in_the_kernel() {
    let inputs = fuzz_inputs("classify");
    assert!(!inputs.is_empty(), "no seeds found");
    for tc_only in [false, true] {
        let mut h = Harness::new(tc_only).expect("loading the kernel object");
        let table = h.set_hosts(HOSTS).expect("host table");
        let public = IpAddr::V4(PUBLIC4);
        let mut tried = 0;
        for (i, data) in inputs.iter().enumerate() {
            // Every input its own connection.
            let client = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 100 + (i / 30000) as u8, 7));
            let port = 30000 + (i % 30000) as u16;
            let (cuts, payload) = data.split_at(data.len().min(2));
            let mut segments: Vec<Vec<u8>> = Vec::new();
            let mut rest = payload;
            for c in cuts {
                let at = (*c as usize * 8).min(rest.len());
                let (a, b) = rest.split_at(at);
                segments.push(a.to_vec());
                rest = b;
            }
            segments.push(rest.to_vec());
            // A TCP segment carries at least one byte, and no more than the reader takes
            // from one (MAX_SEGMENT_PAYLOAD, above any MSS the forwarder lets through: it
            // clamps SYNs to the tunnel's MTU).
            segments.retain(|s| !s.is_empty());
            if segments.is_empty()
                || segments
                    .iter()
                    .any(|s| s.len() > forwarder_common::classify::MAX_SEGMENT_PAYLOAD)
            {
                continue;
            }
            let send = |p: Pkt| {
                let frame = p.frame();
                if tc_only {
                    h.tc_ingress(&frame).0
                } else {
                    h.xdp(&frame).0
                }
            };
            let isn = 0x4000_0000u32;
            let syn = Pkt::tcp(client, port, public, 443, SYN).seq(isn);
            send(syn.clone());
            h.answer(&syn, (backend_of(client), 443));
            let mut seq = isn + 1;
            for s in &segments {
                let v = send(
                    Pkt::tcp(client, port, public, 443, ACK | PSH)
                        .seq(seq)
                        .payload(s),
                );
                let want = if tc_only { TC_ACT_REDIRECT } else { XDP_PASS };
                assert_eq!(v, want, "input {i}: verdict");
                seq += s.len() as u32;
            }
            let flow = h
                .forward_flow((client, port), (public, 443))
                .expect("flow entry");
            let got = (flow.class_state == CLASS_DONE).then_some(flow.host_id);
            assert_eq!(
                got,
                expected(&segments, &table),
                "input {i} ({} bytes, tc_only {tc_only}): {:?}",
                data.len(),
                String::from_utf8_lossy(payload)
            );
            tried += 1;
        }
        eprintln!("classify corpus: {tried} inputs replayed (tc_only {tc_only})");
        assert!(tried > 0);
    }
}

/// The Ethernet parser's fuzz corpus through XDP: the kernel's verdict is the one the host
/// build of the same parser implies.
#[test]
fn the_parse_ethernet_fuzz_corpus_gets_the_same_verdict_in_the_kernel() {
    use forwarder_common::{
        Counter,
        packet::{Skip, parse_ethernet},
    };
    let inputs = fuzz_inputs("parse_ethernet");
    assert!(!inputs.is_empty(), "no seeds found");
    let h = Harness::new(false).expect("loading the kernel object");
    let mut tried = 0;
    for (i, frame) in inputs.iter().enumerate() {
        // The kernel hands XDP at least an Ethernet header, at most about a page.
        if frame.len() < 14 || frame.len() > 3500 {
            continue;
        }
        let counters = [
            Counter::XdpDropMalformed,
            Counter::XdpPassNotIp,
            Counter::XdpPassFragment,
            Counter::XdpPassIpOptions,
            Counter::XdpPassNoRule,
            Counter::XdpToTunnel,
            // What a well-formed packet to a forwarded port may meet instead: it has no
            // flow and is not a SYN, its source is one no client has, its connection is
            // still opening, or it is a RST outside its window.
            Counter::DropNoFlow,
            Counter::DropBogonSource,
            Counter::DropUnconfirmed,
            Counter::DropWrongDirection,
            Counter::EndOutOfWindow,
        ];
        let before: Vec<u64> = counters.iter().map(|c| h.counter(*c)).collect();
        h.xdp(frame);
        let mut moved: Vec<Counter> = counters
            .iter()
            .zip(&before)
            .filter(|(c, b)| h.counter(**c) != **b)
            .map(|(c, _)| *c)
            .collect();
        if moved.contains(&Counter::XdpToTunnel) {
            // A FIN outside its window is forwarded all the same (it only ends nothing).
            moved.retain(|c| *c != Counter::EndOutOfWindow);
        }
        let want: &[Counter] = match parse_ethernet(&frame[..]) {
            Err(Skip::Malformed) => &[Counter::XdpDropMalformed],
            Err(Skip::NotIp) => &[Counter::XdpPassNotIp],
            Err(Skip::Fragment) => &[Counter::XdpPassFragment],
            Err(Skip::IpOptions) => &[Counter::XdpPassIpOptions],
            Err(Skip::OtherProto) => &[Counter::XdpPassNoRule],
            // Steered or not by the rules, or refused before it created anything.
            Ok(_) => &[
                Counter::XdpToTunnel,
                Counter::XdpPassNoRule,
                Counter::DropNoFlow,
                Counter::DropBogonSource,
                Counter::DropUnconfirmed,
                Counter::DropWrongDirection,
                Counter::EndOutOfWindow,
            ],
        };
        assert!(
            moved.len() == 1 && want.contains(&moved[0]),
            "input {i} ({} bytes): kernel {moved:?}, host parser implies {want:?}",
            frame.len()
        );
        tried += 1;
    }
    eprintln!("parse_ethernet corpus: {tried} frames replayed");
    assert!(tried > 0);
}

/// The lab harness's backend of the family of `client`.
fn backend_of(client: IpAddr) -> IpAddr {
    if client.is_ipv4() {
        BACKEND4.into()
    } else {
        BACKEND6.into()
    }
}

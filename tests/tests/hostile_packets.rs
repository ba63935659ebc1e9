//! A corpus of hostile packets through the real kernel object (BPF_PROG_TEST_RUN), on
//! every hook a client's packet meets (XDP, tc in tc-only mode) and on the tunnel side for
//! what comes back from home: each packet gets its defined verdict, is counted under
//! exactly one reason, and nothing malformed leaves rewritten. The number of packets tried
//! is printed (docs/reliability.md quotes it).

use std::net::IpAddr;

use forwarder_common::{
    Counter,
    samples::{browser_exts, browser_hello, client_hello, ext, http_request, sni_ext},
};
use integration_tests::bpf::*;

/// What must happen to a packet.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// Dropped, counted as malformed.
    Malformed,
    /// Left to the VPS's own stack untouched, counted under this XDP reason (tc-only mode
    /// counts every such pass as `tc_pass`).
    Pass(Counter),
    /// Forwarded to home: translated, checksums right, payload byte for byte.
    Forward,
    /// Dropped before it created anything, counted under this reason (a TCP packet
    /// without a flow that is not a SYN, a source no client has).
    Refused(Counter),
}

struct Case {
    name: String,
    frame: Vec<u8>,
    want: Want,
}

fn case(name: impl Into<String>, frame: Vec<u8>, want: Want) -> Case {
    Case {
        name: name.into(),
        frame,
        want,
    }
}

/// Counters that say what happened to a packet on the client's side: exactly one of them
/// moves per packet. Taken from the counter list: the hook's own counters (`xdp_*` or
/// `tc_*`) but the one that moves along with another (`xdp_rx` with every packet,
/// `tc_translated` with `tc_to_tunnel`), and the drops both hooks count by their cause.
fn verdicts(tc_only: bool) -> Vec<Counter> {
    let (prefix, along) = if tc_only {
        ("tc_", Counter::TcTranslated)
    } else {
        ("xdp_", Counter::XdpRx)
    };
    Counter::ALL
        .into_iter()
        .filter(|c| c.name().starts_with(prefix) && *c != along)
        .chain([
            Counter::SynFloodDrop,
            Counter::FlowCreateFailed,
            Counter::DropNoFlow,
            Counter::DropUnconfirmed,
            Counter::DropBogonSource,
            Counter::DropWrongDirection,
            Counter::EndOutOfWindow,
        ])
        .collect()
}

fn snapshot(h: &Harness, set: &[Counter]) -> Vec<u64> {
    set.iter().map(|c| h.counter(*c)).collect()
}

/// The one verdict counter that moved between two snapshots.
fn moved(set: &[Counter], before: &[u64], after: &[u64], name: &str) -> Counter {
    let changed: Vec<(Counter, u64)> = set
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(c, (b, a))| (*c, a - b))
        .collect();
    assert!(
        changed.len() == 1 && changed[0].1 == 1,
        "{name}: verdict counters moved {changed:?}, want exactly one by one"
    );
    changed[0].0
}

fn v4() -> (IpAddr, IpAddr) {
    (CLIENT4.into(), PUBLIC4.into())
}
fn v6() -> (IpAddr, IpAddr) {
    (CLIENT6.into(), PUBLIC6.into())
}

/// Rewrites the IPv4 header checksum after a field was changed, so that only the field
/// under test is wrong.
fn fix_ipv4_csum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0xf) * 4;
    if ihl < 20 || 14 + ihl > frame.len() {
        return;
    }
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = inet_csum(&[&frame[14..14 + ihl]]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Every source port its own connection, so that no case finds another's flow.
fn next_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static P: AtomicU16 = AtomicU16::new(20000);
    P.fetch_add(1, Ordering::Relaxed)
}

fn syn(a: (IpAddr, IpAddr), port: u16) -> Vec<u8> {
    Pkt::tcp(a.0, port, a.1, 443, SYN)
        .options(mss_option(1460))
        .frame()
}

/// Connections the corpus's segments belong to: opened (handshake through) before it
/// runs, so that their odd but valid segments are forwarded rather than refused for having
/// no flow.
const OPENED_PORTS: [u16; 4] = [40001, 40002, 40004, 40005];

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    let bases: Vec<(&str, Vec<u8>)> = vec![
        ("TCP/IPv4 SYN", syn(v4(), 40000)),
        ("TCP/IPv6 SYN", syn(v6(), 40000)),
        (
            "UDP/IPv4",
            Pkt::udp(v4().0, 40000, v4().1, UDP_PUBLIC_PORT, &[7; 40]).frame(),
        ),
        (
            "UDP/IPv6",
            Pkt::udp(v6().0, 40000, v6().1, UDP_PUBLIC_PORT, &[7; 40]).frame(),
        ),
        (
            "TCP/IPv4 ClientHello",
            Pkt::tcp(v4().0, 40001, v4().1, 443, ACK | PSH)
                .payload(&browser_hello(b"app.example.test", 0x0a0a, 32, 3))
                .frame(),
        ),
    ];
    // Headers truncated at every length, from a bare Ethernet header up (the kernel hands
    // XDP nothing shorter).
    for (name, full) in &bases {
        let headers = match full[12..14] {
            [0x08, 0x00] => 14 + 20 + if full[23] == 6 { 40 } else { 8 },
            _ => 14 + 40 + if full[20] == 6 { 40 } else { 8 },
        };
        for len in 14..full.len().min(headers + 8) {
            cases.push(case(
                format!("{name} cut to {len} bytes"),
                full[..len].to_vec(),
                Want::Malformed,
            ));
        }
        cases.push(case(format!("{name} whole"), full.clone(), Want::Forward));
    }

    let data4 = Pkt::tcp(v4().0, 40002, v4().1, 443, ACK | PSH)
        .payload(b"data")
        .frame();
    // Every IHL: below 5 is malformed, above it IPv4 options (never steered) unless the
    // header would not fit the packet.
    for ihl in 0u8..16 {
        if ihl == 5 {
            continue;
        }
        let mut f = data4.clone();
        f[14] = 0x40 | ihl;
        fix_ipv4_csum(&mut f);
        let tot = usize::from(u16::from_be_bytes([f[16], f[17]]));
        let want = if ihl < 5 || usize::from(ihl) * 4 > tot {
            Want::Malformed
        } else {
            Want::Pass(Counter::XdpPassIpOptions)
        };
        cases.push(case(format!("IPv4 IHL {ihl}"), f, want));
    }
    let mut v = data4.clone();
    v[14] = 0x65;
    cases.push(case("IPv4 ethertype, version 6", v, Want::Malformed));
    for (what, tot) in [("0", 0u16), ("19", 19), ("beyond the frame", 2000)] {
        let mut f = data4.clone();
        f[16..18].copy_from_slice(&tot.to_be_bytes());
        fix_ipv4_csum(&mut f);
        cases.push(case(
            format!("IPv4 total length {what}"),
            f,
            Want::Malformed,
        ));
    }
    // Every TCP data offset other than the real one (5: no options, 4 payload bytes):
    // below 5 or beyond the segment is malformed; 6 fits (its "options" are the payload
    // bytes), and is forwarded as any segment with options is.
    for doff in 0u8..16 {
        if doff == 5 {
            continue;
        }
        let (f, want) = if doff == 6 {
            let f = Pkt::tcp(v4().0, 40002, v4().1, 443, ACK | PSH)
                .options(b"data".to_vec())
                .frame();
            (f, Want::Forward)
        } else {
            let mut f = data4.clone();
            f[14 + 20 + 12] = doff << 4;
            (f, Want::Malformed)
        };
        cases.push(case(format!("TCP data offset {doff}"), f, want));
    }
    let syn6 = syn(v6(), 40003);
    for (what, len) in [
        ("0 (jumbogram)", 0u16),
        ("10", 10),
        ("beyond the frame", 3000),
    ] {
        let mut f = syn6.clone();
        f[18..20].copy_from_slice(&len.to_be_bytes());
        cases.push(case(
            format!("IPv6 payload length {what}"),
            f,
            Want::Malformed,
        ));
    }
    let udp4 = Pkt::udp(v4().0, 40004, v4().1, UDP_PUBLIC_PORT, &[1; 16]).frame();
    for (what, len) in [("0", 0u16), ("7", 7), ("beyond the packet", 500)] {
        let mut f = udp4.clone();
        f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&len.to_be_bytes());
        cases.push(case(format!("UDP length {what}"), f, Want::Malformed));
    }

    // IPv4 options (a real 4-byte option block), fragments, IPv6 extension headers.
    let mut opt = data4[..14 + 20].to_vec();
    opt.extend_from_slice(&[1, 1, 1, 0]);
    opt.extend_from_slice(&data4[14 + 20..]);
    opt[14] = 0x46;
    let tot = (opt.len() - 14) as u16;
    opt[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_csum(&mut opt);
    cases.push(case(
        "IPv4 with options",
        opt,
        Want::Pass(Counter::XdpPassIpOptions),
    ));
    for (what, off) in [
        ("first fragment", 0x2000u16),
        ("later fragment", 0x0010),
        ("last fragment", 0x0020),
    ] {
        let mut f = data4.clone();
        f[20..22].copy_from_slice(&off.to_be_bytes());
        fix_ipv4_csum(&mut f);
        cases.push(case(
            format!("IPv4 {what}"),
            f,
            Want::Pass(Counter::XdpPassFragment),
        ));
    }
    for (what, next, c) in [
        ("fragment header", 44u8, Counter::XdpPassFragment),
        ("hop-by-hop options", 0, Counter::XdpPassIpOptions),
        ("routing header", 43, Counter::XdpPassIpOptions),
        ("destination options", 60, Counter::XdpPassIpOptions),
        ("AH", 51, Counter::XdpPassIpOptions),
        ("ESP", 50, Counter::XdpPassIpOptions),
        ("mobility header", 135, Counter::XdpPassIpOptions),
        ("ICMPv6", 58, Counter::XdpPassNoRule),
        ("no next header", 59, Counter::XdpPassNoRule),
    ] {
        let mut f = syn6.clone();
        f[20] = next;
        cases.push(case(format!("IPv6 {what}"), f, Want::Pass(c)));
    }

    // VLAN tags: up to two (QinQ) are looked through; a third hides the IP header.
    let tagged = |tags: &[u16]| {
        let mut f = syn(v4(), next_port())[..12].to_vec();
        for t in tags {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&[0, 42]);
        }
        f.extend_from_slice(&syn(v4(), 40005)[12..]);
        f
    };
    cases.push(case("one VLAN tag", tagged(&[0x8100]), Want::Forward));
    cases.push(case(
        "QinQ (two tags)",
        tagged(&[0x88a8, 0x8100]),
        Want::Forward,
    ));
    cases.push(case(
        "three VLAN tags",
        tagged(&[0x88a8, 0x8100, 0x8100]),
        Want::Pass(Counter::XdpPassNotIp),
    ));
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    cases.push(case("ARP", arp, Want::Pass(Counter::XdpPassNotIp)));
    let mut bare = data4[..14].to_vec();
    cases.push(case(
        "IPv4 ethertype, no IP header",
        bare.clone(),
        Want::Malformed,
    ));
    bare[12..14].copy_from_slice(&[0x86, 0xdd]);
    cases.push(case("IPv6 ethertype, no IP header", bare, Want::Malformed));
    // The largest frames a standard and a jumbo MTU carry (as much as a test run takes).
    for (what, payload, port) in [
        ("1514-byte frame", 1460usize, 40004),
        ("3500-byte frame", 3446, 40005),
    ] {
        let f = Pkt::tcp(v4().0, port, v4().1, 443, ACK | PSH)
            .payload(&vec![0x17; payload])
            .frame();
        cases.push(case(what, f, Want::Forward));
    }
    cases.push(case(
        "empty UDP datagram",
        Pkt::udp(v4().0, 40006, v4().1, UDP_PUBLIC_PORT, &[]).frame(),
        Want::Forward,
    ));

    // Segments of connections the forwarder never saw open: made up, they open nothing
    // and go nowhere.
    for (what, flags, payload) in [
        ("lone ACK", ACK, &b""[..]),
        ("data", ACK | PSH, &b"GET / HTTP/1.1\r\n\r\n"[..]),
        ("RST", RST, &b""[..]),
        ("RST+ACK", RST | ACK, &b""[..]),
        ("FIN+ACK", FIN | ACK, &b""[..]),
    ] {
        for (fam, a) in [("IPv4", v4()), ("IPv6", v6())] {
            let f = Pkt::tcp(a.0, next_port(), a.1, 443, flags)
                .payload(payload)
                .frame();
            cases.push(case(
                format!("{fam} {what} without a flow"),
                f,
                Want::Refused(Counter::DropNoFlow),
            ));
        }
    }
    // Sources no client has: a SYN or a datagram from them opens nothing.
    for src in [
        "127.0.0.1",
        "0.0.0.0",
        "169.254.1.1",
        "224.0.0.1",
        "255.255.255.255",
    ] {
        let src: IpAddr = src.parse().unwrap();
        let f = Pkt::tcp(src, next_port(), v4().1, 443, SYN)
            .options(mss_option(1460))
            .frame();
        cases.push(case(
            format!("SYN from {src}"),
            f,
            Want::Refused(Counter::DropBogonSource),
        ));
        let f = Pkt::udp(src, next_port(), v4().1, UDP_PUBLIC_PORT, &[1; 20]).frame();
        cases.push(case(
            format!("UDP from {src}"),
            f,
            Want::Refused(Counter::DropBogonSource),
        ));
    }
    for src in ["::1", "::", "fe80::1", "ff02::1", "::ffff:198.51.100.7"] {
        let src: IpAddr = src.parse().unwrap();
        let f = Pkt::tcp(src, next_port(), v6().1, 443, SYN)
            .options(mss_option(1460))
            .frame();
        cases.push(case(
            format!("SYN from {src}"),
            f,
            Want::Refused(Counter::DropBogonSource),
        ));
    }

    // TCP flag combinations no real TCP sends.
    for (what, flags) in [
        ("SYN+FIN", SYN | FIN),
        ("SYN+RST", SYN | 0x04),
        ("null (no flags)", 0),
        ("lone FIN", FIN),
        ("Xmas (FIN+PSH+URG)", FIN | PSH | 0x20),
        ("every flag", 0xff),
    ] {
        for (port, to) in [(443u16, "forwarded port"), (22, "port without a rule")] {
            let f = Pkt::tcp(v4().0, next_port(), v4().1, port, flags).frame();
            cases.push(case(format!("{what} to a {to}"), f, Want::Malformed));
        }
    }
    cases
}

/// First payloads that lie or push the name reader's limits: each connection's SYN, then
/// the payload. The packet is forwarded with its payload untouched; the reader's outcome
/// is counted under one reason.
fn payload_corpus() -> Vec<(String, Vec<u8>, Counter)> {
    let mut out: Vec<(String, Vec<u8>, Counter)> = Vec::new();
    let hello = browser_hello(b"app.example.test", 0x0a0a, 32, 3);
    out.push((
        "a browser's ClientHello".into(),
        hello.clone(),
        Counter::ClassifiedTls,
    ));
    let mut bad_type = hello.clone();
    bad_type[5] = 2;
    out.push((
        "TLS handshake that is not a ClientHello".into(),
        bad_type,
        Counter::ClassifyTlsMalformed,
    ));
    let mut ext_lie = client_hello(&[sni_ext(&[b"app.example.test"])], 32);
    // The extensions block claims more than the hello holds.
    let at = ext_lie.len() - sni_ext(&[b"app.example.test"]).len() - 2;
    ext_lie[at..at + 2].copy_from_slice(&0x0400u16.to_be_bytes());
    out.push((
        "extensions length beyond the hello".into(),
        ext_lie,
        Counter::ClassifyTlsMalformed,
    ));
    let mut sni_lie = sni_ext(&[b"app.example.test"]);
    sni_lie[7..9].copy_from_slice(&0x00ffu16.to_be_bytes());
    out.push((
        "server name length beyond its extension".into(),
        client_hello(&[sni_lie], 32),
        Counter::ClassifyTlsMalformed,
    ));
    out.push((
        "empty server name".into(),
        client_hello(&[sni_ext(&[b""])], 32),
        Counter::ClassifyBadName,
    ));
    let long = vec![b'a'; 300];
    out.push((
        "300-byte server name".into(),
        client_hello(&[sni_ext(&[&long])], 32),
        Counter::ClassifyBadName,
    ));
    out.push((
        "non-ASCII server name".into(),
        client_hello(&[sni_ext(&["bücher.example.test".as_bytes()])], 32),
        Counter::ClassifyBadName,
    ));
    out.push((
        "no server_name extension".into(),
        client_hello(&browser_exts(0x0a0a, 32), 32),
        Counter::ClassifyTlsNoSni,
    ));
    let mut many: Vec<Vec<u8>> = (0..200u16).map(|i| ext(0x7a00 + i, &[])).collect();
    many.push(sni_ext(&[b"app.example.test"]));
    // The reader looks through at most MAX_EXTENSIONS (48) extensions, far more than any
    // browser sends; a name hidden behind more is not read.
    out.push((
        "server name after 200 extensions".into(),
        client_hello(&many, 32),
        Counter::ClassifyTlsNoSni,
    ));
    let mut some: Vec<Vec<u8>> = (0..40u16).map(|i| ext(0x7a00 + i, &[])).collect();
    some.push(sni_ext(&[b"app.example.test"]));
    out.push((
        "server name after 40 extensions".into(),
        client_hello(&some, 32),
        Counter::ClassifiedTls,
    ));
    out.push((
        "an HTTP request".into(),
        http_request("app.example.test", 2),
        Counter::ClassifiedHttp,
    ));
    out.push((
        "HTTP request without Host".into(),
        b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec(),
        Counter::ClassifyHttpNoHost,
    ));
    out.push((
        "HTTP Host with a 300-byte name".into(),
        format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", "a".repeat(300)).into_bytes(),
        Counter::ClassifyBadName,
    ));
    out.push((
        "binary junk".into(),
        (0..200u32).map(|i| (i * 37 % 251) as u8).collect(),
        Counter::ClassifyNotTlsOrHttp,
    ));
    out
}

const CLASSIFY_VERDICTS: &[Counter] = &[
    Counter::ClassifiedTls,
    Counter::ClassifiedHttp,
    Counter::ClassifyTlsNoSni,
    Counter::ClassifyTlsMalformed,
    Counter::ClassifyHttpNoHost,
    Counter::ClassifyHttpMalformed,
    Counter::ClassifyNotTlsOrHttp,
    Counter::ClassifyBadName,
    Counter::ClassifyGaveUp,
];

fn tc_pass_equivalent(c: Counter) -> Counter {
    match c {
        Counter::XdpToTunnel => Counter::TcToTunnel,
        Counter::XdpDropMalformed => Counter::TcDropMalformed,
        _ => Counter::TcPass,
    }
}

/// A forwarded packet keeps its length and leaves with correct checksums (the exact bytes
/// of translation are checked packet by packet in bpf_packets.rs; here the point is that
/// odd but valid packets come out whole).
fn check_forwarded(name: &str, input: &[u8], out: &[u8]) {
    assert_eq!(input.len(), out.len(), "{name}: length changed");
    let mut l3 = 14;
    while matches!(out[l3 - 2..l3], [0x81, 0x00] | [0x88, 0xa8]) {
        l3 += 4;
    }
    verify_checksums(&out[l3..]).unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn hostile_packets_get_defined_verdicts_on_every_hook() {
    let corpus = corpus();
    let payloads = payload_corpus();
    let (mut tried, mut refused) = (0usize, 0usize);
    for tc_only in [false, true] {
        let mut h = Harness::new(tc_only).expect("loading the kernel object");
        h.set_hosts(&["app.example.test"]).unwrap();
        let set = &verdicts(tc_only)[..];
        for port in OPENED_PORTS {
            let (c, p) = v4();
            h.open(tc_only, (c, port), (p, 443), (BACKEND4.into(), 443));
        }
        for c in &corpus {
            let name = format!("{} (tc_only {tc_only})", c.name);
            let before = snapshot(&h, set);
            let (verdict, out) = if tc_only {
                match h.try_tc(forwarder_common::TC_INGRESS_PROG, &c.frame, 0) {
                    Ok(r) => r,
                    Err(e) => {
                        // The kernel builds no skb without a whole IP header behind an IP
                        // ethertype: such a frame never reaches tc.
                        assert_eq!(
                            c.want,
                            Want::Malformed,
                            "{name}: refused by the test run: {e}"
                        );
                        refused += 1;
                        continue;
                    }
                }
            } else {
                let (v, _, out) = h.xdp(&c.frame);
                (v, out)
            };
            let counted = moved(set, &before, &snapshot(&h, set), &name);
            tried += 1;
            let (want_counter, want_verdict) = match (c.want, tc_only) {
                (Want::Malformed, false) => (Counter::XdpDropMalformed, XDP_DROP),
                (Want::Malformed, true) => (Counter::TcDropMalformed, TC_ACT_SHOT),
                (Want::Pass(p), false) => (p, XDP_PASS),
                (Want::Pass(p), true) => (tc_pass_equivalent(p), TC_ACT_OK),
                (Want::Forward, false) => (Counter::XdpToTunnel, XDP_PASS),
                (Want::Forward, true) => (Counter::TcToTunnel, TC_ACT_REDIRECT),
                (Want::Refused(c), false) => (c, XDP_DROP),
                (Want::Refused(c), true) => (c, TC_ACT_SHOT),
            };
            assert_eq!(counted, want_counter, "{name}");
            assert_eq!(verdict, want_verdict, "{name}");
            if c.want == Want::Forward {
                assert_ne!(out, c.frame, "{name}: not translated");
                check_forwarded(&name, &c.frame, &out);
            } else {
                assert_eq!(out, c.frame, "{name}: rewritten");
            }
        }
        for (what, payload, outcome) in &payloads {
            let name = format!("{what} (tc_only {tc_only})");
            let port = next_port();
            let (c, p) = v4();
            let run = |f: &[u8]| {
                if tc_only {
                    h.tc_ingress(f)
                } else {
                    let (v, _, out) = h.xdp(f);
                    (v, out)
                }
            };
            let syn = Pkt::tcp(c, port, p, 443, SYN)
                .seq(1000)
                .options(mss_option(1460));
            run(&syn.frame());
            h.answer(&syn, (BACKEND4.into(), 443));
            let before = snapshot(&h, CLASSIFY_VERDICTS);
            let data = Pkt::tcp(c, port, p, 443, ACK | PSH)
                .seq(1001)
                .payload(payload);
            let (verdict, out) = run(&data.frame());
            tried += 2;
            let counted = moved(
                CLASSIFY_VERDICTS,
                &before,
                &snapshot(&h, CLASSIFY_VERDICTS),
                &name,
            );
            assert_eq!(counted, *outcome, "{name}");
            let forwarded = if tc_only { TC_ACT_REDIRECT } else { XDP_PASS };
            assert_eq!(verdict, forwarded, "{name}");
            assert_eq!(
                &out[14..],
                &data.with((c, port), (BACKEND4.into(), 443)).ip()[..],
                "{name}: not forwarded byte for byte"
            );
        }
    }
    eprintln!(
        "hostile packets tried: {tried} ({refused} more too short for the kernel to hand to tc)"
    );
}

/// What home sends back that is malformed or not ours passes to the VPS's own stack
/// untouched (the tunnel's own traffic, health checks, must keep working).
#[test]
fn malformed_replies_from_home_pass_untouched() {
    let h = Harness::new(false).expect("loading the kernel object");
    let (c, p) = v4();
    h.xdp(&syn(v4(), 41000));
    let reply = Pkt::tcp(BACKEND4.into(), 443, c, 41000, SYN | ACK)
        .options(mss_option(1460))
        .ip();
    let mut tried = 0;
    for len in 1..reply.len() {
        let cut = &reply[..len];
        let before = h.counter(Counter::TunnelPass);
        let frame = eth(cut, true, [0; 6], [0; 6]);
        let Ok((v, out)) = h.try_tc(forwarder_common::TC_TUNNEL_PROG, &frame, 0) else {
            // No skb without a whole IPv4 header: nothing this short reaches tc.
            assert!(len < 20, "reply cut to {len} refused by the test run");
            continue;
        };
        assert_eq!(v, TC_ACT_OK, "reply cut to {len}");
        assert_eq!(&out[14..], cut, "reply cut to {len}: rewritten");
        assert_eq!(
            h.counter(Counter::TunnelPass),
            before + 1,
            "reply cut to {len}"
        );
        tried += 1;
    }
    let mut bad = reply.clone();
    bad[33] = SYN | FIN;
    let (v, out) = h.tunnel(&bad);
    assert_eq!((v, &out[14..]), (TC_ACT_OK, &bad[..]), "SYN+FIN from home");
    let (v, out) = h.tunnel(&reply);
    assert_eq!(v, TC_ACT_REDIRECT, "the real SYN-ACK");
    verify_checksums(&out[14..]).unwrap();
    assert_eq!(
        &out[14 + 12..14 + 16],
        &match p {
            IpAddr::V4(a) => a.octets(),
            _ => unreachable!(),
        }
    );
    eprintln!("hostile replies tried: {}", tried + 2);
}

/// Every program passes the verifier with room to spare: kernels differ in how many
/// instructions their verifier walks for the same program (older ones prune less), so a
/// program near the one-million limit here could be refused elsewhere.
#[test]
fn every_program_passes_the_verifier_with_headroom() {
    const BUDGET: u32 = 1_000_000;
    let h = Harness::new(false).expect("loading the kernel object");
    for name in forwarder_common::ALL_PROGS {
        let n = h
            .ebpf
            .program(name)
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count())
            .unwrap_or_else(|| panic!("{name}: no verified instruction count"));
        eprintln!(
            "{name:<16} {n:>7} instructions verified ({:.1} % of the budget)",
            f64::from(n) * 100.0 / f64::from(BUDGET)
        );
        assert!(
            n > 0 && n <= BUDGET * 2 / 5,
            "{name}: {n} instructions verified, more than 40 % of the budget"
        );
    }
}

/// A SYN flood from more sources than the flow tables hold: with the SYN flood guard
/// off, the flood fills only the table of opening connections, whose LRU evicts the
/// flood's own entries; established connections, busy or idle, keep theirs. With the guard
/// on (the default) the flood hardly reaches the tables at all.
#[test]
fn a_flood_larger_than_the_flow_table_spares_established_connections() {
    use forwarder_common::{FLOWS_MAP, NEW_FLOWS_MAP};
    const FLOOD: u32 = 200_000;
    for guard in [0, forwarder::config::DEFAULT_SYN_FLOOD_THRESHOLD] {
        let mut h = Harness::new(false).expect("loading the kernel object");
        h.set_syn_flood_threshold(guard).unwrap();
        let (c, p) = v4();
        // Two connections through a whole handshake: one talks during the flood, one idles.
        let (busy, idle) = (45000, 45001);
        for port in [busy, idle] {
            assert_eq!(h.xdp(&syn(v4(), port)).0, XDP_PASS);
            let synack = Pkt::tcp(BACKEND4.into(), 443, c, port, SYN | ACK).seq(0x3000_0000);
            assert_eq!(h.tunnel(&synack.ip()).0, TC_ACT_REDIRECT);
            let ack = Pkt::tcp(c, port, p, 443, ACK).ack(0x3000_0001).frame();
            assert_eq!(h.xdp(&ack).0, XDP_PASS);
        }
        assert_eq!(h.flow_entries(FLOWS_MAP), 4, "both connections established");
        let data = Pkt::tcp(c, busy, p, 443, ACK | PSH).payload(b"still here");
        let reply = Pkt::tcp(BACKEND4.into(), 443, c, busy, ACK).payload(b"ok");
        let talk = |h: &Harness, what: &str| {
            let (v, _, out) = h.xdp(&data.frame());
            assert_eq!(v, XDP_PASS, "{what}");
            assert_eq!(
                &out[14..],
                &data.with((c, busy), (BACKEND4.into(), 443)).ip()[..],
                "{what}: the client's packet was not forwarded"
            );
            let (v, out) = h.tunnel(&reply.ip());
            assert_eq!(
                v, TC_ACT_REDIRECT,
                "{what}: the reply was not translated back"
            );
            assert_eq!(
                &out[14..],
                &reply.with((p, 443), (c, busy)).ip()[..],
                "{what}"
            );
        };
        talk(&h, "before");
        let created = h.counter(Counter::FlowsCreated);
        for i in 0..FLOOD {
            // A new made-up source for every SYN, as a spoofing flood sends them.
            let src = std::net::Ipv4Addr::from(0x0b00_0000u32 + i);
            let f = Pkt::tcp(src.into(), 1024 + (i % 50_000) as u16, p, 443, SYN)
                .options(mss_option(1460))
                .frame();
            h.xdp(&f);
            if i % 5000 == 0 {
                talk(&h, &format!("after {i} flood SYNs (guard {guard})"));
            }
        }
        talk(&h, &format!("after the flood (guard {guard})"));
        // The idle connection's home still reaches its client, with no client packet
        // since the handshake to recreate anything.
        let late = Pkt::tcp(BACKEND4.into(), 443, c, idle, ACK | PSH).payload(b"late news");
        let (v, out) = h.tunnel(&late.ip());
        assert_eq!(
            v, TC_ACT_REDIRECT,
            "guard {guard}: the idle connection lost its entries"
        );
        assert_eq!(&out[14..], &late.with((p, 443), (c, idle)).ip()[..]);
        let made = h.counter(Counter::FlowsCreated) - created;
        let (established, opening) = (h.flow_entries(FLOWS_MAP), h.flow_entries(NEW_FLOWS_MAP));
        // Both entries of every connection made, minus what is still there: evicted.
        let evicted = (2 * made as usize).saturating_sub(opening);
        eprintln!(
            "guard {guard}: {FLOOD} flood SYNs, {made} flows made, {established} established and {opening} opening entries, about {evicted} evicted, syn_flood_drop {}",
            h.counter(Counter::SynFloodDrop)
        );
        assert_eq!(
            established, 4,
            "guard {guard}: the flood reached the established table"
        );
        if guard == 0 {
            assert_eq!(made, u64::from(FLOOD));
            assert!(
                evicted > 0,
                "a flood of {FLOOD} connections evicted nothing"
            );
        } else {
            assert!(
                made < u64::from(FLOOD) / 10,
                "the guard let {made} flows through"
            );
            assert!(h.counter(Counter::SynFloodDrop) > u64::from(FLOOD) / 2);
        }
    }
}

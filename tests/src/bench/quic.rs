//! QUIC's costs: the XDP rows of a new and a classified QUIC connection, and the daemon's
//! decoder per connection against a terminating server's handshake.

use std::net::IpAddr;

use forwarder_common::{Counter, samples::browser_hello};

use super::fixtures::{BENCH_HOSTS, leak};
use crate::{
    bpf::*,
    forwarder_code::{Decision, Pending, QuicStats},
    traffic::quic_peer,
};

/// QUIC through XDP: a new connection's Initial (flow created, datagram copied to the
/// daemon), a datagram of a new UDP flow that is not QUIC (the same path without the copy),
/// and a packet of a classified QUIC connection.
pub(super) fn quic_rows(
    h: &mut Harness,
    runs: u32,
    row: &mut impl FnMut(&'static str, &'static str, std::time::Duration),
) -> anyhow::Result<()> {
    use forwarder_common::quic::{VERSION_1, crypto_frame, seal_initial};
    let p4: IpAddr = PUBLIC4.into();
    let c4: IpAddr = std::net::Ipv4Addr::new(198, 18, 5, 7).into();
    let table = h.set_hosts(BENCH_HOSTS)?;
    h.set_quic_rate(u16::MAX, u16::MAX)?;
    let ch = browser_hello(b"app.example.test", 0x3a3a, 32, 5)[5..].to_vec();
    let initial = seal_initial(VERSION_1, &[7; 8], &[1; 8], 0, &crypto_frame(0, &ch));
    let port = |i: u32| 10000 + (i % 50000) as u16;
    // The ring buffer holds a few hundred copies: it is drained between batches, as the
    // daemon drains it.
    let batched = |h: &mut Harness, frames: &[Vec<u8>]| {
        let mut medians: Vec<std::time::Duration> = frames
            .chunks(256)
            .map(|c| {
                let d = h.time_xdp_each(c);
                let _ = h.quic_initials();
                d
            })
            .collect();
        medians.sort();
        medians[medians.len() / 2]
    };
    let copied = h.counter(Counter::QuicInitials);
    let frames: Vec<Vec<u8>> = (0..runs)
        .map(|i| Pkt::udp(c4, port(i), p4, UDP_PUBLIC_PORT, &initial).frame())
        .collect();
    row(
        "xdp+reader",
        leak(format!(
            "QUIC Initial ({} B), new flow: copied to the daemon",
            initial.len()
        )),
        batched(h, &frames),
    );
    anyhow::ensure!(
        h.counter(Counter::QuicInitials) - copied >= u64::from(runs.min(50000)),
        "not every Initial was copied"
    );
    let c4b: IpAddr = std::net::Ipv4Addr::new(198, 18, 6, 7).into();
    let frames: Vec<Vec<u8>> = (0..runs)
        .map(|i| Pkt::udp(c4b, port(i), p4, UDP_PUBLIC_PORT, &[0x42; 1200]).frame())
        .collect();
    row(
        "xdp+reader",
        "UDP datagram (1200 B), new flow, not QUIC: unknown",
        batched(h, &frames),
    );
    // One connection classified as the daemon does it, then its packets.
    let c4c: IpAddr = std::net::Ipv4Addr::new(198, 18, 7, 7).into();
    let _ = h.xdp(&Pkt::udp(c4c, 4433, p4, UDP_PUBLIC_PORT, &initial).frame());
    let mut pending = Pending::default();
    let stats = QuicStats::default();
    for ev in h.quic_initials() {
        if let Decision::Verdict(v) = pending.feed(
            &ev.key,
            &ev.data[..ev.len as usize],
            std::time::Instant::now(),
            &stats,
            |k| table.get(k).copied(),
        ) {
            h.set_quic_verdict(&ev.key, v)?;
        }
    }
    let short = Pkt::udp(c4c, 4433, p4, UDP_PUBLIC_PORT, &[0x41; 1200]).frame();
    let _ = h.xdp(&short);
    // Home answers and the client speaks again: the flow moves to the established table,
    // as every real QUIC connection's does.
    let b4: IpAddr = BACKEND4.into();
    let answer = Pkt::udp(b4, UDP_BACKEND_PORT, c4c, 4433, &[0x41; 1200]).ip();
    let _ = h.tunnel(&answer);
    let _ = h.xdp(&short);
    anyhow::ensure!(
        h.counter(Counter::ClassifiedQuic) >= 1,
        "the QUIC connection was not classified"
    );
    row(
        "xdp",
        "QUIC packet (1200 B), classified connection",
        h.time_xdp(&short, runs),
    );
    h.set_quic_rate(0, 0)?;
    Ok(())
}

/// The daemon's side of QUIC classification, per connection, against what a terminating
/// proxy spends on the same connection's handshake.
pub struct QuicDaemonCosts {
    /// Decrypting, reassembling and matching a ClientHello in one Initial.
    pub one_initial_us: f64,
    /// The same for a post-quantum-sized ClientHello in two Initials.
    pub two_initials_us: f64,
    /// A QUIC server's CPU time per completed handshake (quinn with rustls, TLS 1.3,
    /// ECDSA P-256): what terminating QUIC on the VPS would cost per connection.
    pub terminate_us: f64,
}

/// Times the daemon's decoder over `n` connections, and `n / 10` real handshakes against
/// a quinn server on loopback (the server thread's CPU time).
pub fn quic_daemon_costs(n: u32) -> anyhow::Result<QuicDaemonCosts> {
    use forwarder_common::quic::{VERSION_1, crypto_frame, seal_initial};
    let hosts: Vec<forwarder_common::host::HostPattern> = BENCH_HOSTS
        .iter()
        .map(|p| forwarder_common::host::HostPattern::parse(p).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let lookup = |k: &forwarder_common::HostKey| {
        hosts
            .iter()
            .position(|h| h.key() == *k)
            .map(|i| i as u32 + forwarder_common::HOST_FIRST_CONFIGURED)
    };
    let key = |i: u32| forwarder_common::FlowKey {
        src: [0x0a00_0000 | i, 0, 0, 0],
        dst: [0xcb00_7101, 0, 0, 0],
        sport: 443,
        dport: 443,
        proto: forwarder_common::PROTO_UDP,
        family: forwarder_common::FAMILY_V4,
        _pad: [0; 2],
    };
    let time = |datagrams: &[Vec<u8>]| -> anyhow::Result<f64> {
        let mut pending = Pending::default();
        let stats = QuicStats::default();
        let t = std::time::Instant::now();
        for i in 0..n {
            let now = std::time::Instant::now();
            let mut got = None;
            for d in datagrams {
                if let Decision::Verdict(v) = pending.feed(&key(i), d, now, &stats, lookup) {
                    got = Some(v);
                }
            }
            anyhow::ensure!(
                got.is_some_and(|v| v.code == forwarder_common::QUIC_V_NAME),
                "no name"
            );
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
    };
    let ch = browser_hello(b"app.example.test", 0x3a3a, 32, 5)[5..].to_vec();
    let one = vec![seal_initial(
        VERSION_1,
        &[7; 8],
        &[1; 8],
        0,
        &crypto_frame(0, &ch),
    )];
    let pq = browser_hello(b"app.example.test", 0x3a3a, 1216, 5)[5..].to_vec();
    let two = vec![
        seal_initial(
            VERSION_1,
            &[7; 8],
            &[1; 8],
            0,
            &crypto_frame(0, &pq[..1100]),
        ),
        seal_initial(
            VERSION_1,
            &[7; 8],
            &[1; 8],
            1,
            &crypto_frame(1100, &pq[1100..]),
        ),
    ];
    Ok(QuicDaemonCosts {
        one_initial_us: time(&one)?,
        two_initials_us: time(&two)?,
        terminate_us: quic_peer::server_cpu_per_handshake((n / 10).max(50))?,
    })
}

pub fn print_quic_daemon(c: &QuicDaemonCosts) {
    println!(
        "
The daemon's cost per QUIC connection (CPU time on this machine):"
    );
    println!(
        "  SNI from one Initial:              {:>8.1} µs",
        c.one_initial_us
    );
    println!(
        "  SNI from two Initials (PQ-sized):  {:>8.1} µs",
        c.two_initials_us
    );
    println!(
        "  terminating QUIC instead (server handshake, quinn + rustls): {:.1} µs, {:.0}x the two-Initial cost",
        c.terminate_us,
        c.terminate_us / c.two_initials_us
    );
}

//! Every packet class's cost per program, the test clock's own cost, and the verifier's
//! instruction counts.

use std::net::IpAddr;

use forwarder_common::{
    Counter, TC_INGRESS_PROG,
    samples::{browser_hello, http_request},
};

use super::{
    fixtures::{BENCH_HOSTS, first_payload_conns, leak},
    quic::quic_rows,
};
use crate::bpf::*;

pub struct Row {
    pub program: &'static str,
    pub packet: &'static str,
    /// Median of single runs, as BPF_PROG_TEST_RUN's clock reports them.
    pub ns: f64,
    /// The same minus the clock's own cost per single run (see `Costs::overhead_ns`).
    pub net_ns: f64,
}

pub struct Costs {
    pub rows: Vec<Row>,
    /// Instructions the verifier processed per program (of its one-million budget).
    pub verified: Vec<(&'static str, u32)>,
    /// What a single timed run costs beyond the program: the ARP path timed as a single
    /// run, minus the same path timed over many kernel-side repetitions.
    pub overhead_ns: f64,
}

/// Measures each packet class `runs` times (single runs, median) and returns the rows.
/// Runs on its own thread: the harness enters a network namespace of its own.
pub fn packet_costs(runs: u32) -> anyhow::Result<Costs> {
    std::thread::spawn(move || measure(runs))
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
}

fn measure(runs: u32) -> anyhow::Result<Costs> {
    let c4: IpAddr = CLIENT4.into();
    let p4: IpAddr = PUBLIC4.into();
    let b4: IpAddr = BACKEND4.into();
    let mut rows = Vec::new();
    let mut row = |program, packet, d: std::time::Duration| {
        rows.push(Row {
            program,
            packet,
            ns: d.as_nanos() as f64,
            net_ns: 0.0,
        })
    };

    let mut h = Harness::new(false)?;
    h.set_hosts(BENCH_HOSTS)?;
    let verified = forwarder_common::ALL_PROGS
        .into_iter()
        .map(|name| {
            let n = h
                .ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .and_then(|i| i.verified_instruction_count())
                .unwrap_or(0);
            (name, n)
        })
        .collect();
    let tun = TC_TUNNEL_NAME;
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let arp_single = h.time_xdp(&arp, runs);
    let arp_repeated = h.time_xdp_repeat(&arp, runs.max(1000) * 10);
    let overhead_ns = arp_single.as_nanos() as f64 - arp_repeated.as_nanos() as f64;
    row("xdp", "ARP (not IP: pass)", arp_single);
    let ssh = Pkt::tcp(c4, 40000, p4, 22, ACK).payload(&[0; 64]).frame();
    row(
        "xdp",
        "TCP to a port without rule (pass)",
        h.time_xdp(&ssh, runs),
    );
    // Flood traffic: junk UDP to a port without a rule, a truncated TCP header to a
    // forwarded port, and a SYN from a client over its new-connection limit.
    let junk = Pkt::udp(c4, 40000, p4, 9999, &[0xa5; 64]).frame();
    row(
        "xdp",
        "junk UDP to a port without rule (pass)",
        h.time_xdp(&junk, runs),
    );
    let mut bad = Pkt::tcp(c4, 40000, p4, 443, SYN).frame();
    bad.truncate(14 + 20 + 12);
    bad[16..18].copy_from_slice(&32u16.to_be_bytes());
    row(
        "xdp",
        "truncated TCP header to a forwarded port (dropped)",
        h.time_xdp(&bad, runs),
    );
    // New connections: a different source port each run, so every SYN creates its flow.
    let syns: Vec<Vec<u8>> = (0..runs)
        .map(|i| {
            Pkt::tcp(c4, 10000 + (i % 50000) as u16, p4, 443, SYN)
                .options(mss_option(1460))
                .frame()
        })
        .collect();
    row(
        "xdp",
        "SYN of a new connection (flow created, MSS clamped)",
        h.time_xdp_each(&syns),
    );
    // Its SYN was the first of those: the handshake moves it to the established table.
    let conn = OpenedConn::handshake((c4, 10000), (p4, 443), (b4, 443));
    h.finish_handshake(&conn, false);
    let data = Pkt::tcp(c4, 10000, p4, 443, ACK | PSH)
        .ack(conn.client_ack)
        .payload(&[0x17; 1200])
        .frame();
    row(
        "xdp",
        "data, established flow (1200 B)",
        h.time_xdp(&data, runs),
    );
    row(
        "tc ingress",
        "hand-off check, packet not marked by XDP",
        h.time_tc(TC_INGRESS_PROG, &data, 0, runs),
    );
    let reply = eth(
        &Pkt::tcp(b4, 443, c4, 10000, ACK | PSH)
            .payload(&[0x17; 1200])
            .ip(),
        true,
        [0; 6],
        [0; 6],
    );
    row(
        "tc tunnel",
        "reply data, established flow (1200 B)",
        h.time_tc(tun, &reply, 0, runs),
    );
    let synack = eth(
        &Pkt::tcp(b4, 443, c4, 10001, SYN | ACK)
            .options(mss_option(1460))
            .ip(),
        true,
        [0; 6],
        [0; 6],
    );
    row(
        "tc tunnel",
        "SYN-ACK (MSS clamped)",
        h.time_tc(tun, &synack, 0, runs),
    );
    let classified =
        |h: &Harness| h.counter(Counter::ClassifiedTls) + h.counter(Counter::ClassifiedHttp);
    let before = classified(&h);
    let hello = browser_hello(b"app.example.test", 0x3a3a, 32, 5);
    let pq_hello = browser_hello(b"app.example.test", 0x3a3a, 1216, 5);
    let request = http_request("app.example.test", 4);
    let (small_len, pq_len, req_len) = (hello.len(), pq_hello.len(), request.len());
    let first = first_payload_conns(runs, &hello, 1, 1);
    row(
        "xdp+reader",
        leak(format!(
            "TLS ClientHello ({small_len} B): SNI read, host matched"
        )),
        h.time_first_payloads(&first, false),
    );
    let first = first_payload_conns(runs / 2, &pq_hello, 2, 2);
    row(
        "xdp+reader",
        leak(format!(
            "TLS ClientHello ({pq_len} B, 2 segments): per segment"
        )),
        h.time_first_payloads(&first, false),
    );
    let first = first_payload_conns(runs, &request, 1, 3);
    row(
        "xdp+reader",
        leak(format!(
            "HTTP request ({req_len} B): Host read, host matched"
        )),
        h.time_first_payloads(&first, false),
    );
    // Every timed first payload must really have been read (ports wrap after 30000).
    let want = (runs.min(30000) * 2 + (runs / 2).min(30000)) as u64;
    anyhow::ensure!(
        classified(&h) - before == want,
        "the reader classified {} connections, not {want}",
        classified(&h) - before
    );
    quic_rows(&mut h, runs, &mut row)?;
    // A SYN flood from one address under `[limits]`: all but the first are refused.
    h.set_conn_limit(1, 1)?;
    let flooder: IpAddr = std::net::Ipv4Addr::new(198, 18, 9, 9).into();
    let flood: Vec<Vec<u8>> = (0..runs)
        .map(|i| {
            Pkt::tcp(flooder, 10000 + (i % 50000) as u16, p4, 443, SYN)
                .options(mss_option(1460))
                .frame()
        })
        .collect();
    let limited = h.counter(Counter::XdpDropRateLimit);
    row(
        "xdp",
        "SYN over the per-client limit (dropped)",
        h.time_xdp_each(&flood),
    );
    anyhow::ensure!(
        h.counter(Counter::XdpDropRateLimit) - limited >= u64::from(runs) - 1,
        "the limiter let SYNs through"
    );
    drop(h);

    let mut h = Harness::new(true)?;
    h.set_hosts(BENCH_HOSTS)?;
    let first = first_payload_conns(runs, &hello, 1, 4);
    row(
        "tc+reader",
        leak(format!(
            "TLS ClientHello ({small_len} B): SNI read, host matched"
        )),
        h.time_first_payloads(&first, true),
    );
    let syns: Vec<Vec<u8>> = (0..runs)
        .map(|i| {
            Pkt::tcp(c4, 10000 + (i % 50000) as u16, p4, 443, SYN)
                .options(mss_option(1460))
                .frame()
        })
        .collect();
    row(
        "tc only",
        "SYN of a new connection (flow created, MSS clamped)",
        h.time_tc_each(TC_INGRESS_PROG, &syns),
    );
    h.finish_handshake(&conn, true);
    row(
        "tc only",
        "data, established flow (1200 B)",
        h.time_tc(TC_INGRESS_PROG, &data, 0, runs),
    );
    for r in &mut rows {
        r.net_ns = (r.ns - overhead_ns).max(0.0);
    }
    Ok(Costs {
        rows,
        verified,
        overhead_ns,
    })
}

const TC_TUNNEL_NAME: &str = forwarder_common::TC_TUNNEL_PROG;

pub fn print(c: &Costs) {
    println!(
        "{:<11} {:<56} {:>9} {:>9}",
        "program", "packet", "measured", "program"
    );
    println!("{}", "-".repeat(88));
    for r in &c.rows {
        println!(
            "{:<11} {:<56} {:>6.0} ns {:>6.0} ns",
            r.program, r.packet, r.ns, r.net_ns
        );
    }
    println!(
        "measured: median of single BPF_PROG_TEST_RUN runs; program: the same minus {:.0} ns,\n\
         the test clock's own cost per run (ARP path timed singly vs. repeated in the kernel).",
        c.overhead_ns
    );
    println!("\nInstructions the verifier processed (budget: 1 000 000 per program):");
    for (name, n) in &c.verified {
        println!("  {name:<16} {n:>9}");
    }
}

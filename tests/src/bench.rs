//! Per-packet cost of the kernel programs, from BPF_PROG_TEST_RUN's own clock.

use std::net::IpAddr;

use forwarder_common::TC_INGRESS_PROG;

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

    let h = Harness::new(false)?;
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
    let data = Pkt::tcp(c4, 10000, p4, 443, ACK | PSH)
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
    drop(h);

    let h = Harness::new(true)?;
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
    row(
        "tc only",
        "data, established flow (1200 B)",
        h.time_tc(TC_INGRESS_PROG, &data, 0, runs),
    );
    for r in &mut rows {
        r.net_ns = (r.ns - overhead_ns).max(0.0);
    }
    Ok(Costs { rows, overhead_ns })
}

const TC_TUNNEL_NAME: &str = forwarder_common::TC_TUNNEL_PROG;

pub fn print(c: &Costs) {
    println!(
        "{:<11} {:<52} {:>9} {:>9}",
        "program", "packet", "measured", "program"
    );
    println!("{}", "-".repeat(84));
    for r in &c.rows {
        println!(
            "{:<11} {:<52} {:>6.0} ns {:>6.0} ns",
            r.program, r.packet, r.ns, r.net_ns
        );
    }
    println!(
        "measured: median of single BPF_PROG_TEST_RUN runs; program: the same minus {:.0} ns,\n\
         the test clock's own cost per run (ARP path timed singly vs. repeated in the kernel).",
        c.overhead_ns
    );
}

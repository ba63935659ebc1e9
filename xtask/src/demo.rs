//! `cargo xtask demo`: the whole picture in one command.

use std::{path::Path, time::Instant};

use anyhow::Context as _;
use integration_tests::{
    CLIENT_V4, Lab, LabOptions, SUBDOMAINS, VPS_V4, VPS_V6, missing_prerequisites,
};

/// `bin` is the forwarder, `quic_peer` the lab's QUIC client and server.
pub fn run(bin: &Path, quic_peer: &Path, keep: bool) -> anyhow::Result<()> {
    if let Some(why) = missing_prerequisites() {
        anyhow::bail!("cannot build the lab: {why}");
    }
    // SAFETY: set before any thread is spawned.
    unsafe { std::env::set_var("FORWARDER_BIN", bin) };
    println!(
        "Bringing up the lab: client, VPS and home namespaces, a WireGuard tunnel (wireguard-go),"
    );
    println!(
        "nginx at home serving {} over HTTP and HTTPS ...",
        SUBDOMAINS.join(", ")
    );
    let t = Instant::now();
    // `http3 = true`: UDP 443 is forwarded too, and QUIC connections are read by host.
    let hosts: String = std::iter::once("http3 = true\n".to_owned())
        .chain(
            SUBDOMAINS
                .iter()
                .map(|h| format!("[[host]]\nname = \"{h}\"\n")),
        )
        .collect();
    let mut lab = Lab::new(&LabOptions {
        udp_echo: true,
        extra_config: hosts,
        ..LabOptions::default()
    })?;
    println!(
        "lab up in {:.1}s (namespaces {}, {}, {})\n",
        t.elapsed().as_secs_f64(),
        lab.client,
        lab.vps,
        lab.home
    );
    lab.start_forwarder(&[]).context("starting the forwarder")?;
    for line in lab
        .forwarder_output()
        .lines()
        .filter(|l| l.contains("forwarding ") || l.contains("attached"))
    {
        println!(
            "  forwarder: {}",
            line.split_once(": ").map_or(line, |x| x.1)
        );
    }
    println!();
    println!(
        "{:<7} {:<22} {:<16} {:>6}  answer (nginx at home)",
        "scheme", "host", "to address", "status"
    );
    let (_, tx0) = lab.tunnel_transfer()?;
    for host in SUBDOMAINS {
        for (scheme, addr) in [("http", VPS_V4), ("https", VPS_V4), ("https", VPS_V6)] {
            match lab.curl(scheme, host, "/", addr, &[]) {
                Ok((code, body)) => println!(
                    "{scheme:<7} {host:<22} {addr:<16} {code:>6}  {}",
                    body.trim()
                ),
                Err(e) => println!("{scheme:<7} {host:<22} {addr:<16} {:>6}  {e:#}", "FAIL"),
            }
        }
    }
    // Names the host table does not list, and no name at all, are counted but never become
    // labels of their own.
    for (host, note) in [
        (
            "unlisted.example.test",
            "(not a [[host]]: counted as other)",
        ),
        (VPS_V4, "(no SNI: counted as unknown)"),
    ] {
        match lab.curl("https", host, "/", VPS_V4, &["-k"]) {
            Ok((code, _)) => println!("{:<7} {host:<22} {VPS_V4:<16} {code:>6}  {note}", "https"),
            Err(e) => println!(
                "{:<7} {host:<22} {VPS_V4:<16} {:>6}  {e:#}",
                "https", "FAIL"
            ),
        }
    }
    http3(&mut lab, quic_peer)?;
    let (_, tx1) = lab.tunnel_transfer()?;
    println!(
        "\nThe VPS sent {} bytes into the tunnel for these requests.",
        tx1 - tx0
    );
    println!(
        "nginx's access log at home (first column: the client address it saw; the client is {CLIENT_V4}):"
    );
    for l in lab.access_log().lines() {
        println!("  {l}");
    }
    println!("QUIC server at home (the client address it saw is the client's own, {CLIENT_V4}):");
    let server_log = lab.dir.join("quic-server.log");
    for l in std::fs::read_to_string(&server_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with('{'))
    {
        println!("  {l}");
    }
    println!("\n`forwarder stats` on the VPS (per-host table read from the running daemon):");
    let bin_s = bin.display().to_string();
    match lab.exec(&lab.vps, &[&bin_s, "stats"]) {
        Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => println!("  (stats unavailable: {e:#})"),
    }
    println!(
        "(Hosts come from the TLS SNI or HTTP Host the kernel read from each connection's first\n\
         packet; the same numbers are on http://127.0.0.1:9724/metrics, see docs/metrics.md.)"
    );
    println!(
        "\n`forwarder doctor` on the VPS (home has a default route of its own and applied the\n\
         recipe `forwarder home-config` printed; the return path is checked with a client-like SYN):"
    );
    let config = lab.config_path().display().to_string();
    match lab.forwarder_cli(&["doctor", "--config", &config, "--wait", "2"]) {
        Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => println!("  (doctor unavailable: {e:#})"),
    }
    if keep {
        println!("\nThe lab keeps running. Try:");
        println!(
            "  ip netns exec {} curl --resolve app.example.test:443:{VPS_V4} --cacert {} https://app.example.test/",
            lab.client,
            lab.cert().display()
        );
        println!("  ip netns exec {} wg show", lab.vps);
        println!("Forwarder log: {}", lab.forwarder_log.display());
        // Deleting a namespace does not end its processes (the daemon, wireguard-go, nginx).
        println!(
            "Tear down:\n  for ns in {} {} {}; do ip netns pids $ns | xargs -r kill; sleep 1; ip netns del $ns; done\n  \
             umount -l {} ; rm -rf {}",
            lab.client,
            lab.vps,
            lab.home,
            lab.bpffs().display(),
            lab.dir.display()
        );
        lab.keep();
        return Ok(());
    }
    let out = lab.stop_forwarder()?;
    println!("\nKernel-side counters when the forwarder stopped (packets):");
    for (name, v) in Lab::counters(&out)
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect::<std::collections::BTreeMap<_, _>>()
    {
        println!("  {name:<26} {v:>8}");
    }
    println!("\nLab torn down.");
    Ok(())
}

/// HTTP/3's transport: a QUIC server at home on UDP 443, and one QUIC connection (TLS 1.3,
/// 100 kB asked for) from the client to each subdomain through the forwarder.
fn http3(lab: &mut Lab, peer: &Path) -> anyhow::Result<()> {
    lab.start_quic_server(peer)?;
    for host in SUBDOMAINS {
        let out = lab.quic_client(peer, host, 100_000, 1, false)?;
        let note = if out.status.success() {
            "100000 bytes over QUIC".to_owned()
        } else {
            format!("FAIL: {}", String::from_utf8_lossy(&out.stderr).trim())
        };
        println!(
            "{:<7} {host:<22} {:<16} {:>6}  {note}",
            "quic",
            format!("{VPS_V4}:443"),
            ""
        );
    }
    Ok(())
}

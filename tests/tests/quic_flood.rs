//! A flood of fake QUIC Initials (valid-looking headers, random contents, spoofed sources)
//! at UDP 443: the kernel hands the daemon no more than `[quic] initials_per_second` per
//! CPU, counts the rest, and the daemon's CPU time and memory stay bounded; a real QUIC
//! connection made during the flood still completes. Its own test binary: the flood takes
//! a core.

use std::time::{Duration, Instant};

use integration_tests::{
    Lab, LabOptions, flood::Flood, missing_prerequisites, process_cpu_seconds, subdomain_hosts,
};

const RATE: u64 = 500;
const BURST: u64 = 50;
const FLOOD: Duration = Duration::from_secs(6);

fn metric(page: &str, line_start: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn fake_initials_cost_the_daemon_a_bounded_amount() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(&LabOptions {
        extra_config: format!(
            "http3 = true\n{}[quic]\ninitials_per_second = {RATE}\nburst = {BURST}\n",
            subdomain_hosts()
        ),
        ..LabOptions::default()
    })
    .expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let pid = lab.forwarder_pid().expect("the daemon's pid");
    let read_initials = |p: &str| metric(p, "forwarder_quic_initials_total ");
    let limited = |p: &str| {
        metric(
            p,
            "forwarder_datapath_packets_total{event=\"quic_rate_limited\"} ",
        )
    };
    let before = lab.metrics_page().unwrap_or_default();
    let (cpu0, rss0) = (process_cpu_seconds(pid), rss_kib(pid));

    let flood = Flood::start_quic(lab.flood_target().unwrap(), 443).expect("flood");
    let t0 = Instant::now();
    // A real connection in the middle of it: forwarded and answered, whatever its
    // classification (the flood may have used up the hand-off's budget).
    std::thread::sleep(FLOOD / 2);
    let peer = std::path::Path::new(env!("CARGO_BIN_EXE_quic-peer"));
    lab.start_quic_server(peer).unwrap();
    let out = lab
        .quic_client(peer, integration_tests::SUBDOMAINS[0], 100_000, 1, false)
        .unwrap();
    if let Some(left) = FLOOD.checked_sub(t0.elapsed()) {
        std::thread::sleep(left);
    }
    let (sent, rate) = flood.stop().expect("stopping the flood");
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "a real QUIC connection during the flood failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Whatever the daemon still had queued is read within a second.
    std::thread::sleep(Duration::from_secs(1));
    let after = lab.metrics_page().unwrap_or_default();
    let (cpu, rss) = (process_cpu_seconds(pid) - cpu0, rss_kib(pid));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let handed = read_initials(&after) - read_initials(&before);
    let refused = limited(&after) - limited(&before);
    let allowed = cpus * (RATE * (secs.ceil() as u64 + 1) + BURST);
    eprintln!(
        "flood: {sent} fake Initials in {secs:.1} s ({rate:.0}/s); daemon read {handed} \
         (allowed {allowed}), kernel refused {refused}; daemon CPU {cpu:.2} s, RSS {rss0} -> {rss} KiB"
    );
    assert!(refused > 0, "the rate limit never held back a fake Initial");
    assert!(
        handed <= allowed,
        "the daemon read {handed} Initials, more than the limit allows ({allowed})"
    );
    assert!(
        sent >= 4 * allowed,
        "the flood ({sent}) was too small to test the limit"
    );
    // At most the allowed Initials, each a failed decryption: far from a core.
    assert!(
        cpu < 0.5 * secs,
        "the daemon used {cpu:.2} s of CPU during a {secs:.1} s flood"
    );
    assert!(
        rss < rss0 + 32 * 1024,
        "the daemon's memory grew from {rss0} to {rss} KiB"
    );
    let undecodable = metric(
        &after,
        "forwarder_quic_connections_total{outcome=\"undecodable\"} ",
    );
    assert!(
        undecodable > 0,
        "the fake Initials were not seen as undecodable"
    );
}

//! A SYN flood larger than the flow table, in the lab. A test binary of its own: the
//! flood takes a whole CPU for seconds, and the tests of one binary run side by side.

use std::time::Duration;

use integration_tests::{
    Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites, subdomain_hosts, wait_for,
};

/// A SYN flood from more made-up sources than the flow tables hold (8 s at the
/// generator's rate here asks for more than twice the 262 144 entries of the established
/// table), while a download runs; the download completes byte for byte, and a new
/// connection works afterwards:
///
/// * with the default configuration, the SYN flood guard keeps the flood out of the
///   tables;
/// * with the guard off (`syn_flood_threshold = 0`), the flood fills only the table of
///   connections still opening, whose LRU evicts the flood's own entries, while the
///   download's entries sit in the established table, which the flood never reaches.
#[test]
fn a_flood_larger_than_the_flow_table_spares_a_running_download() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    // One after the other: each flood takes a whole CPU.
    flood_during_a_download(true);
    flood_during_a_download(false);
}

fn flood_during_a_download(guard: bool) {
    const SIZE: usize = 12 << 20;
    let limits = if guard {
        ""
    } else {
        "[limits]\nsyn_flood_threshold = 0\n"
    };
    let mut lab = Lab::new(&LabOptions {
        big_file_bytes: SIZE,
        extra_config: format!("{}\n{limits}", subdomain_hosts()),
        ..LabOptions::default()
    })
    .expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");
    // About 12 s of download, with the flood in its middle.
    let download = lab
        .start_download(SUBDOMAINS[1], "1M")
        .expect("starting the download");
    let flood = integration_tests::flood::Flood::start(lab.flood_target().unwrap())
        .expect("starting the flood");
    std::thread::sleep(Duration::from_secs(8));
    let (frames, pps) = flood.stop().expect("the flood");
    eprintln!("guard {guard}: flood of {frames} frames ({pps:.0}/s), half of them SYNs");
    let page = lab.metrics_page().expect("metrics");
    let value = |name: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let dropped = value("forwarder_datapath_packets_total{event=\"syn_flood_drop\"} ");
    let created = value("forwarder_datapath_packets_total{event=\"flows_created\"} ");
    let entries = value("forwarder_flow_table_entries ");
    let opening = value("forwarder_flow_table_opening_entries ");
    let evicted = value("forwarder_flow_table_evictions_total ");
    eprintln!(
        "guard {guard}: syn_flood_drop {dropped}, flows created {created}, {entries} established and {opening} opening entries, ~{evicted} evicted"
    );
    if guard {
        assert!(
            dropped > frames as f64 / 4.0,
            "the guard dropped only {dropped} SYNs"
        );
    } else {
        assert_eq!(dropped, 0.0);
        assert!(
            created > 262_144.0 / 2.0,
            "the flood made only {created} connections: too weak to fill the established table"
        );
    }
    assert!(
        entries < 1000.0,
        "the flood reached the established table: {entries} entries"
    );
    download
        .finish_intact(&lab)
        .expect("the download that ran through the flood");
    let (code, _) = lab
        .curl("https", SUBDOMAINS[0], "/", VPS_V4, &[])
        .expect("a new connection after the flood");
    assert_eq!(code, 200);
    if !guard {
        // Counted by the next flow GC scans (every 2 s, or longer while a scan is slow).
        let evicted = wait_for("evictions counted", Duration::from_secs(30), || {
            let page = lab.metrics_page()?;
            let v: f64 = page
                .lines()
                .find_map(|l| l.strip_prefix("forwarder_flow_table_evictions_total "))?
                .trim()
                .parse()
                .ok()?;
            (v > 0.0).then_some(v)
        })
        .unwrap();
        eprintln!("evictions counted: {evicted}");
    }
}

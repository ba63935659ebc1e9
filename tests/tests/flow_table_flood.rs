//! A SYN flood larger than the flow table, in the lab. A test binary of its own: the
//! flood takes a whole CPU for seconds, and the tests of one binary run side by side.

use std::time::Duration;

use integration_tests::{Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites};

/// A SYN flood from more made-up sources than the flow table holds (8 s at the generator's
/// rate here asks for more than twice its 262 144 entries), with the default
/// configuration: the SYN flood guard keeps it out of the table, and a download that was
/// running completes byte for byte.
///
/// With the guard off, the same flood fills the table and the LRU's forced eviction takes
/// live connections' entries too (their reference bit is ignored once nothing else is
/// left): a download stalled for good, as home's packets found no entry to be translated
/// back and the waiting client sent none to recreate it. docs/reliability.md says so.
#[test]
fn a_flood_larger_than_the_flow_table_spares_a_running_download() {
    const SIZE: usize = 12 << 20;
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(&LabOptions {
        big_file_bytes: SIZE,
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
    eprintln!("flood: {frames} frames ({pps:.0}/s), half of them SYNs");
    let page = lab.metrics_page().expect("metrics");
    let value = |name: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let dropped = value("forwarder_datapath_packets_total{event=\"syn_flood_drop\"} ");
    let entries = value("forwarder_flow_table_entries ");
    eprintln!("syn_flood_drop {dropped}, flow table entries {entries}");
    assert!(
        dropped > frames as f64 / 4.0,
        "the guard dropped only {dropped} SYNs"
    );
    assert!(
        entries < 262_144.0 / 4.0,
        "the flood filled the table: {entries} entries"
    );
    download
        .finish_intact(&lab)
        .expect("the download that ran through the flood");
    let (code, _) = lab
        .curl("https", SUBDOMAINS[0], "/", VPS_V4, &[])
        .expect("a new connection after the flood");
    assert_eq!(code, 200);
}

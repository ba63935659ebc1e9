//! Restarting the daemon drops no visitor: the data path is pinned, keeps forwarding while
//! no daemon runs, and the next daemon adopts it (flows, counters) and swaps its programs
//! in atomically. Checked with downloads that span a clean restart and a `kill -9`.

use std::time::Duration;

use integration_tests::{Lab, LabOptions, SUBDOMAINS, missing_prerequisites, wait_for};

fn connections_of(page: &str, host: &str) -> Option<u64> {
    let want = format!("forwarder_host_connections_total{{host=\"{host}\",protocol=\"tcp\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_download_survives_a_restart_and_a_kill_9_and_counters_continue() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    const SIZE: usize = 24 << 20;
    let mut lab = Lab::new(&LabOptions {
        big_file_bytes: SIZE,
        extra_config: format!("[[host]]\nname = \"{}\"\n", SUBDOMAINS[0]),
        ..LabOptions::default()
    })
    .expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");

    // About 24 s at 1 MB/s: long enough for a restart in the middle, even where loading
    // the programs takes seconds (the VMs of `cargo xtask vmtest` emulate the CPU).
    let download = lab
        .start_download(SUBDOMAINS[0], "1M")
        .expect("starting the download");
    let before = wait_for("the connection counted", Duration::from_secs(10), || {
        connections_of(&lab.metrics_page()?, SUBDOMAINS[0]).filter(|n| *n >= 1)
    })
    .expect("per-host connection counter");

    // A clean restart: SIGTERM leaves the data path pinned; the new daemon adopts it.
    lab.stop_forwarder().expect("stopping the forwarder");
    lab.start_forwarder(&[]).expect("restarting the forwarder");
    let log = lab.forwarder_output();
    assert!(
        log.contains("adopted=true") && log.contains("replaced the running XDP program"),
        "{log}"
    );
    download
        .wait_past(download.received() + (1 << 20), Duration::from_secs(10))
        .expect("the download goes on after the restart");
    // A crash: nothing of the daemon's shutdown runs. A second download, started just
    // before, certainly spans it.
    let during = lab
        .start_download(SUBDOMAINS[1], "2M")
        .expect("starting the second download");
    lab.kill_forwarder().expect("kill -9");
    during
        .wait_past(during.received() + (1 << 20), Duration::from_secs(10))
        .expect("the download goes on without a daemon");
    lab.start_forwarder(&[])
        .expect("starting the forwarder after kill -9");
    assert!(lab.forwarder_output().contains("adopted=true"));

    download.finish_intact(&lab).expect("the download");
    during
        .finish_intact(&lab)
        .expect("the download across the kill -9");

    // The counters went on from where they were: the daemon read the pinned maps.
    let page = lab.metrics_page().expect("metrics");
    let after = connections_of(&page, SUBDOMAINS[0]).expect("per-host counter");
    assert!(after >= before, "before {before}, after {after}\n{page}");
    let out = lab.forwarder_cli(&["stop", "--detach"]).unwrap();
    assert!(out.status.success(), "{out:?}");
}

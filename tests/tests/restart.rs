//! Restarting the daemon drops no visitor: the data path is pinned, keeps forwarding while
//! no daemon runs, and the next daemon adopts it (flows, counters) and swaps its programs
//! in atomically. Checked with a long download that spans a clean restart and a `kill -9`.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use integration_tests::{Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites, wait_for};

/// A process of this test, stopped by PID when the test ends, however it ends.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn connections_of(page: &str, host: &str) -> Option<u64> {
    let want = format!("forwarder_host_connections_total{{host=\"{host}\"}} ");
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

    // About 12 s at 2 MB/s: long enough for two restarts in the middle.
    let out = lab.dir.join("download");
    let resolve = format!("{}:443:{VPS_V4}", SUBDOMAINS[0]);
    let url = format!("https://{}/big", SUBDOMAINS[0]);
    let mut download = Guard(Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.client,
                "curl",
                "-sS",
                "--max-time",
                "60",
            ])
            .args(["--limit-rate", "2M", "--resolve", &resolve, "--cacert"])
            .arg(lab.cert())
            .arg("-o")
            .arg(&out)
            .arg(&url)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the download"),
    ));
    let started = wait_for("the download to start", Duration::from_secs(10), || {
        let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        (len > 1 << 20).then_some(())
    });
    assert!(started.is_ok(), "{started:?}");
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
    // A crash: nothing of the daemon's shutdown runs.
    lab.kill_forwarder().expect("kill -9");
    let mid = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let progressed = wait_for(
        "the download to go on without a daemon",
        Duration::from_secs(10),
        || {
            let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            (len > mid + (1 << 20)).then_some(())
        },
    );
    assert!(progressed.is_ok(), "{progressed:?}");
    lab.start_forwarder(&[])
        .expect("starting the forwarder after kill -9");
    assert!(lab.forwarder_output().contains("adopted=true"));

    let mut child = download.0.take().expect("download running");
    let status = wait_for("the download to finish", Duration::from_secs(60), || {
        child.try_wait().ok().flatten()
    })
    .expect("download finished");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(status.success(), "curl: {status} {stderr}");
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), SIZE, "download truncated");
    assert!(
        got == lab.read("www/big").unwrap(),
        "downloaded bytes differ from the file at home"
    );

    // The counters went on from where they were: the daemon read the pinned maps.
    let page = lab.metrics_page().expect("metrics");
    let after = connections_of(&page, SUBDOMAINS[0]).expect("per-host counter");
    assert!(after >= before, "before {before}, after {after}\n{page}");
    let out = lab.forwarder_cli(&["stop", "--detach"]).unwrap();
    assert!(out.status.success(), "{out:?}");
}

//! Backend health as an operator sees it: the tunnel to home goes down and comes back, and
//! `forwarder_backend_up` follows within the bounds the `[health]` settings promise.

use std::time::{Duration, Instant};

use integration_tests::{Lab, LabOptions, missing_prerequisites, wait_for};

const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const DOWN_AFTER: u64 = 2;
const UP_AFTER: u64 = 1;

#[test]
fn backend_state_follows_the_tunnel_within_the_configured_bounds() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(&LabOptions {
        extra_config: format!(
            "[health]\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = {TIMEOUT_MS}\n\
             down_after = {DOWN_AFTER}\nup_after = {UP_AFTER}\n"
        ),
        ..LabOptions::default()
    })
    .expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");
    wait_for("backend up at start", Duration::from_secs(10), || {
        (lab.backend_up(80) == Some(1.0) && lab.backend_up(443) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));

    // The VPS loses its uplink to home (the WireGuard underlay), as in an ISP outage at home.
    let vps = lab.vps.clone();
    lab.exec(&vps, &["ip", "link", "set", "up0", "down"])
        .expect("cutting the uplink to home");
    let t0 = Instant::now();
    // Worst case: a probe just passed, then `down_after` failing ones, each up to its
    // timeout; plus one interval for the metric read to see it.
    let bound = Duration::from_millis(INTERVAL_MS * (DOWN_AFTER + 1) + TIMEOUT_MS);
    // When the last reading that still saw the backend up started: the state changed
    // after that. A reading itself takes time (a process in the namespace, an HTTP
    // request; hundreds of milliseconds in an emulated VM), so the first reading that
    // sees it down says less about when it changed.
    let mut last_up = Duration::ZERO;
    wait_for("backend down", bound * 3, || {
        let started = t0.elapsed();
        let down = lab.backend_up(80) == Some(0.0);
        if !down {
            last_up = started;
        }
        down.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let detected = t0.elapsed();

    lab.exec(&vps, &["ip", "link", "set", "up0", "up"])
        .expect("restoring the uplink to home");
    let t1 = Instant::now();
    wait_for("backend up again", Duration::from_secs(15), || {
        (lab.backend_up(80) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let recovered = t1.elapsed();
    eprintln!(
        "backend down detected between {} and {} ms (bound {} ms), up again after {} ms",
        last_up.as_millis(),
        detected.as_millis(),
        bound.as_millis(),
        recovered.as_millis()
    );
    // The metric is read from the daemon's state, which a probe updates: one interval of
    // staleness on top of the bound.
    assert!(
        last_up <= bound + Duration::from_millis(INTERVAL_MS),
        "still up in a reading started {last_up:?} after the cut, past {bound:?} plus an interval"
    );
    let log = lab.forwarder_output();
    assert!(log.contains("backend is down"), "{log}");
    assert!(log.contains("backend is up again"), "{log}");
}

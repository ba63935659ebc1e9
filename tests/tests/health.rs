//! Backend health as an operator sees it: the tunnel to home goes down and comes back, and
//! `forwarder_backend_up` follows within the bounds the `[health]` settings promise.

use std::time::{Duration, Instant};

use integration_tests::{HOME_WG_V4, Lab, LabOptions, missing_prerequisites, wait_for};

const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const DOWN_AFTER: u64 = 2;
const UP_AFTER: u64 = 1;

fn backend_up(lab: &Lab, port: u16) -> Option<f64> {
    let page = lab.metrics_page()?;
    let want = format!("forwarder_backend_up{{backend=\"{HOME_WG_V4}:{port}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

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
        (backend_up(&lab, 80) == Some(1.0) && backend_up(&lab, 443) == Some(1.0)).then_some(())
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
    wait_for("backend down", bound * 3, || {
        (backend_up(&lab, 80) == Some(0.0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let detected = t0.elapsed();

    lab.exec(&vps, &["ip", "link", "set", "up0", "up"])
        .expect("restoring the uplink to home");
    let t1 = Instant::now();
    wait_for("backend up again", Duration::from_secs(15), || {
        (backend_up(&lab, 80) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let recovered = t1.elapsed();
    eprintln!(
        "backend down detected after {} ms (bound {} ms), up again after {} ms",
        detected.as_millis(),
        bound.as_millis(),
        recovered.as_millis()
    );
    assert!(
        detected <= bound + Duration::from_millis(INTERVAL_MS),
        "detection took {detected:?}, more than {bound:?} plus a metrics read"
    );
    let log = lab.forwarder_output();
    assert!(log.contains("backend is down"), "{log}");
    assert!(log.contains("backend is up again"), "{log}");
}

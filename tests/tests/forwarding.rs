//! End-to-end forwarding through a real WireGuard tunnel, as a user would check it.

use integration_tests::{Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites};

/// Builds a lab or explains why this machine cannot (and fails: CI must be able to).
fn lab(opts: LabOptions) -> Lab {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    Lab::new(&opts).expect("building the lab")
}

#[test]
fn http_and_https_reach_home_with_client_ip() {
    let mut lab = lab(LabOptions::default());
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let (_, tx_before) = lab.tunnel_transfer().unwrap();
    for host in SUBDOMAINS {
        for scheme in ["http", "https"] {
            let (code, body) = lab.curl(scheme, host, "/", VPS_V4, &[]).unwrap_or_else(|e| {
                panic!("{scheme}://{host}: {e:#}\nforwarder log:\n{}", lab.forwarder_output())
            });
            assert_eq!(code, 200, "{scheme}://{host}: {body}");
            assert_eq!(body.trim(), format!("home {host} client 203.0.113.2"), "{scheme}://{host}");
        }
    }
    let (_, tx_after) = lab.tunnel_transfer().unwrap();
    assert!(tx_after > tx_before + 6 * 200, "requests did not cross the tunnel ({tx_before} -> {tx_after} bytes)");
    let log = lab.access_log();
    assert_eq!(log.lines().count(), 6, "nginx access log:\n{log}");
    for line in log.lines() {
        assert!(line.starts_with("203.0.113.2 "), "nginx saw another client address: {line}");
    }
    let out = lab.stop_forwarder().unwrap();
    let counters = Lab::counters(&out);
    assert!(counters["xdp_to_tunnel"] >= 6 * 3, "counters: {counters:?}");
    assert!(counters["tunnel_to_client"] >= 6 * 2, "counters: {counters:?}");
}

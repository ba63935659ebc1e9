//! What the running daemon exposes, as docs/security.md states it: the metrics endpoint
//! listens on loopback only unless told otherwise, the pinned data path is root's alone,
//! the control socket is for root and the admin group.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use integration_tests::{Lab, LabOptions, missing_prerequisites};

#[test]
fn by_default_nothing_is_exposed_beyond_root_and_loopback() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(&LabOptions::default()).expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");

    // Every TCP listener of the daemon on the VPS: only the metrics endpoint, on loopback.
    let pid = lab.forwarder_pid().expect("daemon pid");
    let out = lab
        .exec(&lab.vps, &["ss", "-ltnpH"])
        .expect("ss in the VPS namespace");
    let listeners: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_owned())
        .collect();
    assert!(!listeners.is_empty(), "the daemon listens nowhere: {out:?}");
    for addr in &listeners {
        assert!(
            addr.starts_with("127.0.0.1:") || addr.starts_with("[::1]:"),
            "the daemon listens on {addr}, not only on loopback: {listeners:?}"
        );
    }

    let pins = lab.pin_dir();
    let meta = std::fs::metadata(&pins).expect("pin directory");
    assert_eq!(meta.uid(), 0, "pin directory owner");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "{} is not root's alone",
        pins.display()
    );
    let meta = std::fs::metadata(lab.control_path()).expect("control socket");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "control socket permissions"
    );
    assert_eq!(meta.uid(), 0, "control socket owner");
}

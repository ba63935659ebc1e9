//! Fault drills in the lab: what operations throw at a VPS, with traffic running.

use std::time::{Duration, Instant};

use integration_tests::{Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites, wait_for};

/// An HTTPS request to `host` through the forwarder; Ok if home answered 200.
fn get(lab: &Lab, host: &str) -> anyhow::Result<()> {
    let (code, _) = lab.curl("https", host, "/", VPS_V4, &["--max-time", "3"])?;
    anyhow::ensure!(code == 200, "HTTP {code}");
    Ok(())
}

fn lab(opts: &LabOptions) -> Lab {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(opts).expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");
    lab
}

/// wireguard-go (or wg-quick) restarted: the tunnel interface is deleted and a new one of
/// the same name appears. The daemon attaches to it by itself, new connections go home
/// again, and a download that was running when the tunnel went away completes intact.
#[test]
fn a_recreated_tunnel_interface_is_followed_without_a_restart() {
    const SIZE: usize = 8 << 20;
    let mut lab = lab(&LabOptions {
        big_file_bytes: SIZE,
        ..LabOptions::default()
    });
    get(&lab, SUBDOMAINS[0]).expect("a request before");
    let download = lab
        .start_download(SUBDOMAINS[1], "2M")
        .expect("starting the download");

    let (old, new) = lab.restart_vps_tunnel().expect("restarting wireguard-go");
    assert_ne!(old, new, "the interface came back with the same ifindex");
    let t0 = Instant::now();
    wait_for(
        "the daemon to follow the tunnel",
        Duration::from_secs(5),
        || {
            lab.forwarder_output()
                .contains("the tunnel interface was recreated")
                .then_some(())
        },
    )
    .expect("log line");
    let log = lab.forwarder_output();
    assert!(log.contains(&format!("new_ifindex={new}")), "{log}");
    // The new interface has no session until home's WireGuard handshakes again (home is
    // behind NAT, only it can start one): after sending without a reply for about 15 s.
    wait_for(
        "WireGuard to handshake again",
        Duration::from_secs(40),
        || {
            let out = lab
                .exec(&lab.vps, &["wg", "show", &lab.wg_vps, "latest-handshakes"])
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let secs: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
            (secs > 0).then_some(())
        },
    )
    .expect("handshake");
    let handshake = t0.elapsed();
    wait_for(
        "a request through the new tunnel",
        Duration::from_secs(5),
        || get(&lab, SUBDOMAINS[0]).ok(),
    )
    .expect("forwarding after the tunnel came back");
    eprintln!(
        "tunnel handshake {handshake:?}, forwarding again {:?} after the new interface appeared",
        t0.elapsed()
    );

    let got = download
        .finish(Duration::from_secs(60))
        .expect("the download that spanned the restart");
    assert_eq!(got.len(), SIZE, "download truncated");
    assert!(
        got == lab.read("www/big").unwrap(),
        "downloaded bytes differ from the file at home"
    );
    let status = lab.forwarder_cli(&["status"]).expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("tunnel") && l.contains(&format!("{} up", lab.wg_vps))),
        "{text}"
    );
}

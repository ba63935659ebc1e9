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

    download
        .finish_intact(&lab)
        .expect("the download that spanned the restart");
    let status = lab.forwarder_cli(&["status"]).expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("tunnel") && l.contains(&format!("{} up", lab.wg_vps))),
        "{text}"
    );
}

/// Makes a directory immutable (not even root can create or rename files in it) until
/// dropped, however the test ends.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(dir: &std::path::Path) -> Immutable {
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .expect("chattr (e2fsprogs)");
        assert!(st.success(), "chattr +i {}", dir.display());
        Immutable(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// The config file's directory cannot be written (read-only, full, immutable): a rule
/// change is refused with the reason, the file stays as it was and nothing changes in
/// force; once the directory is writable again the same change goes through.
#[test]
fn a_change_that_cannot_be_saved_is_refused_and_changes_nothing() {
    let lab = lab(&LabOptions::default());
    let cli = |args: &[&str]| lab.forwarder_cli(args).expect("forwarder cli");
    let before = std::fs::read(lab.config_path()).expect("config");
    let rules_before = cli(&["rules", "list"]).stdout;
    {
        let _ro = Immutable::new(&lab.dir);
        let out = cli(&["rules", "add", "--port", "8443"]);
        assert!(!out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&lab.dir.display().to_string()) && err.contains("not permitted"),
            "the error names neither the place nor the reason: {err}"
        );
    }
    assert_eq!(
        std::fs::read(lab.config_path()).unwrap(),
        before,
        "config file changed"
    );
    assert_eq!(
        cli(&["rules", "list"]).stdout,
        rules_before,
        "rules in force changed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&lab.dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    get(&lab, SUBDOMAINS[0]).expect("forwarding goes on");
    let out = cli(&["rules", "add", "--port", "8443"]);
    assert!(out.status.success(), "{out:?}");
}

/// The public interface loses its address (a DHCP renewal gone wrong, an operator's
/// mistake) and gets it back: the daemon keeps running and forwarding resumes without a
/// restart.
#[test]
fn forwarding_resumes_when_the_public_address_comes_back() {
    let lab = lab(&LabOptions::default());
    get(&lab, SUBDOMAINS[0]).expect("a request before");
    let addr = format!("{VPS_V4}/24");
    let ip = |op: &str| {
        let out = lab
            .exec(&lab.vps, &["ip", "addr", op, &addr, "dev", "eth0"])
            .expect("ip addr");
        assert!(out.status.success(), "ip addr {op}: {out:?}");
    };
    ip("del");
    // Whatever happens meanwhile (XDP may keep forwarding packets addressed to it while
    // the client still knows the VPS's MAC) is allowed; the daemon must not exit.
    let during = get(&lab, SUBDOMAINS[0]);
    eprintln!("a request while the address was gone: {during:?}");
    std::thread::sleep(Duration::from_millis(1500));
    ip("add");
    let t0 = Instant::now();
    wait_for(
        "forwarding with the address back",
        Duration::from_secs(10),
        || get(&lab, SUBDOMAINS[0]).ok(),
    )
    .expect("forwarding after the address came back");
    eprintln!(
        "forwarding again {:?} after the address came back",
        t0.elapsed()
    );
    let status = lab.forwarder_cli(&["status"]).expect("status");
    assert!(
        status.status.success(),
        "the daemon does not answer: {status:?}"
    );
}

/// How long a refused connection took by curl's own clock: its error for a connection
/// that could not be made, `curl: (7) Failed to connect to HOST port N after MS ms: ...`.
fn connect_failed_after(err: &str) -> Option<Duration> {
    let (_, rest) = err.split_once("curl: (7) Failed to connect to ")?;
    let (_, rest) = rest.split_once(" after ")?;
    let (ms, _) = rest.split_once(" ms")?;
    Some(Duration::from_millis(ms.parse().ok()?))
}

/// Home's web server stopped and started again (an upgrade, a crash and its restart): the
/// daemon reports the backend down and up again, visitors are refused at once rather than
/// left waiting while it is down (home's reset comes back through the tunnel), and
/// requests go through again as soon as it listens, with no restart of the daemon.
#[test]
fn home_s_web_server_stopped_and_started() {
    let mut lab = lab(&LabOptions::default());
    get(&lab, SUBDOMAINS[0]).expect("a request before");
    lab.stop_home_nginx().expect("stopping nginx");
    // Observed, not timed around the curl process (whose start alone takes most of a
    // second in an emulated VM): the client's kernel counts the SYNs it had to send again
    // and its retransmission timeouts, and curl reports how long its connect took. A SYN
    // left unanswered is sent again after Linux's initial retransmission timeout, 1 s, so
    // a refusal that needed one takes at least that long.
    let waits = |lab: &Lab| {
        let c = integration_tests::client_snmp(lab);
        (c["TcpExt.TCPSynRetrans"], c["TcpExt.TCPTimeouts"])
    };
    let before = waits(&lab);
    let t0 = Instant::now();
    let err = get(&lab, SUBDOMAINS[0]).expect_err("a request while nginx is down");
    let around = t0.elapsed();
    let after = waits(&lab);
    let (syn_retrans, timeouts) = (after.0 - before.0, after.1 - before.1);
    let err = format!("{err:#}");
    let refused =
        connect_failed_after(&err).unwrap_or_else(|| panic!("not a refused connection: {err}"));
    eprintln!(
        "refused after {} ms as curl timed it ({} ms around the curl process); client SYN \
         retransmissions {syn_retrans}, retransmission timeouts {timeouts}",
        refused.as_millis(),
        around.as_millis()
    );
    assert!(
        syn_retrans == 0 && timeouts == 0 && refused < Duration::from_secs(1),
        "the client waited instead of being refused: {syn_retrans} SYN retransmissions, \
         {timeouts} retransmission timeouts, {refused:?} as curl timed it: {err}"
    );
    // Health probes every 2 s, down after 3 failures: at most about 7 s.
    wait_for("the backend reported down", Duration::from_secs(10), || {
        (lab.backend_up(443)? == 0.0).then_some(())
    })
    .expect("backend down");
    eprintln!("reported down {:?} after nginx stopped", t0.elapsed());
    lab.start_home_nginx().expect("starting nginx");
    let t1 = Instant::now();
    wait_for(
        "a request after nginx came back",
        Duration::from_secs(5),
        || get(&lab, SUBDOMAINS[0]).ok(),
    )
    .expect("forwarding after nginx came back");
    eprintln!("forwarding again {:?} after nginx listened", t1.elapsed());
    wait_for("the backend reported up", Duration::from_secs(10), || {
        (lab.backend_up(443)? == 1.0).then_some(())
    })
    .expect("backend up");
    let status = lab.forwarder_cli(&["status"]).expect("status");
    assert!(status.status.success(), "{status:?}");
}

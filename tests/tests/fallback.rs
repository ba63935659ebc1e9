//! The local fallback as a visitor sees it: home's tunnel goes down while a client polls
//! every 100 ms; within the health settings' detection time the VPS's own web server
//! answers (a maintenance page), and once the tunnel is back, home answers again.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{Lab, LabOptions, VPS_V4, missing_prerequisites, wait_for};

const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const DOWN_AFTER: u64 = 2;
const UP_AFTER: u64 = 1;

/// A process of this test, stopped by PID when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request as the client makes it: the body, or why there was none.
fn get(lab: &Lab) -> Result<String, String> {
    lab.curl(
        "http",
        "app.example.test",
        "/",
        VPS_V4,
        &["--max-time", "1"],
    )
    .map(|(_, body)| body)
    .map_err(|e| format!("{e:#}"))
}

#[test]
fn new_connections_go_to_the_local_page_while_home_is_down_and_back_after() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(&LabOptions {
        extra_config: format!(
            "[[rule]]\nport = 80\nfallback = \"local\"\n\n[[rule]]\nport = 443\n\n\
             [health]\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = {TIMEOUT_MS}\n\
             down_after = {DOWN_AFTER}\nup_after = {UP_AFTER}\n"
        ),
        ..LabOptions::default()
    })
    .expect("building the lab");
    // The VPS's own web server: what a user runs there for maintenance.
    let _local = Guard(
        Command::new("ip")
            .args(["netns", "exec", &lab.vps, "socat"])
            .arg(format!("TCP-LISTEN:80,bind={VPS_V4},fork,reuseaddr"))
            .arg("SYSTEM:echo HTTP/1.0 200 OK; echo; echo maintenance")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the local web server"),
    );
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let home = wait_for("home answering", Duration::from_secs(10), || {
        get(&lab).ok().filter(|b| b.contains("home"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    assert!(home.contains("app.example.test"), "{home}");

    // The VPS loses its uplink to home (the WireGuard underlay), as in an ISP outage at home.
    let vps = lab.vps.clone();
    lab.exec(&vps, &["ip", "link", "set", "up0", "down"])
        .expect("cutting the uplink to home");
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    // When the last request that did not get the maintenance page started (after the
    // cut): the switch came after that. A request takes time itself (hundreds of
    // milliseconds for curl in an emulated VM), so the first one that gets the page says
    // less about when the switch happened.
    let mut last_miss = Duration::ZERO;
    // Requests curl gave up on at its --max-time (its error 28) once the local page had
    // answered: a visitor left waiting. Before the switch that is expected (the SYN goes
    // into the cut tunnel).
    let mut hung = Vec::new();
    let mut poll = |want: &str| -> Option<()> {
        let start = Instant::now();
        let r = get(&lab);
        slowest = slowest.max(start.elapsed());
        if want == "home"
            && let Err(e) = &r
            && e.contains("curl: (28)")
        {
            hung.push(e.clone());
        }
        let got = r.ok().filter(|b| b.contains(want)).map(|_| ());
        if got.is_none() && want == "maintenance" {
            last_miss = last_miss.max(start.duration_since(t0));
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(start.elapsed()));
        got
    };
    wait_for("the maintenance page", Duration::from_secs(10), || {
        poll("maintenance")
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let failover = t0.elapsed();

    lab.exec(&vps, &["ip", "link", "set", "up0", "up"])
        .expect("restoring the uplink to home");
    let t1 = Instant::now();
    wait_for("home again", Duration::from_secs(15), || poll("home"))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let recovery = t1.elapsed();
    eprintln!(
        "failover to the local page between {} and {} ms, back home after {} ms, slowest \
         request {} ms (around the curl process), {} left waiting after the switch",
        last_miss.as_millis(),
        failover.as_millis(),
        recovery.as_millis(),
        slowest.as_millis(),
        hung.len()
    );
    // Detection (a probe just passed, then `down_after` failed ones, each up to its
    // timeout), plus one interval for the rule switch.
    let bound = Duration::from_millis(INTERVAL_MS * (DOWN_AFTER + 2) + TIMEOUT_MS);
    assert!(
        last_miss <= bound,
        "a request started {last_miss:?} after the cut did not get the page, bound {bound:?}"
    );
    // None hangs once the local page answers: each gets the page or home's answer before
    // curl's --max-time 1 runs out. Told by curl's own verdict, not by timing the curl
    // process (its start alone takes most of a second in an emulated VM, and its --max-time
    // caps the rest anyway).
    assert!(
        hung.is_empty(),
        "requests left waiting after the switch to the local page: {hung:#?}"
    );
    let log = lab.stop_forwarder().unwrap();
    assert!(
        log.contains("new connections go to the local stack"),
        "{log}"
    );
    assert!(
        log.contains("new connections go to the backend again"),
        "{log}"
    );
    let counters = Lab::counters(&log);
    assert!(
        counters.get("xdp_pass_fallback").copied().unwrap_or(0) > 0,
        "{counters:?}"
    );
}

#[test]
fn new_connections_go_to_the_fallback_backend_while_the_primary_is_down() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    // The primary is a service on port 8080 at home, down at first; nginx on port 80 is
    // the fallback.
    let mut lab = Lab::new(&LabOptions {
        extra_config: format!(
            "[[rule]]\nport = 80\nbackend_port = 8080\nfallback = \"10.8.0.2:80\"\n\n\
             [health]\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = {TIMEOUT_MS}\n\
             down_after = {DOWN_AFTER}\nup_after = {UP_AFTER}\n"
        ),
        ..LabOptions::default()
    })
    .expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let t0 = Instant::now();
    wait_for(
        "the fallback backend answering",
        Duration::from_secs(10),
        || {
            get(&lab)
                .ok()
                .filter(|b| b.contains("home app.example.test"))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let failover = t0.elapsed();

    // The primary comes up.
    let _primary = Guard(
        Command::new("ip")
            .args(["netns", "exec", &lab.home, "socat"])
            .arg("TCP-LISTEN:8080,fork,reuseaddr")
            .arg("SYSTEM:echo HTTP/1.0 200 OK; echo; echo primary")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the primary"),
    );
    let t1 = Instant::now();
    wait_for("the primary answering", Duration::from_secs(10), || {
        get(&lab).ok().filter(|b| b.contains("primary"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    eprintln!(
        "fallback backend after {} ms, primary again after {} ms",
        failover.as_millis(),
        t1.elapsed().as_millis()
    );
    let log = lab.stop_forwarder().unwrap();
    assert!(
        log.contains("new connections go to the fallback backend"),
        "{log}"
    );
    assert!(
        log.contains("new connections go to the backend again"),
        "{log}"
    );
}

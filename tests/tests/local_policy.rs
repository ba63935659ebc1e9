//! Host policy `local` as a visitor sees it: requests for that host are answered by the
//! VPS's own web server, over HTTPS and HTTP, even though the TCP handshake went home
//! before the name was known, and even when the name arrives in a later segment than the
//! first. The other hosts still reach home, and setting the policy back sends new
//! connections home again.

use std::time::{Duration, Instant};

use integration_tests::{
    CLIENT_V4, CLIENT_V6, LOCAL_PAGE_BYTES as BIG, Lab, LabOptions, SUBDOMAINS, VPS_V4, VPS_V6,
    missing_prerequisites, subdomain_hosts, wait_for,
};

const LOCAL: &str = SUBDOMAINS[1];

fn body(lab: &Lab, scheme: &str, host: &str) -> String {
    get(lab, scheme, host, "/", VPS_V4)
}

fn get(lab: &Lab, scheme: &str, host: &str, path: &str, addr: &str) -> String {
    match lab.curl(scheme, host, path, addr, &["--max-time", "10"]) {
        Ok((200, body)) => body,
        Ok((code, body)) => panic!(
            "{scheme}://{host}/: status {code}: {body}\n{}",
            lab.forwarder_output()
        ),
        Err(e) => panic!("{scheme}://{host}/: {e:#}\n{}", lab.forwarder_output()),
    }
}

#[test]
fn a_local_host_is_served_by_the_vps_and_the_others_go_home() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let hosts = subdomain_hosts().replace(
        &format!("name = \"{LOCAL}\"\n"),
        &format!("name = \"{LOCAL}\"\npolicy = \"local\"\n"),
    );
    let mut lab = Lab::new(&LabOptions {
        extra_config: hosts,
        ..LabOptions::default()
    })
    .expect("building the lab");
    let _local = lab
        .local_web_server()
        .expect("starting the local web server");
    lab.start_forwarder(&[]).expect("starting the forwarder");
    wait_for("home answering", Duration::from_secs(10), || {
        lab.curl("https", SUBDOMAINS[0], "/", VPS_V4, &["--max-time", "2"])
            .ok()
            .filter(|(code, _)| *code == 200)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));

    // The local host, over TLS (the server's certificate is the lab's: curl checks it) and
    // plain HTTP; several times, so that no connection leaks into the next.
    let mut slowest = Duration::ZERO;
    // Retransmissions on a timeout (RTO, at least 200 ms); a tail loss probe after 10 ms
    // is allowed: the daemon may take that long to rebuild the connection.
    let retrans = |lab: &Lab| integration_tests::client_snmp(lab)["TcpExt.TCPTimeouts"];
    let retrans_before = retrans(&lab);
    for round in 0..3 {
        for scheme in ["https", "http"] {
            let t = Instant::now();
            let b = body(&lab, scheme, LOCAL);
            slowest = slowest.max(t.elapsed());
            assert_eq!(b.trim(), format!("local {LOCAL}"), "{scheme} round {round}");
        }
    }
    // The client never waits for a retransmission timeout: the rebuilt socket
    // acknowledges the held-back segment at once. Counted by the client's kernel rather
    // than timed, which an emulated VM's slow process starts would blur.
    let retransmitted = retrans(&lab) - retrans_before;
    eprintln!(
        "slowest local request: {} ms, client retransmission timeouts: {retransmitted}",
        slowest.as_millis()
    );
    assert_eq!(
        retransmitted, 0,
        "the client retransmitted (slowest {slowest:?})"
    );
    // IPv6, and a download that takes many round trips: the rebuilt connection's window
    // scaling, SACK and timestamps are what the client agreed with home.
    for scheme in ["https", "http"] {
        let b = get(&lab, scheme, LOCAL, "/", VPS_V6);
        assert_eq!(b.trim(), format!("local {LOCAL}"), "{scheme} over IPv6");
    }
    for addr in [VPS_V4, VPS_V6] {
        let b = get(&lab, "https", LOCAL, "/big", addr);
        assert!(
            b.len() == BIG && b.bytes().all(|c| c == b'x'),
            "download over {addr}: {} bytes",
            b.len()
        );
    }
    // Home's side of every connection taken over was reset: none lingers there half-open
    // (nginx would wait a minute for the request that never comes).
    let home = lab.home.clone();
    let lingering = wait_for("home's connections reset", Duration::from_secs(5), || {
        let out = lab
            .exec(&home, &["ss", "-Htn", "state", "established"])
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.contains(CLIENT_V4) && !text.contains(CLIENT_V6)).then_some(())
    });
    if let Err(e) = lingering {
        let out = lab.exec(&home, &["ss", "-Htn", "state", "established"]);
        panic!("{e:#}: {out:?}\n{}", lab.forwarder_output());
    }
    // The others still reach home.
    for host in [SUBDOMAINS[0], SUBDOMAINS[2]] {
        let b = body(&lab, "https", host);
        assert!(b.contains("home") && b.contains(host), "{host}: {b}");
    }
    let log = lab.access_log();
    assert!(
        !log.contains(LOCAL),
        "home served a request for the local host:\n{log}"
    );

    // The ClientHello in segments of at most 160 bytes: the name is in a later segment than
    // the first, which went home already; the VPS's server must still get it whole.
    let client = lab.client.clone();
    lab.exec(
        &client,
        &[
            "ip", "route", "add", VPS_V4, "dev", "eth0", "mtu", "lock", "200",
        ],
    )
    .expect("lowering the client's path MTU");
    for scheme in ["https", "http"] {
        let b = body(&lab, scheme, LOCAL);
        assert_eq!(
            b.trim(),
            format!("local {LOCAL}"),
            "{scheme}, small segments"
        );
    }
    let b = body(&lab, "https", SUBDOMAINS[0]);
    assert!(b.contains("home"), "small segments, home: {b}");
    lab.exec(&client, &["ip", "route", "del", VPS_V4, "dev", "eth0"])
        .expect("restoring the client's path MTU");

    // What an operator sees.
    let out = lab.forwarder_cli(&["status"]).expect("running the CLI");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("connections served by the VPS") && text.contains(", 0 failed"),
        "{text}"
    );
    let metrics = lab.metrics_page().expect("metrics");
    assert!(
        metrics.contains("forwarder_local_connections_total{result=\"failed\"} 0"),
        "{metrics}"
    );
    // The policy goes back to forward: new connections go home.
    let out = lab
        .forwarder_cli(&["hosts", "set", LOCAL, "--policy", "forward"])
        .expect("running the CLI");
    assert!(out.status.success(), "{out:?}");
    let b = body(&lab, "https", LOCAL);
    assert!(
        b.contains("home") && b.contains(LOCAL),
        "after forward: {b}"
    );

    let out = lab.stop_forwarder().expect("stopping the forwarder");
    let c = Lab::counters(&out);
    assert!(
        c.get("policy_local").copied().unwrap_or(0) >= 12,
        "policy_local: {c:?}"
    );
    assert_eq!(c.get("handoff_lost").copied().unwrap_or(0), 0, "{c:?}");
}

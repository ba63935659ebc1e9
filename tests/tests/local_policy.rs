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

/// A made-up client address on the client's link: the VPS can send to it (a static
/// neighbour entry points it at the client namespace, which counts what arrives).
const VICTIM: &str = "203.0.113.77";

/// Sends raw IPv4 packets (their own headers, whatever source they claim) out of the
/// namespace `ns`, as a spoofing attacker does.
fn send_raw(ns: &str, packets: &[Vec<u8>]) {
    let ns = format!("/run/netns/{ns}");
    let packets = packets.to_vec();
    std::thread::spawn(move || {
        // This thread only: the namespace is left when it ends.
        let f = std::fs::File::open(&ns).expect("opening the namespace");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("entering it");
        // SAFETY: a plain socket(2) call; the result is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        for p in &packets {
            // SAFETY: a zeroed sockaddr_in is a valid value.
            let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            to.sin_family = libc::AF_INET as u16;
            to.sin_addr.s_addr = u32::from_ne_bytes(p[16..20].try_into().unwrap());
            // SAFETY: `p` and `to` are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    p.as_ptr().cast(),
                    p.len(),
                    0,
                    (&raw const to).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            assert_eq!(n, p.len() as isize, "{}", std::io::Error::last_os_error());
        }
    })
    .join()
    .expect("sending thread");
}

/// One of the kernel programs' counters, from the metrics page.
fn datapath(lab: &Lab, event: &str) -> u64 {
    let page = lab.metrics_page().unwrap_or_default();
    let want = format!("forwarder_datapath_packets_total{{event=\"{event}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Loads the nftables ruleset `text` in the namespace `ns`.
fn nft_file(lab: &Lab, ns: &str, name: &str, text: &str) {
    let path = lab.dir.join(name);
    std::fs::write(&path, text).expect("writing the ruleset");
    let out = lab
        .exec(ns, &["nft", "-f", &path.display().to_string()])
        .expect("nft");
    assert!(out.status.success(), "{name}: {out:?}");
}

/// Packets and bytes of the client namespace's nftables counter `name`.
fn nft_counter(lab: &Lab, name: &str) -> (u64, u64) {
    let out = lab
        .exec(
            &lab.client,
            &["nft", "list", "counter", "ip", "victim", name],
        )
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |k: &str| {
        text.split_whitespace()
            .skip_while(|w| *w != k)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {text}"))
    };
    (num("packets"), num("bytes"))
}

#[test]
fn a_forged_request_for_a_local_host_is_neither_served_nor_answered() {
    use integration_tests::bpf::{ACK, PSH, Pkt, SYN};
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
    wait_for("the local host served", Duration::from_secs(10), || {
        lab.curl("http", LOCAL, "/", VPS_V4, &["--max-time", "2"])
            .ok()
            .filter(|(code, _)| *code == 200)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let served_before = lab.stats_json().expect("stats")["local"]["served"].clone();

    // Whatever the VPS sends to the victim arrives in the client namespace and is
    // counted there (it owns no such address and drops it afterwards).
    let (client, vps, home) = (lab.client.clone(), lab.vps.clone(), lab.home.clone());
    let mac = lab
        .exec(&client, &["cat", "/sys/class/net/eth0/address"])
        .expect("client MAC");
    let mac = String::from_utf8_lossy(&mac.stdout).trim().to_owned();
    let ok = |o: std::process::Output| assert!(o.status.success(), "{o:?}");
    ok(lab
        .exec(
            &vps,
            &[
                "ip",
                "neigh",
                "replace",
                VICTIM,
                "lladdr",
                &mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        )
        .unwrap());
    let watch = format!(
        "table ip victim {{\n counter anything {{\n}}\n counter bulky {{\n}}
           chain pre {{ type filter hook prerouting priority -300;
             ip daddr {VICTIM} counter name anything
             ip daddr {VICTIM} meta length > 100 counter name bulky\n }}\n}}\n"
    );
    nft_file(&lab, &client, "victim.nft", &watch);

    let public: std::net::IpAddr = VPS_V4.parse().unwrap();
    let victim: std::net::IpAddr = VICTIM.parse().unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {LOCAL}\r\nAccept: */*\r\n\r\n");
    let forged = |port: u16, ack: u32| {
        let syn = Pkt::tcp(victim, port, public, 80, SYN).seq(0x1000_0000);
        let req = Pkt::tcp(victim, port, public, 80, ACK | PSH)
            .seq(0x1000_0001)
            .ack(ack)
            .payload(request.as_bytes());
        (syn.ip(), req.ip())
    };

    // 1. Home never answers the forged SYN (it drops it): the request that follows must
    // not be served, and the VPS must send the victim nothing at all.
    let drop_home = format!(
        "table ip forged {{\n chain pre {{ type filter hook prerouting priority -300;
           ip saddr {VICTIM} drop\n }}\n}}\n"
    );
    nft_file(&lab, &home, "forged.nft", &drop_home);
    for port in 41000..41010 {
        let (syn, req) = forged(port, 0x2000_0000);
        send_raw(&client, &[syn, req.clone(), req.clone(), req]);
    }
    wait_for(
        "the forged requests refused",
        Duration::from_secs(10),
        || {
            (datapath(&lab, "handoff_unproven") == 10
                && datapath(&lab, "drop_handoff_refused") == 20)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}: unproven {}, dropped {}\n{}",
            datapath(&lab, "handoff_unproven"),
            datapath(&lab, "drop_handoff_refused"),
            lab.forwarder_output()
        )
    });
    // A real connection still works, and comes after the forged ones in every queue: had
    // the VPS answered them, the answers would have been counted by now.
    let b = body(&lab, "http", LOCAL);
    assert_eq!(b.trim(), format!("local {LOCAL}"));
    assert_eq!(
        nft_counter(&lab, "anything"),
        (0, 0),
        "the VPS sent packets to the forged source"
    );

    // 2. Home answers the SYN (its SYN-ACK reaches the victim: what the SYN flood defence
    // is about), but the request does not acknowledge it: still no hand-off, and nothing
    // carrying data goes to the victim.
    ok(lab
        .exec(&home, &["nft", "delete", "table", "ip", "forged"])
        .unwrap());
    let (syn, req) = forged(42000, 0x2000_0000);
    send_raw(&client, &[syn]);
    wait_for(
        "home's SYN-ACK at the victim",
        Duration::from_secs(10),
        || (nft_counter(&lab, "anything").0 >= 1).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    send_raw(&client, &[req.clone(), req]);
    wait_for(
        "the forged request refused",
        Duration::from_secs(10),
        || (datapath(&lab, "handoff_unproven") == 11).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let b = body(&lab, "http", LOCAL);
    assert_eq!(b.trim(), format!("local {LOCAL}"));
    assert_eq!(
        nft_counter(&lab, "bulky").0,
        0,
        "the VPS sent data to the forged source"
    );
    let stats = lab.stats_json().expect("stats");
    assert_eq!(
        stats["local"]["served"].as_u64(),
        served_before.as_u64().map(|n| n + 2),
        "only the two real requests were served locally: {stats}"
    );
    assert_eq!(stats["local"]["failed"].as_u64(), Some(0), "{stats}");
    lab.stop_forwarder().expect("stopping the forwarder");
}

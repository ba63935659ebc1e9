//! Host policy `local` against visitors who abuse it: forged hand-off attempts (a SYN
//! from a made-up source, then a request for a `local` host) get nothing served and make
//! the VPS send nothing to the forged address; thousands of idle connections are bounded
//! by the daemon's file descriptor budget, refused beyond it, and closed after the idle
//! timeout, while the daemon keeps forwarding and answering.

use std::time::{Duration, Instant};

use integration_tests::{
    Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites, subdomain_hosts, wait_for,
};

const LOCAL: &str = SUBDOMAINS[1];

fn body(lab: &Lab, scheme: &str, host: &str) -> String {
    match lab.curl(scheme, host, "/", VPS_V4, &["--max-time", "10"]) {
        Ok((200, body)) => body,
        Ok((code, body)) => panic!(
            "{scheme}://{host}/: status {code}: {body}\n{}",
            lab.forwarder_output()
        ),
        Err(e) => panic!("{scheme}://{host}/: {e:#}\n{}", lab.forwarder_output()),
    }
}

fn local_hosts() -> String {
    subdomain_hosts().replace(
        &format!("name = \"{LOCAL}\"\n"),
        &format!("name = \"{LOCAL}\"\npolicy = \"local\"\n"),
    )
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
    let hosts = local_hosts();
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
        // The flow table stops them first: none completes its handshake, so none reaches
        // the name reader (whose own proof check is the second line).
        || (datapath(&lab, "drop_unconfirmed") == 30).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}: unconfirmed {}, unproven {}\n{}",
            datapath(&lab, "drop_unconfirmed"),
            datapath(&lab, "handoff_unproven"),
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
        || (datapath(&lab, "drop_unconfirmed") == 32).then_some(()),
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

/// A stand-in for the VPS's server that accepts connections and never answers, in the
/// VPS namespace on `addr`, until dropped: what a visitor holding connections open
/// meets.
struct SilentServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentServer {
    fn start(ns: &str, addr: &str) -> Self {
        use std::sync::{Arc, atomic::AtomicBool};
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, addr) = (format!("/run/netns/{ns}"), addr.to_owned());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let f = std::fs::File::open(&ns).expect("opening the namespace");
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("entering it");
                let l = std::net::TcpListener::bind(&addr).expect("binding the silent server");
                l.set_nonblocking(true).unwrap();
                ready_tx.send(()).unwrap();
                let mut held = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(300);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    match l.accept() {
                        Ok((s, _)) => held.push(s),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        ready.recv().expect("the silent server started");
        SilentServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens `n` connections from the namespace `ns` to `addr`, each sending `first`.
fn open_connections(ns: &str, addr: &str, n: usize, first: &[u8]) -> Vec<std::net::TcpStream> {
    let (ns, addr, first) = (format!("/run/netns/{ns}"), addr.to_owned(), first.to_vec());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("opening the namespace");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("entering it");
        (0..n)
            .map(|_| {
                let mut s = std::net::TcpStream::connect_timeout(
                    &addr.parse().unwrap(),
                    Duration::from_secs(5),
                )
                .expect("connecting");
                std::io::Write::write_all(&mut s, &first).expect("sending");
                s
            })
            .collect()
    })
    .join()
    .expect("connecting thread")
}

fn local_stat(lab: &Lab, field: &str) -> u64 {
    lab.stats_json()
        .and_then(|s| s["local"][field].as_u64())
        .unwrap_or(0)
}

#[test]
fn idle_relays_are_bounded_by_the_descriptor_limit_and_closed_when_idle() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    const IDLE: u64 = 5;
    const CONNECTIONS: usize = 2000;
    // The daemon's hard limit: 4096 descriptors, so at most (4096 - 512) / 2 relays, if it
    // raises its soft limit (1024, as systemd leaves it) at all: 256 otherwise.
    const BUDGET: u64 = 1792;
    // This process holds both ends: the clients' sockets and the server's.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard >= 2 * CONNECTIONS as u64 + 256,
        "this test needs {hard} descriptors"
    );
    let hosts = local_hosts();
    let mut lab = Lab::new(&LabOptions {
        extra_config: format!("{hosts}\n[local]\nidle_timeout_s = {IDLE}\n"),
        ..LabOptions::default()
    })
    .expect("building the lab");
    let vps = lab.vps.clone();
    let client = lab.client.clone();
    let _server = SilentServer::start(&vps, &format!("{VPS_V4}:80"));
    lab.start_forwarder_under(&["prlimit", "--nofile=1024:4096", "--"], &[])
        .expect("starting the forwarder");
    wait_for("home answering", Duration::from_secs(10), || {
        lab.curl("https", SUBDOMAINS[0], "/", VPS_V4, &["--max-time", "2"])
            .ok()
            .filter(|(code, _)| *code == 200)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    assert_eq!(
        local_stat(&lab, "budget"),
        BUDGET,
        "{}",
        lab.forwarder_output()
    );

    // Requests that name the host and then never end, 100 connections at a time (the
    // hand-off ring holds about 120 events).
    let request = format!("GET / HTTP/1.1\r\nHost: {LOCAL}\r\n");
    let addr = format!("{VPS_V4}:80");
    let mut conns = Vec::new();
    while conns.len() < CONNECTIONS {
        conns.extend(open_connections(&client, &addr, 100, request.as_bytes()));
        let want = conns.len() as u64;
        wait_for("the hand-offs", Duration::from_secs(20), || {
            (local_stat(&lab, "served") + local_stat(&lab, "refused") + local_stat(&lab, "failed")
                >= want)
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#} ({want})\n{}", lab.forwarder_output()));
    }
    let stats = lab.stats_json().expect("stats")["local"].clone();
    eprintln!("{CONNECTIONS} idle connections: {stats}");
    assert_eq!(stats["served"].as_u64(), Some(BUDGET), "{stats}");
    assert_eq!(stats["active"].as_u64(), Some(BUDGET), "{stats}");
    assert_eq!(
        stats["refused"].as_u64(),
        Some(CONNECTIONS as u64 - BUDGET),
        "{stats}"
    );
    assert_eq!(stats["failed"].as_u64(), Some(0), "{stats}");

    // With every relay in use, the daemon still forwards, answers its control socket and
    // serves its metrics.
    let b = body(&lab, "https", SUBDOMAINS[0]);
    assert!(b.contains("home"), "{b}");
    let out = lab.forwarder_cli(&["status"]).expect("running the CLI");
    assert!(out.status.success(), "{out:?}");
    let metrics = lab.metrics_page().expect("metrics");
    let refused = format!(
        "forwarder_local_refused_total {}",
        CONNECTIONS as u64 - BUDGET
    );
    assert!(metrics.contains(&refused), "{metrics}");

    // The idle timeout closes them all; their clients see the end.
    wait_for(
        "the idle relays closed",
        Duration::from_secs(IDLE + 20),
        || (local_stat(&lab, "active") == 0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    assert_eq!(local_stat(&lab, "closed_idle"), BUDGET);
    let (mut ended, mut open) = (0, 0);
    for c in &mut conns {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        match std::io::Read::read(c, &mut b) {
            // The relay's FIN, or the reset of a refused hand-off.
            Ok(0) => ended += 1,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => ended += 1,
            _ => open += 1,
        }
    }
    assert_eq!(
        (ended, open),
        (CONNECTIONS, 0),
        "connections still open after the idle timeout"
    );
    drop(conns);
    // And the host is served again. (A new connection on a port of one just closed
    // meets that connection's flow entries, which outlive it by 10 s and send it to the
    // VPS's stack directly: hence a fresh connection per try.)
    let before = local_stat(&lab, "served");
    let mut again = Vec::new();
    wait_for("a new relay", Duration::from_secs(20), || {
        again.extend(open_connections(&client, &addr, 1, request.as_bytes()));
        (local_stat(&lab, "served") > before).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    lab.stop_forwarder().expect("stopping the forwarder");
}

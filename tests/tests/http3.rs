//! HTTP/3's transport end to end: real QUIC connections (quinn, TLS 1.3) from the client
//! namespace to a QUIC server at home, through the forwarder and the WireGuard tunnel, to
//! the lab's three subdomains. With `http3 = true` the default rules forward UDP 443; the
//! daemon reads each connection's SNI from its Initial packets; `/stats.json` and the
//! metrics must then count, per host and under `quic`, exactly the connections made,
//! exactly the datagrams and bytes the client sent, and exactly those the client's kernel
//! received (what the server sent, less what the tunnel lost before the VPS); the server
//! must see the client's own address.

use std::{collections::BTreeMap, time::Duration};

use integration_tests::{
    CLIENT_V4, IpCounters, Lab, LabOptions, SUBDOMAINS, missing_prerequisites, subdomain_hosts,
    wait_for,
};
use serde_json::Value;

/// IPv4 and UDP headers: the forwarder counts IP packet lengths, the endpoints UDP
/// payloads.
const IP_UDP_HEADERS: u64 = 28;

/// What one side sent over its connections to one host: datagrams and IP bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sent {
    connections: u64,
    datagrams: u64,
    ip_bytes: u64,
}

impl Sent {
    fn add(&mut self, line: &Value) {
        let d = line["udp_tx"]["datagrams"].as_u64().unwrap();
        let b = line["udp_tx"]["bytes"].as_u64().unwrap();
        self.connections += 1;
        self.datagrams += d;
        self.ip_bytes += b + IP_UDP_HEADERS * d;
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn quic_connections_are_counted_per_host_exactly() {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(&LabOptions {
        extra_config: format!("http3 = true\n{}", subdomain_hosts()),
        ..LabOptions::default()
    })
    .expect("building the lab");
    let conn_log = lab.dir.join("conn.log");
    let conn_log_s = conn_log.display().to_string();
    lab.start_forwarder(&["--conn-log", &conn_log_s])
        .expect("starting the forwarder");

    let peer = std::path::Path::new(env!("CARGO_BIN_EXE_quic-peer"));
    let server_log = lab
        .start_quic_server(peer)
        .expect("starting the QUIC server");

    // Per subdomain: connections, bytes asked for each, and whether the ClientHello is
    // padded past one Initial packet (as a post-quantum one is).
    let plan = [
        (3u64, 200_000u64, true),
        (2, 1_000_000, false),
        (1, 20_000, false),
    ];
    let mut client_sent: BTreeMap<&str, Sent> = BTreeMap::new();
    let mut client_ports = BTreeMap::new();
    let mut client_ip: BTreeMap<&str, IpCounters> = BTreeMap::new();
    for (host, (count, bytes, big)) in SUBDOMAINS.iter().zip(plan) {
        let before = IpCounters::read(&lab);
        let out = lab
            .quic_client(peer, host, bytes, count as u32, big)
            .expect("running the QUIC client");
        assert!(
            out.status.success(),
            "QUIC client for {host} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            lab.forwarder_output()
        );
        let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(lines.len() as u64, count, "{host}: one line per connection");
        for l in &lines {
            assert_eq!(l["stream_bytes"].as_u64(), Some(bytes), "{host}: {l}");
            client_sent.entry(host).or_default().add(l);
            let port = l["local"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .to_owned();
            client_ports.insert(port, *host);
        }
        // Until nothing more arrives: the window holds this host's packets only.
        let mut last = IpCounters::read(&lab);
        wait_for(
            "the client's traffic to settle",
            Duration::from_secs(10),
            || {
                std::thread::sleep(Duration::from_millis(300));
                let now = IpCounters::read(&lab);
                let settled = now.in_pkts == last.in_pkts;
                last = now;
                settled.then_some(())
            },
        )
        .unwrap();
        client_ip.insert(host, last.since(before));
    }

    // The server's view: every connection came from the client's own address, with the
    // SNI it was made for; what the server sent goes back through the forwarder.
    let mut server_sent: BTreeMap<&str, Sent> = BTreeMap::new();
    let total: u64 = plan.iter().map(|p| p.0).sum();
    let lines = wait_for("the server's reports", Duration::from_secs(20), || {
        let lines = json_lines(&std::fs::read_to_string(&server_log).unwrap_or_default());
        (lines.len() as u64 == total).then_some(lines)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            std::fs::read_to_string(&server_log).unwrap_or_default()
        )
    });
    for l in &lines {
        let peer_addr = l["peer"].as_str().unwrap();
        let (ip, port) = peer_addr.rsplit_once(':').unwrap();
        assert_eq!(
            ip, CLIENT_V4,
            "the server sees the client's own address: {l}"
        );
        let host = client_ports[port];
        assert_eq!(l["sni"].as_str(), Some(host), "{l}");
        server_sent.entry(host).or_default().add(l);
    }

    // The forwarder's view, once every connection is attributed.
    let stats = wait_for(
        "QUIC connections attributed",
        Duration::from_secs(20),
        || {
            let s = lab.stats_json()?;
            let quic = |h: &str| -> Option<u64> {
                s["hosts"]
                .as_array()?
                .iter()
                .find(|x| x["host"] == h)?["protocols"]["quic"]["connections"]
                .as_u64()
            };
            SUBDOMAINS
                .iter()
                .zip(plan)
                .all(|(h, p)| quic(h) == Some(p.0))
                .then_some(s)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.forwarder_output()));
    let mut report = String::new();
    let mut errors = Vec::new();
    for host in SUBDOMAINS {
        let h = stats["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["host"] == host)
            .unwrap();
        let q = &h["protocols"]["quic"];
        let got = |k: &str| q[k].as_u64().unwrap();
        let (c, s, ip) = (client_sent[host], server_sent[host], client_ip[host]);
        report += &format!(
            "{host}: {} connections; to backend {} pkts / {} B (client sent {} / {}); \
             to client {} pkts / {} B (client received {} / {}, server sent {} / {})\n",
            got("connections"),
            got("packets_to_backend"),
            got("bytes_to_backend"),
            c.datagrams,
            c.ip_bytes,
            got("packets_to_client"),
            got("bytes_to_client"),
            ip.in_pkts,
            ip.in_bytes,
            s.datagrams,
            s.ip_bytes
        );
        if (got("packets_to_backend"), got("bytes_to_backend")) != (c.datagrams, c.ip_bytes) {
            errors.push(format!(
                "{host}: to_backend differs from what the client sent"
            ));
        }
        if (got("packets_to_client"), got("bytes_to_client")) != (ip.in_pkts, ip.in_bytes) {
            errors.push(format!(
                "{host}: to_client differs from what the client's kernel received"
            ));
        }
        if got("packets_to_client") > s.datagrams || got("bytes_to_client") > s.ip_bytes {
            errors.push(format!("{host}: more to_client than the server sent"));
        }
        if h["protocols"]["tcp"]["connections"].as_u64() != Some(0) {
            errors.push(format!("{host}: QUIC connections counted as TCP"));
        }
    }
    eprint!("{report}");
    if !errors.is_empty() {
        // What else saw these packets: the hosts they may have gone to instead, the
        // data path's counters, and both ends of the client's link.
        for h in stats["hosts"].as_array().unwrap() {
            if h["host"] == "unknown" || h["host"] == "other" {
                report += &format!("{}: quic {}\n", h["host"], h["protocols"]["quic"]);
            }
        }
        report += &format!("counters: {}\n", stats["counters"]);
        for ns in [lab.client.clone(), lab.vps.clone()] {
            if let Ok(out) = lab.exec(&ns, &["ip", "-s", "-s", "link", "show", "eth0"]) {
                report += &String::from_utf8_lossy(&out.stdout);
            }
            if let Ok(out) = lab.exec(&ns, &["ethtool", "-S", "eth0"]) {
                report += &String::from_utf8_lossy(&out.stdout);
            }
        }
    }
    assert!(errors.is_empty(), "{errors:#?}\n{report}");

    // Nothing was left to `unknown`, each connection was read from its Initials (two or
    // more for the padded ClientHellos), and the metrics carry the protocol label.
    let counters = &stats["counters"];
    assert_eq!(counters["classified_quic"].as_u64(), Some(total));
    assert!(counters["quic_initials"].as_u64().unwrap() >= total + plan[0].0);
    assert_eq!(counters["classify_quic_undecodable"].as_u64(), Some(0));
    assert_eq!(stats["quic"]["named"].as_u64(), Some(total));
    let unknown = stats["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["host"] == "unknown")
        .unwrap();
    assert_eq!(
        unknown["protocols"]["quic"]["packets_to_backend"].as_u64(),
        Some(0)
    );
    // The connection log names each QUIC connection's host when it is classified.
    let classified = wait_for("the connection log", Duration::from_secs(10), || {
        let lines = json_lines(&std::fs::read_to_string(&conn_log).unwrap_or_default());
        let quic: Vec<Value> = lines
            .into_iter()
            .filter(|l| l["event"] == "classified" && l["protocol"] == "quic")
            .collect();
        (quic.len() as u64 == total).then_some(quic)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            std::fs::read_to_string(&conn_log).unwrap_or_default()
        )
    });
    for l in &classified {
        let port = l["client_port"].as_u64().unwrap().to_string();
        assert_eq!(l["proto"], "udp", "{l}");
        assert_eq!(l["client"], CLIENT_V4, "{l}");
        assert_eq!(l["host"].as_str(), Some(client_ports[&port]), "{l}");
    }
    let metrics = lab.metrics_page().expect("metrics page");
    let want = format!(
        "forwarder_host_connections_total{{host=\"{}\",protocol=\"quic\"}} {}",
        SUBDOMAINS[1], plan[1].0
    );
    assert!(metrics.lines().any(|l| l == want), "{want} missing");
}

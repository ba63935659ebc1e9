//! A real Prometheus (the Debian package's server) runs in the VPS namespace, scrapes the
//! daemon's metrics endpoint every second, and its query API must show exactly the
//! connections the client made, per host label, with byte counters matching what the
//! client's own kernel sent and received.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_tests::{
    IpCounters, Lab, LabOptions, SUBDOMAINS, VPS_V4, missing_prerequisites, subdomain_hosts,
    wait_for,
};

const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// Prometheus's listener inside the VPS namespace: not 9090, so that nothing here is ever
/// confused with a host-level Prometheus the Debian package may have started.
const PROMETHEUS_PORT: u16 = 19090;
/// The daemon's default metrics endpoint (docs/metrics.md), inside the VPS namespace.
const METRICS_TARGET: &str = "127.0.0.1:9724";
/// A name no `[[host]]` matches: nginx's default server answers it, the forwarder counts
/// it as `other`.
const UNLISTED: &str = "unlisted.example.test";

fn lab() -> Lab {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    if !Path::new(PROMETHEUS_BIN).is_file() {
        panic!(
            "cannot run this test: {PROMETHEUS_BIN} is missing (install the Debian package \
             `prometheus`: `cargo xtask setup` does)"
        );
    }
    Lab::new(&LabOptions {
        extra_config: subdomain_hosts(),
        ..LabOptions::default()
    })
    .expect("building the lab")
}

/// The Prometheus server, a child process of this test, ended (by its PID) on drop, also
/// when the test panics. Declared after the lab, so it is dropped before the lab's
/// namespaces go away.
struct Prometheus {
    child: Child,
    log: PathBuf,
}

impl Prometheus {
    fn start(lab: &Lab) -> Self {
        let config = lab.dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: forwarder\n    static_configs:\n      \
                 - targets: [\"{METRICS_TARGET}\"]\n"
            ),
        )
        .expect("writing prometheus.yml");
        let log = lab.dir.join("prometheus.log");
        let out = fs::File::create(&log).expect("creating prometheus.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.vps, PROMETHEUS_BIN])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                lab.dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("starting prometheus");
        // `ip netns exec` execs the program: this PID is Prometheus itself.
        Prometheus { child, log }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails at once, with Prometheus's output, if it has exited.
    fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited with {status}:\n{}", self.output());
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        use nix::{
            sys::signal::{Signal, kill},
            unistd::Pid,
        };
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` (with a URL-encoded `query`) from inside the VPS namespace; `None` unless
/// the server answers 2xx.
fn vps_get(lab: &Lab, url: &str, query: Option<&str>) -> Option<String> {
    let mut args = vec!["curl", "-sSf", "--max-time", "5"];
    if let Some(q) = query {
        args.extend(["-G", "--data-urlencode", q]);
    }
    args.push(url);
    let out = lab.exec(&lab.vps, &args).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An instant query through Prometheus's HTTP API: each series' labels and value.
fn query(lab: &Lab, promql: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
    let url = format!("http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query");
    let body = vps_get(lab, &url, Some(&format!("query={promql}")))
        .ok_or_else(|| anyhow::anyhow!("query {promql:?} failed"))?;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    anyhow::ensure!(json["status"] == "success", "query {promql:?}: {body}");
    anyhow::ensure!(
        json["data"]["resultType"] == "vector",
        "query {promql:?}: {body}"
    );
    let mut series = Vec::new();
    for r in json["data"]["result"].as_array().into_iter().flatten() {
        let labels = r["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let value = r["value"][1]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("query {promql:?}: no value in {r}"))?
            .parse()?;
        series.push((labels, value));
    }
    Ok(series)
}

/// The single value of a query returning one series.
fn scalar(lab: &Lab, promql: &str) -> Option<f64> {
    match query(lab, promql).ok()?.as_slice() {
        [(_, v)] => Some(*v),
        _ => None,
    }
}

/// What the client observed for one host label.
#[derive(Clone, Copy, Debug, Default)]
struct ClientSide {
    connections: u64,
    ip: IpCounters,
    /// HTTP bytes curl sent (request line and headers) and received (headers and body).
    http_out: u64,
    http_in: u64,
}

/// How one request is addressed.
enum Target<'a> {
    /// `scheme://name/` with `name` resolved to the VPS: SNI and Host carry `name`.
    Name(&'a str, &'a str),
    /// `https://<VPS address>/`: an IP literal, so curl sends no SNI.
    HttpsIpLiteral,
}

/// One request from the client, on its own connection; returns once the connection has
/// fully closed (every client socket in TIME-WAIT), so that the client's IP counters
/// around it hold exactly its packets.
fn request(lab: &Lab, target: &Target) -> (u64, u64) {
    let cert = lab.cert().display().to_string();
    let mut args: Vec<String> = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_request} %{size_upload} %{size_header} %{size_download}",
    ]
    .map(String::from)
    .to_vec();
    match target {
        Target::Name(scheme, name) => {
            let port = if *scheme == "https" { 443 } else { 80 };
            args.push("--resolve".into());
            args.push(format!("{name}:{port}:{VPS_V4}"));
            if SUBDOMAINS.contains(name) {
                args.push("--cacert".into());
                args.push(cert);
            } else {
                // The lab's certificate does not name it; nginx's default server answers.
                args.push("-k".into());
            }
            args.push(format!("{scheme}://{name}/"));
        }
        Target::HttpsIpLiteral => {
            args.push("-k".into());
            args.push(format!("https://{VPS_V4}/"));
        }
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.exec(&lab.client, &argv).expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{argv:?}: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: Vec<u64> = text
        .split_whitespace()
        .map(|v| v.parse().expect("curl -w number"))
        .collect();
    assert_eq!(n.len(), 5, "curl -w output {text:?}");
    assert_eq!(n[0], 200, "{argv:?}");
    wait_for(
        "the client's connections to close",
        Duration::from_secs(10),
        || {
            let out = lab.exec(&lab.client, &["ss", "-Htan"]).ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .all(|l| l.starts_with("TIME-WAIT"))
                .then_some(())
        },
    )
    .expect("connection close");
    (n[1] + n[2], n[3] + n[4])
}

/// The forwarder's per-host series, as Prometheus stored them.
#[derive(Clone, Copy, Debug, Default)]
struct Forwarded {
    connections: u64,
    to_backend_pkts: u64,
    to_backend_bytes: u64,
    to_client_pkts: u64,
    to_client_bytes: u64,
}

fn forwarded_by_host(lab: &Lab) -> anyhow::Result<BTreeMap<String, Forwarded>> {
    let mut table: BTreeMap<String, Forwarded> = BTreeMap::new();
    for (metric, with_direction) in [
        ("forwarder_host_connections_total", false),
        ("forwarder_host_packets_total", true),
        ("forwarder_host_bytes_total", true),
    ] {
        for (labels, v) in query(lab, &format!("{metric}{{job=\"forwarder\"}}"))? {
            let host = labels.get("host").cloned().unwrap_or_default();
            let dir = labels.get("direction").map(String::as_str);
            let row = table.entry(host).or_default();
            let v = v as u64;
            // Summed over the `protocol` label (tcp, quic).
            match (metric, with_direction, dir) {
                (_, false, _) => row.connections += v,
                ("forwarder_host_packets_total", _, Some("to_backend")) => row.to_backend_pkts += v,
                ("forwarder_host_packets_total", _, Some("to_client")) => row.to_client_pkts += v,
                ("forwarder_host_bytes_total", _, Some("to_backend")) => row.to_backend_bytes += v,
                ("forwarder_host_bytes_total", _, Some("to_client")) => row.to_client_bytes += v,
                _ => anyhow::bail!("unexpected series {metric}{labels:?}"),
            }
        }
    }
    Ok(table)
}

/// Checks the forwarder's count of one direction against the client kernel's.
///
/// Every packet of these connections crosses the forwarder once and the client's IP layer
/// once, and both count IP total length (header included), so the byte counts are equal
/// as long as both see the same packets. They may not see the same *packetisation*:
/// wireguard-go can coalesce TCP segments it writes to its TUN device (one IP + TCP header
/// for several segments) and GRO/GSO on the veth can merge or split them again before the
/// client's IP layer. Each packet more on one side is one IPv4 header (20 bytes) plus one
/// TCP header (20 bytes, up to 60 with options; 32 with the timestamps Linux sends) more
/// on that side. So with Δp = forwarded packets − client packets, the byte difference must
/// lie between 40·Δp and 80·Δp (bounds swapped when Δp < 0), and is 0 when Δp is 0.
/// Δp itself is bounded by the number of multi-segment flights, at most a few per
/// connection (our responses are tiny; only a TLS server flight can exceed one MSS), so
/// |Δp| ≤ 4 per connection. Independently of the kernel's counters, the forwarded bytes
/// must hold at least the HTTP bytes curl reports plus 40 header bytes per packet.
fn check_direction(
    what: &str,
    (fwd_bytes, fwd_pkts): (u64, u64),
    (cli_bytes, cli_pkts): (u64, u64),
    http_bytes: u64,
    connections: u64,
) -> Result<(), String> {
    let dp = fwd_pkts as i64 - cli_pkts as i64;
    let db = fwd_bytes as i64 - cli_bytes as i64;
    let (lo, hi) = if dp >= 0 {
        (40 * dp, 80 * dp)
    } else {
        (80 * dp, 40 * dp)
    };
    // The first failed check only: one line per direction keeps the report readable.
    if dp.unsigned_abs() > 4 * connections {
        Err(format!(
            "{what}: {fwd_pkts} packets forwarded, the client counted {cli_pkts}"
        ))
    } else if !(lo..=hi).contains(&db) {
        Err(format!(
            "{what}: {fwd_bytes} bytes forwarded, the client counted {cli_bytes} \
             (difference {db}, allowed {lo}..={hi} for {dp} packets more)"
        ))
    } else if fwd_bytes < http_bytes + 40 * fwd_pkts {
        Err(format!(
            "{what}: {fwd_bytes} bytes forwarded < {http_bytes} HTTP bytes + 40 × {fwd_pkts} \
             packets"
        ))
    } else {
        Ok(())
    }
}

/// Compares one host's (or the total's) forwarded counters with the client's view.
fn check_row(what: &str, fwd: &Forwarded, cli: &ClientSide) -> Vec<String> {
    let mut errors = Vec::new();
    if fwd.connections != cli.connections {
        errors.push(format!(
            "{what}: {} connections counted, {} made",
            fwd.connections, cli.connections
        ));
    }
    for r in [
        check_direction(
            &format!("{what} to_backend"),
            (fwd.to_backend_bytes, fwd.to_backend_pkts),
            (cli.ip.out_bytes, cli.ip.out_pkts),
            cli.http_out,
            cli.connections,
        ),
        check_direction(
            &format!("{what} to_client"),
            (fwd.to_client_bytes, fwd.to_client_pkts),
            (cli.ip.in_bytes, cli.ip.in_pkts),
            cli.http_in,
            cli.connections,
        ),
    ] {
        errors.extend(r.err());
    }
    errors
}

fn table(
    forwarded: &BTreeMap<String, Forwarded>,
    expected: &BTreeMap<String, ClientSide>,
) -> String {
    let mut s = format!(
        "{:<20} {:>11} | {:>23} {:>23} | {:>23} {:>23}\n",
        "host",
        "conns/made",
        "to_backend pkts fwd/cli",
        "to_backend bytes",
        "to_client pkts fwd/cli",
        "to_client bytes"
    );
    let hosts: std::collections::BTreeSet<&String> =
        forwarded.keys().chain(expected.keys()).collect();
    for host in hosts {
        let f = forwarded.get(host).copied().unwrap_or_default();
        let c = expected.get(host).copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "{host:<20} {:>11} | {:>23} {:>23} | {:>23} {:>23}",
            format!("{}/{}", f.connections, c.connections),
            format!("{}/{}", f.to_backend_pkts, c.ip.out_pkts),
            format!("{}/{}", f.to_backend_bytes, c.ip.out_bytes),
            format!("{}/{}", f.to_client_pkts, c.ip.in_pkts),
            format!("{}/{}", f.to_client_bytes, c.ip.in_bytes),
        );
    }
    s
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[test]
fn prometheus_scrapes_exact_per_host_counts() {
    let started = Instant::now();
    let mut lab = lab();
    lab.start_forwarder(&[]).expect("starting the forwarder");
    let mut prometheus = Prometheus::start(&lab);

    let ready_url = format!("http://127.0.0.1:{PROMETHEUS_PORT}/-/ready");
    wait_for("Prometheus to be ready", Duration::from_secs(20), || {
        prometheus.check_running();
        vps_get(&lab, &ready_url, None)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", prometheus.output()));
    wait_for(
        "Prometheus to scrape the forwarder successfully",
        Duration::from_secs(15),
        || {
            prometheus.check_running();
            (scalar(&lab, "up{job=\"forwarder\"}") == Some(1.0)).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        let targets = vps_get(
            &lab,
            &format!("http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/targets"),
            None,
        );
        panic!("{e:#}\ntargets: {targets:?}\n{}", prometheus.output())
    });

    // The traffic, with a distinct number of connections per label so that a mix-up
    // between labels shows: (label, target, connections).
    let [app, blog, media] = SUBDOMAINS;
    let plan: Vec<(&str, Target, usize)> = vec![
        (app, Target::Name("http", app), 2),
        (app, Target::Name("https", app), 3),
        (blog, Target::Name("http", blog), 1),
        (blog, Target::Name("https", blog), 2),
        (media, Target::Name("http", media), 3),
        (media, Target::Name("https", media), 1),
        ("other", Target::Name("http", UNLISTED), 1),
        ("other", Target::Name("https", UNLISTED), 1),
        ("unknown", Target::HttpsIpLiteral, 1),
    ];
    let mut expected: BTreeMap<String, ClientSide> = BTreeMap::new();
    for (label, target, count) in &plan {
        for _ in 0..*count {
            let before = IpCounters::read(&lab);
            let (http_out, http_in) = request(&lab, target);
            let ip = IpCounters::read(&lab).since(before);
            let e = expected.entry((*label).to_owned()).or_default();
            e.connections += 1;
            e.ip.add(ip);
            e.http_out += http_out;
            e.http_in += http_in;
        }
    }
    let traffic_done = now_unix();
    let requests: u64 = expected.values().map(|c| c.connections).sum();

    // Wait for a scrape that began after the last packet (the client's last ACK reaches the
    // XDP program within microseconds; 0.5 s is a wide margin), and counted every connection.
    wait_for(
        "a scrape after the traffic, counting every connection",
        Duration::from_secs(15),
        || {
            prometheus.check_running();
            let scraped = scalar(&lab, "timestamp(up{job=\"forwarder\"})")?;
            let conns = scalar(
                &lab,
                "sum(forwarder_host_connections_total{job=\"forwarder\"})",
            )?;
            (scraped > traffic_done + 0.5 && conns == requests as f64).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{}",
            forwarded_by_host(&lab)
                .map(|f| table(&f, &expected))
                .unwrap_or_else(|e| format!("{e:#}"))
        )
    });
    let forwarded = forwarded_by_host(&lab).expect("querying Prometheus");
    let mut all_fwd = Forwarded::default();
    for r in forwarded.values() {
        all_fwd.connections += r.connections;
        all_fwd.to_backend_pkts += r.to_backend_pkts;
        all_fwd.to_backend_bytes += r.to_backend_bytes;
        all_fwd.to_client_pkts += r.to_client_pkts;
        all_fwd.to_client_bytes += r.to_client_bytes;
    }
    let mut all_cli = ClientSide::default();
    for r in expected.values() {
        all_cli.connections += r.connections;
        all_cli.ip.add(r.ip);
        all_cli.http_out += r.http_out;
        all_cli.http_in += r.http_in;
    }
    // Whatever the labels, the totals are the client's traffic.
    let errors = check_row("all hosts", &all_fwd, &all_cli);
    assert!(
        errors.is_empty(),
        "{}\n\n{}",
        errors.join("\n"),
        table(&forwarded, &expected)
    );
    // Labels: the configured hosts, other and unknown, nothing else.
    let mut labels: Vec<&str> = SUBDOMAINS.to_vec();
    labels.extend(["other", "unknown"]);
    labels.sort_unstable();
    assert_eq!(
        forwarded.keys().map(String::as_str).collect::<Vec<_>>(),
        labels,
        "\n{}",
        table(&forwarded, &expected)
    );

    // Per host: exact connections, bytes within the bound. The counts are final (the scrape
    // above followed the traffic); the short wait only covers a classification that lands
    // a scrape later.
    let mut last = (forwarded, Vec::new());
    let per_host = wait_for("the per-host counts", Duration::from_secs(5), || {
        let forwarded = forwarded_by_host(&lab).ok()?;
        let errors: Vec<String> = expected
            .iter()
            .flat_map(|(host, cli)| {
                check_row(host, &forwarded.get(host).copied().unwrap_or_default(), cli)
            })
            .collect();
        if errors.is_empty() {
            return Some(forwarded);
        }
        last = (forwarded, errors);
        None
    });
    match per_host {
        Ok(forwarded) => println!(
            "{}\n(wall time {:?})",
            table(&forwarded, &expected),
            started.elapsed()
        ),
        Err(e) => panic!(
            "{e:#}: per-host counters differ from the client's traffic:\n{}\n\n{}",
            last.1.join("\n"),
            table(&last.0, &expected)
        ),
    }
}

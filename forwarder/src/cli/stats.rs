//! `forwarder stats`: fetches `/stats.json` from the running daemon and shows it as a
//! per-host table, as JSON, or refreshed like `top` with per-second rates.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::api::stats::{HostSnapshot, Snapshot};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted (a full host table is well below this).
const MAX_RESPONSE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(
        "cannot reach the forwarder daemon at {addr}: is `forwarder run` running? (metrics address {addr}; choose another with --metrics-addr)"
    )]
    Unreachable {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon at {addr} answered with a malformed response: {why}")]
    BadResponse { addr: SocketAddr, why: String },
    #[error("the daemon at {addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
    #[error("the daemon at {addr} sent statistics this version cannot read")]
    Json {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing to standard output")]
    Output(#[source] std::io::Error),
}

/// A plain HTTP/1.1 GET on loopback (no proxy, no redirects, no TLS); returns the status
/// and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), StatsError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .timeout_connect(Some(TIMEOUT))
        .timeout_send_request(Some(TIMEOUT))
        .timeout_recv_response(Some(TIMEOUT))
        .timeout_recv_body(Some(TIMEOUT))
        .user_agent("forwarder-stats")
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{addr}{path}"))
        .header("Connection", "close")
        .call()
        .map_err(|e| StatsError::from_ureq(addr, e))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE)
        .read_to_vec()
        .map_err(|e| StatsError::from_ureq(addr, e))?;
    Ok((status, body))
}

impl StatsError {
    /// Failures to talk are the daemon being unreachable; anything else is its answer's
    /// fault.
    fn from_ureq(addr: SocketAddr, e: ureq::Error) -> Self {
        use std::io::{Error, ErrorKind};
        let source = match e {
            ureq::Error::Io(e) => e,
            ureq::Error::Timeout(_) => Error::new(ErrorKind::TimedOut, e.to_string()),
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                Error::other(e.to_string())
            }
            e => {
                return StatsError::BadResponse {
                    addr,
                    why: e.to_string(),
                };
            }
        };
        StatsError::Unreachable { addr, source }
    }
}

/// Fetches the daemon's statistics.
pub fn fetch(addr: SocketAddr) -> Result<Snapshot, StatsError> {
    let (status, body) = http_get(addr, "/stats.json")?;
    if status != 200 {
        return Err(StatsError::Status {
            addr,
            status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|source| StatsError::Json { addr, source })
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`, ...
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `999`, `12.3k`, `4.5M`, ... for packet and connection counts.
pub fn human_count(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}k", n as f64 / 1e3),
        10_000_000..10_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

fn rate(cur: u64, prev: u64, secs: f64) -> f64 {
    // A restarted daemon starts from zero: show no negative rates.
    cur.saturating_sub(prev) as f64 / secs
}

fn human_rate_bytes(r: f64) -> String {
    format!("{}/s", human_bytes(r.round() as u64))
}

fn human_rate_count(r: f64) -> String {
    if r < 10.0 && r.fract() != 0.0 {
        format!("{r:.1}/s")
    } else {
        format!("{}/s", human_count(r.round() as u64))
    }
}

/// The per-host table. With `prev` (the previous snapshot and the seconds between the
/// two) the counters are shown as per-second rates.
pub fn render_table(cur: &Snapshot, prev: Option<(&Snapshot, f64)>) -> String {
    let mut out = String::new();
    let ft = &cur.flow_table;
    let pct = if ft.capacity > 0 {
        ft.entries as f64 * 100.0 / ft.capacity as f64
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "forwarder {}  up {}  mode {}  tunnel {} {}{}",
        cur.version,
        human_duration(cur.uptime_seconds),
        cur.attach_mode,
        cur.tunnel.iface,
        if cur.tunnel.up { "up" } else { "DOWN" },
        match cur.tunnel.handshake_age_seconds {
            Some(age) => format!(", handshake {} ago", human_duration(age)),
            None => String::new(),
        },
    );
    let _ = writeln!(
        out,
        "flow table {}/{} entries ({pct:.1}%), {} opening, ~{} evicted",
        ft.entries, ft.capacity, ft.opening, ft.evictions_estimate
    );
    if !cur.backends.is_empty() {
        let list: Vec<String> = cur
            .backends
            .iter()
            .map(|b| {
                let state = if b.up { "up" } else { "DOWN" };
                format!("{} {state} {}", b.backend, human_duration(b.since_seconds))
            })
            .collect();
        let _ = writeln!(out, "backends {}", list.join(", "));
    }
    if !cur.host_stats_available {
        let _ = writeln!(
            out,
            "(the kernel programs keep no per-host statistics: only active flows are counted)"
        );
    }
    let rates = prev.filter(|(_, secs)| *secs > 0.0);
    if let Some((_, secs)) = rates {
        let _ = writeln!(out, "rates over the last {secs:.1} s");
    }
    let _ = writeln!(out);
    let header = [
        "HOST",
        if rates.is_some() { "CONN/s" } else { "CONNS" },
        // Of those, over QUIC (HTTP/3).
        if rates.is_some() { "QUIC/s" } else { "QUIC" },
        "FLOWS",
        "PKTS>BE",
        "BYTES>BE",
        "PKTS>CL",
        "BYTES>CL",
        "DROPS",
    ];
    let quic = |h: &HostSnapshot| h.protocols.get("quic").map_or(0, |p| p.connections);
    let mut rows: Vec<[String; 9]> = Vec::with_capacity(cur.hosts.len());
    for h in &cur.hosts {
        let row = match rates {
            Some((p, secs)) => {
                let before = p.hosts.iter().find(|x| x.host == h.host);
                let b = |f: fn(&HostSnapshot) -> u64| before.map_or(f(h), f);
                [
                    h.host.clone(),
                    human_rate_count(rate(h.connections, b(|x| x.connections), secs)),
                    human_rate_count(rate(quic(h), before.map_or(quic(h), quic), secs)),
                    h.active_flows.to_string(),
                    human_rate_count(rate(
                        h.packets_to_backend,
                        b(|x| x.packets_to_backend),
                        secs,
                    )),
                    human_rate_bytes(rate(h.bytes_to_backend, b(|x| x.bytes_to_backend), secs)),
                    human_rate_count(rate(h.packets_to_client, b(|x| x.packets_to_client), secs)),
                    human_rate_bytes(rate(h.bytes_to_client, b(|x| x.bytes_to_client), secs)),
                    human_rate_count(rate(h.drops_total(), b(HostSnapshot::drops_total), secs)),
                ]
            }
            None => [
                h.host.clone(),
                human_count(h.connections),
                human_count(quic(h)),
                h.active_flows.to_string(),
                human_count(h.packets_to_backend),
                human_bytes(h.bytes_to_backend),
                human_count(h.packets_to_client),
                human_bytes(h.bytes_to_client),
                human_count(h.drops_total()),
            ],
        };
        rows.push(row);
    }
    // Left-aligned names, right-aligned numbers, two spaces between columns, no borders.
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_header(header)
        .add_rows(rows);
    for (i, column) in table.column_iter_mut().enumerate() {
        if i == 0 {
            column.set_padding((0, 0));
        } else {
            column.set_padding((2, 0));
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    out.push_str(&table.trim_fmt());
    out.push('\n');
    out
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Prints the table (or the JSON document) once.
pub fn show(addr: SocketAddr, json: bool) -> Result<(), StatsError> {
    let snap = fetch(addr)?;
    let text = if json {
        let mut t = serde_json::to_string_pretty(&snap)
            .map_err(|source| StatsError::Json { addr, source })?;
        t.push('\n');
        t
    } else {
        render_table(&snap, None)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(StatsError::Output)
}

/// Refreshes the table every `interval` until interrupted, showing per-second rates.
pub fn watch(addr: SocketAddr, interval: Duration) -> Result<(), StatsError> {
    let mut prev: Option<(Snapshot, Instant)> = None;
    loop {
        let snap = fetch(addr)?;
        let at = Instant::now();
        let table = match &prev {
            Some((p, t)) => render_table(&snap, Some((p, at.duration_since(*t).as_secs_f64()))),
            None => render_table(&snap, None),
        };
        let mut stdout = std::io::stdout().lock();
        // Clear the screen and go home, like `watch`.
        write!(
            stdout,
            "\x1b[2J\x1b[H{table}\n(every {:.1} s; Ctrl-C to quit)\n",
            interval.as_secs_f64()
        )
        .and_then(|()| stdout.flush())
        .map_err(StatsError::Output)?;
        prev = Some((snap, at));
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::snapshot::tests::sample;

    #[test]
    fn units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(human_count(9999), "9999");
        assert_eq!(human_count(12_345), "12.3k");
        assert_eq!(human_count(45_600_000), "45.6M");
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(3725), "1h02m");
        assert_eq!(human_duration(200_000), "2d7h");
    }

    #[test]
    fn table_lists_every_host_with_totals() {
        let t = render_table(&sample(), None);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].contains("mode xdp-driver") && lines[0].contains("wg0 up"),
            "{t}"
        );
        assert!(lines[1].contains("6/262144"), "{t}");
        let header = lines.iter().position(|l| l.starts_with("HOST")).unwrap();
        let rows = &lines[header + 1..];
        let hosts: Vec<&str> = rows
            .iter()
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            hosts,
            ["app.example.com", "*.example.com", "other", "unknown"]
        );
        // app.example.com: id 2 in the sample: 3 connections (none over QUIC), 1 flow, 30
        // packets / 4.4 KiB to the backend, 60 packets / 8.6 MiB to the client, 4 drops.
        let app: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(
            app,
            [
                "app.example.com",
                "3",
                "0",
                "1",
                "30",
                "4.4",
                "KiB",
                "60",
                "8.6",
                "MiB",
                "4"
            ]
        );
        // Columns line up: every row as long as the header (right-aligned numbers).
        let width = lines[header].len();
        assert!(rows.iter().all(|r| r.len() == width), "{t}");
    }

    #[test]
    fn watch_table_shows_rates() {
        let before = sample();
        let mut after = sample();
        after.hosts[0].connections += 20;
        after.hosts[0]
            .protocols
            .get_mut("quic")
            .unwrap()
            .connections += 4;
        after.hosts[0].bytes_to_client += 10 << 20;
        after.hosts[0].packets_to_backend += 5;
        // A host whose counters went down (daemon restarted) shows zero, not garbage.
        after.hosts[1].bytes_to_backend = 0;
        let t = render_table(&after, Some((&before, 2.0)));
        assert!(t.contains("rates over the last 2.0 s"), "{t}");
        assert!(t.contains("CONN/s"), "{t}");
        let row: Vec<&str> = t
            .lines()
            .find(|l| l.starts_with("app.example.com"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            row,
            [
                "app.example.com",
                "10/s",
                "2/s",
                "1",
                "2.5/s",
                "0",
                "B/s",
                "0/s",
                "5.0",
                "MiB/s",
                "0/s"
            ]
        );
        let star: Vec<&str> = t
            .lines()
            .find(|l| l.starts_with("*.example.com"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(star[5], "0");
    }

    #[test]
    fn json_output_is_the_document() {
        let s = sample();
        let text = serde_json::to_string_pretty(&s).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["hosts"][0]["host"], "app.example.com");
        assert_eq!(v["flow_table"]["capacity"], 262_144);
        assert_eq!(v["counters"]["xdp_rx"], 0);
    }

    #[test]
    fn responses_parse() {
        /// What `http_get` makes of `raw`, sent by a one-shot server that then closes.
        fn answer(raw: &'static [u8]) -> Result<(u16, Vec<u8>), StatsError> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut head = [0u8; 1024];
                let _ = std::io::Read::read(&mut s, &mut head);
                let _ = s.write_all(raw);
            });
            let out = http_get(addr, "/stats.json");
            server.join().unwrap();
            out
        }
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(answer(raw).unwrap(), (200, b"{}".to_vec()));
        let raw = b"HTTP/1.1 404 Not Found\r\n\r\nnope\n";
        assert_eq!(answer(raw).unwrap(), (404, b"nope\n".to_vec()));
        assert!(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(answer(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(answer(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn an_unreachable_daemon_is_explained() {
        // A port nothing listens on: bind one, learn its number, close it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = fetch(addr).unwrap_err().to_string();
        assert!(e.contains("is `forwarder run` running?"), "{e}");
        assert!(e.contains(&addr.to_string()), "{e}");
    }
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// The daemon's --metrics-addr.
    #[arg(long, value_name = "ADDR", default_value = crate::observe::http::DEFAULT_METRICS_ADDR)]
    pub metrics_addr: crate::observe::http::MetricsAddr,
    /// Print the statistics document as JSON.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Refresh every SECONDS (default 2) with per-second rates, until Ctrl-C.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
}

/// `forwarder stats`.
pub fn command(args: StatsArgs) -> anyhow::Result<()> {
    let crate::observe::http::MetricsAddr::On(addr) = args.metrics_addr else {
        anyhow::bail!("--metrics-addr off: give the address the daemon serves its metrics on");
    };
    match args.watch {
        Some(secs) => {
            if !(0.2..=3600.0).contains(&secs) {
                anyhow::bail!("--watch {secs}: the interval must be between 0.2 and 3600 seconds");
            }
            watch(addr, Duration::from_secs_f64(secs))?;
        }
        None => show(addr, args.json)?,
    }
    Ok(())
}

//! `cargo xtask soak --minutes N`: mixed traffic through the lab for N minutes while rules
//! change and the daemon is restarted once; at the end nothing the client did not cause
//! failed, the per-host counters equal what the client and home's nginx counted, and the
//! daemon's memory and file descriptors are flat.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    lab::{Lab, LabOptions, SUBDOMAINS, VPS_V4},
    support::wait_for,
};

/// What one kind of client traffic did.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub requests: u64,
    pub failed: u64,
    /// TCP connections curl opened (`%{num_connects}`).
    pub connections: u64,
    pub bytes: u64,
    /// The first few failures, for the report.
    pub errors: Vec<String>,
}

/// The daemon's resident memory and open file descriptors at one moment.
#[derive(Debug, Clone, Default)]
pub struct Footprint {
    pub rss_kib: u64,
    /// What each descriptor points at (`socket:[…]`, `anon_inode:bpf-map`, a path), so a
    /// failure says what kind leaked.
    pub fds: Vec<String>,
}

impl Footprint {
    /// Descriptor kinds, with the socket and pipe inode numbers dropped, and their counts.
    fn kinds(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for f in &self.fds {
            let kind = f.split_once(":[").map_or(f.as_str(), |(k, _)| k);
            *m.entry(kind.to_owned()).or_insert(0) += 1;
        }
        m
    }
}

/// The daemon's footprint once it settled: descriptors sampled for two seconds, keeping the
/// sample with the fewest, so a health probe or a CLI connection in flight at one instant
/// is not taken for growth (a leak stays in every sample).
fn settled_footprint(pid: u32) -> anyhow::Result<Footprint> {
    let mut best = footprint(pid)?;
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(200));
        let f = footprint(pid)?;
        if f.fds.len() < best.fds.len() {
            best.fds = f.fds;
        }
        best.rss_kib = f.rss_kib;
    }
    Ok(best)
}

fn footprint(pid: u32) -> anyhow::Result<Footprint> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .collect();
    Ok(Footprint { rss_kib: rss, fds })
}

/// What the traffic threads need of the lab: the client's namespace and the CA to trust.
#[derive(Clone)]
struct Client {
    ns: String,
    cert: String,
}

/// One curl run from the client: `urls` in order, each line of `-w` parsed into the tally.
fn curl_batch(client: &Client, host: &str, urls: &[String], extra: &[&str], t: &mut Tally) {
    let cert = client.cert.clone();
    let mut args: Vec<String> = [
        "curl",
        "-sS",
        "--max-time",
        "60",
        "--cacert",
        &cert,
        "--resolve",
        &format!("{host}:443:{VPS_V4}"),
        "--resolve",
        &format!("{host}:80:{VPS_V4}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{num_connects} %{size_download}\\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    // Each URL needs its own `-o`.
    for (i, u) in urls.iter().enumerate() {
        if i > 0 {
            args.push("-o".into());
            args.push("/dev/null".into());
        }
        args.push(u.clone());
    }
    let out = match std::process::Command::new("ip")
        .args(["netns", "exec", &client.ns])
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            t.failed += urls.len() as u64;
            t.errors.push(format!("running curl: {e}"));
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = 0;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(code), Some(conns), Some(size)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        seen += 1;
        t.connections += conns.parse::<u64>().unwrap_or(0);
        if code == "200" {
            t.requests += 1;
            t.bytes += size.parse::<u64>().unwrap_or(0);
        } else {
            t.failed += 1;
            if t.errors.len() < 5 {
                t.errors.push(format!(
                    "HTTP {code}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    if seen < urls.len() {
        t.failed += (urls.len() - seen) as u64;
        if t.errors.len() < 5 {
            t.errors.push(format!(
                "{} of {} transfers missing: {}",
                urls.len() - seen,
                urls.len(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
}

/// The traffic mix, one thread each, until `stop`.
fn worker(client: &Client, kind: usize, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut t = Tally::default();
        match kind {
            // Kept-alive HTTPS: one connection, 20 requests.
            0 => {
                let host = SUBDOMAINS[0];
                let urls: Vec<String> = (0..20)
                    .map(|k| format!("https://{host}/?k{i}-{k}"))
                    .collect();
                curl_batch(client, host, &urls, &[], &mut t);
            }
            // A new connection per request, plain HTTP.
            1 => {
                let host = SUBDOMAINS[1];
                let urls: Vec<String> = (0..10)
                    .map(|k| format!("http://{host}/?n{i}-{k}"))
                    .collect();
                curl_batch(client, host, &urls, &["-H", "Connection: close"], &mut t);
            }
            // Bulk HTTPS downloads.
            _ => {
                let host = SUBDOMAINS[2];
                curl_batch(client, host, &[format!("https://{host}/big")], &[], &mut t);
            }
        }
        let mut all = tally.lock().unwrap();
        all.requests += t.requests;
        all.failed += t.failed;
        all.connections += t.connections;
        all.bytes += t.bytes;
        for e in t.errors {
            if all.errors.len() < 5 {
                all.errors.push(e);
            }
        }
        i += 1;
    }
}

#[derive(Debug)]
pub struct Report {
    pub minutes: f64,
    pub per_host: BTreeMap<&'static str, Tally>,
    /// Connections per host from the daemon's metrics, and requests per host in nginx's log.
    pub counted_connections: BTreeMap<&'static str, u64>,
    pub nginx_requests: BTreeMap<&'static str, u64>,
    /// Connections counted under `unknown` and `other` (none of the traffic's), and the
    /// kernel's classification counters that moved, for the report.
    pub unattributed: u64,
    pub classify: Vec<String>,
    pub rule_changes: u32,
    /// The daemon after warming up and at the end (the restarted one).
    pub footprint_start: Footprint,
    pub footprint_end: Footprint,
}

/// Runs the soak for `minutes` and checks its end state; the report says what happened.
pub fn run(minutes: f64) -> anyhow::Result<Report> {
    ensure!(minutes > 0.0, "--minutes must be positive");
    let hosts: String = SUBDOMAINS
        .iter()
        .map(|h| format!("[[host]]\nname = \"{h}\"\n"))
        .collect();
    let mut lab = Lab::new(&LabOptions {
        extra_config: hosts,
        big_file_bytes: 4 << 20,
        ..LabOptions::default()
    })?;
    lab.start_forwarder(&[])?;
    let total = Duration::from_secs_f64(minutes * 60.0);
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..3).map(|_| Arc::default()).collect();
    let client = Client {
        ns: lab.client.clone(),
        cert: lab.cert().display().to_string(),
    };
    let handles: Vec<_> = (0..3)
        .map(|k| {
            let (client, stop, tally) =
                (client.clone(), Arc::clone(&stop), Arc::clone(&tallies[k]));
            thread::spawn(move || worker(&client, k, &stop, &tally))
        })
        .collect();
    let t0 = Instant::now();
    let pid = |lab: &Lab| lab.forwarder_pid().context("daemon not running");
    // Warm-up before the first footprint: buffers, tokio's threads, first connections.
    thread::sleep(total.mul_f64(0.1).min(Duration::from_secs(10)));
    let mut footprint_start = settled_footprint(pid(&lab)?)?;
    let mut rule_changes = 0u32;
    let mut restarted = false;
    let mut n = 0u32;
    let result = (|| -> anyhow::Result<()> {
        while t0.elapsed() < total {
            thread::sleep(Duration::from_secs(3).min(total.saturating_sub(t0.elapsed())));
            let l = &lab;
            // A rule and a host come and go while traffic flows (neither is used by it).
            let args: &[&str] = match n % 4 {
                0 => &["hosts", "add", "soak.example.test"],
                1 => &["rules", "add", "--port", "8443", "--backend", "10.8.0.2"],
                2 => &["hosts", "remove", "soak.example.test"],
                _ => &["rules", "remove", "--port", "8443"],
            };
            let out = l.forwarder_cli(args)?;
            ensure!(
                out.status.success(),
                "forwarder {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            rule_changes += 1;
            n += 1;
            if !restarted && t0.elapsed() >= total / 2 {
                // SIGTERM, then a new daemon adopts the pinned data path; traffic goes on.
                lab.stop_forwarder()?;
                lab.start_forwarder(&[])?;
                restarted = true;
                // The new daemon writes its pid file once attached; its other tasks (metrics
                // server, readers, health checks) start after. Its metrics page answering
                // says they are up; then the same warm-up as the first daemon had.
                wait_for(
                    "the restarted daemon's metrics",
                    Duration::from_secs(30),
                    || lab.metrics_page().map(|_| ()),
                )?;
                thread::sleep(Duration::from_secs(5));
                footprint_start = settled_footprint(pid(&lab)?)?;
            }
        }
        Ok(())
    })();
    // The traffic threads end however the loop did.
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a traffic thread panicked"))?;
    }
    result?;
    let footprint_end = settled_footprint(pid(&lab)?)?;
    let l = &lab;
    let page = l.metrics_page().context("metrics page")?;
    let log = l.access_log();
    let mut per_host = BTreeMap::new();
    let mut counted_connections = BTreeMap::new();
    let mut nginx_requests = BTreeMap::new();
    for (k, host) in SUBDOMAINS.iter().enumerate() {
        per_host.insert(*host, tallies[k].lock().unwrap().clone());
        let want = format!("forwarder_host_connections_total{{host=\"{host}\",protocol=\"tcp\"}} ");
        let c = page
            .lines()
            .find_map(|x| x.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        counted_connections.insert(*host, c);
        let r = log
            .lines()
            .filter(|x| x.split_whitespace().nth(1) == Some(host))
            .count() as u64;
        nginx_requests.insert(*host, r);
    }
    let unattributed = ["unknown", "other"]
        .iter()
        .filter_map(|h| {
            let want =
                format!("forwarder_host_connections_total{{host=\"{h}\",protocol=\"tcp\"}} ");
            page.lines()
                .find_map(|x| x.strip_prefix(&want))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum();
    let classify = page
        .lines()
        .filter(|x| {
            x.starts_with("forwarder_datapath_packets_total{event=\"classif") && !x.ends_with(" 0")
        })
        .map(str::to_owned)
        .collect();
    Ok(Report {
        minutes: t0.elapsed().as_secs_f64() / 60.0,
        unattributed,
        classify,
        per_host,
        counted_connections,
        nginx_requests,
        rule_changes,
        footprint_start,
        footprint_end,
    })
}

impl Report {
    /// Everything the soak promises, or what broke.
    pub fn check(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        for (host, t) in &self.per_host {
            if t.requests == 0 {
                problems.push(format!("{host}: no request succeeded"));
            }
            if t.failed > 0 {
                problems.push(format!(
                    "{host}: {} requests failed: {:?}",
                    t.failed, t.errors
                ));
            }
            let counted = self.counted_connections[host];
            if counted != t.connections {
                problems.push(format!(
                    "{host}: the daemon counted {counted} connections, the client made {}",
                    t.connections
                ));
            }
            let served = self.nginx_requests[host];
            if served != t.requests {
                problems.push(format!(
                    "{host}: nginx served {served} requests, the client got {}",
                    t.requests
                ));
            }
        }
        let (rss0, fd0) = (self.footprint_start.rss_kib, self.footprint_start.fds.len());
        let (rss1, fd1) = (self.footprint_end.rss_kib, self.footprint_end.fds.len());
        // Flat: allocator noise and tokio's worker stacks, not growth with traffic.
        if rss1 > rss0 + 8 * 1024 {
            problems.push(format!(
                "the daemon's memory grew from {rss0} KiB to {rss1} KiB"
            ));
        }
        if fd1 > fd0 + 2 {
            let (k0, k1) = (self.footprint_start.kinds(), self.footprint_end.kinds());
            let grew: Vec<String> = k1
                .iter()
                .filter_map(|(k, n1)| {
                    let n0 = k0.get(k).copied().unwrap_or(0);
                    (*n1 > n0).then(|| format!("{k} {n0} -> {n1}"))
                })
                .collect();
            problems.push(format!(
                "the daemon's file descriptors grew from {fd0} to {fd1} ({})",
                grew.join(", ")
            ));
        }
        if !problems.is_empty() {
            bail!("soak failed:\n  {}", problems.join("\n  "));
        }
        Ok(())
    }

    pub fn print(&self) {
        println!(
            "soak: {:.1} min, {} rule changes, one daemon restart",
            self.minutes, self.rule_changes
        );
        println!(
            "{:<20} {:>9} {:>7} {:>12} {:>12} {:>12} {:>12}",
            "host", "requests", "failed", "connections", "daemon conns", "nginx reqs", "bytes"
        );
        for (host, t) in &self.per_host {
            println!(
                "{:<20} {:>9} {:>7} {:>12} {:>12} {:>12} {:>12}",
                host,
                t.requests,
                t.failed,
                t.connections,
                self.counted_connections[host],
                self.nginx_requests[host],
                t.bytes
            );
        }
        println!(
            "connections counted under unknown or other: {}",
            self.unattributed
        );
        for c in &self.classify {
            println!("  {c}");
        }
        println!(
            "daemon after warm-up: {} KiB, {} fds; at the end: {} KiB, {} fds",
            self.footprint_start.rss_kib,
            self.footprint_start.fds.len(),
            self.footprint_end.rss_kib,
            self.footprint_end.fds.len()
        );
    }
}

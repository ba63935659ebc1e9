//! The forwarder side by side with what self-hosters run today, in one lab and one run:
//! the same client, tunnel and home server, the configurations on the VPS interleaved
//! (A B A B ...), so that drift of the machine hits every configuration alike.
//!
//! Configurations kept in the repository (`deploy/bench/`): hand-written nftables DNAT
//! with conntrack and MSS clamping (the baseline every figure is a ratio to), HAProxy
//! passing TLS through by SNI, and Caddy terminating TLS and proxying home.

use std::{
    fmt::Write as _,
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{Lab, LabOptions, SUBDOMAINS, VPS_V4, run};

/// What runs on the VPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setup {
    Forwarder,
    /// The forwarder without XDP (`--xdp-mode off`): tc translates. Shows what XDP costs
    /// or saves on the lab's veth interface, whose native XDP differs from a real NIC's.
    #[serde(rename = "forwarder-tc-only")]
    ForwarderTcOnly,
    Nftables,
    /// HAProxy in TCP mode routing by SNI (`deploy/bench/haproxy.cfg`).
    Haproxy,
    /// Caddy terminating TLS and proxying home (`deploy/bench/Caddyfile`).
    Caddy,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::Forwarder,
        Setup::ForwarderTcOnly,
        Setup::Nftables,
        Setup::Haproxy,
        Setup::Caddy,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Setup::Forwarder => "forwarder",
            Setup::ForwarderTcOnly => "forwarder (tc only)",
            Setup::Nftables => "nftables",
            Setup::Haproxy => "HAProxy (SNI passthrough)",
            Setup::Caddy => "Caddy (TLS terminated)",
        }
    }
}

/// A load pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Every request on a new TCP + TLS connection (`Connection: close`), as fast as wrk
    /// goes.
    NewConnectionHttps,
    /// Requests on kept-alive TLS connections, as fast as wrk goes.
    KeepAliveHttps,
    /// New-connection HTTPS at a fixed offered load far below what any setup saturates
    /// at, for the CPU it costs per request.
    FixedRateHttps,
    /// One large HTTPS download: throughput and CPU per GB.
    Bulk,
    /// `FixedRateHttps` while a SYN flood and a junk-UDP flood hit the VPS.
    Flood,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::NewConnectionHttps,
        Workload::KeepAliveHttps,
        Workload::FixedRateHttps,
        Workload::Bulk,
        Workload::Flood,
    ];
    /// The workloads compared by requests per second (table and chart).
    pub const THROUGHPUT: [Workload; 2] = [Workload::NewConnectionHttps, Workload::KeepAliveHttps];

    pub const fn name(self) -> &'static str {
        match self {
            Workload::NewConnectionHttps => "new-connection HTTPS",
            Workload::KeepAliveHttps => "keep-alive HTTPS",
            Workload::FixedRateHttps => "new-connection HTTPS, fixed load",
            Workload::Bulk => "bulk HTTPS download",
            Workload::Flood => "fixed load under SYN + UDP flood",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub setup: Setup,
    pub workload: Workload,
    pub repetition: u32,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests wrk counted as failed (socket errors and non-2xx answers).
    pub errors: u64,
    /// Requests completed.
    #[serde(default)]
    pub requests: u64,
    /// Busy CPU time of the whole machine (/proc/stat) per 10k requests, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_10k: Option<f64>,
    /// The same without the client's load generator (its own CPU time, from rusage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_10k_without_client: Option<f64>,
    /// Of that: both wireguard-go processes, and home's nginx (master and workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_cpu_s_per_10k: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_cpu_s_per_10k: Option<f64>,
    /// Fixed load, forwarder setups: CPU time the forwarder's kernel programs took per
    /// request (µs) and how many times they ran per request, from the kernel's own
    /// accounting (`kernel.bpf_stats_enabled`), summed over its programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_us_per_request: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_runs_per_request: Option<f64>,
    /// Bulk: download throughput in MB/s and busy CPU seconds per GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_gb: Option<f64>,
    /// Flood: frames per second the flood generator sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood_pps: Option<f64>,
}

impl Sample {
    fn new(setup: Setup, workload: Workload, repetition: u32) -> Self {
        Sample {
            setup,
            workload,
            repetition,
            requests_per_second: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            errors: 0,
            requests: 0,
            cpu_s_per_10k: None,
            cpu_s_per_10k_without_client: None,
            tunnel_cpu_s_per_10k: None,
            home_cpu_s_per_10k: None,
            bpf_us_per_request: None,
            bpf_runs_per_request: None,
            mb_per_s: None,
            cpu_s_per_gb: None,
            flood_pps: None,
        }
    }

    /// Share of the requests that succeeded.
    pub fn success_rate(&self) -> f64 {
        let all = self.requests + self.errors;
        if all == 0 {
            0.0
        } else {
            self.requests as f64 / all as f64
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub repetitions: u32,
    pub seconds: u32,
    pub connections: u32,
    /// Size of the bulk download.
    pub bulk_bytes: usize,
}

impl Options {
    pub const QUICK: Options = Options {
        repetitions: 2,
        seconds: 2,
        connections: 16,
        bulk_bytes: 16 << 20,
    };
    pub const FULL: Options = Options {
        repetitions: 5,
        seconds: 10,
        connections: 32,
        bulk_bytes: 256 << 20,
    };
}

/// The fixed load: this many connections, each waiting this long between a response and
/// its next request (about 140 requests per second in the lab, a tenth of what the
/// slowest setup reaches).
const FIXED_CONNECTIONS: u32 = 8;
const FIXED_DELAY_MS: u32 = 50;

/// The nftables configuration a careful user writes by hand: DNAT of the forwarded ports
/// into the tunnel (conntrack translates the replies back) and the same MSS clamping the
/// forwarder does. `{public}` and `{backend}` are filled in.
pub const NFTABLES_RULES: &str = include_str!("../../deploy/bench/nftables.conf");
pub const HAPROXY_CONFIG: &str = include_str!("../../deploy/bench/haproxy.cfg");
pub const CADDYFILE: &str = include_str!("../../deploy/bench/Caddyfile");

/// A proxy of a setup, ended by PID when the setup is torn down.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fill(template: &str, lab: &Lab) -> String {
    template
        .replace("{public}", VPS_V4)
        .replace("{backend}", crate::HOME_WG_V4)
        .replace("{cert}", &lab.cert().display().to_string())
        .replace("{key}", &lab.dir.join("key.pem").display().to_string())
}

/// Starts `args` in the VPS namespace and waits until something listens on 443 there.
fn start_proxy(
    lab: &Lab,
    name: &str,
    args: &[&str],
    env: &[(&str, PathBuf)],
) -> anyhow::Result<Proxy> {
    let log = fs::File::create(lab.dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.vps])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proxy = Proxy(cmd.spawn().with_context(|| format!("starting {name}"))?);
    let listening = crate::wait_for(
        &format!("{name} listening"),
        std::time::Duration::from_secs(15),
        || {
            if let Ok(Some(status)) = proxy.0.try_wait() {
                return Some(Err(status));
            }
            let out = lab
                .exec(&lab.vps, &["ss", "-Hltn", "sport", "=", ":443"])
                .ok()?;
            (!out.stdout.is_empty()).then_some(Ok(()))
        },
    );
    match listening {
        Ok(Ok(())) => Ok(proxy),
        Ok(Err(status)) => bail!(
            "{name} exited with {status}: {}",
            fs::read_to_string(lab.dir.join(format!("{name}.log"))).unwrap_or_default()
        ),
        Err(e) => {
            let _ = proxy.0.kill();
            Err(e)
        }
    }
}

/// Makes `/etc/hosts` inside `ns` (what `ip netns exec` mounts over the real one) resolve
/// the lab's subdomains to the VPS, for tools that take a URL and no address.
struct NetnsHosts {
    dir: PathBuf,
}

impl NetnsHosts {
    fn new(ns: &str) -> anyhow::Result<Self> {
        let dir = PathBuf::from("/etc/netns").join(ns);
        fs::create_dir_all(&dir)?;
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for s in SUBDOMAINS {
            let _ = writeln!(hosts, "{VPS_V4} {s}");
        }
        fs::write(dir.join("hosts"), hosts)?;
        Ok(Self { dir })
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn setup_on(lab: &mut Lab, setup: Setup) -> anyhow::Result<Option<Proxy>> {
    match setup {
        // Not pinned: stopping it must leave the VPS as it found it.
        Setup::Forwarder => lab
            .start_forwarder(&["--no-pin", "--metrics-addr", "off"])
            .map(|()| None),
        Setup::ForwarderTcOnly => lab
            .start_forwarder(&["--no-pin", "--metrics-addr", "off", "--xdp-mode", "off"])
            .map(|()| None),
        Setup::Haproxy => {
            let path = lab.dir.join("haproxy.cfg");
            fs::write(&path, fill(HAPROXY_CONFIG, lab))?;
            let path = path.display().to_string();
            start_proxy(lab, "haproxy", &["haproxy", "-db", "-f", &path], &[]).map(Some)
        }
        Setup::Caddy => {
            let path = lab.dir.join("Caddyfile");
            fs::write(&path, fill(CADDYFILE, lab))?;
            let path = path.display().to_string();
            let home = lab.dir.join("caddy");
            fs::create_dir_all(&home)?;
            start_proxy(
                lab,
                "caddy",
                &["caddy", "run", "--adapter", "caddyfile", "--config", &path],
                &[
                    ("HOME", home.clone()),
                    ("XDG_DATA_HOME", home.join("data")),
                    ("XDG_CONFIG_HOME", home.join("config")),
                ],
            )
            .map(Some)
        }
        Setup::Nftables => {
            let path = lab.dir.join("nftables.conf");
            fs::write(&path, fill(NFTABLES_RULES, lab))?;
            ip_forwarding(lab, true)?;
            run(Command::new("ip")
                .args(["netns", "exec", &lab.vps, "nft", "-f"])
                .arg(&path))?;
            Ok(None)
        }
    }
}

/// The VPS's IPv4 forwarding, which only the nftables setup uses.
fn ip_forwarding(lab: &Lab, on: bool) -> anyhow::Result<()> {
    let setting = format!("net.ipv4.ip_forward={}", u8::from(on));
    run(Command::new("ip").args(["netns", "exec", &lab.vps, "sysctl", "-qw", &setting]))?;
    Ok(())
}

fn teardown(lab: &mut Lab, setup: Setup, proxy: Option<Proxy>) -> anyhow::Result<()> {
    drop(proxy);
    match setup {
        Setup::Haproxy | Setup::Caddy => Ok(()),
        Setup::Forwarder | Setup::ForwarderTcOnly => lab.stop_forwarder().map(|_| ()),
        Setup::Nftables => {
            run(Command::new("ip").args([
                "netns", "exec", &lab.vps, "nft", "delete", "table", "ip", "fwdbench",
            ]))?;
            // The flood's half-open connections would otherwise still fill the table when
            // the next repetition measures nftables.
            run(Command::new("ip").args(["netns", "exec", &lab.vps, "conntrack", "-F"]))?;
            ip_forwarding(lab, false)?;
            Ok(())
        }
    }
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub requests: u64,
}

/// Busy CPU time of the whole machine so far, in seconds (/proc/stat: everything but idle
/// and iowait).
fn cpu_busy_seconds() -> anyhow::Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(v.len() >= 8, "short cpu line: {line}");
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(busy as f64 / hz)
}

/// CPU seconds this process's finished children used so far (the load generators).
fn children_cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    u.map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// One wrk run from the client namespace: as fast as it goes, or (`fixed`) at the fixed
/// load.
fn wrk(lab: &Lab, workload: Workload, o: &Options, fixed: bool) -> anyhow::Result<Wrk> {
    let url = format!("https://{}/", SUBDOMAINS[0]);
    let seconds = format!("{}s", o.seconds);
    let conns = if fixed {
        FIXED_CONNECTIONS
    } else {
        o.connections
    }
    .to_string();
    let script = lab.dir.join("fixed-rate.lua");
    let script = script.display().to_string();
    let mut args = vec![
        "wrk",
        "-t2",
        "-c",
        &conns,
        "-d",
        &seconds,
        "--timeout",
        "5s",
        "--latency",
    ];
    if fixed {
        fs::write(
            &script,
            format!("function delay()\n  return {FIXED_DELAY_MS}\nend\n"),
        )?;
        args.extend(["-s", &script]);
    }
    if workload != Workload::KeepAliveHttps {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(&url);
    let out = lab.exec(&lab.client, &args)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// Requests per second, p50 and p99 latency in ms, failed and completed requests.
pub fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("no Requests/sec line")?
        .trim()
        .parse()?;
    let pct = |p: &str| -> anyhow::Result<f64> {
        let v = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .with_context(|| format!("no {p} latency line"))?
            .trim();
        duration_ms(v)
    };
    let mut errors = 0;
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|f| f.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>()?;
        }
    }
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .context("no requests line")?
        .0
        .trim()
        .parse()?;
    Ok(Wrk {
        rps,
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
        errors,
        requests,
    })
}

fn duration_ms(v: &str) -> anyhow::Result<f64> {
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .context("latency without unit")?;
    let n: f64 = num.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => bail!("unknown latency unit {unit:?}"),
    })
}

/// The workloads of one setup, in order.
fn run_workloads(
    lab: &Lab,
    setup: Setup,
    repetition: u32,
    o: &Options,
    samples: &mut Vec<Sample>,
) -> anyhow::Result<()> {
    for workload in Workload::ALL {
        let mut s = Sample::new(setup, workload, repetition);
        match workload {
            Workload::NewConnectionHttps | Workload::KeepAliveHttps => {
                let w = wrk(lab, workload, o, false)?;
                s.fill(&w);
            }
            Workload::FixedRateHttps => {
                let of = |what: &str| -> f64 {
                    lab.pids(what)
                        .into_iter()
                        .map(crate::process_cpu_seconds)
                        .sum()
                };
                // On for every setup alike: it adds two clock reads to each program run.
                let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
                let bpf0 = forwarder_programs_run();
                let (cpu0, client0) = (cpu_busy_seconds()?, children_cpu_seconds());
                let (tunnel0, home0) = (of("wireguard-go"), of("nginx"));
                let w = wrk(lab, workload, o, true)?;
                let (cpu, client) = (cpu_busy_seconds()? - cpu0, children_cpu_seconds() - client0);
                let (tunnel, home) = (of("wireguard-go") - tunnel0, of("nginx") - home0);
                let bpf = forwarder_programs_run();
                drop(stats);
                s.fill(&w);
                if w.requests > 0 {
                    if stats_counted(bpf0, bpf) {
                        let n = w.requests as f64;
                        s.bpf_us_per_request = Some((bpf.0 - bpf0.0) * 1e6 / n);
                        s.bpf_runs_per_request = Some((bpf.1 - bpf0.1) as f64 / n);
                    }
                    let per = 10_000.0 / w.requests as f64;
                    s.cpu_s_per_10k = Some(cpu * per);
                    s.cpu_s_per_10k_without_client = Some((cpu - client).max(0.0) * per);
                    s.tunnel_cpu_s_per_10k = Some(tunnel * per);
                    s.home_cpu_s_per_10k = Some(home * per);
                }
            }
            Workload::Bulk => {
                let url = format!("https://{}/big", SUBDOMAINS[0]);
                let cert = lab.cert().display().to_string();
                let cpu0 = cpu_busy_seconds()?;
                let out = lab.exec(
                    &lab.client,
                    &[
                        "curl",
                        "-sS",
                        "--max-time",
                        "120",
                        "--cacert",
                        &cert,
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{size_download} %{time_total}",
                        &url,
                    ],
                )?;
                let cpu = cpu_busy_seconds()? - cpu0;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (size, secs) = text
                    .trim()
                    .split_once(' ')
                    .with_context(|| format!("curl's output: {text}"))?;
                let (size, secs): (f64, f64) = (size.parse()?, secs.parse()?);
                if !out.status.success() || size as usize != o.bulk_bytes {
                    bail!(
                        "bulk download: {size} of {} bytes: {}",
                        o.bulk_bytes,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                s.mb_per_s = Some(size / secs / 1e6);
                s.cpu_s_per_gb = Some(cpu / (size / 1e9));
            }
            Workload::Flood => {
                let flood = crate::flood::Flood::start(lab.flood_target()?)?;
                let w = wrk(lab, workload, o, true);
                let (_, pps) = flood.stop()?;
                s.fill(&w?);
                s.flood_pps = Some(pps);
            }
        }
        samples.push(s);
    }
    Ok(())
}

/// Total run time (s) and runs of the forwarder's kernel programs (named `fwd_*`),
/// as the kernel accounts them while its statistics are on. Tail-called programs (the
/// name readers) are part of their caller's time.
fn forwarder_programs_run() -> (f64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("fwd_")))
        .fold((0.0, 0), |(t, n), p| {
            (t + p.run_time().as_secs_f64(), n + p.run_count())
        })
}

/// Whether the forwarder's programs ran (and were accounted) between two snapshots.
fn stats_counted(before: (f64, u64), after: (f64, u64)) -> bool {
    after.1 > before.1
}

impl Sample {
    fn fill(&mut self, w: &Wrk) {
        self.requests_per_second = w.rps;
        self.p50_ms = w.p50_ms;
        self.p99_ms = w.p99_ms;
        self.errors = w.errors;
        self.requests = w.requests;
    }
}

/// Builds the lab and measures every setup and workload `o.repetitions` times, interleaved.
pub fn measure(o: &Options) -> anyhow::Result<Vec<Sample>> {
    let mut lab = Lab::new(&LabOptions {
        extra_config: "[[rule]]\nport = 443\n".into(),
        big_file_bytes: o.bulk_bytes,
        ..LabOptions::default()
    })?;
    // Replies to the flood's made-up sources leave through the client's side, as through
    // a VPS's default gateway (the client does not forward them).
    let vps = lab.vps.clone();
    lab.exec(
        &vps,
        &["ip", "route", "add", "default", "via", crate::CLIENT_V4],
    )?;
    let _hosts = NetnsHosts::new(&lab.client)?;
    let mut samples = Vec::new();
    for repetition in 0..o.repetitions {
        for setup in Setup::ALL {
            let proxy = setup_on(&mut lab, setup)?;
            let result = (|| -> anyhow::Result<()> {
                // A first request makes sure the path works before it is timed.
                let (code, _) = lab.curl("https", SUBDOMAINS[0], "/", VPS_V4, &[])?;
                if code != 200 {
                    bail!("{}: HTTP {code}", setup.name());
                }
                run_workloads(&lab, setup, repetition, o, &mut samples)
            })();
            teardown(&mut lab, setup, proxy)?;
            result.with_context(|| format!("measuring {}", setup.name()))?;
        }
    }
    Ok(samples)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The markdown table: medians with their spread (min..max), and ratios to nftables.
pub fn table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| workload | setup | requests/s (min..max) | vs nftables | p50 ms | p99 ms | vs nftables p99 | errors |\n|---|---|---|---|---|---|---|---|\n",
    );
    for w in Workload::THROUGHPUT {
        let of = |s: Setup| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|x| x.workload == w && x.setup == s)
                .collect()
        };
        let base = of(Setup::Nftables);
        let base_rps = median(base.iter().map(|x| x.requests_per_second).collect());
        let base_p99 = median(base.iter().map(|x| x.p99_ms).collect());
        for s in Setup::ALL {
            let v = of(s);
            if v.is_empty() {
                continue;
            }
            let rps: Vec<f64> = v.iter().map(|x| x.requests_per_second).collect();
            let (lo, hi) = rps
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
            let m = median(rps);
            let p50 = median(v.iter().map(|x| x.p50_ms).collect());
            let p99 = median(v.iter().map(|x| x.p99_ms).collect());
            let errors: u64 = v.iter().map(|x| x.errors).sum();
            let _ = writeln!(
                out,
                "| {} | {} | {m:.0} ({lo:.0}..{hi:.0}) | {:.2}x | {p50:.2} | {p99:.2} | {:.2}x | {errors} |",
                w.name(),
                s.name(),
                m / base_rps,
                p99 / base_p99,
            );
        }
    }
    out
}

/// The second table: CPU per request at the fixed load, bulk throughput and CPU per GB,
/// and the fixed load under a flood, each with its ratio to nftables.
pub fn cost_table(samples: &[Sample]) -> String {
    let of = |w: Workload, s: Setup| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|x| x.workload == w && x.setup == s)
            .collect()
    };
    let med = |w: Workload, s: Setup, f: &dyn Fn(&Sample) -> Option<f64>| -> f64 {
        median(of(w, s).into_iter().filter_map(f).collect())
    };
    let mut out = String::from(
        "| setup | CPU s / 10k req (fixed load) | vs nftables | without the client | vs nftables | of which wireguard-go | home nginx | of which BPF µs / req (runs) | bulk MB/s | vs nftables | CPU s / GB | vs nftables | under flood: ok % | p99 ms | vs idle p99 | flood pps |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let n = Setup::Nftables;
    let fixed = Workload::FixedRateHttps;
    let base_cpu = med(fixed, n, &|x| x.cpu_s_per_10k);
    let base_cpu_wo = med(fixed, n, &|x| x.cpu_s_per_10k_without_client);
    let base_mb = med(Workload::Bulk, n, &|x| x.mb_per_s);
    let base_gb = med(Workload::Bulk, n, &|x| x.cpu_s_per_gb);
    for s in Setup::ALL {
        if of(fixed, s).is_empty() {
            continue;
        }
        let cpu = med(fixed, s, &|x| x.cpu_s_per_10k);
        let cpu_wo = med(fixed, s, &|x| x.cpu_s_per_10k_without_client);
        let tunnel = med(fixed, s, &|x| x.tunnel_cpu_s_per_10k);
        let home = med(fixed, s, &|x| x.home_cpu_s_per_10k);
        let bpf_us = med(fixed, s, &|x| x.bpf_us_per_request);
        let bpf = if bpf_us.is_finite() {
            let runs = med(fixed, s, &|x| x.bpf_runs_per_request);
            format!("{bpf_us:.1} ({runs:.0})")
        } else {
            "-".to_string()
        };
        let mb = med(Workload::Bulk, s, &|x| x.mb_per_s);
        let gb = med(Workload::Bulk, s, &|x| x.cpu_s_per_gb);
        let idle_p99 = med(fixed, s, &|x| Some(x.p99_ms));
        let flood = of(Workload::Flood, s);
        let (ok, all) = flood.iter().fold((0, 0), |(a, b), x| {
            (a + x.requests, b + x.requests + x.errors)
        });
        let ok_pct = if all == 0 {
            0.0
        } else {
            100.0 * ok as f64 / all as f64
        };
        let fp99 = med(Workload::Flood, s, &|x| Some(x.p99_ms));
        let pps = med(Workload::Flood, s, &|x| x.flood_pps);
        let _ = writeln!(
            out,
            "| {} | {cpu:.1} | {:.2}x | {cpu_wo:.1} | {:.2}x | {tunnel:.1} | {home:.1} | {bpf} | {mb:.0} | {:.2}x | {gb:.1} | {:.2}x | {ok_pct:.1} | {fp99:.1} | {:.1}x | {pps:.0} |",
            s.name(),
            cpu / base_cpu,
            cpu_wo / base_cpu_wo,
            mb / base_mb,
            gb / base_gb,
            fp99 / idle_p99,
        );
    }
    out
}

/// A bar chart (SVG) of each setup's median requests per second relative to nftables, one
/// group of bars per workload.
pub fn chart(samples: &[Sample], path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let ratio = |w: Workload, s: Setup| -> f64 {
        let m = |s: Setup| {
            median(
                samples
                    .iter()
                    .filter(|x| x.workload == w && x.setup == s)
                    .map(|x| x.requests_per_second)
                    .collect(),
            )
        };
        m(s) / m(Setup::Nftables)
    };
    let n = Setup::ALL.len();
    let groups = Workload::THROUGHPUT.len();
    let top = Workload::THROUGHPUT
        .iter()
        .flat_map(|w| Setup::ALL.map(|s| ratio(*w, s)))
        .filter(|r| r.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let slots = groups * (n + 1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Requests per second relative to nftables DNAT (same run, median)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..slots as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("x nftables")
        .draw()?;
    for (g, w) in Workload::THROUGHPUT.iter().enumerate() {
        for (i, s) in Setup::ALL.iter().enumerate() {
            let r = ratio(*w, *s);
            if !r.is_finite() {
                continue;
            }
            let x0 = (g * (n + 1) + i) as f64 + 0.5;
            let color = Palette99::pick(i);
            let bars = chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x0 + 0.9, r)],
                color.filled(),
            )))?;
            // One legend entry per setup: the colours repeat in every group.
            if g == 0 {
                bars.label(s.name()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            }
        }
        let mid = (g * (n + 1)) as f64 + (n as f64 + 1.0) / 2.0;
        chart.draw_series(std::iter::once(Text::new(
            w.name(),
            (mid - 1.5, -top * 0.04),
            ("sans-serif", 15),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Runs the comparison and prints the table; the samples go to `json` if given, and a
/// chart next to it (`.svg`).
pub fn compare(o: &Options, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    let samples = std::thread::spawn({
        let o = *o;
        move || measure(&o)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("comparison thread panicked"))??;
    println!(
        "\nSide by side in the lab ({} repetitions of {} s per configuration and workload, {} connections, interleaved):\n",
        o.repetitions, o.seconds, o.connections
    );
    print!("{}", table(&samples));
    println!(
        "\nCost at a fixed load ({FIXED_CONNECTIONS} connections, {FIXED_DELAY_MS} ms between requests), bulk download ({} MB), and the fixed load under a SYN + junk-UDP flood:\n",
        o.bulk_bytes >> 20
    );
    print!("{}", cost_table(&samples));
    if let Some(path) = json {
        fs::write(path, serde_json::to_string_pretty(&samples)?)?;
        let svg = path.with_extension("svg");
        chart(&samples, &svg)?;
        println!("\nsamples: {}\nchart: {}", path.display(), svg.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 2s test @ https://app.example.test/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.10ms    2.00ms  30.00ms   80.00%
  Latency Distribution
     50%    4.80ms
     75%    6.00ms
     90%    7.50ms
     99%    1.20s
  2000 requests in 2.00s, 300.00KB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1000.50
Transfer/sec:    150.00KB
";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.rps, 1000.5);
        assert_eq!(w.p50_ms, 4.8);
        assert_eq!(w.p99_ms, 1200.0);
        assert_eq!(w.errors, 9);
        assert_eq!(w.requests, 2000);
        assert!(parse_wrk("nothing").is_err());
        assert_eq!(duration_ms("750.00us").unwrap(), 0.75);
    }

    #[test]
    fn the_cost_table_gives_ratios_to_nftables() {
        let mut samples = Vec::new();
        for (i, setup) in Setup::ALL.into_iter().enumerate() {
            let k = 1.0 + i as f64;
            samples.push(Sample {
                p99_ms: 10.0,
                requests: 1000,
                cpu_s_per_10k: Some(4.0 * k),
                cpu_s_per_10k_without_client: Some(2.0 * k),
                tunnel_cpu_s_per_10k: Some(1.5),
                home_cpu_s_per_10k: Some(0.5),
                bpf_us_per_request: matches!(setup, Setup::Forwarder).then_some(4.25),
                bpf_runs_per_request: matches!(setup, Setup::Forwarder).then_some(21.0),
                ..Sample::new(setup, Workload::FixedRateHttps, 0)
            });
            samples.push(Sample {
                mb_per_s: Some(100.0 * k),
                cpu_s_per_gb: Some(8.0),
                ..Sample::new(setup, Workload::Bulk, 0)
            });
            samples.push(Sample {
                p99_ms: 30.0,
                requests: 99,
                errors: 1,
                flood_pps: Some(5e5),
                ..Sample::new(setup, Workload::Flood, 0)
            });
        }
        let t = cost_table(&samples);
        // nftables is the third setup: k = 3.
        let nft = t.lines().find(|l| l.starts_with("| nftables")).unwrap();
        assert!(
            nft.contains("| 12.0 | 1.00x | 6.0 | 1.00x | 1.5 | 0.5 | - | 300 | 1.00x |"),
            "{nft}"
        );
        let fwd = t.lines().find(|l| l.starts_with("| forwarder |")).unwrap();
        assert!(fwd.contains("| 4.0 | 0.33x |"), "{fwd}");
        assert!(fwd.contains("| 0.5 | 4.2 (21) |"), "{fwd}");
        assert!(fwd.contains("| 99.0 | 30.0 | 3.0x | 500000 |"), "{fwd}");
    }

    #[test]
    fn the_chart_has_a_bar_per_setup_and_workload() {
        let mut samples = Vec::new();
        for (i, setup) in Setup::ALL.into_iter().enumerate() {
            for workload in Workload::THROUGHPUT {
                samples.push(Sample {
                    requests_per_second: 1000.0 + 100.0 * i as f64,
                    p50_ms: 1.0,
                    p99_ms: 2.0,
                    ..Sample::new(setup, workload, 0)
                });
            }
        }
        let path = std::env::temp_dir().join(format!("fwd-chart-{}.svg", std::process::id()));
        chart(&samples, &path).unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        let _ = fs::remove_file(&path);
        assert!(svg.starts_with("<svg"), "{svg}");
        for s in Setup::ALL {
            assert!(svg.contains(s.name()), "{}", s.name());
        }
        // Background, plot area and legend boxes aside: one bar per setup and workload.
        assert!(svg.matches("<rect").count() >= Setup::ALL.len() * Workload::THROUGHPUT.len());
    }
}

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

/// A load pattern, as wrk makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Every request on a new TCP + TLS connection (`Connection: close`).
    NewConnectionHttps,
    /// Requests on kept-alive TLS connections.
    KeepAliveHttps,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::NewConnectionHttps, Workload::KeepAliveHttps];

    pub const fn name(self) -> &'static str {
        match self {
            Workload::NewConnectionHttps => "new-connection HTTPS",
            Workload::KeepAliveHttps => "keep-alive HTTPS",
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
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub repetitions: u32,
    pub seconds: u32,
    pub connections: u32,
}

impl Options {
    pub const QUICK: Options = Options {
        repetitions: 2,
        seconds: 2,
        connections: 16,
    };
    pub const FULL: Options = Options {
        repetitions: 5,
        seconds: 10,
        connections: 32,
    };
}

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
            ip_forwarding(lab, false)?;
            Ok(())
        }
    }
}

/// One wrk run from the client namespace.
fn wrk(lab: &Lab, workload: Workload, o: &Options) -> anyhow::Result<(f64, f64, f64, u64)> {
    let url = format!("https://{}/", SUBDOMAINS[0]);
    let seconds = format!("{}s", o.seconds);
    let conns = o.connections.to_string();
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
    if workload == Workload::NewConnectionHttps {
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

/// Requests per second, p50 and p99 latency in ms, and failed requests.
pub fn parse_wrk(text: &str) -> anyhow::Result<(f64, f64, f64, u64)> {
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
    Ok((rps, pct("50%")?, pct("99%")?, errors))
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

/// Builds the lab and measures every setup and workload `o.repetitions` times, interleaved.
pub fn measure(o: &Options) -> anyhow::Result<Vec<Sample>> {
    let mut lab = Lab::new(&LabOptions {
        extra_config: "[[rule]]\nport = 443\n".into(),
        ..LabOptions::default()
    })?;
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
                for workload in Workload::ALL {
                    let (rps, p50, p99, errors) = wrk(&lab, workload, o)?;
                    samples.push(Sample {
                        setup,
                        workload,
                        repetition,
                        requests_per_second: rps,
                        p50_ms: p50,
                        p99_ms: p99,
                        errors,
                    });
                }
                Ok(())
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
    for w in Workload::ALL {
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
    let groups = Workload::ALL.len();
    let top = Workload::ALL
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
    for (g, w) in Workload::ALL.iter().enumerate() {
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
        let (rps, p50, p99, errors) = parse_wrk(text).unwrap();
        assert_eq!(rps, 1000.5);
        assert_eq!(p50, 4.8);
        assert_eq!(p99, 1200.0);
        assert_eq!(errors, 9);
        assert!(parse_wrk("nothing").is_err());
        assert_eq!(duration_ms("750.00us").unwrap(), 0.75);
    }

    #[test]
    fn the_chart_has_a_bar_per_setup_and_workload() {
        let mut samples = Vec::new();
        for (i, setup) in Setup::ALL.into_iter().enumerate() {
            for workload in Workload::ALL {
                samples.push(Sample {
                    setup,
                    workload,
                    repetition: 0,
                    requests_per_second: 1000.0 + 100.0 * i as f64,
                    p50_ms: 1.0,
                    p99_ms: 2.0,
                    errors: 0,
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
        assert!(svg.matches("<rect").count() >= Setup::ALL.len() * Workload::ALL.len());
    }
}

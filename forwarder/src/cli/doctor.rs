//! `forwarder doctor`: checks, from the VPS, what users get wrong when they set the
//! forwarder up, and for each failure says what is wrong and the fix.
//!
//! What it looks at: the tunnel (up, a recent handshake), the daemon (running, the data
//! path attached, in which mode), the metrics endpoint, each backend (answers through the
//! tunnel), **the return path** (home sends a client's reply back through the tunnel, not
//! by its default route: see [`crate::cli::return_probe`]) and the MTUs.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use forwarder_common::tunnel_mss;
use serde::Serialize;

use crate::{
    api::control::{self, StatusReply},
    cli::return_probe::{self, Answer},
    config::{Config, Proto},
    sys::netif,
};

/// WireGuard drops a session's keys 180 s after its handshake; with home's
/// `PersistentKeepalive` a live tunnel has a handshake at least every two minutes.
pub const HANDSHAKE_MAX_AGE_SECS: u64 = 180;
/// WireGuard's encapsulation over IPv4: outer IPv4 (20) + UDP (8) + WireGuard (32).
pub const WIREGUARD_OVERHEAD_V4: u32 = 60;
/// The same over IPv6 (outer header 40): what a tunnel MTU must leave room for when the
/// endpoint may be reached over either family.
pub const WIREGUARD_OVERHEAD_V6: u32 = 80;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (failures and warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            let tag = match c.status {
                Status::Pass => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            let _ = writeln!(s, "{tag}  {}: {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                for (i, line) in fix.lines().enumerate() {
                    let lead = if i == 0 { "fix:" } else { "    " };
                    let _ = writeln!(s, "        {lead} {line}");
                }
            }
        }
        let fails = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let _ = if fails == 0 {
            writeln!(s, "\nall {} checks passed", self.checks.len())
        } else {
            writeln!(s, "\n{fails} of {} checks failed", self.checks.len())
        };
        s
    }
}

/// What the doctor is given besides the configuration.
pub struct Inputs {
    /// The daemon's `status` answer, or why it could not be had.
    pub status: anyhow::Result<StatusReply>,
    /// The metrics endpoint (`None`: configured off).
    pub metrics: Option<SocketAddr>,
    /// How long each network check waits for an answer.
    pub wait: Duration,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: None,
    }
}

fn with_fix(mut c: Check, fix: impl Into<String>) -> Check {
    c.fix = Some(fix.into());
    c
}

pub fn run(cfg: &Config, inputs: &Inputs) -> Report {
    let mut checks = Vec::new();
    let wg = &cfg.tunnel_iface;
    checks.push(tunnel(wg));
    checks.push(handshake(wg));
    checks.push(daemon(&inputs.status));
    checks.push(metrics(inputs.metrics));
    // The MTU the daemon clamps to: the configured one, or the interface's.
    let tunnel_mtu = cfg.tunnel_mtu.or_else(|| netif::mtu(wg).ok());
    checks.push(mtu(&cfg.public_iface, wg, tunnel_mtu));
    let mut seen = Vec::new();
    for r in &cfg.rules {
        if r.proto != Proto::Tcp || seen.contains(&(r.backend, r.backend_port)) {
            continue;
        }
        seen.push((r.backend, r.backend_port));
        let reachable = backend(r.backend, r.backend_port, inputs.wait);
        let up = reachable.status == Status::Pass;
        checks.push(reachable);
        if up {
            let mss = tunnel_mss(
                tunnel_mtu.unwrap_or(crate::config::DEFAULT_TUNNEL_MTU),
                r.backend.is_ipv6(),
            );
            checks.push(return_path(wg, r.backend, r.backend_port, mss, inputs.wait));
        }
    }
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    Report { ok, checks }
}

fn tunnel(wg: &str) -> Check {
    let name = format!("tunnel {wg}");
    if netif::ifindex(wg).is_err() {
        return with_fix(
            check(name, Status::Fail, "no such interface"),
            format!(
                "bring the tunnel up (`systemctl start wg-quick@{wg}`), or name the right one \
                 with --tunnel / tunnel_iface"
            ),
        );
    }
    if !netif::is_up(wg) {
        return with_fix(
            check(name, Status::Fail, "the interface is down"),
            format!("`ip link set {wg} up`, or `systemctl restart wg-quick@{wg}`"),
        );
    }
    check(name, Status::Pass, "up")
}

fn handshake(wg: &str) -> Check {
    let name = "WireGuard handshake";
    match netif::wireguard_handshake_age(wg) {
        Some(age) if age <= HANDSHAKE_MAX_AGE_SECS => {
            check(name, Status::Pass, format!("{age} s ago"))
        }
        Some(age) => with_fix(
            check(
                name,
                Status::Fail,
                format!("the last one was {age} s ago: home is not connected"),
            ),
            "home sits behind NAT, so only home can start the tunnel: check home's [Peer] \
             Endpoint = <this VPS's public address>:<ListenPort> and PersistentKeepalive = 25, \
             and that this VPS's firewall lets that UDP port in; `wg show` on both ends",
        ),
        None => with_fix(
            check(
                name,
                Status::Fail,
                "none yet (or the interface is not WireGuard)",
            ),
            "home has never connected: check home's [Peer] Endpoint and PersistentKeepalive = 25, \
             and the keys on both ends (`wg show` on both)",
        ),
    }
}

fn daemon(status: &anyhow::Result<StatusReply>) -> Check {
    let name = "daemon and data path";
    match status {
        Err(e) => with_fix(
            check(name, Status::Fail, format!("no answer: {e:#}")),
            "start it: `systemctl start forwarder` (or `forwarder run ...`); its log says why it \
             stopped",
        ),
        Ok(v) => {
            let mode = &v.attach_mode;
            match mode.as_str() {
                "xdp-driver" => check(name, Status::Pass, format!("running, attached as {mode}")),
                "xdp-generic" | "tc" => with_fix(
                    check(name, Status::Warn, format!("running, attached as {mode}")),
                    "it forwards, at a higher cost per packet than native XDP: the NIC's driver \
                     refused driver mode (often LRO/GRO_HW on virtio-net: `ethtool -K <iface> gro \
                     off lro off`, then restart the forwarder)",
                ),
                _ => with_fix(
                    check(name, Status::Fail, format!("running, data path {mode}")),
                    "restart it and read its log for the attach error",
                ),
            }
        }
    }
}

fn metrics(addr: Option<SocketAddr>) -> Check {
    let name = "metrics endpoint";
    let Some(addr) = addr else {
        return check(name, Status::Warn, "off (--metrics-addr off)");
    };
    match crate::cli::stats::http_get(addr, "/metrics") {
        Ok((200, _)) => check(name, Status::Pass, format!("http://{addr}/metrics answers")),
        Ok((code, _)) => with_fix(
            check(
                name,
                Status::Fail,
                format!("http://{addr}/metrics answered {code}"),
            ),
            "something else listens there: give the daemon another --metrics-addr",
        ),
        Err(e) => with_fix(
            check(name, Status::Fail, format!("http://{addr}/metrics: {e}")),
            "the daemon serves metrics at --metrics-addr (default 127.0.0.1:9724): pass the same \
             address to doctor, or check that the daemon runs",
        ),
    }
}

fn mtu(public: &str, wg: &str, tunnel_mtu: Option<u32>) -> Check {
    let name = "MTU";
    let (Some(t), Ok(p)) = (tunnel_mtu, netif::mtu(public)) else {
        return with_fix(
            check(
                name,
                Status::Fail,
                format!("cannot read the MTU of {public} or {wg}"),
            ),
            "check that both interfaces exist (`ip link`)",
        );
    };
    let need = t + WIREGUARD_OVERHEAD_V4;
    if p < need {
        return with_fix(
            check(
                name,
                Status::Fail,
                format!(
                    "{wg} has MTU {t}, whose packets take {need} bytes on {public}, which has \
                     MTU {p}: full-size packets are fragmented or lost"
                ),
            ),
            format!(
                "set `MTU = {}` in the [Interface] of {wg}.conf at both ends (room for \
                 WireGuard over IPv6 too), restart the tunnel and then the forwarder (its MSS \
                 clamp follows {wg})",
                p.saturating_sub(WIREGUARD_OVERHEAD_V6).max(1280)
            ),
        );
    }
    check(
        name,
        Status::Pass,
        format!(
            "{wg} {t}, {public} {p}; forwarded TCP clamped to MSS {} (IPv4)",
            tunnel_mss(t, false)
        ),
    )
}

fn backend(addr: IpAddr, port: u16, wait: Duration) -> Check {
    let name = format!("backend {}", SocketAddr::new(addr, port));
    match TcpStream::connect_timeout(&SocketAddr::new(addr, port), wait) {
        Ok(_) => check(name, Status::Pass, "answers through the tunnel"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => with_fix(
            check(
                name,
                Status::Fail,
                "connection refused: nothing listens there",
            ),
            format!(
                "start home's proxy, listening on {addr} port {port} (or published on it: \
                 `docker run -p {port}:{port}` publishes on all addresses)"
            ),
        ),
        Err(e) => with_fix(
            check(
                name,
                Status::Fail,
                format!("no answer within {:?}: {e}", wait),
            ),
            format!(
                "check that home has the address {addr} on its tunnel interface, that its \
                 firewall lets port {port} in from the tunnel, and the WireGuard handshake above"
            ),
        ),
    }
}

fn return_path(wg: &str, addr: IpAddr, port: u16, mss: u16, wait: Duration) -> Check {
    let sock = SocketAddr::new(addr, port);
    let probe = match addr {
        IpAddr::V4(_) => IpAddr::V4(return_probe::PROBE_V4),
        IpAddr::V6(_) => IpAddr::V6(return_probe::PROBE_V6),
    };
    let name = format!("return path {sock}");
    match return_probe::probe(wg, addr, port, mss, wait) {
        Err(e) => with_fix(
            check(
                name,
                Status::Fail,
                format!("the probe could not be sent: {e}"),
            ),
            "run doctor as root (it sends one SYN from a test address into the tunnel)",
        ),
        Ok(Answer::SynAck { mss: home_mss }) => {
            let detail = format!(
                "home answered a client's SYN (from {probe}) through the tunnel{}",
                home_mss.map_or(String::new(), |m| format!(", MSS {m}"))
            );
            match home_mss {
                Some(m) if m < mss => with_fix(
                    check(name, Status::Warn, detail),
                    format!(
                        "home's side has a smaller MTU than this VPS's {wg} (MSS {m} < {mss}): it \
                         works (the forwarder clamps to the smaller), but set the same MTU at both \
                         ends"
                    ),
                ),
                _ => check(name, Status::Pass, detail),
            }
        }
        Ok(Answer::Reset) => check(
            name,
            Status::Pass,
            format!("home's reset to a client's SYN (from {probe}) came back through the tunnel"),
        ),
        Ok(Answer::Nothing) => with_fix(
            check(
                name,
                Status::Fail,
                format!(
                    "home answers the VPS's own address, but a client's SYN (from {probe}) got no \
                     answer back through the tunnel within {wait:?}: forwarded connections hang"
                ),
            ),
            "home sends clients' replies out of its default route, or its WireGuard drops them:\n\
             1. apply `forwarder home-config` for your home's shape (--proxy tunnel, dnat for \
             Docker, lan for another machine), see docs/operations.md#your-home;\n\
             2. at home, `ip rule` must show the recipe's rule at priority 32000 (a rule after \
             32766, `from all lookup main`, is never reached);\n\
             3. home's [Peer] for the VPS needs AllowedIPs = 0.0.0.0/0, ::/0 (a narrower one \
             drops clients' packets) and Table = off",
        ),
    }
}

#[derive(clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub target: crate::cli::args::Target,
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    pub control: std::path::PathBuf,
    /// The daemon's --metrics-addr.
    #[arg(long, value_name = "ADDR", default_value = crate::observe::http::DEFAULT_METRICS_ADDR)]
    pub metrics_addr: crate::observe::http::MetricsAddr,
    /// Seconds each network check waits for an answer.
    #[arg(long, value_name = "SECONDS", default_value = "3")]
    pub wait: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `forwarder doctor`.
pub fn command(args: DoctorArgs) -> anyhow::Result<()> {
    use crate::observe::http::MetricsAddr;
    let DoctorArgs {
        target,
        control,
        metrics_addr,
        wait,
        json,
    } = args;
    if !(0.1..=60.0).contains(&wait) {
        anyhow::bail!("--wait {wait}: give between 0.1 and 60 seconds");
    }
    let cfg = target.resolve()?;
    let inputs = Inputs {
        status: crate::cli::change::ask(&control, control::Status {}),
        metrics: match metrics_addr {
            MetricsAddr::On(a) => Some(a),
            MetricsAddr::Off => None,
        },
        wait: Duration::from_secs_f64(wait),
    };
    let report = run(&cfg, &inputs);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}

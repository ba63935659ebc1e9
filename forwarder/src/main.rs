use std::{
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use forwarder::{
    config::{Config, FileConfig, HostConfig, HostPolicy},
    connlog::{self, ConnLog, ConnLogTarget},
    control,
    dataplane::{Dataplane, XdpPreference},
    flowgc::{FlowGc, FlowGcState, GcTimeouts},
    home,
    http::{self, DEFAULT_METRICS_ADDR, MetricsAddr},
    netif,
    runtime::{Edit, Runtime, Sources},
    snapshot::{LiveStats, SharedLabels},
    stats_cli,
};
use tracing::{info, warn};

/// XDP/eBPF edge forwarder: steers web traffic arriving at a VPS into a WireGuard tunnel
/// toward a home server, keeping the client's IP address, without terminating TLS.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Target {
    /// TOML configuration file (see docs/configuration.md). Flags override its values.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Interface facing the internet, e.g. eth0.
    #[arg(long, value_name = "IFACE")]
    public_iface: Option<String>,
    /// WireGuard interface toward home, e.g. wg0.
    #[arg(long = "tunnel", value_name = "IFACE")]
    tunnel_iface: Option<String>,
    /// Home server address behind the tunnel; once per address family
    /// (e.g. --backend 10.8.0.2 --backend fd00::2). Without rules in the config file,
    /// TCP 80 and 443 of the public interface's addresses are forwarded to it.
    #[arg(long, value_name = "ADDR")]
    backend: Vec<IpAddr>,
}

impl Target {
    fn file(&self) -> anyhow::Result<FileConfig> {
        Ok(match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        })
    }
}

/// How the CLI reaches the daemon.
#[derive(clap::Args, Clone)]
struct ControlArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control: PathBuf,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum RulesAction {
    /// List the rules in force, with their fallback state.
    List {
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Forward another port (written to the config file, in force at once).
    Add {
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Public port.
        #[arg(long)]
        port: u16,
        /// Backend address (default: the configured backend of the address family).
        #[arg(long, value_name = "ADDR")]
        backend: Option<IpAddr>,
        /// Backend port (default: the public port).
        #[arg(long, value_name = "PORT")]
        backend_port: Option<u16>,
        /// Only this public address (default: every address of the public interface).
        #[arg(long, value_name = "ADDR")]
        public_addr: Option<IpAddr>,
        /// Where new connections go while the backend is down: `local` or ADDR[:PORT].
        #[arg(long, value_name = "local|ADDR[:PORT]")]
        fallback: Option<String>,
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Stop forwarding a port; its connections end, other rules' connections go on.
    Remove {
        #[arg(long, default_value = "tcp")]
        proto: String,
        #[arg(long)]
        port: u16,
        /// The public address, if the rule names one.
        #[arg(long, value_name = "ADDR")]
        public_addr: Option<IpAddr>,
        #[command(flatten)]
        ctl: ControlArgs,
    },
}

#[derive(Subcommand)]
enum HostsAction {
    /// List the host table: each host's policy and id.
    List {
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Count a host (name or *.wildcard) separately, optionally with a policy.
    Add {
        /// `app.example.com` or `*.example.com`.
        name: String,
        /// forward (default) or drop (the connection is cut; the client gets a TCP RST).
        #[arg(long, default_value = "forward")]
        policy: String,
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Remove a host: its connections count as `other` again.
    Remove {
        name: String,
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Change a host's policy (affects new connections).
    Set {
        name: String,
        /// forward or drop.
        #[arg(long)]
        policy: String,
        #[command(flatten)]
        ctl: ControlArgs,
    },
}

#[derive(Subcommand)]
enum LimitsAction {
    /// Set the per-client limit on new connections (0 turns it off).
    Set {
        /// New connections per second one client address may open.
        #[arg(long, value_name = "N")]
        new_connections_per_second: u16,
        /// How many it may open at once (default: the rate).
        #[arg(long, value_name = "N")]
        burst: Option<u16>,
        #[command(flatten)]
        ctl: ControlArgs,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Load and attach the data path and keep forwarding until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        target: Target,
        /// XDP attach mode on the public interface.
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpPreference,
        /// Write the daemon's PID here once the data path is attached (removed on exit).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Serve Prometheus metrics (/metrics) and statistics (/stats.json) on this
        /// address, or `off`.
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
        metrics_addr: MetricsAddr,
        /// Write one JSON line per connection event to this file (appended), or `-` for
        /// standard output. Off by default.
        #[arg(long, value_name = "PATH|-")]
        conn_log: Option<ConnLogTarget>,
        /// Most connection log lines per second (bursts up to max(N, 1000)); 0 = no limit.
        #[arg(long, value_name = "N", default_value_t = connlog::DEFAULT_RATE)]
        conn_log_rate: u32,
        /// The control socket `forwarder status` and `forwarder rules` talk to.
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// Group (name or id) whose members may use the control socket besides root.
        #[arg(long, value_name = "GROUP")]
        admin_group: Option<String>,
        /// bpffs directory the data path is pinned under, so that it keeps forwarding
        /// while the daemon restarts and the next daemon adopts it.
        #[arg(long, value_name = "DIR", default_value = forwarder::pin::DEFAULT_PIN_ROOT)]
        pin_dir: PathBuf,
        /// Do not pin: the data path goes away with the daemon (and one left pinned by
        /// an earlier daemon is neither adopted nor removed).
        #[arg(long, conflicts_with = "pin_dir")]
        no_pin: bool,
    },
    /// Stop the running daemon. The data path keeps forwarding (pinned) unless --detach
    /// is given, so that a restart or an upgrade drops no connection.
    Stop {
        /// Also remove the data path: detach the programs from the interfaces and free the
        /// maps (works without a running daemon too).
        #[arg(long)]
        detach: bool,
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// The daemon's --pin-dir.
        #[arg(long, value_name = "DIR", default_value = forwarder::pin::DEFAULT_PIN_ROOT)]
        pin_dir: PathBuf,
    },
    /// Show the running daemon's state: attach mode, tunnel and backend health, rules in
    /// fallback, version (over its control socket).
    Status {
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The running daemon's forwarding rules: list, add, remove (over its control
    /// socket; changes are validated, written to the config file and in force at once).
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// The host table and each host's policy: list, add, remove, set.
    Hosts {
        #[command(subcommand)]
        action: HostsAction,
    },
    /// The per-client new-connection limit.
    Limits {
        #[command(subcommand)]
        action: LimitsAction,
    },
    /// Re-read the config file and put it in force (SIGHUP does the same). A file that
    /// does not validate changes nothing.
    Reload {
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Show per-host statistics of the running daemon (from its metrics endpoint).
    Stats {
        /// The daemon's --metrics-addr.
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
        metrics_addr: MetricsAddr,
        /// Print the statistics document as JSON.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Refresh every SECONDS (default 2) with per-second rates, until Ctrl-C.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// Validate the configuration and print the rules it resolves to, without attaching.
    Check {
        #[command(flatten)]
        target: Target,
    },
    /// Check the running setup from the VPS (tunnel and handshake, daemon and attach mode,
    /// metrics, each backend through the tunnel, home's return path for clients' replies,
    /// MTUs) and print what is wrong with the fix. Exits 1 if any check fails.
    Doctor {
        #[command(flatten)]
        target: Target,
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// The daemon's --metrics-addr.
        #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
        metrics_addr: MetricsAddr,
        /// Seconds each network check waits for an answer.
        #[arg(long, value_name = "SECONDS", default_value = "3")]
        wait: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the home-side WireGuard and routing configuration that makes replies to
    /// forwarded connections return through the tunnel (client IP preservation), as
    /// wg-quick PostUp/PreDown lines for the home machine that ends the tunnel.
    HomeConfig {
        #[command(flatten)]
        target: Target,
        /// Name of the WireGuard interface at home.
        #[arg(long, default_value = "wg0", value_name = "IFACE")]
        home_tunnel: String,
        /// Where the reverse proxy runs: `tunnel` = on the WireGuard machine, listening on
        /// the backend address; `dnat` = in Docker (published ports) or behind any other
        /// DNAT on the WireGuard machine, e.g. Nginx Proxy Manager.
        /// `lan` = on another machine of the home LAN (a Proxmox VM), WireGuard on a machine
        /// of its own: prints a part for each machine (needs --proxy-addr, --wg-lan-addr,
        /// --wg-mac).
        #[arg(long, value_enum, default_value = "tunnel", value_name = "SHAPE")]
        proxy: home::Shape,
        /// With --proxy lan: the proxy machine's LAN address (once per address family).
        #[arg(long, value_name = "ADDR")]
        proxy_addr: Vec<IpAddr>,
        /// With --proxy lan: the WireGuard machine's LAN address (once per address family),
        /// where the proxy machine sends the replies.
        #[arg(long, value_name = "ADDR")]
        wg_lan_addr: Vec<IpAddr>,
        /// With --proxy lan: the MAC address of the WireGuard machine's LAN interface
        /// (`ip -br link` on it), by which the proxy machine tells its connections apart.
        #[arg(long, value_name = "MAC")]
        wg_mac: Option<String>,
        /// With --proxy lan: the proxy machine's LAN interface.
        #[arg(long, default_value = "eth0", value_name = "IFACE")]
        proxy_iface: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FORWARDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            target,
            xdp_mode,
            pid_file,
            metrics_addr,
            conn_log,
            conn_log_rate,
            control,
            admin_group,
            pin_dir,
            no_pin,
        } => {
            let cfg = resolve(&target)?;
            let admin_gid = match admin_group {
                None => None,
                Some(g) => Some(match g.parse::<u32>() {
                    Ok(id) => id,
                    Err(_) => nix::unistd::Group::from_name(&g)
                        .with_context(|| format!("looking up group {g}"))?
                        .with_context(|| format!("--admin-group {g}: no such group"))?
                        .gid
                        .as_raw(),
                }),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let sources = Sources {
                config: target.config.clone(),
                public_iface: target.public_iface.clone(),
                tunnel_iface: target.tunnel_iface.clone(),
                backends: target.backend.clone(),
            };
            rt.block_on(run(
                cfg,
                sources,
                RunOptions {
                    xdp: xdp_mode,
                    pid_file,
                    metrics_addr,
                    conn_log,
                    conn_log_rate,
                    control,
                    access: control::Access { admin_gid },
                    pin_dir: (!no_pin).then_some(pin_dir),
                },
            ))
        }
        Command::Stop {
            detach,
            control,
            pin_dir,
        } => stop(&control, &pin_dir, detach),
        Command::Status { control, json } => {
            let v = ask(&control, control::Request::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", render_status(&v));
            }
            Ok(())
        }
        Command::Rules {
            action: RulesAction::List { ctl },
        } => {
            let v = ask(&ctl.control, control::Request::Rules)?;
            if ctl.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for r in v.as_array().into_iter().flatten() {
                    let state = if r["in_fallback"].as_bool() == Some(true) {
                        "  [fallback in force]"
                    } else {
                        ""
                    };
                    println!("{}{state}", r["rule"].as_str().unwrap_or("?"));
                }
            }
            Ok(())
        }
        Command::Rules {
            action:
                RulesAction::Add {
                    proto,
                    port,
                    backend,
                    backend_port,
                    public_addr,
                    fallback,
                    ctl,
                },
        } => change(
            &ctl,
            control::Request::RuleAdd {
                rule: control::RuleSpec {
                    proto: Some(proto),
                    port,
                    backend,
                    backend_port,
                    public_addr,
                    fallback,
                },
            },
        ),
        Command::Rules {
            action:
                RulesAction::Remove {
                    proto,
                    port,
                    public_addr,
                    ctl,
                },
        } => change(
            &ctl,
            control::Request::RuleRemove {
                proto,
                port,
                public_addr,
            },
        ),
        Command::Hosts {
            action: HostsAction::List { ctl },
        } => {
            let v = ask(&ctl.control, control::Request::Hosts)?;
            if ctl.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<40} {:<8} {:>5}", "host", "policy", "id");
                for h in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:<8} {:>5}",
                        h["host"].as_str().unwrap_or("?"),
                        h["policy"].as_str().unwrap_or("?"),
                        h["id"]
                    );
                }
            }
            Ok(())
        }
        Command::Hosts {
            action: HostsAction::Add { name, policy, ctl },
        } => change(
            &ctl,
            control::Request::HostAdd {
                name,
                policy: Some(policy),
            },
        ),
        Command::Hosts {
            action: HostsAction::Remove { name, ctl },
        } => change(&ctl, control::Request::HostRemove { name }),
        Command::Hosts {
            action: HostsAction::Set { name, policy, ctl },
        } => change(&ctl, control::Request::HostSet { name, policy }),
        Command::Limits {
            action:
                LimitsAction::Set {
                    new_connections_per_second,
                    burst,
                    ctl,
                },
        } => change(
            &ctl,
            control::Request::Limits {
                new_connections_per_second,
                burst,
            },
        ),
        Command::Reload { ctl } => change(&ctl, control::Request::Reload),
        Command::Check { target } => {
            let cfg = resolve(&target)?;
            println!("configuration OK: {} rule(s)", cfg.rules.len());
            for r in &cfg.rules {
                println!("  {r}");
            }
            if !cfg.hosts.is_empty() {
                println!("{} host(s) counted separately:", cfg.hosts.len());
                for h in &cfg.hosts {
                    println!("  {}", h.label);
                }
            }
            Ok(())
        }
        Command::Doctor {
            target,
            control,
            metrics_addr,
            wait,
            json,
        } => {
            if !(0.1..=60.0).contains(&wait) {
                bail!("--wait {wait}: give between 0.1 and 60 seconds");
            }
            let cfg = resolve(&target)?;
            let inputs = forwarder::doctor::Inputs {
                status: ask(&control, control::Request::Status).map_err(|e| format!("{e:#}")),
                metrics: match metrics_addr {
                    MetricsAddr::On(a) => Some(a),
                    MetricsAddr::Off => None,
                },
                wait: Duration::from_secs_f64(wait),
            };
            let report = forwarder::doctor::run(&cfg, &inputs);
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
        Command::Stats {
            metrics_addr,
            json,
            watch,
        } => {
            let MetricsAddr::On(addr) = metrics_addr else {
                bail!("--metrics-addr off: give the address the daemon serves its metrics on");
            };
            match watch {
                Some(secs) => {
                    if !(0.2..=3600.0).contains(&secs) {
                        bail!("--watch {secs}: the interval must be between 0.2 and 3600 seconds");
                    }
                    stats_cli::watch(addr, Duration::from_secs_f64(secs))?;
                }
                None => stats_cli::show(addr, json)?,
            }
            Ok(())
        }
        Command::HomeConfig {
            target,
            home_tunnel,
            proxy,
            proxy_addr,
            wg_lan_addr,
            wg_mac,
            proxy_iface,
        } => {
            let file = target.file()?;
            let mut backends = if target.backend.is_empty() {
                file.backends.clone()
            } else {
                target.backend.clone()
            };
            backends.extend(file.rules.iter().filter_map(|r| r.backend));
            backends.sort();
            backends.dedup();
            if backends.is_empty() {
                anyhow::bail!("no backend known: pass --backend ADDR or --config FILE");
            }
            let lan = if proxy == home::Shape::Lan {
                Some(home::Lan {
                    proxy_addrs: proxy_addr,
                    wg_addrs: wg_lan_addr,
                    wg_mac: wg_mac.unwrap_or_default(),
                    proxy_iface,
                })
            } else if !proxy_addr.is_empty() {
                return Err(home::HomeError::NotLan("--proxy-addr").into());
            } else if !wg_lan_addr.is_empty() {
                return Err(home::HomeError::NotLan("--wg-lan-addr").into());
            } else if wg_mac.is_some() {
                return Err(home::HomeError::NotLan("--wg-mac").into());
            } else {
                None
            };
            let rules = if file.rules.is_empty() {
                forwarder::config::default_rules(file.http3)
            } else {
                file.rules.clone()
            };
            let mut ports: Vec<(&'static str, u16)> = rules
                .iter()
                .map(|r| {
                    let proto = match r.proto {
                        forwarder::config::Proto::Tcp => "tcp",
                        forwarder::config::Proto::Udp => "udp",
                    };
                    (proto, r.backend_port.unwrap_or(r.port))
                })
                .collect();
            ports.sort_unstable();
            ports.dedup();
            let home = home::Home {
                backends,
                tunnel_iface: home_tunnel,
                shape: proxy,
                ports,
                lan,
            };
            home.validate()?;
            print!("{}", home.render());
            Ok(())
        }
    }
}

fn resolve(target: &Target) -> anyhow::Result<Config> {
    let file = target.file()?;
    Ok(Config::resolve(
        file,
        target.public_iface.clone(),
        target.tunnel_iface.clone(),
        target.backend.clone(),
        netif::addresses,
    )?)
}

/// Sends a change and prints what it did.
fn change(ctl: &ControlArgs, req: control::Request) -> anyhow::Result<()> {
    let v = ask(&ctl.control, req)?;
    if ctl.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut any = false;
    for (key, what) in [
        ("rules_added", "rule added:"),
        ("rules_removed", "rule removed:"),
        ("hosts_added", "host added:"),
        ("hosts_removed", "host removed:"),
        ("hosts_changed", "host changed:"),
    ] {
        for item in v[key].as_array().into_iter().flatten() {
            println!("{what:<14} {}", item.as_str().unwrap_or("?"));
            any = true;
        }
    }
    if v["limits_changed"].as_bool() == Some(true) {
        println!("limits changed");
        any = true;
    }
    if v["health_changed"].as_bool() == Some(true) {
        println!("health settings changed");
        any = true;
    }
    if !any {
        println!("no change");
    }
    if let Some(p) = v["persisted_to"].as_str() {
        println!("written to {p}");
    }
    Ok(())
}

fn ask(path: &std::path::Path, req: control::Request) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(control::request(path, &req))
}

fn render_status(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    let _ = writeln!(
        out,
        "forwarder {}  up {}s",
        s("version"),
        v["uptime_seconds"]
    );
    let _ = writeln!(out, "attach mode   {}", s("attach_mode"));
    let t = &v["tunnel"];
    let hs = match t["handshake_age_seconds"].as_u64() {
        Some(a) => format!(", last handshake {a}s ago"),
        None => String::new(),
    };
    let up = if t["up"].as_bool() == Some(true) {
        "up"
    } else {
        "DOWN"
    };
    let _ = writeln!(
        out,
        "tunnel        {} {up}{hs}",
        t["iface"].as_str().unwrap_or("?")
    );
    for b in v["backends"].as_array().into_iter().flatten() {
        let up = if b["up"].as_bool() == Some(true) {
            "up"
        } else {
            "DOWN"
        };
        let err = match (b["up"].as_bool(), b["last_error"].as_str()) {
            (Some(false), Some(e)) => format!(" ({e})"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "backend       {} {up} for {}s{err}",
            b["backend"].as_str().unwrap_or("?"),
            b["since_seconds"]
        );
    }
    let fallback: Vec<&str> = v["rules_in_fallback"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .collect();
    if fallback.is_empty() {
        let _ = writeln!(out, "fallback      none active");
    } else {
        for r in fallback {
            let _ = writeln!(out, "fallback      active: {r}");
        }
    }
    let l = &v["local"];
    if l["served"].as_u64().unwrap_or(0) + l["failed"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            out,
            "local hosts   {} connections served by the VPS ({} now), {} failed",
            l["served"], l["active"], l["failed"]
        );
    }
    out
}

/// Answers the control socket's requests from the daemon's live state.
fn control_handler(
    runtime: Arc<Runtime>,
    stats: Arc<LiveStats>,
    stop_request: Arc<tokio::sync::Notify>,
    detach: Arc<std::sync::atomic::AtomicBool>,
) -> control::Handler {
    use forwarder::snapshot::SnapshotSource as _;
    Arc::new(move |req| {
        let cfg = runtime.config();
        let changed = |r: Result<forwarder::runtime::Changes, String>| {
            r.and_then(|c| serde_json::to_value(c).map_err(|e| e.to_string()))
        };
        match req {
            control::Request::Status => {
                let s = stats.snapshot().map_err(|e| e.to_string())?;
                Ok(serde_json::json!({
                    "version": s.version,
                    "uptime_seconds": s.uptime_seconds,
                    "attach_mode": s.attach_mode,
                    "tunnel": s.tunnel,
                    "backends": s.backends,
                    "local": s.local,
                    "rules_in_fallback": cfg
                        .rules
                        .iter()
                        .filter(|r| runtime.in_fallback(r))
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>(),
                    "config": runtime.config_path().map(|p| p.display().to_string()),
                }))
            }
            control::Request::Stop { detach: d } => {
                if *d {
                    detach.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                stop_request.notify_one();
                Ok(serde_json::json!({ "stopping": true, "detach": d }))
            }
            control::Request::Rules => Ok(serde_json::Value::Array(
                cfg.rules
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "rule": r.to_string(),
                            "public": r.public_addr,
                            "proto": r.proto.to_string(),
                            "port": r.port,
                            "backend": r.backend,
                            "backend_port": r.backend_port,
                            "fallback": match r.fallback {
                                Some(forwarder::config::Fallback::Local) => Some("local".to_owned()),
                                Some(forwarder::config::Fallback::Backend(a)) => Some(a.to_string()),
                                None => None,
                            },
                            "in_fallback": runtime.in_fallback(r),
                        })
                    })
                    .collect(),
            )),
            control::Request::Hosts => {
                let labels = runtime.labels().get();
                let ids: std::collections::HashMap<String, u32> = labels
                    .display_order()
                    .map(|id| (labels.label(id).to_owned(), id))
                    .collect();
                Ok(serde_json::Value::Array(
                    cfg.hosts
                        .iter()
                        .zip(cfg.host_policies.iter())
                        .map(|(h, p)| {
                            serde_json::json!({
                                "host": h.label,
                                "policy": p.to_string(),
                                "id": ids.get(&h.label),
                            })
                        })
                        .collect(),
                ))
            }
            control::Request::RuleAdd { rule } => {
                changed(runtime.edit(Edit::AddRule(rule.to_config()?)))
            }
            control::Request::RuleRemove {
                proto,
                port,
                public_addr,
            } => changed(runtime.edit(Edit::RemoveRule {
                proto: proto.parse()?,
                port: *port,
                public_addr: *public_addr,
            })),
            control::Request::HostAdd { name, policy } => {
                changed(runtime.edit(Edit::AddHost(HostConfig {
                    name: name.clone(),
                    policy: parse_policy(policy.as_deref())?,
                })))
            }
            control::Request::HostRemove { name } => {
                changed(runtime.edit(Edit::RemoveHost(name.clone())))
            }
            control::Request::HostSet { name, policy } => changed(runtime.edit(
                Edit::SetHostPolicy(name.clone(), parse_policy(Some(policy))?),
            )),
            control::Request::Limits {
                new_connections_per_second,
                burst,
            } => changed(runtime.edit(Edit::SetLimits(forwarder::config::Limits {
                new_connections_per_second: *new_connections_per_second,
                burst: *burst,
                // `limits set` leaves the guard's threshold as the file has it.
                syn_flood_threshold: None,
            }))),
            control::Request::Reload => changed(runtime.reload()),
        }
    })
}

fn parse_policy(s: Option<&str>) -> Result<HostPolicy, String> {
    s.map_or(Ok(HostPolicy::Forward), str::parse)
}

struct RunOptions {
    xdp: XdpPreference,
    pid_file: Option<PathBuf>,
    metrics_addr: MetricsAddr,
    conn_log: Option<ConnLogTarget>,
    conn_log_rate: u32,
    control: PathBuf,
    access: control::Access,
    pin_dir: Option<PathBuf>,
}

/// `forwarder stop`: asks the daemon to exit (and, with `detach`, to take the data path
/// down), waits for it, then removes whatever is still pinned.
/// Logs a failure to follow the recreated tunnel interface once, not every second.
fn tunnel_warn(last: &mut Option<String>, iface: &str, msg: String) {
    if last.as_ref() != Some(&msg) {
        warn!(tunnel = %iface, "following the recreated tunnel interface failed (retrying every second): {msg}");
        *last = Some(msg);
    }
}

fn stop(control: &std::path::Path, pin_dir: &std::path::Path, detach: bool) -> anyhow::Result<()> {
    let asked = match ask(control, control::Request::Stop { detach }) {
        Ok(_) => true,
        Err(e) if !control.exists() => {
            if !detach {
                bail!("no daemon is running ({e:#})");
            }
            false
        }
        Err(e) => return Err(e),
    };
    if asked {
        // The daemon removes its socket as the last thing before exiting.
        let deadline = Instant::now() + Duration::from_secs(15);
        while control.exists() {
            if Instant::now() > deadline {
                bail!("the daemon did not exit within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("daemon stopped");
    }
    if detach {
        // Before TCX (6.6), clsact filters stand in for pinned tc links (a daemon that was
        // asked removed them already).
        let filters = forwarder::dataplane::remove_lasting_filters();
        if forwarder::pin::PinDir::existing(pin_dir).remove()? || filters > 0 {
            println!("data path removed ({} unpinned)", pin_dir.display());
        } else if !asked {
            println!(
                "nothing to remove: no daemon running, nothing pinned at {}",
                pin_dir.display()
            );
        }
    } else {
        println!("the data path keeps forwarding; `forwarder stop --detach` removes it");
    }
    Ok(())
}

async fn run(cfg: Config, sources: Sources, opts: RunOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let RunOptions {
        xdp,
        pid_file,
        metrics_addr,
        conn_log: conn_log_target,
        conn_log_rate,
        control: control_path,
        access,
        pin_dir,
    } = opts;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Everything that can fail on a bad flag fails before the kernel is touched.
    let listener = match metrics_addr {
        MetricsAddr::On(addr) => Some(http::bind(addr).await?),
        MetricsAddr::Off => None,
    };
    let control_listener = control::bind(&control_path, access).await?;
    let conn_log = Arc::new(match &conn_log_target {
        Some(target) => ConnLog::open(target, conn_log_rate)?,
        None => ConnLog::disabled(),
    });
    let started = Instant::now();
    let pins = match &pin_dir {
        Some(root) => Some(forwarder::pin::PinDir::prepare(root)?),
        None => None,
    };
    let mut dp = Dataplane::start(&cfg, xdp, pins.as_ref())?;
    let labels = SharedLabels::new(dp.labels.clone());
    let stop_request = Arc::new(tokio::sync::Notify::new());
    let detach = Arc::new(std::sync::atomic::AtomicBool::new(pins.is_none()));
    let gc_state = Arc::new(FlowGcState::default());
    let mut tasks = Vec::new();
    let health = Arc::new(forwarder::health::Health::default());
    let runtime = Runtime::new(
        Arc::clone(&dp.maps),
        dp.tunnel_ifindex,
        sources,
        labels.clone(),
        Arc::clone(&health),
        cfg.clone(),
    );
    runtime.start_health();
    if let Some(events) = dp.take_events() {
        tasks.push(connlog::spawn_event_reader(
            events,
            Arc::clone(&conn_log),
            labels.clone(),
        ));
    }
    let handoff_stats = Arc::new(forwarder::handoff::HandoffStats::default());
    if let Some(hm) = dp.take_handoff() {
        tasks.push(forwarder::handoff::spawn(
            hm,
            Arc::clone(&dp.maps),
            Arc::clone(&handoff_stats),
        ));
    }
    let quic_stats = Arc::new(forwarder::quic::QuicStats::default());
    if let Some(qm) = dp.take_quic() {
        tasks.push(forwarder::quic::spawn(
            qm,
            Arc::clone(&dp.maps),
            Arc::clone(&quic_stats),
        ));
    }
    tasks.push(
        FlowGc {
            maps: Arc::clone(&dp.maps),
            state: Arc::clone(&gc_state),
            labels: labels.clone(),
            timeouts: GcTimeouts::default(),
            opening_timeouts: GcTimeouts::opening(),
            conn_log: Arc::clone(&conn_log),
        }
        .spawn(),
    );
    let limit = match conn_log_rate {
        0 => "no rate limit".to_owned(),
        n => format!("at most {n} lines/s"),
    };
    match &conn_log_target {
        Some(ConnLogTarget::Stdout) => info!("connection log: standard output, {limit}"),
        Some(ConnLogTarget::File(p)) => info!("connection log: {}, {limit}", p.display()),
        None => {}
    }
    let stats = Arc::new(LiveStats {
        maps: Arc::clone(&dp.maps),
        labels,
        mode: dp.mode,
        tunnel_iface: cfg.tunnel_iface.clone(),
        started,
        gc: gc_state,
        conn_log: conn_log.counters(),
        handoff: Arc::clone(&handoff_stats),
        quic: Arc::clone(&quic_stats),
        health: Arc::clone(&health),
    });
    if let Some(listener) = listener {
        if let Ok(addr) = listener.local_addr() {
            info!("metrics on http://{addr}/metrics, statistics on http://{addr}/stats.json");
        }
        let source: Arc<dyn forwarder::snapshot::SnapshotSource> = stats.clone();
        tasks.push(http::spawn(listener, source));
    }
    tasks.push(control::spawn(
        control_listener,
        control_path.clone(),
        access,
        control_handler(
            Arc::clone(&runtime),
            stats,
            Arc::clone(&stop_request),
            Arc::clone(&detach),
        ),
    ));
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid file {}", p.display()))?;
    }
    info!("forwarding; stop with SIGINT or SIGTERM");
    // wireguard-go or wg-quick restarting deletes the tunnel interface and creates a new
    // one: the tunnel program is attached to it within a second.
    let mut tunnel_tick = tokio::time::interval(Duration::from_secs(1));
    tunnel_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tunnel_error = None;
    let mut tunnel_move: Option<(u32, u32)> = None;
    loop {
        tokio::select! {
            _ = tunnel_tick.tick() => {
                match dp.follow_tunnel(&cfg.tunnel_iface, pins.as_ref()) {
                    // Rules and flows still point at the first interface if an earlier
                    // move failed.
                    Ok(Some((old, new))) => tunnel_move = Some((tunnel_move.map_or(old, |m| m.0), new)),
                    Ok(None) => {}
                    Err(e) => tunnel_warn(&mut tunnel_error, &cfg.tunnel_iface, format!("{e:#}")),
                }
                if let Some((old, new)) = tunnel_move {
                    match runtime.tunnel_moved(old, new) {
                        Ok(flows) => {
                            tunnel_move = None;
                            tunnel_error = None;
                            info!(
                                tunnel = %cfg.tunnel_iface,
                                old_ifindex = old,
                                new_ifindex = new,
                                flows,
                                "the tunnel interface was recreated: attached to the new one, rules and established connections moved over"
                            );
                        }
                        Err(e) => tunnel_warn(&mut tunnel_error, &cfg.tunnel_iface, format!("{e:#}")),
                    }
                }
                continue;
            }
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
            _ = stop_request.notified() => info!("stop requested over the control socket"),
            _ = hup.recv() => {
                match runtime.reload() {
                    Ok(_) => {}
                    Err(e) => warn!("SIGHUP: the configuration was not reloaded, the last good one stays in force: {e}"),
                }
                continue;
            }
        }
        break;
    }
    for t in &tasks {
        t.abort();
    }
    let counters = dp.counters();
    drop(dp);
    match &pins {
        Some(p) if detach.load(std::sync::atomic::Ordering::SeqCst) => {
            p.remove()?;
            // Before TCX (6.6), clsact filters stand in for pinned tc links.
            forwarder::dataplane::remove_lasting_filters();
            info!("data path removed");
        }
        Some(p) => info!(
            pinned = %p.dir().display(),
            "the data path keeps forwarding without the daemon; the next `forwarder run` adopts it, `forwarder stop --detach` removes it"
        ),
        None => info!("programs detached"),
    }
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(&control_path);
    let counters = counters?;
    println!("{:<26} {:>12}", "counter", "packets");
    for (c, v) in counters {
        println!("{:<26} {v:>12}", c.name());
    }
    Ok(())
}

use std::{
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use forwarder::{
    config::{Config, FileConfig},
    connlog::{self, ConnLog, ConnLogTarget},
    dataplane::{Dataplane, XdpPreference},
    flowgc::{FlowGc, FlowGcState, GcTimeouts},
    home,
    http::{self, DEFAULT_METRICS_ADDR, MetricsAddr},
    netif,
    snapshot::{HostLabels, LiveStats},
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
    /// Print the home-side WireGuard and routing configuration that makes replies to
    /// forwarded connections return through the tunnel (client IP preservation).
    HomeConfig {
        #[command(flatten)]
        target: Target,
        /// Name of the WireGuard interface at home.
        #[arg(long, default_value = "wg0", value_name = "IFACE")]
        home_tunnel: String,
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
        } => {
            let cfg = resolve(&target)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(run(
                cfg,
                RunOptions {
                    xdp: xdp_mode,
                    pid_file,
                    metrics_addr,
                    conn_log,
                    conn_log_rate,
                },
            ))
        }
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
            print!("{}", home::render(&backends, &home_tunnel));
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

struct RunOptions {
    xdp: XdpPreference,
    pid_file: Option<PathBuf>,
    metrics_addr: MetricsAddr,
    conn_log: Option<ConnLogTarget>,
    conn_log_rate: u32,
}

async fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let RunOptions {
        xdp,
        pid_file,
        metrics_addr,
        conn_log: conn_log_target,
        conn_log_rate,
    } = opts;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Everything that can fail on a bad flag fails before the kernel is touched.
    let listener = match metrics_addr {
        MetricsAddr::On(addr) => Some(http::bind(addr).await?),
        MetricsAddr::Off => None,
    };
    let conn_log = Arc::new(match &conn_log_target {
        Some(target) => ConnLog::open(target, conn_log_rate)?,
        None => ConnLog::disabled(),
    });
    let started = Instant::now();
    let mut dp = Dataplane::start(&cfg, xdp)?;
    let labels = HostLabels::new(&cfg.hosts);
    let gc_state = Arc::new(FlowGcState::default());
    let mut tasks = Vec::new();
    let health = Arc::new(forwarder::health::Health::default());
    let probed = cfg.tcp_backends();
    if !probed.is_empty() {
        info!(
            backends = probed.len(),
            interval_ms = cfg.health.interval_ms,
            detection_ms = cfg.health.detection_bound().as_millis() as u64,
            "probing backends"
        );
        // The rules that fall back to the local stack while their backend is down.
        let mut fallback: std::collections::HashMap<std::net::SocketAddr, Vec<_>> =
            std::collections::HashMap::new();
        for r in &cfg.rules {
            if r.fallback == Some(forwarder::config::Fallback::Local) {
                fallback
                    .entry(std::net::SocketAddr::new(r.backend, r.backend_port))
                    .or_default()
                    .push(forwarder::dataplane::rule_key(r));
            }
        }
        let maps = Arc::clone(&dp.maps);
        tasks.push(forwarder::health::spawn(
            probed,
            cfg.health,
            Arc::clone(&health),
            move |backend, up| {
                let Some(keys) = fallback.get(&backend) else {
                    return;
                };
                match maps.set_fallback(keys, !up) {
                    Ok(()) if up => {
                        info!(%backend, rules = keys.len(), "new connections go to the backend again")
                    }
                    Ok(()) => warn!(
                        %backend,
                        rules = keys.len(),
                        "new connections go to the local stack (fallback)"
                    ),
                    Err(e) => warn!(%backend, "switching the fallback failed: {e}"),
                }
            },
        ));
    }
    if let Some(events) = dp.take_events() {
        tasks.push(connlog::spawn_event_reader(
            events,
            Arc::clone(&conn_log),
            labels.clone(),
        ));
    }
    tasks.push(
        FlowGc {
            maps: Arc::clone(&dp.maps),
            state: Arc::clone(&gc_state),
            labels: labels.clone(),
            timeouts: GcTimeouts::default(),
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
    if let Some(listener) = listener {
        if let Ok(addr) = listener.local_addr() {
            info!("metrics on http://{addr}/metrics, statistics on http://{addr}/stats.json");
        }
        let stats = LiveStats {
            maps: Arc::clone(&dp.maps),
            labels,
            mode: dp.mode,
            tunnel_iface: cfg.tunnel_iface.clone(),
            started,
            gc: gc_state,
            conn_log: conn_log.counters(),
            health,
        };
        tasks.push(http::spawn(listener, Arc::new(stats)));
    }
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid file {}", p.display()))?;
    }
    info!("forwarding; stop with SIGINT or SIGTERM");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    for t in &tasks {
        t.abort();
    }
    let counters = dp.counters();
    drop(dp);
    info!("programs detached");
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    let counters = counters?;
    println!("{:<26} {:>12}", "counter", "packets");
    for (c, v) in counters {
        println!("{:<26} {v:>12}", c.name());
    }
    Ok(())
}

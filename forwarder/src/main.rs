use std::{net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use forwarder::{
    config::{Config, FileConfig},
    dataplane::{Dataplane, XdpPreference},
    home, netif,
};
use tracing::info;

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
        } => {
            let cfg = resolve(&target)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(run(cfg, xdp_mode, pid_file))
        }
        Command::Check { target } => {
            let cfg = resolve(&target)?;
            println!("configuration OK: {} rule(s)", cfg.rules.len());
            for r in &cfg.rules {
                println!("  {r}");
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

async fn run(cfg: Config, xdp: XdpPreference, pid_file: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let dp = Dataplane::start(&cfg, xdp)?;
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid file {}", p.display()))?;
    }
    info!("forwarding; stop with SIGINT or SIGTERM");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
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

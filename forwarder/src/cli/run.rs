//! `forwarder run`: the daemon.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{
    api::control,
    cli::args::Target,
    daemon::{
        self,
        connlog::{self, ConnLogTarget},
        run::{RunOptions, run as run_daemon},
        runtime::Sources,
    },
    dataplane::{XdpPreference, pin},
    observe::http::{DEFAULT_METRICS_ADDR, MetricsAddr},
};

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    /// XDP attach mode on the public interface.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpPreference,
    /// Write the daemon's PID here once the data path is attached (removed on exit).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Serve Prometheus metrics (/metrics) and statistics (/stats.json) on this
    /// address, or `off`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: MetricsAddr,
    /// Write one JSON line per connection event to this file (appended), or `-` for
    /// standard output. Off by default.
    #[arg(long, value_name = "PATH|-")]
    pub conn_log: Option<ConnLogTarget>,
    /// Most connection log lines per second (bursts up to max(N, 1000)); 0 = no limit.
    #[arg(long, value_name = "N", default_value_t = connlog::DEFAULT_RATE)]
    pub conn_log_rate: u32,
    /// The control socket `forwarder status` and `forwarder rules` talk to.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    pub control: PathBuf,
    /// Group (name or id) whose members may use the control socket besides root.
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,
    /// bpffs directory the data path is pinned under, so that it keeps forwarding
    /// while the daemon restarts and the next daemon adopts it.
    #[arg(long, value_name = "DIR", default_value = pin::DEFAULT_PIN_ROOT)]
    pub pin_dir: PathBuf,
    /// Do not pin: the data path goes away with the daemon (and one left pinned by
    /// an earlier daemon is neither adopted nor removed).
    #[arg(long, conflicts_with = "pin_dir")]
    pub no_pin: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
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
    } = args;
    let cfg = target.resolve()?;
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
    rt.block_on(run_daemon(
        cfg,
        sources,
        RunOptions {
            xdp: xdp_mode,
            pid_file,
            metrics_addr,
            conn_log,
            conn_log_rate,
            control,
            access: daemon::control::Access { admin_gid },
            pin_dir: (!no_pin).then_some(pin_dir),
        },
    ))
}

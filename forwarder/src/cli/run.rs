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
    /// Group (name or id) whose members may use the control socket besides root, to
    /// read only: status, statistics, rules and hosts lists.
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,
    /// Group (name or id) whose members may also change things over the control socket
    /// (rules, hosts, limits, reload, stop), as root may.
    #[arg(long, value_name = "GROUP")]
    pub change_group: Option<String>,
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
        change_group,
        pin_dir,
        no_pin,
    } = args;
    let cfg = target.resolve()?;
    let access = daemon::control::Access {
        admin: admin_group
            .map(|g| lookup_group("--admin-group", &g))
            .transpose()?,
        change: change_group
            .map(|g| lookup_group("--change-group", &g))
            .transpose()?,
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
            access,
            pin_dir: (!no_pin).then_some(pin_dir),
        },
    ))
}

/// The group `flag` names (a name, or a number, which need not exist in /etc/group).
fn lookup_group(flag: &str, g: &str) -> anyhow::Result<daemon::control::Group> {
    if let Ok(gid) = g.parse::<u32>() {
        let name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map_or_else(|| gid.to_string(), |gr| gr.name);
        return Ok(daemon::control::Group { gid, name });
    }
    let gr = nix::unistd::Group::from_name(g)
        .with_context(|| format!("looking up group {g}"))?
        .with_context(|| format!("{flag} {g}: no such group"))?;
    Ok(daemon::control::Group {
        gid: gr.gid.as_raw(),
        name: gr.name,
    })
}

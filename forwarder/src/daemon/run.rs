//! `forwarder run`: loads the data path, starts the daemon's tasks and serves until
//! told to stop.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    config::Config,
    daemon::{
        connlog::{self, ConnLog, ConnLogTarget},
        control,
        flowgc::{FlowGc, FlowGcState, GcTimeouts},
        handler::control_handler,
        handoff, health, quic,
        runtime::{Runtime, Sources},
        stats::LiveStats,
    },
    dataplane::{self, Dataplane, XdpPreference, pin},
    model::labels::SharedLabels,
    observe::{
        http::{self, MetricsAddr},
        snapshot::SnapshotSource,
    },
};

/// How the daemon was asked to run, from `forwarder run`'s flags.
pub struct RunOptions {
    pub xdp: XdpPreference,
    pub pid_file: Option<PathBuf>,
    pub metrics_addr: MetricsAddr,
    pub conn_log: Option<ConnLogTarget>,
    pub conn_log_rate: u32,
    pub control: PathBuf,
    pub access: control::Access,
    pub pin_dir: Option<PathBuf>,
}

/// How long the tasks have to finish what they are doing once told to stop.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

/// The daemon's tasks: each gets a child of one cancellation token and is tracked, so that
/// stopping tells them all and waits for them.
struct Tasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
    named: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    fn new() -> Self {
        Self {
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            named: Vec::new(),
        }
    }

    /// Spawns the task `task(cancel)` makes.
    fn spawn<F>(&mut self, name: &'static str, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tracker.spawn(task(self.cancel.child_token()));
        self.named.push((name, handle));
    }

    /// Tracks a task spawned elsewhere (that stops on the token it was given).
    fn adopt(&mut self, name: &'static str, handle: JoinHandle<()>) {
        let handle = self.tracker.spawn(async move {
            let _ = handle.await;
        });
        self.named.push((name, handle));
    }

    /// Tells every task to stop and waits for them, at most [`SHUTDOWN_DEADLINE`]; those
    /// still running then are named and aborted.
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.tracker.wait())
            .await
            .is_ok()
        {
            return;
        }
        let late: Vec<&str> = self
            .named
            .iter()
            .filter(|(_, h)| !h.is_finished())
            .map(|(name, _)| *name)
            .collect();
        warn!(
            tasks = ?late,
            connections = self.tracker.len().saturating_sub(late.len()),
            "tasks did not stop within {} s; they are abandoned",
            SHUTDOWN_DEADLINE.as_secs()
        );
        for (_, h) in &self.named {
            h.abort();
        }
    }
}

/// Logs a failure to follow the recreated tunnel interface once, not every second.
fn tunnel_warn(last: &mut Option<String>, iface: &str, msg: String) {
    if last.as_ref() != Some(&msg) {
        warn!(tunnel = %iface, "following the recreated tunnel interface failed (retrying every second): {msg}");
        *last = Some(msg);
    }
}

pub async fn run(cfg: Config, sources: Sources, opts: RunOptions) -> anyhow::Result<()> {
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
    // Relays of host policy `local` take two descriptors each: the soft limit (1024 under
    // systemd) goes up to the hard one (the unit's LimitNOFILE=).
    let nofile = crate::sys::rlimit::raise_nofile().unwrap_or_else(|e| {
        warn!("reading the file descriptor limit: {e}; assuming 1024");
        1024
    });
    // Everything that can fail on a bad flag fails before the kernel is touched.
    let listener = match metrics_addr {
        MetricsAddr::On(addr) => Some(http::bind(addr).await?),
        MetricsAddr::Off => None,
    };
    let control_listener = control::bind(&control_path, &access).await?;
    let conn_log = Arc::new(match &conn_log_target {
        Some(target) => ConnLog::open(target, conn_log_rate)?,
        None => ConnLog::disabled(),
    });
    let started = Instant::now();
    let pins = match &pin_dir {
        Some(root) => Some(pin::PinDir::prepare(root)?),
        None => None,
    };
    let mut dp = Dataplane::start(&cfg, xdp, pins.as_ref())?;
    let labels = SharedLabels::new(dp.labels.clone());
    let stop_request = Arc::new(tokio::sync::Notify::new());
    let detach = Arc::new(std::sync::atomic::AtomicBool::new(pins.is_none()));
    let gc_state = Arc::new(FlowGcState::default());
    let mut tasks = Tasks::new();
    if let Some(kernel_log) = dp.kernel_log(tasks.cancel.child_token()) {
        tasks.spawn("kernel log", |_| kernel_log);
    }
    let health = Arc::new(health::Health::default());
    let runtime = Runtime::new(
        Arc::clone(&dp.maps),
        dp.tunnel_ifindex,
        sources,
        labels.clone(),
        Arc::clone(&health),
        cfg.clone(),
    );
    runtime.start_health(tasks.cancel.child_token());
    if let Some(events) = dp.take_events() {
        let (log, labels) = (Arc::clone(&conn_log), labels.clone());
        tasks.spawn("connection events", |cancel| {
            connlog::serve_events(events, log, labels, cancel)
        });
    }
    let handoff_stats = Arc::new(handoff::HandoffStats::default());
    if let Some(hm) = dp.take_handoff() {
        let (maps, stats) = (Arc::clone(&dp.maps), Arc::clone(&handoff_stats));
        let served = tasks.tracker.clone();
        let settings = handoff::HandoffSettings {
            limits: handoff::RelayLimits {
                idle: cfg.local.idle_timeout(),
                lifetime: cfg.local.max_lifetime(),
            },
            budget: handoff::relay_budget(nofile, cfg.local.max_connections),
        };
        if settings.budget < cfg.local.max_connections as usize {
            warn!(
                "host policy \"local\": at most {} connections relayed at once, not {}: the file descriptor limit is {nofile} (two per relay, {} kept for the rest; raise LimitNOFILE=)",
                settings.budget,
                cfg.local.max_connections,
                handoff::FD_RESERVE
            );
        }
        tasks.spawn("hand-off", |cancel| {
            handoff::serve(hm, maps, stats, settings, served, cancel)
        });
    }
    let quic_stats = Arc::new(quic::QuicStats::default());
    if let Some(qm) = dp.take_quic() {
        let (maps, stats) = (Arc::clone(&dp.maps), Arc::clone(&quic_stats));
        tasks.spawn("QUIC Initials", |cancel| {
            quic::serve(qm, maps, stats, cancel)
        });
    }
    let gc = FlowGc {
        maps: Arc::clone(&dp.maps),
        state: Arc::clone(&gc_state),
        labels: labels.clone(),
        timeouts: GcTimeouts::default(),
        opening_timeouts: GcTimeouts::opening(),
        conn_log: Arc::clone(&conn_log),
    };
    tasks.spawn("flow GC", |cancel| gc.run(cancel));
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
        tunnel: crate::daemon::stats::TunnelWatch::spawn(cfg.tunnel_iface.clone()),
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
        let source: Arc<dyn SnapshotSource> = stats.clone();
        let server = http::spawn(listener, source, tasks.cancel.child_token());
        tasks.adopt("metrics endpoint", server);
    }
    let control_server = control::spawn(
        control_listener,
        control_path.clone(),
        access,
        control_handler(
            Arc::clone(&runtime),
            stats,
            Arc::clone(&stop_request),
            Arc::clone(&detach),
        ),
        tasks.cancel.child_token(),
    );
    tasks.adopt("control socket", control_server);
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
    // The machine's addresses may change (DHCP, a new tunnel address): the sources the
    // public side refuses follow within `SOURCES_EVERY` ticks.
    const SOURCES_EVERY: u32 = 5;
    let mut ticks = 0u32;
    runtime.refresh_sources();
    loop {
        tokio::select! {
            _ = tunnel_tick.tick() => {
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(SOURCES_EVERY) {
                    runtime.refresh_sources();
                }
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
    tasks.stop().await;
    // A pinned data path keeps forwarding with the rules it has when the daemon is gone.
    dp.maps.settle_rules().await;
    let counters = dp.counters();
    drop(dp);
    match &pins {
        Some(p) if detach.load(std::sync::atomic::Ordering::SeqCst) => {
            p.remove()?;
            // Before TCX (6.6), clsact filters stand in for pinned tc links.
            dataplane::remove_lasting_filters();
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

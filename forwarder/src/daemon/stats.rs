//! The running daemon's statistics, gathered from the maps and the tasks.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use forwarder_common::Counter;

use crate::{
    api::stats::{
        AttachMode, BackendSnapshot, ConnLogStats, FlowTableStats, LocalStats, Snapshot,
        TunnelState,
    },
    daemon::{connlog::ConnLogCounters, flowgc::FlowGcState},
    dataplane::maps::{Maps, MapsError},
    model::labels::SharedLabels,
    observe::snapshot::{SnapshotSource, host_snapshots},
    sys::netif,
};

/// How often the tunnel's latest handshake is asked for.
const HANDSHAKE_REFRESH: Duration = Duration::from_secs(1);

/// The tunnel interface's state. Its latest handshake is asked for once a second on the
/// blocking pool and kept here, so that a scrape or a `status` only reads memory: asking
/// (a userspace WireGuard's socket, the kernel's netlink) may block, which no runtime
/// thread may.
pub struct TunnelWatch {
    iface: String,
    /// Unix time of the latest handshake, 0 while none is known.
    latest: Arc<AtomicU64>,
    refresh: tokio::task::JoinHandle<()>,
}

impl TunnelWatch {
    /// Starts asking at once; ends when dropped.
    pub fn spawn(iface: String) -> Self {
        let latest = Arc::new(AtomicU64::new(0));
        let refresh = tokio::spawn(refresh_handshake(iface.clone(), Arc::clone(&latest)));
        Self {
            iface,
            latest,
            refresh,
        }
    }

    pub fn state(&self) -> TunnelState {
        TunnelState {
            iface: self.iface.clone(),
            // A sysfs read: memory, not I/O.
            up: netif::is_up(&self.iface),
            handshake_age_seconds: match self.latest.load(Ordering::Relaxed) {
                0 => None,
                t => netif::seconds_since(t),
            },
        }
    }
}

impl Drop for TunnelWatch {
    fn drop(&mut self) {
        self.refresh.abort();
    }
}

async fn refresh_handshake(iface: String, latest: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(HANDSHAKE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let asked = iface.clone();
        let t = match tokio::task::spawn_blocking(move || netif::wireguard_latest_handshake(&asked))
            .await
        {
            Ok(Ok(t)) => {
                failing = false;
                t
            }
            Ok(Err(e)) => {
                // Said once per run of failures: a tunnel that is not WireGuard fails
                // every second.
                if !std::mem::replace(&mut failing, true) {
                    tracing::debug!(
                        "tunnel handshake: {}",
                        crate::dataplane::maps::display_chain(&e)
                    );
                }
                None
            }
            Err(_) => None,
        };
        latest.store(t.unwrap_or(0), Ordering::Relaxed);
    }
}

/// The running daemon's statistics.
pub struct LiveStats {
    pub maps: Arc<Maps>,
    pub labels: SharedLabels,
    pub mode: AttachMode,
    pub tunnel: TunnelWatch,
    pub started: Instant,
    pub gc: Arc<FlowGcState>,
    pub conn_log: Arc<ConnLogCounters>,
    pub health: Arc<crate::daemon::health::Health>,
    pub handoff: Arc<crate::daemon::handoff::HandoffStats>,
    pub quic: Arc<crate::daemon::quic::QuicStats>,
}

impl SnapshotSource for LiveStats {
    fn snapshot(&self) -> Result<Snapshot, MapsError> {
        let counters = self.maps.counters()?;
        let labels = self.labels.get();
        let stats = match self.maps.host_stats(labels.count()) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                tracing::warn!("{}", crate::dataplane::maps::display_chain(&e));
                None
            }
            None => None,
        };
        let gc = self.gc.totals();
        Ok(Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            attach_mode: self.mode.as_str().to_owned(),
            tunnel: self.tunnel.state(),
            host_stats_available: stats.is_some(),
            flow_table: FlowTableStats {
                entries: gc.entries.saturating_sub(gc.opening),
                capacity: u64::from(self.maps.flows_capacity()),
                opening: gc.opening,
                opening_capacity: u64::from(self.maps.new_flows_capacity()),
                evictions_estimate: gc.evictions_estimate,
                removed_by_gc: gc.removed,
            },
            hosts: host_snapshots(&labels, stats.as_deref(), &gc.active_per_host),
            counters: counters
                .into_iter()
                .map(|(c, v): (Counter, u64)| (c.name().to_owned(), v))
                .collect(),
            conn_log: ConnLogStats {
                enabled: self.conn_log.enabled,
                lines: self.conn_log.lines.load(Ordering::Relaxed),
                suppressed: self.conn_log.suppressed.load(Ordering::Relaxed),
            },
            quic: self.quic.snapshot(),
            local: LocalStats {
                served: self.handoff.served.load(Ordering::Relaxed),
                failed: self.handoff.failed.load(Ordering::Relaxed),
                active: self.handoff.active.load(Ordering::Relaxed),
                refused: self.handoff.refused.load(Ordering::Relaxed),
                closed_idle: self.handoff.closed_idle.load(Ordering::Relaxed),
                closed_lifetime: self.handoff.closed_lifetime.load(Ordering::Relaxed),
                budget: self.handoff.budget.load(Ordering::Relaxed),
            },
            backends: self
                .health
                .states()
                .into_iter()
                .map(|b| BackendSnapshot {
                    backend: b.addr.to_string(),
                    up: b.up,
                    since_seconds: b.since.elapsed().as_secs(),
                    transitions: b.transitions,
                    last_error: b.last_error,
                })
                .collect(),
        })
    }
}

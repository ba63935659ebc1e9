//! The running daemon's statistics, gathered from the maps and the tasks.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
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

/// The running daemon's statistics.
pub struct LiveStats {
    pub maps: Arc<Maps>,
    pub labels: SharedLabels,
    pub mode: AttachMode,
    pub tunnel_iface: String,
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
            tunnel: TunnelState {
                iface: self.tunnel_iface.clone(),
                up: netif::is_up(&self.tunnel_iface),
                handshake_age_seconds: netif::wireguard_handshake_age(&self.tunnel_iface),
            },
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

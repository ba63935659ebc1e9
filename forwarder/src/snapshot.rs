//! A point-in-time view of the data path's statistics: what `/metrics`, `/stats.json` and
//! `forwarder stats` show. The JSON form of [`Snapshot`] is the `/stats.json` document.
//!
//! Host names reach this view only as labels of configured patterns, `other` or `unknown`:
//! the kernel reports host ids, never the (attacker-controlled) names it read.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use forwarder_common::{
    Counter, HOST_DROP_REASON_NAMES, HOST_FIRST_CONFIGURED, HOST_OTHER, HOST_PROTOCOLS,
    HOST_UNKNOWN, HostStats, host::HostPattern,
};
use serde::{Deserialize, Serialize};

use crate::{
    connlog::ConnLogCounters,
    dataplane::AttachMode,
    flowgc::FlowGcState,
    maps::{Maps, MapsError},
    netif,
};

/// Label of host id 0: no name could be read from the connection.
pub const HOST_UNKNOWN_LABEL: &str = "unknown";
/// Label of host id 1: a name that is not configured.
pub const HOST_OTHER_LABEL: &str = "other";

/// The label of every host id in use: `unknown`, `other`, then the configured patterns
/// under the ids the host table gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostLabels {
    /// Indexed by host id; `None` for ids no configured host holds.
    labels: Vec<Option<String>>,
    /// Configured host ids in configuration order.
    order: Vec<u32>,
}

impl Default for HostLabels {
    fn default() -> Self {
        Self::from_assigned(Vec::new())
    }
}

impl HostLabels {
    /// Configured hosts numbered in order from `HOST_FIRST_CONFIGURED`.
    pub fn new(hosts: &[HostPattern]) -> Self {
        Self::from_assigned(
            (HOST_FIRST_CONFIGURED..)
                .zip(hosts.iter().map(|h| h.label.clone()))
                .collect(),
        )
    }

    /// Configured hosts with the ids the host table holds, in configuration order.
    pub fn from_assigned(assigned: Vec<(u32, String)>) -> Self {
        let mut labels = vec![
            Some(HOST_UNKNOWN_LABEL.to_owned()),
            Some(HOST_OTHER_LABEL.to_owned()),
        ];
        let mut order = Vec::with_capacity(assigned.len());
        for (id, label) in assigned {
            let i = id as usize;
            if labels.len() <= i {
                labels.resize(i + 1, None);
            }
            labels[i] = Some(label);
            order.push(id);
        }
        Self { labels, order }
    }

    /// The label of host id `id`. An id the daemon did not configure (which the kernel
    /// never reports) is counted as `other`, so no label can come from anywhere else.
    pub fn label(&self, id: u32) -> &str {
        self.labels
            .get(id as usize)
            .and_then(Option::as_deref)
            .unwrap_or(HOST_OTHER_LABEL)
    }

    /// One past the highest host id in use: statistics are read for `0..count()`.
    pub fn count(&self) -> u32 {
        u32::try_from(self.labels.len()).unwrap_or(u32::MAX)
    }

    /// Host ids in display order: configured hosts in configuration order, then `other`,
    /// then `unknown`.
    pub fn display_order(&self) -> impl Iterator<Item = u32> + '_ {
        self.order.iter().copied().chain([HOST_OTHER, HOST_UNKNOWN])
    }
}

/// The host labels as the running daemon has them: replaced whole when the host table
/// changes (`forwarder hosts add`, a reload), read by every consumer per use.
#[derive(Clone, Debug, Default)]
pub struct SharedLabels(Arc<std::sync::RwLock<Arc<HostLabels>>>);

impl SharedLabels {
    pub fn new(labels: HostLabels) -> Self {
        Self(Arc::new(std::sync::RwLock::new(Arc::new(labels))))
    }

    pub fn get(&self) -> Arc<HostLabels> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn set(&self, labels: HostLabels) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(labels);
    }
}

/// The statistics document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The daemon's version.
    pub version: String,
    pub uptime_seconds: u64,
    /// `xdp-driver`, `xdp-generic` or `tc-only`.
    pub attach_mode: String,
    pub tunnel: TunnelState,
    /// False when the kernel programs keep no per-host statistics (then every host's
    /// counters are zero and only `active_flows` is meaningful).
    pub host_stats_available: bool,
    pub flow_table: FlowTableStats,
    /// Configured hosts in configuration order, then `other`, then `unknown`.
    pub hosts: Vec<HostSnapshot>,
    /// Global data-path counters by name (`Counter::name`).
    pub counters: BTreeMap<String, u64>,
    pub conn_log: ConnLogStats,
    /// Connections handed to the VPS's own server (host policy `local`).
    #[serde(default)]
    pub local: LocalStats,
    /// The daemon's reading of QUIC Initials (HTTP/3 connections' SNI).
    #[serde(default)]
    pub quic: crate::quic::QuicStatsSnapshot,
    /// Health of each TCP backend, as the probes see it.
    #[serde(default)]
    pub backends: Vec<BackendSnapshot>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSnapshot {
    /// `address:port`.
    pub backend: String,
    pub up: bool,
    /// Seconds in the current state.
    pub since_seconds: u64,
    /// Up/down changes since the daemon started.
    pub transitions: u64,
    /// Why the last failed probe failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelState {
    pub iface: String,
    pub up: bool,
    /// Seconds since the last WireGuard handshake with a peer (home); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_age_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableStats {
    /// Entries of established connections (two per connection), as of the last flow GC
    /// scan.
    pub entries: u64,
    pub capacity: u64,
    /// Entries of connections still opening (handshake not completed), in a table of
    /// their own: a flood of connections that never complete churns only that one.
    #[serde(default)]
    pub opening: u64,
    #[serde(default)]
    pub opening_capacity: u64,
    /// Entries the kernel's LRU evicted, estimated (see docs/metrics.md).
    pub evictions_estimate: u64,
    /// Entries the daemon removed because their connection ended or idled out.
    pub removed_by_gc: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// A configured pattern (`app.example.com`, `*.example.com`), `other` or `unknown`.
    pub host: String,
    /// Connections attributed to the host since the daemon started.
    pub connections: u64,
    /// Connections of the host currently in the flow table.
    pub active_flows: u64,
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    /// Dropped packets by reason (`HOST_DROP_REASON_NAMES`).
    pub drops: BTreeMap<String, u64>,
    /// The counters above split by protocol (`tcp`, `quic`); those above are their sums.
    #[serde(default)]
    pub protocols: BTreeMap<String, ProtocolStats>,
}

/// One host's counters for the connections of one protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolStats {
    pub connections: u64,
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    pub drops: BTreeMap<String, u64>,
}

impl ProtocolStats {
    fn of(s: &HostStats) -> Self {
        ProtocolStats {
            connections: s.connections,
            packets_to_backend: s.packets_to_backend,
            bytes_to_backend: s.bytes_to_backend,
            packets_to_client: s.packets_to_client,
            bytes_to_client: s.bytes_to_client,
            drops: HOST_DROP_REASON_NAMES
                .iter()
                .zip(s.drops)
                .map(|(n, v)| ((*n).to_owned(), v))
                .collect(),
        }
    }
}

impl HostSnapshot {
    pub fn drops_total(&self) -> u64 {
        self.drops.values().fold(0, |a, b| a.saturating_add(*b))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnLogStats {
    pub enabled: bool,
    /// Lines written.
    pub lines: u64,
    /// Lines dropped by the rate limit.
    pub suppressed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStats {
    /// Connections rebuilt on the VPS and relayed to its server.
    pub served: u64,
    /// Connections that could not be (they were reset).
    pub failed: u64,
    /// Connections being relayed now.
    pub active: u64,
}

/// Builds the per-host part of a snapshot. `stats` (TCP, QUIC) and `active` are indexed
/// by host id; missing entries count as zero.
pub fn host_snapshots(
    labels: &HostLabels,
    stats: Option<&[[HostStats; 2]]>,
    active: &[u64],
) -> Vec<HostSnapshot> {
    labels
        .display_order()
        .map(|id| {
            let i = id as usize;
            let both = stats.and_then(|s| s.get(i)).copied().unwrap_or_default();
            let mut sum = both[0];
            crate::maps::add_host_stats(&mut sum, &both[1]);
            let t = ProtocolStats::of(&sum);
            HostSnapshot {
                host: labels.label(id).to_owned(),
                connections: t.connections,
                active_flows: active.get(i).copied().unwrap_or(0),
                packets_to_backend: t.packets_to_backend,
                bytes_to_backend: t.bytes_to_backend,
                packets_to_client: t.packets_to_client,
                bytes_to_client: t.bytes_to_client,
                drops: t.drops,
                protocols: HOST_PROTOCOLS
                    .iter()
                    .zip(&both)
                    .map(|(p, s)| ((*p).to_owned(), ProtocolStats::of(s)))
                    .collect(),
            }
        })
        .collect()
}

/// Where snapshots come from: the live maps in the daemon, a fixed value in tests.
pub trait SnapshotSource: Send + Sync + 'static {
    fn snapshot(&self) -> Result<Snapshot, MapsError>;
}

/// The running daemon's statistics.
pub struct LiveStats {
    pub maps: Arc<Maps>,
    pub labels: SharedLabels,
    pub mode: AttachMode,
    pub tunnel_iface: String,
    pub started: Instant,
    pub gc: Arc<FlowGcState>,
    pub conn_log: Arc<ConnLogCounters>,
    pub health: Arc<crate::health::Health>,
    pub handoff: Arc<crate::handoff::HandoffStats>,
    pub quic: Arc<crate::quic::QuicStats>,
}

impl SnapshotSource for LiveStats {
    fn snapshot(&self) -> Result<Snapshot, MapsError> {
        let counters = self.maps.counters()?;
        let labels = self.labels.get();
        let stats = match self.maps.host_stats(labels.count()) {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                tracing::warn!("{}", crate::maps::display_chain(&e));
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

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn labels() -> HostLabels {
        HostLabels::new(&[
            HostPattern::parse("app.example.com").unwrap(),
            HostPattern::parse("*.example.com").unwrap(),
        ])
    }

    /// A snapshot with something in every field, for rendering and encoding tests.
    pub fn sample() -> Snapshot {
        let labels = labels();
        // TCP figures; QUIC ones stay zero (the labels are exported all the same).
        let stats: Vec<[HostStats; 2]> = (0..labels.count())
            .map(|id| {
                let n = u64::from(id) + 1;
                let tcp = HostStats {
                    packets_to_backend: 10 * n,
                    bytes_to_backend: 1500 * n,
                    packets_to_client: 20 * n,
                    bytes_to_client: 3_000_000 * n,
                    connections: n,
                    drops: [n, 0, 0, 1],
                };
                [tcp, HostStats::default()]
            })
            .collect();
        Snapshot {
            version: "0.1.0".into(),
            uptime_seconds: 42,
            attach_mode: "xdp-driver".into(),
            tunnel: TunnelState {
                iface: "wg0".into(),
                up: true,
                handshake_age_seconds: Some(17),
            },
            host_stats_available: true,
            flow_table: FlowTableStats {
                entries: 6,
                capacity: 262_144,
                opening: 3,
                opening_capacity: 65_536,
                evictions_estimate: 2,
                removed_by_gc: 4,
            },
            hosts: host_snapshots(&labels, Some(&stats), &[1, 0, 1, 1]),
            counters: Counter::ALL
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name().to_owned(), i as u64))
                .collect(),
            conn_log: ConnLogStats {
                enabled: true,
                lines: 7,
                suppressed: 1,
            },
            local: LocalStats {
                served: 5,
                failed: 1,
                active: 2,
            },
            quic: crate::quic::QuicStatsSnapshot {
                datagrams: 9,
                named: 4,
                no_sni: 1,
                undecodable: 2,
                expired: 1,
                verdicts_failed: 0,
                pending: 1,
            },
            backends: vec![BackendSnapshot {
                backend: "10.8.0.2:443".into(),
                up: true,
                since_seconds: 30,
                transitions: 2,
                last_error: Some("connection refused".into()),
            }],
        }
    }

    #[test]
    fn labels_come_only_from_configuration() {
        let l = labels();
        assert_eq!(l.label(HOST_UNKNOWN), "unknown");
        assert_eq!(l.label(HOST_OTHER), "other");
        assert_eq!(l.label(2), "app.example.com");
        assert_eq!(l.label(3), "*.example.com");
        assert_eq!(l.label(4), "other");
        assert_eq!(l.label(u32::MAX), "other");
        assert_eq!(l.display_order().collect::<Vec<_>>(), [2, 3, 1, 0]);
    }

    #[test]
    fn hosts_are_listed_configured_first() {
        let s = sample();
        let names: Vec<&str> = s.hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(
            names,
            ["app.example.com", "*.example.com", "other", "unknown"]
        );
        let app = &s.hosts[0];
        assert_eq!((app.connections, app.active_flows), (3, 1));
        assert_eq!(app.drops["redirect_failed"], 3);
        assert_eq!(app.drops_total(), 4);
        assert_eq!(app.drops.len(), HOST_DROP_REASON_NAMES.len());
        // Without host statistics everything but the active flows is zero.
        let bare = host_snapshots(&labels(), None, &[5]);
        assert_eq!(bare[3].host, "unknown");
        assert_eq!(bare[3].active_flows, 5);
        assert_eq!(bare[3].connections, 0);
    }

    #[test]
    fn json_round_trips() {
        let s = sample();
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"evictions_estimate\":2"), "{text}");
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}

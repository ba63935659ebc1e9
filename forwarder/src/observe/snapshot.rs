//! A point-in-time view of the data path's statistics: what `/metrics`, `/stats.json` and
//! `forwarder stats` show. The JSON form of [`Snapshot`] is the `/stats.json` document.
//!
//! Host names reach this view only as labels of configured patterns, `other` or `unknown`:
//! the kernel reports host ids, never the (attacker-controlled) names it read.

use forwarder_common::{HOST_PROTOCOLS, HostStats};

pub use crate::api::stats::*;
use crate::{dataplane::maps::MapsError, model::labels::HostLabels};

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
            crate::dataplane::maps::add_host_stats(&mut sum, &both[1]);
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

#[cfg(test)]
pub mod tests {
    use forwarder_common::{
        Counter, HOST_DROP_REASON_NAMES, HOST_OTHER, HOST_UNKNOWN, host::HostPattern,
    };

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
                ..LocalStats::default()
            },
            quic: QuicStatsSnapshot {
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

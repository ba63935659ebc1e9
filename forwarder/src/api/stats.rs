//! The statistics document (`/stats.json`) and its parts, shared by the daemon and
//! `forwarder stats`.

use std::collections::BTreeMap;

use forwarder_common::{
    ATTACH_TC_ONLY, ATTACH_XDP_DRIVER, ATTACH_XDP_GENERIC, HOST_DROP_REASON_NAMES, HostStats,
};
use serde::{Deserialize, Serialize};

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
    pub quic: QuicStatsSnapshot,
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
    pub fn of(s: &HostStats) -> Self {
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
    /// Hand-offs refused because every relay was in use (`[local] max_connections`, or
    /// what the file descriptor limit allows); the connections were reset.
    #[serde(default)]
    pub refused: u64,
    /// Relays closed for idling past `[local] idle_timeout_s`.
    #[serde(default)]
    pub closed_idle: u64,
    /// Relays closed for running past `[local] max_lifetime_s`.
    #[serde(default)]
    pub closed_lifetime: u64,
    /// Relays allowed at once.
    #[serde(default)]
    pub budget: u64,
}

/// How the public interface's programs ended up attached; named in kebab-case
/// (`xdp-driver`) in the status, the metrics and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum AttachMode {
    /// XDP in the driver, tc hands translated packets to the tunnel.
    XdpDriver,
    /// XDP in the generic (skb) path: same programs, less speed.
    XdpGeneric,
    /// No XDP: the tc program translates by itself.
    TcOnly,
}

impl AttachMode {
    /// How the mode is kept in `DataplaneConfig::attach_mode`.
    pub const fn code(self) -> u32 {
        match self {
            AttachMode::XdpDriver => ATTACH_XDP_DRIVER,
            AttachMode::XdpGeneric => ATTACH_XDP_GENERIC,
            AttachMode::TcOnly => ATTACH_TC_ONLY,
        }
    }

    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            ATTACH_XDP_DRIVER => Some(AttachMode::XdpDriver),
            ATTACH_XDP_GENERIC => Some(AttachMode::XdpGeneric),
            ATTACH_TC_ONLY => Some(AttachMode::TcOnly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct QuicStatsSnapshot {
    pub datagrams: u64,
    pub named: u64,
    pub no_sni: u64,
    pub undecodable: u64,
    pub expired: u64,
    pub verdicts_failed: u64,
    pub pending: u64,
}

#[cfg(test)]
mod tests {
    use super::AttachMode;

    #[test]
    fn attach_modes_keep_their_names() {
        let modes = [
            AttachMode::XdpDriver,
            AttachMode::XdpGeneric,
            AttachMode::TcOnly,
        ];
        assert_eq!(
            modes.map(AttachMode::as_str),
            ["xdp-driver", "xdp-generic", "tc-only"]
        );
        for m in modes {
            assert_eq!(AttachMode::from_code(m.code()), Some(m));
        }
    }
}

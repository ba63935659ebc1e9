//! Prometheus metrics (OpenMetrics text), encoded at scrape time from a [`Snapshot`] of
//! the maps by a prometheus-client [`Collector`]. The names are a contract with
//! dashboards: see docs/metrics.md.

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::api::stats::{AttachMode, Snapshot};

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const DIRECTIONS: [&str; 2] = ["to_backend", "to_client"];
const ATTACH_MODES: [AttachMode; 3] = [
    AttachMode::XdpDriver,
    AttachMode::XdpGeneric,
    AttachMode::TcOnly,
];

/// Encodes one snapshot (the collector of a per-scrape registry).
#[derive(Debug)]
struct SnapshotCollector(Snapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        encode_snapshot(&self.0, &mut encoder)
    }
}

/// The metrics of `snapshot` in OpenMetrics text format (ends with `# EOF`).
pub fn encode(snapshot: Snapshot) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Counter family `name` (encoded as `name_total`).
fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn encode_snapshot(s: &Snapshot, enc: &mut DescriptorEncoder) -> fmt::Result {
    let hosts = &s.hosts;
    if s.host_stats_available {
        // Per host and protocol: `tcp` (HTTP/1, HTTP/2 over TLS) and `quic` (HTTP/3).
        let per_proto = || {
            hosts.iter().flat_map(|h| {
                h.protocols
                    .iter()
                    .map(move |(p, c)| (h.host.as_str(), p.as_str(), c))
            })
        };
        counters(
            enc,
            "forwarder_host_packets",
            "Packets forwarded per host, protocol and direction.",
            per_proto().flat_map(|(h, p, c)| {
                DIRECTIONS
                    .into_iter()
                    .zip([c.packets_to_backend, c.packets_to_client])
                    .map(move |(d, v)| ([("host", h), ("protocol", p), ("direction", d)], v))
            }),
        )?;
        counters(
            enc,
            "forwarder_host_bytes",
            "Bytes (IP packet length) forwarded per host, protocol and direction.",
            per_proto().flat_map(|(h, p, c)| {
                DIRECTIONS
                    .into_iter()
                    .zip([c.bytes_to_backend, c.bytes_to_client])
                    .map(move |(d, v)| ([("host", h), ("protocol", p), ("direction", d)], v))
            }),
        )?;
        counters(
            enc,
            "forwarder_host_connections",
            "Connections attributed to each host, per protocol.",
            per_proto().map(|(h, p, c)| ([("host", h), ("protocol", p)], c.connections)),
        )?;
        counters(
            enc,
            "forwarder_host_drops",
            "Packets of each host's connections dropped, per protocol and reason.",
            per_proto().flat_map(|(h, p, c)| {
                c.drops
                    .iter()
                    .map(move |(r, v)| ([("host", h), ("protocol", p), ("reason", r.as_str())], *v))
            }),
        )?;
    }
    gauges(
        enc,
        "forwarder_host_flows",
        "Connections of each host currently in the flow table.",
        hosts
            .iter()
            .map(|h| ([("host", h.host.as_str())], h.active_flows)),
    )?;
    counters(
        enc,
        "forwarder_datapath_packets",
        "Data-path events by kind (the kernel programs' global counters).",
        s.counters
            .iter()
            .map(|(name, v)| ([("event", name.as_str())], *v)),
    )?;
    gauge(
        enc,
        "forwarder_flow_table_entries",
        "Entries of established connections in the flow table (two per connection), as of the last flow GC scan.",
        s.flow_table.entries,
    )?;
    gauge(
        enc,
        "forwarder_flow_table_capacity",
        "Size of the flow table of established connections in entries.",
        s.flow_table.capacity,
    )?;
    gauge(
        enc,
        "forwarder_flow_table_opening_entries",
        "Entries of connections still opening (handshake not completed), in a table of their own, as of the last flow GC scan.",
        s.flow_table.opening,
    )?;
    gauge(
        enc,
        "forwarder_flow_table_opening_capacity",
        "Size of the table of opening connections in entries.",
        s.flow_table.opening_capacity,
    )?;
    counter(
        enc,
        "forwarder_flow_table_evictions",
        "Flow table entries evicted by the LRU, estimated as 2 x flows created - entries - entries removed by the daemon.",
        s.flow_table.evictions_estimate,
    )?;
    gauges(
        enc,
        "forwarder_xdp_attach_mode",
        "1 for the way the programs are attached to the public interface, 0 for the others.",
        ATTACH_MODES.iter().map(|m| {
            (
                [("mode", m.as_str())],
                u64::from(m.as_str() == s.attach_mode),
            )
        }),
    )?;
    gauge(
        enc,
        "forwarder_tunnel_up",
        "1 if the tunnel interface is up.",
        u64::from(s.tunnel.up),
    )?;
    gauges(
        enc,
        "forwarder_backend_up",
        "1 if the backend answers the health probes (TCP connect through the tunnel), with hysteresis.",
        s.backends
            .iter()
            .map(|b| ([("backend", b.backend.as_str())], u64::from(b.up))),
    )?;
    counters(
        enc,
        "forwarder_backend_transitions",
        "Times the backend went down or came back up.",
        s.backends
            .iter()
            .map(|b| ([("backend", b.backend.as_str())], b.transitions)),
    )?;
    if let Some(age) = s.tunnel.handshake_age_seconds {
        gauge(
            enc,
            "forwarder_tunnel_handshake_age_seconds",
            "Seconds since the last WireGuard handshake with a peer on the tunnel (WireGuard renews it every two minutes while traffic flows).",
            age,
        )?;
    }
    counter(
        enc,
        "forwarder_connection_log_lines",
        "Lines written to the connection log.",
        s.conn_log.lines,
    )?;
    counter(
        enc,
        "forwarder_connection_log_suppressed",
        "Connection log lines dropped by its rate limit.",
        s.conn_log.suppressed,
    )?;
    counters(
        enc,
        "forwarder_local_connections",
        "Connections of hosts with policy \"local\" handed to the VPS's own server, by result (served: rebuilt and relayed; failed: reset).",
        [
            ([("result", "served")], s.local.served),
            ([("result", "failed")], s.local.failed),
        ],
    )?;
    gauge(
        enc,
        "forwarder_local_connections_active",
        "Connections of hosts with policy \"local\" being relayed to the VPS's own server now.",
        s.local.active,
    )?;
    gauge(
        enc,
        "forwarder_local_connections_budget",
        "Connections of hosts with policy \"local\" the daemon relays at once at most ([local] max_connections, lowered to what its file descriptor limit allows).",
        s.local.budget,
    )?;
    counter(
        enc,
        "forwarder_local_refused",
        "Connections of hosts with policy \"local\" reset because every relay was in use.",
        s.local.refused,
    )?;
    counters(
        enc,
        "forwarder_local_closed",
        "Relays of hosts with policy \"local\" closed by the daemon, by reason (idle: no byte either way for [local] idle_timeout_s; lifetime: open for [local] max_lifetime_s).",
        [
            ([("reason", "idle")], s.local.closed_idle),
            ([("reason", "lifetime")], s.local.closed_lifetime),
        ],
    )?;
    counter(
        enc,
        "forwarder_quic_initials",
        "QUIC Initial datagrams the daemon read from the kernel (rate-limited there: see forwarder_datapath_packets_total{event=\"quic_rate_limited\"}).",
        s.quic.datagrams,
    )?;
    counters(
        enc,
        "forwarder_quic_connections",
        "QUIC connections whose Initials the daemon decoded, by outcome (named: the SNI gave the host; no_sni; undecodable: not a QUIC v1/v2 Initial that decrypts, or a malformed ClientHello; expired: the ClientHello never completed).",
        [
            ([("outcome", "named")], s.quic.named),
            ([("outcome", "no_sni")], s.quic.no_sni),
            ([("outcome", "undecodable")], s.quic.undecodable),
            ([("outcome", "expired")], s.quic.expired),
        ],
    )?;
    gauge(
        enc,
        "forwarder_quic_pending",
        "QUIC connections whose ClientHello the daemon is still reassembling.",
        s.quic.pending,
    )?;
    gauges(
        enc,
        "forwarder_build_info",
        "Always 1; the version of the running daemon as a label.",
        [([("version", s.version.as_str())], 1)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use forwarder_common::{Counter, HOST_DROP_REASON_NAMES};

    use super::*;
    use crate::observe::snapshot::tests::sample;

    /// Metric name, labels and value of a sample line.
    type Sample = (String, Vec<(String, String)>, String);

    fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => {
                        let rest = rest.strip_suffix('}').unwrap();
                        let labels = rest
                            .split(',')
                            .map(|kv| {
                                let (k, v) = kv.split_once('=').unwrap();
                                (k.to_owned(), v.trim_matches('"').to_owned())
                            })
                            .collect();
                        (n.to_owned(), labels)
                    }
                    None => (series.to_owned(), Vec::new()),
                };
                (name, labels, value.to_owned())
            })
            .collect()
    }

    #[test]
    fn every_metric_is_exported() {
        let text = encode(sample()).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let names: BTreeSet<String> = samples(&text).into_iter().map(|s| s.0).collect();
        for want in [
            "forwarder_host_packets_total",
            "forwarder_host_bytes_total",
            "forwarder_host_connections_total",
            "forwarder_host_flows",
            "forwarder_host_drops_total",
            "forwarder_datapath_packets_total",
            "forwarder_flow_table_entries",
            "forwarder_flow_table_capacity",
            "forwarder_flow_table_opening_entries",
            "forwarder_flow_table_opening_capacity",
            "forwarder_flow_table_evictions_total",
            "forwarder_xdp_attach_mode",
            "forwarder_tunnel_up",
            "forwarder_tunnel_handshake_age_seconds",
            "forwarder_backend_up",
            "forwarder_backend_transitions_total",
            "forwarder_connection_log_lines_total",
            "forwarder_connection_log_suppressed_total",
            "forwarder_local_connections_total",
            "forwarder_local_connections_active",
            "forwarder_local_connections_budget",
            "forwarder_local_refused_total",
            "forwarder_local_closed_total",
            "forwarder_quic_initials_total",
            "forwarder_quic_connections_total",
            "forwarder_quic_pending",
            "forwarder_build_info",
        ] {
            assert!(names.contains(want), "{want} missing:\n{text}");
        }
        assert_eq!(names.len(), 27, "unexpected metrics: {names:?}");
        assert!(
            text.contains("# TYPE forwarder_host_packets counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE forwarder_host_flows gauge"), "{text}");
    }

    #[test]
    fn values_and_labels() {
        let text = encode(sample()).unwrap();
        for line in [
            r#"forwarder_host_packets_total{host="app.example.com",protocol="tcp",direction="to_backend"} 30"#,
            r#"forwarder_host_packets_total{host="app.example.com",protocol="quic",direction="to_backend"} 0"#,
            r#"forwarder_host_bytes_total{host="*.example.com",protocol="tcp",direction="to_client"} 12000000"#,
            r#"forwarder_host_connections_total{host="unknown",protocol="tcp"} 1"#,
            r#"forwarder_host_connections_total{host="unknown",protocol="quic"} 0"#,
            r#"forwarder_host_flows{host="other"} 0"#,
            r#"forwarder_host_drops_total{host="other",protocol="tcp",reason="redirect_failed"} 2"#,
            r#"forwarder_flow_table_entries 6"#,
            r#"forwarder_flow_table_capacity 262144"#,
            r#"forwarder_flow_table_evictions_total 2"#,
            r#"forwarder_xdp_attach_mode{mode="xdp-driver"} 1"#,
            r#"forwarder_xdp_attach_mode{mode="tc-only"} 0"#,
            r#"forwarder_tunnel_up 1"#,
            r#"forwarder_connection_log_lines_total 7"#,
            r#"forwarder_connection_log_suppressed_total 1"#,
            r#"forwarder_build_info{version="0.1.0"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let events: BTreeSet<String> = samples(&text)
            .into_iter()
            .filter(|s| s.0 == "forwarder_datapath_packets_total")
            .map(|s| s.1[0].1.clone())
            .collect();
        let want: BTreeSet<String> = Counter::ALL.iter().map(|c| c.name().to_owned()).collect();
        assert_eq!(events, want);
        let reasons: BTreeSet<String> = samples(&text)
            .into_iter()
            .filter(|s| s.0 == "forwarder_host_drops_total")
            .map(|s| s.1[2].1.clone())
            .collect();
        assert_eq!(reasons.len(), HOST_DROP_REASON_NAMES.len());
    }

    #[test]
    fn host_labels_are_only_configured_other_or_unknown() {
        let text = encode(sample()).unwrap();
        let allowed = ["app.example.com", "*.example.com", "other", "unknown"];
        let mut seen = BTreeSet::new();
        for (name, labels, _) in samples(&text) {
            for (k, v) in labels {
                if k == "host" {
                    assert!(allowed.contains(&v.as_str()), "{name}: host={v}");
                    seen.insert(v);
                }
            }
        }
        assert_eq!(seen.len(), allowed.len());
    }

    #[test]
    fn host_counters_are_left_out_without_host_statistics() {
        let mut s = sample();
        s.host_stats_available = false;
        let text = encode(s).unwrap();
        assert!(!text.contains("forwarder_host_packets"), "{text}");
        assert!(!text.contains("forwarder_host_connections"), "{text}");
        assert!(text.contains("forwarder_host_flows{"), "{text}");
        assert!(text.contains("forwarder_datapath_packets_total{"), "{text}");
    }
}

//! Typed handles on the maps the daemon keeps using while it runs (counters, host
//! statistics, the flow table), taken out of the loaded object so that the metrics endpoint,
//! the flow GC and the event reader can share them.
//!
//! Maps the kernel side may not have yet (`HOST_STATS`, `EVENTS`) are optional: their
//! absence means "feature not available", logged once, never an error.

use std::sync::{Mutex, MutexGuard, PoisonError};

use aya::{
    Ebpf,
    maps::{HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, RingBuf},
};
use forwarder_common::{
    COUNTERS_MAP, Counter, EVENTS_MAP, FLOWS_MAP, FlowKey, FlowValue, HOST_STATS_MAP, HostStats,
    MAX_HOSTS, RULE_F_FALLBACK_LOCAL, RULES_MAP, RuleKey, RuleValue,
};
use tracing::warn;

/// Flow table size when the kernel cannot be asked (same as the kernel object's).
pub const DEFAULT_FLOWS_CAPACITY: u32 = 262_144;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("the kernel object has no {0} map")]
    Missing(&'static str),
    #[error("cannot use the {name} map")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading {what} from the {name} map")]
    Read {
        name: &'static str,
        what: String,
        #[source]
        source: MapError,
    },
}

/// The running data path's maps, as the daemon's tasks see them.
pub struct Maps {
    counters: PerCpuArray<MapData, u64>,
    host_stats: Option<PerCpuArray<MapData, HostStats>>,
    flows: Mutex<HashMap<MapData, FlowKey, FlowValue>>,
    flows_capacity: u32,
    rules: Mutex<HashMap<MapData, RuleKey, RuleValue>>,
}

impl Maps {
    /// Takes the maps out of `ebpf` (after it has been loaded and filled). Returns the
    /// maps and, if the object has one, the connection event ring buffer.
    pub fn take(ebpf: &mut Ebpf) -> Result<(Self, Option<RingBuf<MapData>>), MapsError> {
        let counters = typed(ebpf, COUNTERS_MAP, PerCpuArray::try_from)?;
        let rules = typed(ebpf, RULES_MAP, HashMap::try_from)?;
        let flows: HashMap<MapData, FlowKey, FlowValue> =
            typed(ebpf, FLOWS_MAP, HashMap::try_from)?;
        let flows_capacity = flows
            .map()
            .info()
            .map_or(DEFAULT_FLOWS_CAPACITY, |i| i.max_entries());
        let host_stats = optional(
            ebpf,
            HOST_STATS_MAP,
            PerCpuArray::try_from,
            || "per-host statistics unavailable",
        );
        let events = optional(
            ebpf,
            EVENTS_MAP,
            RingBuf::try_from,
            || "connection events (classified/ended) unavailable; the connection log only reports flows the daemon expires",
        );
        Ok((
            Self {
                counters,
                host_stats,
                flows: Mutex::new(flows),
                flows_capacity,
                rules: Mutex::new(rules),
            },
            events,
        ))
    }

    /// Puts the rules `keys` into fallback (new connections go to the VPS's own stack) or
    /// takes them out.
    pub fn set_fallback(&self, keys: &[RuleKey], on: bool) -> Result<(), MapsError> {
        self.update_rules(keys, |v| {
            if on {
                v.flags |= RULE_F_FALLBACK_LOCAL;
            } else {
                v.flags &= !RULE_F_FALLBACK_LOCAL;
            }
        })
    }

    /// Points the rules `keys` at `backend` for new connections (flows already made keep
    /// theirs).
    pub fn set_backend(
        &self,
        keys: &[RuleKey],
        backend: std::net::SocketAddr,
    ) -> Result<(), MapsError> {
        let (words, _) = crate::dataplane::addr_words(backend.ip());
        self.update_rules(keys, |v| {
            v.backend_addr = words;
            v.backend_port = backend.port().to_be();
        })
    }

    /// Changes the rules `keys` with `change`, one map update per rule, which the kernel
    /// applies atomically: a packet sees each rule either before or after.
    fn update_rules(
        &self,
        keys: &[RuleKey],
        change: impl Fn(&mut RuleValue),
    ) -> Result<(), MapsError> {
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            let mut v = rules.get(key, 0).map_err(|source| MapsError::Read {
                name: RULES_MAP,
                what: "a forwarding rule".to_owned(),
                source,
            })?;
            change(&mut v);
            rules.insert(key, v, 0).map_err(|source| MapsError::Read {
                name: RULES_MAP,
                what: "updating a forwarding rule".to_owned(),
                source,
            })?;
        }
        Ok(())
    }

    /// Sums the per-CPU global counters.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, MapsError> {
        let mut out = Vec::with_capacity(Counter::ALL.len());
        for c in Counter::ALL {
            let v = self
                .counters
                .get(&(c as u32), 0)
                .map_err(|source| MapsError::Read {
                    name: COUNTERS_MAP,
                    what: format!("counter {}", c.name()),
                    source,
                })?;
            out.push((c, v.iter().sum()));
        }
        Ok(out)
    }

    /// One global counter, summed over CPUs.
    pub fn counter(&self, c: Counter) -> Result<u64, MapsError> {
        let v = self
            .counters
            .get(&(c as u32), 0)
            .map_err(|source| MapsError::Read {
                name: COUNTERS_MAP,
                what: format!("counter {}", c.name()),
                source,
            })?;
        Ok(v.iter().sum())
    }

    /// Whether the kernel keeps per-host statistics.
    pub fn has_host_stats(&self) -> bool {
        self.host_stats.is_some()
    }

    /// Per-host statistics of host ids `0..count`, summed over CPUs; `None` when the
    /// kernel keeps none.
    pub fn host_stats(&self, count: u32) -> Option<Result<Vec<HostStats>, MapsError>> {
        let map = self.host_stats.as_ref()?;
        let count = count.min(MAX_HOSTS);
        let read = || {
            let mut out = Vec::with_capacity(count as usize);
            for id in 0..count {
                let per_cpu = map.get(&id, 0).map_err(|source| MapsError::Read {
                    name: HOST_STATS_MAP,
                    what: format!("host id {id}"),
                    source,
                })?;
                let mut sum = HostStats::default();
                for s in per_cpu.iter() {
                    add_host_stats(&mut sum, s);
                }
                out.push(sum);
            }
            Ok(out)
        };
        Some(read())
    }

    /// The flow table, locked (only the flow GC holds it for long).
    pub fn flows(&self) -> MutexGuard<'_, HashMap<MapData, FlowKey, FlowValue>> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `max_entries` of the flow table.
    pub fn flows_capacity(&self) -> u32 {
        self.flows_capacity
    }
}

/// An error and its causes on one line (`a: b: c`), for log messages.
pub fn display_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Adds `b` into `a`, field by field (wrapping, like the kernel's counters).
pub fn add_host_stats(a: &mut HostStats, b: &HostStats) {
    a.packets_to_backend = a.packets_to_backend.wrapping_add(b.packets_to_backend);
    a.bytes_to_backend = a.bytes_to_backend.wrapping_add(b.bytes_to_backend);
    a.packets_to_client = a.packets_to_client.wrapping_add(b.packets_to_client);
    a.bytes_to_client = a.bytes_to_client.wrapping_add(b.bytes_to_client);
    a.connections = a.connections.wrapping_add(b.connections);
    for (x, y) in a.drops.iter_mut().zip(b.drops.iter()) {
        *x = x.wrapping_add(*y);
    }
}

fn typed<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(Map) -> Result<T, MapError>,
) -> Result<T, MapsError> {
    let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
    convert(map).map_err(|source| MapsError::Map { name, source })
}

fn optional<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(Map) -> Result<T, MapError>,
    consequence: impl FnOnce() -> &'static str,
) -> Option<T> {
    match typed(ebpf, name, convert) {
        Ok(m) => Some(m),
        Err(MapsError::Missing(_)) => {
            warn!("the kernel programs have no {name} map: {}", consequence());
            None
        }
        Err(e) => {
            warn!("{}: {}", display_chain(&e), consequence());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_stats_add_field_by_field() {
        let mut a = HostStats {
            packets_to_backend: 1,
            bytes_to_backend: 2,
            packets_to_client: 3,
            bytes_to_client: 4,
            connections: 5,
            drops: [6, 7, 8, 9],
        };
        let b = a;
        add_host_stats(&mut a, &b);
        assert_eq!(
            a,
            HostStats {
                packets_to_backend: 2,
                bytes_to_backend: 4,
                packets_to_client: 6,
                bytes_to_client: 8,
                connections: 10,
                drops: [12, 14, 16, 18],
            }
        );
    }
}

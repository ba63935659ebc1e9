//! Typed handles on the maps the daemon keeps using while it runs (counters, host
//! statistics, the flow table), taken out of the loaded object so that the metrics endpoint,
//! the flow GC and the event reader can share them.
//!
//! Maps the kernel side may not have yet (`HOST_STATS`, `EVENTS`) are optional: their
//! absence means "feature not available", logged once, never an error.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuValues,
        RingBuf,
    },
};
use forwarder_common::{
    CONFIG_MAP, COUNTERS_MAP, Counter, DataplaneConfig, EVENTS_MAP, FLOWS_MAP, FlowKey, FlowValue,
    HOST_POLICY_MAP, HOST_STATS_MAP, HOSTS_MAP, HostKey, HostStats, HostValue, MAX_HOSTS,
    NEW_FLOWS_MAP, RULES_MAPS, RuleKey, RuleValue, host_stats_index,
};
use tracing::warn;

/// Flow table size when the kernel cannot be asked (same as the kernel object's).
pub const DEFAULT_FLOWS_CAPACITY: u32 = 262_144;
pub const DEFAULT_NEW_FLOWS_CAPACITY: u32 = 65_536;

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
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} in the {name} map")]
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
    host_stats: Option<Mutex<PerCpuArray<MapData, HostStats>>>,
    flows: Mutex<HashMap<MapData, FlowKey, FlowValue>>,
    flows_capacity: u32,
    new_flows: Mutex<HashMap<MapData, FlowKey, FlowValue>>,
    new_flows_capacity: u32,
    rules: Mutex<RuleTables>,
    hosts: Option<Mutex<HashMap<MapData, HostKey, HostValue>>>,
    host_policy: Option<Mutex<Array<MapData, u32>>>,
}

/// The two rule sets and the configuration entry that selects one of them. A change is
/// written completely into the set not in force, then one update of the configuration
/// switches the programs over: a packet sees the whole old or the whole new rule set.
pub struct RuleTables {
    sets: [HashMap<MapData, RuleKey, RuleValue>; 2],
    config: Array<MapData, DataplaneConfig>,
    /// What the set in force holds.
    current: BTreeMap<RuleKey, RuleValue>,
    switched: Option<Instant>,
}

/// How long a set stays untouched after the programs switched away from it. Programs run
/// within an RCU read section of microseconds; one that read the old selector finishes
/// long before this.
const SWITCH_GRACE: Duration = Duration::from_millis(20);

impl RuleTables {
    /// The configuration in force (all zero, `enabled == 0`, before the first daemon
    /// filled it).
    pub fn config(&self) -> Result<DataplaneConfig, MapsError> {
        self.config.get(&0, 0).map_err(|source| MapsError::Read {
            name: CONFIG_MAP,
            what: "reading the data path configuration".to_owned(),
            source,
        })
    }

    /// The rules in force.
    pub fn current(&self) -> &BTreeMap<RuleKey, RuleValue> {
        &self.current
    }

    /// Reads the rule set in force (after adopting a running data path).
    fn read_current(&mut self) -> Result<(), MapsError> {
        let cfg = self.config()?;
        let set = &self.sets[(cfg.rules_set & 1) as usize];
        let mut current = BTreeMap::new();
        for item in set.iter() {
            let (k, v) = item.map_err(|source| MapsError::Read {
                name: RULES_MAPS[(cfg.rules_set & 1) as usize],
                what: "reading the rules".to_owned(),
                source,
            })?;
            current.insert(k, v);
        }
        self.current = if cfg.enabled != 0 {
            current
        } else {
            BTreeMap::new()
        };
        Ok(())
    }

    /// Puts `rules` in force together with the configuration `change` makes: written into
    /// the set not in force, then switched to with one update of the configuration. If
    /// anything fails before the switch, the rules in force stay as they were.
    pub fn install(
        &mut self,
        rules: BTreeMap<RuleKey, RuleValue>,
        change: impl FnOnce(&mut DataplaneConfig),
    ) -> Result<(), MapsError> {
        let mut cfg = self.config()?;
        let next = ((cfg.rules_set & 1) ^ 1) as usize;
        if cfg.enabled == 0 {
            // Nothing is in force yet: either set will do, but write it whole.
            cfg.rules_set = 0;
        }
        if let Some(at) = self.switched {
            let since = at.elapsed();
            if since < SWITCH_GRACE {
                std::thread::sleep(SWITCH_GRACE - since);
            }
        }
        let name = RULES_MAPS[next];
        let set = &mut self.sets[next];
        let stale: Vec<RuleKey> = set
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !rules.contains_key(k))
            .collect();
        for k in &stale {
            set.remove(k).map_err(|source| MapsError::Read {
                name,
                what: "removing a rule".to_owned(),
                source,
            })?;
        }
        for (k, v) in &rules {
            set.insert(k, v, 0).map_err(|source| MapsError::Read {
                name,
                what: "writing a rule".to_owned(),
                source,
            })?;
        }
        change(&mut cfg);
        cfg.rules_set = next as u32;
        self.config
            .set(0, cfg, 0)
            .map_err(|source| MapsError::Read {
                name: CONFIG_MAP,
                what: "switching rule sets".to_owned(),
                source,
            })?;
        self.switched = Some(Instant::now());
        self.current = rules;
        Ok(())
    }
}

impl Maps {
    /// Takes the maps out of `ebpf` (after it has been loaded and filled). Returns the
    /// maps and, if the object has one, the connection event ring buffer.
    pub fn take(ebpf: &mut Ebpf) -> Result<(Self, Option<RingBuf<MapData>>), MapsError> {
        let counters = typed(ebpf, COUNTERS_MAP, PerCpuArray::try_from)?;
        let mut rules = RuleTables {
            sets: [
                typed(ebpf, RULES_MAPS[0], HashMap::try_from)?,
                typed(ebpf, RULES_MAPS[1], HashMap::try_from)?,
            ],
            config: typed(ebpf, CONFIG_MAP, Array::try_from)?,
            current: BTreeMap::new(),
            switched: None,
        };
        rules.read_current()?;
        let hosts = optional(
            ebpf,
            HOSTS_MAP,
            HashMap::try_from,
            || "connections are not classified by host",
        );
        let host_policy = optional(
            ebpf,
            HOST_POLICY_MAP,
            Array::try_from,
            || "host policies have no effect",
        );
        let (flows, flows_capacity) = flow_table(ebpf, FLOWS_MAP, DEFAULT_FLOWS_CAPACITY)?;
        let (new_flows, new_flows_capacity) =
            flow_table(ebpf, NEW_FLOWS_MAP, DEFAULT_NEW_FLOWS_CAPACITY)?;
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
                host_stats: host_stats.map(Mutex::new),
                flows: Mutex::new(flows),
                flows_capacity,
                new_flows: Mutex::new(new_flows),
                new_flows_capacity,
                rules: Mutex::new(rules),
                hosts: hosts.map(Mutex::new),
                host_policy: host_policy.map(Mutex::new),
            },
            events,
        ))
    }

    /// The rule sets, locked: every change of rules goes through here, one at a time.
    pub fn rules(&self) -> MutexGuard<'_, RuleTables> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The host table (name hash -> id and policy), if the kernel classifies by host.
    pub fn hosts(&self) -> Option<MutexGuard<'_, HashMap<MapData, HostKey, HostValue>>> {
        self.hosts
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets the `POLICY_*` of host id `id`.
    pub fn set_host_policy(&self, id: u32, policy: u32) -> Result<(), MapsError> {
        let Some(map) = &self.host_policy else {
            return Ok(());
        };
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(&id, 0).ok() == Some(policy) {
            return Ok(());
        }
        map.set(id, policy, 0).map_err(|source| MapsError::Read {
            name: HOST_POLICY_MAP,
            what: format!("setting the policy of host id {id}"),
            source,
        })
    }

    /// Zeroes host id `id`'s statistics (both protocols), before the id is given to
    /// another host.
    pub fn reset_host_stats(&self, id: u32) -> Result<(), MapsError> {
        let Some(map) = &self.host_stats else {
            return Ok(());
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| MapsError::Io {
            what: "counting the possible CPUs",
            source,
        })?;
        let zero = || {
            PerCpuValues::try_from(vec![HostStats::default(); cpus]).map_err(|source| {
                MapsError::Io {
                    what: "preparing per-CPU values",
                    source,
                }
            })
        };
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        for udp in [false, true] {
            map.set(host_stats_index(id, udp), zero()?, 0)
                .map_err(|source| MapsError::Read {
                    name: HOST_STATS_MAP,
                    what: format!("resetting host id {id}"),
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
    /// The statistics of host ids `0..count`, summed over CPUs: TCP, then QUIC
    /// (`HOST_PROTOCOLS`).
    pub fn host_stats(&self, count: u32) -> Option<Result<Vec<[HostStats; 2]>, MapsError>> {
        let map = self
            .host_stats
            .as_ref()?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = count.min(MAX_HOSTS);
        let read = || {
            let mut out = Vec::with_capacity(count as usize);
            for id in 0..count {
                let mut both = [HostStats::default(); 2];
                for (udp, sum) in [false, true].into_iter().zip(&mut both) {
                    let per_cpu = map.get(&host_stats_index(id, udp), 0).map_err(|source| {
                        MapsError::Read {
                            name: HOST_STATS_MAP,
                            what: format!("host id {id}"),
                            source,
                        }
                    })?;
                    for s in per_cpu.iter() {
                        add_host_stats(sum, s);
                    }
                }
                out.push(both);
            }
            Ok(out)
        };
        Some(read())
    }

    /// The table of established connections, locked (only the flow GC holds it for
    /// long). Lock it before `new_flows` when both are needed.
    pub fn flows(&self) -> MutexGuard<'_, HashMap<MapData, FlowKey, FlowValue>> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `max_entries` of the table of established connections.
    pub fn flows_capacity(&self) -> u32 {
        self.flows_capacity
    }

    /// The table of connections still opening (see `NEW_FLOWS_MAP`), locked.
    pub fn new_flows(&self) -> MutexGuard<'_, HashMap<MapData, FlowKey, FlowValue>> {
        self.new_flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `max_entries` of the table of connections still opening.
    pub fn new_flows_capacity(&self) -> u32 {
        self.new_flows_capacity
    }

    /// Points the flows that leave through interface `old` at `new` (the tunnel interface
    /// was recreated), in both tables; returns how many were moved. Entries the kernel
    /// removes meanwhile stay removed; packets counted on an entry between reading and
    /// rewriting it are lost from its counters (the per-host counters keep them).
    pub fn retarget_flows(&self, old: u32, new: u32) -> Result<usize, MapError> {
        let mut flows = self.flows();
        let mut new_flows = self.new_flows();
        Ok(retarget(&mut flows, old, new)? + retarget(&mut new_flows, old, new)?)
    }
}

/// A flow table of the object and its `max_entries` (`default` if the kernel cannot say).
fn flow_table(
    ebpf: &mut Ebpf,
    name: &'static str,
    default: u32,
) -> Result<(HashMap<MapData, FlowKey, FlowValue>, u32), MapsError> {
    let map: HashMap<MapData, FlowKey, FlowValue> = typed(ebpf, name, HashMap::try_from)?;
    let capacity = map.map().info().map_or(default, |i| i.max_entries());
    Ok((map, capacity))
}

fn retarget(
    flows: &mut HashMap<MapData, FlowKey, FlowValue>,
    old: u32,
    new: u32,
) -> Result<usize, MapError> {
    let moved: Vec<(FlowKey, FlowValue)> = flows
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| v.ifindex == old)
        .map(|(k, mut v)| {
            v.ifindex = new;
            (k, v)
        })
        .collect();
    let mut n = 0;
    for (k, v) in moved {
        match flows.insert(k, v, BPF_EXIST) {
            Ok(()) => n += 1,
            // Ended (or confirmed into the other table) since it was read.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `bpf_map_update_elem` flag: only replace an entry that exists.
const BPF_EXIST: u64 = 2;

/// A ring buffer and a hash map the daemon serves together (a hand-off from the kernel
/// and the daemon's answers); `None` if the object lacks either.
pub fn take_ring_and_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    ring: &str,
    map: &str,
) -> Option<(RingBuf<MapData>, HashMap<MapData, K, V>)> {
    let ring = ebpf
        .take_map(ring)
        .and_then(|m| RingBuf::try_from(m).ok())?;
    let map = ebpf.take_map(map).and_then(|m| HashMap::try_from(m).ok())?;
    Some((ring, map))
}

/// A ring buffer registered with the runtime, to be read when the kernel wakes it.
pub fn poll_ring(
    ring: RingBuf<MapData>,
) -> std::io::Result<tokio::io::unix::AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map's fd, which stays open and unchanged for as long
    // as the ring buffer lives inside the AsyncFd.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// A ring buffer record as the kernel wrote it; `None` if it is too short.
pub fn read_record<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `Pod` types are plain integers and arrays (every bit pattern is valid) and
    // `bytes` holds at least `size_of::<T>()` bytes; the read is unaligned.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
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

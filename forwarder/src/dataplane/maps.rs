//! Typed handles on the maps the daemon keeps using while it runs (counters, host
//! statistics, the flow table), taken out of the loaded object so that the metrics endpoint,
//! the flow GC and the event reader can share them.
//!
//! Maps the kernel side may not have yet (`HOST_STATS`, `EVENTS`) are optional: their
//! absence means "feature not available", logged once, never an error.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf},
};
use forwarder_common::{
    CONFIG_MAP, COUNTERS_MAP, ConnEvent, Counter, DataplaneConfig, EVENTS_MAP, FLOWS_MAP,
    HOST_POLICY_MAP, HOST_STATS_MAP, HOSTS_MAP, HostKey, HostStats, HostValue, MAX_HOSTS,
    NEW_FLOWS_MAP, RULES_MAPS, RuleKey, RuleValue, host_stats_index,
};
use tracing::warn;

pub use crate::dataplane::ring::read_record;
use crate::dataplane::{
    deny::SourceDeny,
    flows::{FlowError, FlowPressure, FlowTable},
    ring::Ring,
};

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
    flows: FlowTable,
    new_flows: FlowTable,
    rules: Arc<Mutex<RuleTables>>,
    hosts: Option<Mutex<HashMap<MapData, HostKey, HostValue>>>,
    host_policy: Option<Mutex<Array<MapData, u32>>>,
    source_deny: Option<SourceDeny>,
    flow_pressure: Option<FlowPressure>,
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
    /// A change that came within [`SWITCH_GRACE`] of the last switch, put in force when
    /// the grace has passed (a later change replaces it: only the latest is wanted).
    deferred: Option<Deferred>,
    /// Whether a timer will put `deferred` in force.
    timer: bool,
    /// The lock these tables live in, for that timer.
    me: Weak<Mutex<RuleTables>>,
}

/// A rule set and configuration waiting for the set not in force to be free.
struct Deferred {
    rules: BTreeMap<RuleKey, RuleValue>,
    cfg: DataplaneConfig,
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
    ///
    /// The set not in force may still be read for [`SWITCH_GRACE`] after the last switch.
    /// A change within that time does not wait (the caller may be the runtime's thread):
    /// it is put in force by a timer when the grace has passed, just when waiting would
    /// have put it in force, and its failure is logged. A later change replaces it. The
    /// control socket answers a change only once it is in force ([`Maps::settle_rules`]).
    pub fn install(
        &mut self,
        rules: BTreeMap<RuleKey, RuleValue>,
        change: impl FnOnce(&mut DataplaneConfig),
    ) -> Result<(), MapsError> {
        let mut cfg = match &self.deferred {
            Some(d) => d.cfg,
            None => self.config()?,
        };
        if cfg.enabled == 0 {
            // Nothing is in force yet: either set will do, but write it whole.
            cfg.rules_set = 0;
        }
        change(&mut cfg);
        if let Some(due) = self.grace_end()
            && Instant::now() < due
        {
            self.deferred = Some(Deferred { rules, cfg });
            self.arm(due);
            return Ok(());
        }
        self.deferred = None;
        self.switch(rules, cfg)
    }

    /// When the set not in force may be written again.
    fn grace_end(&self) -> Option<Instant> {
        self.switched.map(|at| at + SWITCH_GRACE)
    }

    /// Writes `rules` into the set not in force and switches the programs to it with `cfg`.
    fn switch(
        &mut self,
        rules: BTreeMap<RuleKey, RuleValue>,
        mut cfg: DataplaneConfig,
    ) -> Result<(), MapsError> {
        let in_force = self.config()?;
        let next = ((in_force.rules_set & 1) ^ 1) as usize;
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

    /// Makes sure the deferred change is put in force at `due`.
    fn arm(&mut self, due: Instant) {
        if self.timer {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside the runtime (tools, tests) waiting blocks nobody.
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            self.settle();
            return;
        };
        self.timer = true;
        let me = self.me.clone();
        runtime.spawn(async move {
            let mut due = due;
            loop {
                tokio::time::sleep_until(due.into()).await;
                let Some(tables) = me.upgrade() else { return };
                let mut tables = tables.lock().unwrap_or_else(PoisonError::into_inner);
                match tables.settle() {
                    Some(later) => due = later,
                    None => {
                        tables.timer = false;
                        return;
                    }
                }
            }
        });
    }

    /// Puts the deferred change in force if its time has come; otherwise returns when it
    /// will have.
    fn settle(&mut self) -> Option<Instant> {
        let deferred = self.deferred.take()?;
        if let Some(due) = self.grace_end()
            && Instant::now() < due
        {
            self.deferred = Some(deferred);
            return Some(due);
        }
        if let Err(e) = self.switch(deferred.rules, deferred.cfg) {
            warn!(
                "the latest rules were not put in force, the previous ones stay: {}",
                display_chain(&e)
            );
        }
        None
    }
}

impl Drop for RuleTables {
    fn drop(&mut self) {
        // A pinned data path outlives the daemon: it must be left with the latest rules.
        if let Some(due) = self.settle() {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            self.settle();
        }
    }
}

impl Maps {
    /// Takes the maps out of `ebpf` (after it has been loaded and filled). Returns the
    /// maps and, if the object has one, the connection event ring buffer.
    pub fn take(ebpf: &mut Ebpf) -> Result<(Self, Option<Ring<ConnEvent>>), MapsError> {
        let counters = typed(ebpf, COUNTERS_MAP, PerCpuArray::try_from)?;
        let mut rules = RuleTables {
            sets: [
                typed(ebpf, RULES_MAPS[0], HashMap::try_from)?,
                typed(ebpf, RULES_MAPS[1], HashMap::try_from)?,
            ],
            config: typed(ebpf, CONFIG_MAP, Array::try_from)?,
            current: BTreeMap::new(),
            switched: None,
            deferred: None,
            timer: false,
            me: Weak::new(),
        };
        rules.read_current()?;
        let rules = Arc::new_cyclic(|me| {
            rules.me = me.clone();
            Mutex::new(rules)
        });
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
        let flows = flow_table(ebpf, FLOWS_MAP, DEFAULT_FLOWS_CAPACITY)?;
        let new_flows = flow_table(ebpf, NEW_FLOWS_MAP, DEFAULT_NEW_FLOWS_CAPACITY)?;
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
                flows,
                new_flows,
                rules,
                hosts: hosts.map(Mutex::new),
                host_policy: host_policy.map(Mutex::new),
                source_deny: SourceDeny::take(ebpf),
                flow_pressure: FlowPressure::take(ebpf),
            },
            events.map(Ring::new),
        ))
    }

    /// Where the flow GC tells the kernel the established table is nearly full.
    pub fn flow_pressure(&self) -> Option<&FlowPressure> {
        self.flow_pressure.as_ref()
    }

    /// The sources the public side never opens a flow for, if the kernel checks them.
    pub fn source_deny(&self) -> Option<&SourceDeny> {
        self.source_deny.as_ref()
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

    /// The host table, locked, for looking names up.
    pub fn host_ids(&self) -> HostIds<'_> {
        HostIds(self.hosts())
    }

    /// Waits until a rule change deferred by [`RuleTables::install`] is in force.
    pub async fn settle_rules(&self) {
        loop {
            let due = self.rules().settle();
            match due {
                Some(due) => tokio::time::sleep_until(due.into()).await,
                None => return,
            }
        }
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

    /// The table of established connections.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// `max_entries` of the table of established connections.
    pub fn flows_capacity(&self) -> u32 {
        self.flows.capacity()
    }

    /// The table of connections still opening (see `NEW_FLOWS_MAP`).
    pub fn new_flows(&self) -> &FlowTable {
        &self.new_flows
    }

    /// `max_entries` of the table of connections still opening.
    pub fn new_flows_capacity(&self) -> u32 {
        self.new_flows.capacity()
    }

    /// Points the flows that leave through interface `old` at `new` (the tunnel interface
    /// was recreated), in both tables; returns how many were moved (see
    /// [`FlowTable::retarget`]).
    pub fn retarget_flows(&self, old: u32, new: u32) -> Result<usize, FlowError> {
        Ok(self.flows.retarget(old, new)? + self.new_flows.retarget(old, new)?)
    }
}

/// The host table, locked: host ids by name.
pub struct HostIds<'a>(Option<MutexGuard<'a, HashMap<MapData, HostKey, HostValue>>>);

impl HostIds<'_> {
    /// The id of the host `key` names, if it is configured.
    pub fn get(&self, key: &HostKey) -> Option<u32> {
        self.0.as_ref()?.get(key, 0).ok().map(|v| v.id)
    }
}

/// A flow table of the object, with `default` as its size if the kernel cannot say.
fn flow_table(ebpf: &mut Ebpf, name: &'static str, default: u32) -> Result<FlowTable, MapsError> {
    let map = typed(ebpf, name, HashMap::try_from)?;
    FlowTable::new(map, default).map_err(|source| MapsError::Map { name, source })
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
mod tests;

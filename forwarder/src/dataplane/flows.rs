//! The flow tables (established connections, and connections still opening), as the
//! daemon's tasks use them: lookups and scans without a lock, and changes one connection
//! at a time under one, so that a scan of the whole table never holds up a change.

use std::{
    os::fd::AsFd as _,
    sync::{Mutex, MutexGuard, PoisonError},
};

use aya::{
    maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError},
    sys::SyscallError,
};
use forwarder_common::{FlowKey, FlowValue};

/// A failed system call on a flow table.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct FlowError(#[from] MapError);

impl FlowError {
    /// The entry is not (or no longer) in the table.
    fn is_missing(&self) -> bool {
        matches!(&self.0, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::ENOENT))
    }
}

/// One flow table of the kernel.
pub struct FlowTable {
    /// Lookups and walks: system calls that need no exclusive handle. A walk of a table the
    /// kernel changes meanwhile is no snapshot either way.
    read: HashMap<MapData, FlowKey, FlowValue>,
    /// Changes go through this lock, so that the daemon's read-modify-write of an entry
    /// (clearing a flag, removing an entry unless it changed) is not interleaved with
    /// another of its own.
    write: Mutex<HashMap<MapData, FlowKey, FlowValue>>,
    capacity: u32,
}

/// `bpf_map_update_elem` flag: only replace an entry that exists.
const BPF_EXIST: u64 = 2;

impl FlowTable {
    /// Wraps `map`, with `default` as its size if the kernel cannot say; opens a second
    /// handle on it for the lock-free reads.
    pub(crate) fn new(
        map: HashMap<MapData, FlowKey, FlowValue>,
        default: u32,
    ) -> Result<Self, MapError> {
        let capacity = map.map().info().map_or(default, |i| i.max_entries());
        let fd = map
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|io_error| SyscallError {
                call: "dup",
                io_error,
            })?;
        let read = HashMap::try_from(Map::from_map_data(MapData::from_fd(fd)?)?)?;
        Ok(Self {
            read,
            write: Mutex::new(map),
            capacity,
        })
    }

    /// `max_entries` of the table.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The entry of `key`.
    pub fn get(&self, key: &FlowKey) -> Result<FlowValue, FlowError> {
        Ok(self.read.get(key, 0)?)
    }

    /// Walks the table (a table changing under the walk can repeat keys).
    pub fn entries(&self) -> impl Iterator<Item = Result<(FlowKey, FlowValue), FlowError>> + '_ {
        self.read.iter().map(|item| item.map_err(FlowError::from))
    }

    /// The table locked for changes: hold it for one connection's changes, no longer.
    pub fn lock(&self) -> LockedFlows<'_> {
        LockedFlows(self.write.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Points the entries that leave through interface `old` at `new`; returns how many
    /// were moved. Entries the kernel removes meanwhile stay removed; packets counted on an
    /// entry between reading and rewriting it are lost from its counters (the per-host
    /// counters keep them).
    pub fn retarget(&self, old: u32, new: u32) -> Result<usize, FlowError> {
        let candidates: Vec<FlowKey> = self
            .read
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.ifindex == old)
            .map(|(k, _)| k)
            .collect();
        let mut n = 0;
        for k in candidates {
            let mut flows = self.lock();
            // Read again under the lock: the daemon's own changes since the walk stand.
            let Ok(mut v) = flows.0.get(&k, 0) else {
                continue;
            };
            if v.ifindex != old {
                continue;
            }
            v.ifindex = new;
            match flows.0.insert(k, v, BPF_EXIST).map_err(FlowError::from) {
                Ok(()) => n += 1,
                // Ended (or confirmed into the other table) since it was read.
                Err(e) if e.is_missing() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// A flow table, locked for changes.
pub struct LockedFlows<'a>(MutexGuard<'a, HashMap<MapData, FlowKey, FlowValue>>);

impl LockedFlows<'_> {
    pub fn get(&self, key: &FlowKey) -> Result<FlowValue, FlowError> {
        Ok(self.0.get(key, 0)?)
    }

    /// Creates or replaces the entry of `key`.
    pub fn insert(&mut self, key: &FlowKey, value: FlowValue) -> Result<(), FlowError> {
        Ok(self.0.insert(key, value, 0)?)
    }

    pub fn remove(&mut self, key: &FlowKey) -> Result<(), FlowError> {
        Ok(self.0.remove(key)?)
    }
}

/// The kernel's `FLOW_PRESSURE` flag: 1 while the established table is nearly full, so
/// that packets of connections the LRU evicted may re-create their flows (at other times
/// such packets are made up, and dropped).
pub struct FlowPressure(Mutex<Array<MapData, u32>>);

impl FlowPressure {
    /// The flag of the loaded object; `None` (logged) when the object has none.
    pub fn take(ebpf: &mut aya::Ebpf) -> Option<Self> {
        use forwarder_common::FLOW_PRESSURE_MAP;
        let map = ebpf.take_map(FLOW_PRESSURE_MAP).or_else(|| {
            tracing::warn!(
                "the kernel programs have no {FLOW_PRESSURE_MAP} map: evicted connections are never re-created"
            );
            None
        })?;
        match Array::try_from(map) {
            Ok(a) => Some(FlowPressure(Mutex::new(a))),
            Err(e) => {
                tracing::warn!("cannot use the {FLOW_PRESSURE_MAP} map: {e}");
                None
            }
        }
    }

    pub fn set(&self, full: bool) -> Result<(), FlowError> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(0, u32::from(full), 0)
            .map_err(FlowError::from)
    }
}

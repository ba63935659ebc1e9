//! Flow GC: every couple of seconds the daemon scans the flow table, counts the connections
//! of each host (the `forwarder_host_flows` gauge), and removes connections that have
//! ended or idled out, logging an "ended" line for those the kernel did not report.
//!
//! Timeouts, measured from the latest packet in either direction (`last_ns`):
//! TCP 300 s, or 10 s once a RST was seen or a FIN in both directions; UDP 60 s, but a
//! QUIC connection whose host was read 180 s (HTTP/3 servers keep idle connections open
//! longer than 60 s: nginx 75 s by default; the endpoints' own timeout must end a
//! connection, not ours). In the table of connections still opening (`NEW_FLOWS`): TCP
//! 60 s, UDP 30 s.
//! Entries without timestamps (`last_ns == 0`, kernel programs that do not keep them) are
//! left alone: the LRU table bounds them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use forwarder_common::{
    Counter, DIR_TO_BACKEND, DIR_TO_CLIENT, FLOW_F_END_REPORTED, FLOW_F_FIN, FLOW_F_QUIC,
    FLOW_F_RST, FlowKey, FlowValue, HOST_OTHER, HOST_UNKNOWN, PROTO_TCP,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::model::flow::{EndReason, Expired};
use crate::{
    daemon::connlog::{ConnLog, ConnRecord},
    dataplane::{
        flows::FlowTable,
        maps::{Maps, MapsError},
    },
    model::{
        clock::{WallClock, monotonic_ns},
        labels::SharedLabels,
    },
};

/// How often the flow table is scanned.
pub const GC_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcTimeouts {
    /// A TCP connection without FIN/RST.
    pub tcp_idle: Duration,
    /// A TCP connection after a RST, or a FIN in each direction.
    pub tcp_closed: Duration,
    /// UDP (and anything else).
    pub udp_idle: Duration,
    /// A QUIC connection whose host the daemon read (`FLOW_F_QUIC` and a host).
    pub quic_idle: Duration,
}

impl GcTimeouts {
    /// For connections still opening (`NEW_FLOWS`): a client retransmits its SYN within
    /// seconds, and an entry nobody answers only takes room from new connections.
    pub fn opening() -> Self {
        Self {
            tcp_idle: Duration::from_secs(60),
            tcp_closed: Duration::from_secs(10),
            udp_idle: Duration::from_secs(30),
            quic_idle: Duration::from_secs(30),
        }
    }
}

impl Default for GcTimeouts {
    fn default() -> Self {
        Self {
            tcp_idle: Duration::from_secs(300),
            tcp_closed: Duration::from_secs(10),
            udp_idle: Duration::from_secs(60),
            quic_idle: Duration::from_secs(180),
        }
    }
}

/// What one scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Entries in the table.
    pub entries: u64,
    /// Connections staying in the table, by host id.
    pub active_per_host: Vec<u64>,
    pub expired: Vec<Expired>,
}

/// Whether a connection with these entries has ended, and why.
fn decide(
    proto: u8,
    fwd: Option<&FlowValue>,
    rev: Option<&FlowValue>,
    now_ns: u64,
    t: &GcTimeouts,
) -> Option<(EndReason, bool)> {
    let last = fwd
        .map_or(0, |v| v.last_ns)
        .max(rev.map_or(0, |v| v.last_ns));
    if last == 0 {
        return None;
    }
    let (ff, rf) = (fwd.map_or(0, |v| v.flags), rev.map_or(0, |v| v.flags));
    let rst = (ff | rf) & FLOW_F_RST != 0;
    let fin_both = ff & FLOW_F_FIN != 0 && rf & FLOW_F_FIN != 0;
    let timeout = if proto == PROTO_TCP {
        if rst || fin_both {
            t.tcp_closed
        } else {
            t.tcp_idle
        }
    } else if ff & FLOW_F_QUIC != 0 && fwd.is_some_and(|v| v.host_id != HOST_UNKNOWN) {
        t.quic_idle
    } else {
        t.udp_idle
    };
    let idle = now_ns.saturating_sub(last);
    if u128::from(idle) <= timeout.as_nanos() {
        return None;
    }
    let reason = if rst {
        EndReason::Rst
    } else if fin_both {
        EndReason::Fin
    } else {
        EndReason::Idle
    };
    Some((reason, (ff | rf) & FLOW_F_END_REPORTED == 0))
}

/// Decides, from a scan of the table, which connections to remove and how many stay per
/// host. `host_count` is the number of host ids in use; other ids count as `other`.
pub fn plan(
    entries: impl IntoIterator<Item = (FlowKey, FlowValue)>,
    now_ns: u64,
    t: &GcTimeouts,
    host_count: u32,
) -> Plan {
    let table: HashMap<FlowKey, FlowValue> = entries.into_iter().collect();
    let mut active = vec![0u64; host_count.max(HOST_OTHER + 1) as usize];
    let mut expired = Vec::new();
    for (k, v) in &table {
        match v.direction {
            DIR_TO_BACKEND => {
                let rk = k.reversed(v);
                let rev = table
                    .get(&rk)
                    .filter(|rv| rv.direction == DIR_TO_CLIENT)
                    .map(|rv| (rk, *rv));
                match decide(k.proto, Some(v), rev.as_ref().map(|r| &r.1), now_ns, t) {
                    Some((reason, report)) => expired.push(Expired {
                        fwd: Some((*k, *v)),
                        rev,
                        reason,
                        report,
                    }),
                    None => {
                        let id = if v.host_id < host_count {
                            v.host_id
                        } else {
                            HOST_OTHER
                        };
                        active[id as usize] += 1;
                    }
                }
            }
            DIR_TO_CLIENT => {
                // Paired reverse entries are handled with their forward entry.
                let fk = k.reversed(v);
                let paired = table
                    .get(&fk)
                    .is_some_and(|fv| fv.direction == DIR_TO_BACKEND && fk.reversed(fv) == *k);
                if paired {
                    continue;
                }
                if let Some((reason, report)) = decide(k.proto, None, Some(v), now_ns, t) {
                    expired.push(Expired {
                        fwd: None,
                        rev: Some((*k, *v)),
                        reason,
                        report,
                    });
                }
            }
            _ => {}
        }
    }
    Plan {
        entries: table.len() as u64,
        active_per_host: active,
        expired,
    }
}

/// Removes the planned connections, skipping any whose entries changed since the scan (a
/// packet arrived, or the kernel moved them to the other table). The forward entry goes
/// first: a client packet arriving in between recreates both entries, and the changed
/// reverse entry is then left alone. The table is locked for one connection at a time.
/// Returns the connections removed and the number of entries deleted.
pub fn apply(flows: &FlowTable, expired: Vec<Expired>) -> (Vec<Expired>, u64) {
    let mut done = Vec::with_capacity(expired.len());
    let mut deleted = 0;
    for e in expired {
        let mut table = flows.lock();
        if let Some((k, v)) = &e.fwd {
            if table.get(k).ok().as_ref() != Some(v) {
                continue;
            }
            if table.remove(k).is_ok() {
                deleted += 1;
            }
        }
        if let Some((k, v)) = &e.rev
            && table.get(k).ok().as_ref() == Some(v)
            && table.remove(k).is_ok()
        {
            deleted += 1;
        }
        drop(table);
        done.push(e);
    }
    (done, deleted)
}

/// What the scans found, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcTotals {
    /// Entries in both flow tables after the last scan.
    pub entries: u64,
    /// Of those, entries of connections still opening (`NEW_FLOWS`), as scanned.
    pub opening: u64,
    /// Connections in the flow table by host id, after the last scan.
    pub active_per_host: Vec<u64>,
    /// Entries removed by the GC since the start.
    pub removed: u64,
    /// Entries the LRU evicted, estimated: 2 × flows created − entries − removed by the
    /// GC, never decreasing.
    pub evictions_estimate: u64,
}

#[derive(Debug, Default)]
pub struct FlowGcState {
    totals: Mutex<GcTotals>,
    /// Whether the last pass found the established table nearly full.
    pressure: std::sync::atomic::AtomicBool,
}

impl FlowGcState {
    /// Records whether the established table is nearly full; true when that changed.
    fn set_pressure(&self, full: bool) -> bool {
        self.pressure
            .swap(full, std::sync::atomic::Ordering::Relaxed)
            != full
    }

    pub fn totals(&self) -> GcTotals {
        self.totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(
        &self,
        flows_created: u64,
        plan_entries: u64,
        opening: u64,
        active: Vec<u64>,
        deleted: u64,
    ) {
        let mut t = self.totals.lock().unwrap_or_else(PoisonError::into_inner);
        t.entries = plan_entries.saturating_sub(deleted);
        t.opening = opening.min(t.entries);
        t.active_per_host = active;
        t.removed = t.removed.saturating_add(deleted);
        let estimate = flows_created
            .saturating_mul(2)
            .saturating_sub(t.entries)
            .saturating_sub(t.removed);
        t.evictions_estimate = t.evictions_estimate.max(estimate);
    }
}

/// The entries of `flows`, at most `limit` (a table changing under the walk can repeat
/// keys); a failing walk ends the scan early. The walk takes no lock: the hand-off's
/// changes of the table never wait for it. `None` if `cancel` came during the walk.
fn scan(
    flows: &FlowTable,
    limit: usize,
    cancel: &CancellationToken,
) -> Option<Vec<(FlowKey, FlowValue)>> {
    let entries = flows
        .entries()
        .take(limit)
        .take_while(|_| !cancel.is_cancelled())
        .map_while(|item| {
            item.map_err(|e| {
                debug!(
                    "flow table scan stopped early: {}",
                    crate::dataplane::maps::display_chain(&e)
                );
            })
            .ok()
        })
        .collect();
    (!cancel.is_cancelled()).then_some(entries)
}

/// Everything one GC pass needs.
pub struct FlowGc {
    pub maps: Arc<Maps>,
    pub state: Arc<FlowGcState>,
    pub labels: SharedLabels,
    pub timeouts: GcTimeouts,
    /// Timeouts in the table of connections still opening.
    pub opening_timeouts: GcTimeouts,
    pub conn_log: Arc<ConnLog>,
}

impl FlowGc {
    /// One scan (blocking: it walks the whole table with system calls). A pass that
    /// `cancel` interrupts during its walks removes nothing.
    pub fn run_once(&self, cancel: &CancellationToken) -> Result<(), MapsError> {
        // Read before the scan, so flows created during it make the estimate lower, not
        // higher.
        let created = self.maps.counter(Counter::FlowsCreated)?;
        let now = monotonic_ns();
        let labels = self.labels.get();
        // Each table on its own: a connection's two entries are always in the same one
        // (but for the instant the kernel moves them from one to the other).
        let (flows, new_flows) = (self.maps.flows(), self.maps.new_flows());
        let Some(entries) = scan(flows, 2 * flows.capacity() as usize, cancel) else {
            return Ok(());
        };
        let established = plan(entries, now, &self.timeouts, labels.count());
        // Nine tenths full: the LRU is about to evict live connections, whose next
        // packets may then re-create their flows (at other times such packets are made up).
        let full = established.entries * 10 >= u64::from(flows.capacity()) * 9;
        if self.state.set_pressure(full) {
            if full {
                warn!(
                    entries = established.entries,
                    capacity = flows.capacity(),
                    "the flow table is nearly full: the oldest idle connections are evicted, and their next packets may re-create them"
                );
            } else {
                info!("the flow table has room again");
            }
        }
        if let Some(p) = self.maps.flow_pressure()
            && let Err(e) = p.set(full)
        {
            warn!("{}", crate::dataplane::maps::display_chain(&e));
        }
        let Some(entries) = scan(new_flows, 2 * new_flows.capacity() as usize, cancel) else {
            return Ok(());
        };
        let opening = plan(entries, now, &self.opening_timeouts, labels.count());
        let mut removed = Vec::new();
        let mut deleted = 0;
        for (expired, table) in [(established.expired, flows), (opening.expired, new_flows)] {
            if !expired.is_empty() {
                let (r, d) = apply(table, expired);
                removed.extend(r);
                deleted += d;
            }
        }
        let mut active = established.active_per_host;
        for (a, b) in active.iter_mut().zip(&opening.active_per_host) {
            *a += b;
        }
        self.state.update(
            created,
            established.entries + opening.entries,
            opening.entries,
            active,
            deleted,
        );
        if deleted > 0 {
            debug!(connections = removed.len(), entries = deleted, "flow GC");
        }
        if self.conn_log.is_enabled() {
            let clock = WallClock::now();
            for e in removed.iter().filter(|e| e.report) {
                if let Some(rec) = ConnRecord::from_expired(e, &labels, &clock, now) {
                    self.conn_log.write(&rec);
                }
            }
        }
        Ok(())
    }

    /// Runs a pass every [`GC_INTERVAL`] (or, when the table is so large that a pass takes
    /// long, after a pause of [`GC_DUTY_FACTOR`] times its duration) until `cancel`. A pass
    /// under way when `cancel` comes stops at its next entry, or, past its walks, finishes
    /// its removals and log lines.
    pub async fn run(self, cancel: CancellationToken) {
        let gc = Arc::new(self);
        let mut warned = false;
        while !cancel.is_cancelled() {
            let started = std::time::Instant::now();
            let (pass, stop) = (Arc::clone(&gc), cancel.clone());
            match tokio::task::spawn_blocking(move || pass.run_once(&stop)).await {
                Ok(Ok(())) => warned = false,
                Ok(Err(e)) if !warned => {
                    warn!("flow GC: {}", crate::dataplane::maps::display_chain(&e));
                    warned = true;
                }
                Ok(Err(_)) => {}
                Err(e) => {
                    warn!("flow GC task failed: {e}");
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause_after(started.elapsed())) => {}
                () = cancel.cancelled() => {}
            }
        }
    }
}

/// A pass that took `t` is followed by a pause of at least this many times `t`, so the
/// GC costs at most about a tenth of a CPU even with a full table.
pub const GC_DUTY_FACTOR: u32 = 9;

fn pause_after(pass: Duration) -> Duration {
    GC_INTERVAL
        .saturating_sub(pass)
        .max(pass.saturating_mul(GC_DUTY_FACTOR))
}

#[cfg(test)]
mod tests;

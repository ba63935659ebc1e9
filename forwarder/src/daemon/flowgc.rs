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
use tracing::{debug, warn};

pub use crate::model::flow::{EndReason, Expired, forward_key, reverse_key};
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
                let rk = reverse_key(k, v);
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
                let fk = forward_key(k, v);
                let paired = table
                    .get(&fk)
                    .is_some_and(|fv| fv.direction == DIR_TO_BACKEND && reverse_key(&fk, fv) == *k);
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
}

impl FlowGcState {
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
mod tests {
    use forwarder_common::{FAMILY_V4, PROTO_UDP};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn v4(a: [u8; 4]) -> [u32; 4] {
        [u32::from_ne_bytes(a), 0, 0, 0]
    }

    /// Both entries of a connection from 203.0.113.9:port to the public 443, backend
    /// 10.8.0.2:443.
    fn conn(
        proto: u8,
        port: u16,
        host_id: u32,
        last: (u64, u64),
        flags: (u32, u32),
    ) -> [(FlowKey, FlowValue); 2] {
        let client = v4([203, 0, 113, 9]);
        let public = v4([203, 0, 113, 1]);
        let backend = v4([10, 8, 0, 2]);
        let fk = FlowKey {
            src: client,
            dst: public,
            sport: port.to_be(),
            dport: 443u16.to_be(),
            proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let fv = FlowValue {
            nat_addr: backend,
            nat_port: 443u16.to_be(),
            direction: DIR_TO_BACKEND,
            host_id,
            flags: flags.0,
            packets: 3,
            bytes: 300,
            first_ns: last.0.min(last.1).max(1),
            last_ns: last.0,
            ..Default::default()
        };
        let rk = reverse_key(&fk, &fv);
        let rv = FlowValue {
            nat_addr: public,
            nat_port: 443u16.to_be(),
            direction: DIR_TO_CLIENT,
            host_id,
            flags: flags.1,
            packets: 2,
            bytes: 2000,
            first_ns: fv.first_ns,
            last_ns: last.1,
            ..Default::default()
        };
        assert_eq!(forward_key(&rk, &rv), fk);
        [(fk, fv), (rk, rv)]
    }

    fn run(entries: Vec<(FlowKey, FlowValue)>, now: u64) -> Plan {
        let mut p = plan(entries, now, &GcTimeouts::default(), 4);
        p.expired.sort_by_key(|e| e.fwd.map(|f| f.0.sport));
        p
    }

    #[test]
    fn idle_connections_expire_after_their_timeout() {
        let now = 1000 * S;
        let mut entries = Vec::new();
        entries.extend(conn(
            PROTO_TCP,
            1,
            2,
            (now - 299 * S, now - 400 * S),
            (0, 0),
        ));
        entries.extend(conn(
            PROTO_TCP,
            2,
            3,
            (now - 301 * S, now - 302 * S),
            (0, 0),
        ));
        entries.extend(conn(PROTO_UDP, 3, 0, (now - 61 * S, now - 61 * S), (0, 0)));
        entries.extend(conn(PROTO_UDP, 4, 0, (now - 59 * S, 0), (0, 0)));
        // QUIC connections with a host keep their entries longer; one whose Initials did
        // not give a host (host 0: unknown) does not.
        let quic = (FLOW_F_QUIC, FLOW_F_QUIC);
        entries.extend(conn(PROTO_UDP, 5, 2, (now - 179 * S, 0), quic));
        entries.extend(conn(PROTO_UDP, 6, 2, (now - 181 * S, 0), quic));
        entries.extend(conn(PROTO_UDP, 7, 0, (now - 61 * S, 0), quic));
        let p = run(entries, now);
        assert_eq!(p.entries, 14);
        let ports: Vec<u16> = p
            .expired
            .iter()
            .map(|e| u16::from_be(e.fwd.unwrap().0.sport))
            .collect();
        assert_eq!(ports, [2, 3, 6, 7]);
        assert!(
            p.expired
                .iter()
                .all(|e| e.reason == EndReason::Idle && e.report)
        );
        assert!(p.expired.iter().all(|e| e.rev.is_some()));
        // Active: port 4 (unknown), ports 1 and 5 (host 2).
        assert_eq!(p.active_per_host, [1, 0, 2, 0]);
    }

    #[test]
    fn closed_connections_expire_after_ten_seconds() {
        let now = 1000 * S;
        let ago = (now - 11 * S, now - 11 * S);
        let mut entries = Vec::new();
        // FIN in both directions: closed.
        entries.extend(conn(PROTO_TCP, 1, 2, ago, (FLOW_F_FIN, FLOW_F_FIN)));
        // FIN in one direction only: half-closed, still within the idle timeout.
        entries.extend(conn(PROTO_TCP, 2, 2, ago, (FLOW_F_FIN, 0)));
        // RST in one direction, already reported by the kernel.
        entries.extend(conn(
            PROTO_TCP,
            3,
            3,
            ago,
            (FLOW_F_RST | FLOW_F_END_REPORTED, 0),
        ));
        // Closed, but only 9 s ago.
        entries.extend(conn(
            PROTO_TCP,
            4,
            3,
            (now - 9 * S, now - 20 * S),
            (FLOW_F_FIN, FLOW_F_FIN),
        ));
        let p = run(entries, now);
        let got: Vec<(u16, EndReason, bool)> = p
            .expired
            .iter()
            .map(|e| (u16::from_be(e.fwd.unwrap().0.sport), e.reason, e.report))
            .collect();
        assert_eq!(got, [(1, EndReason::Fin, true), (3, EndReason::Rst, false)]);
        assert_eq!(p.active_per_host, [0, 0, 1, 1]);
    }

    #[test]
    fn entries_without_timestamps_and_unknown_ids_are_kept() {
        let now = 1000 * S;
        let mut entries = Vec::new();
        entries.extend(conn(PROTO_TCP, 1, 0, (0, 0), (0, 0)));
        entries.extend(conn(PROTO_TCP, 2, 999, (now, now), (0, 0)));
        let p = run(entries, now);
        assert!(p.expired.is_empty());
        // Host id 999 is not configured: counted as other.
        assert_eq!(p.active_per_host, [1, 1, 0, 0]);
    }

    #[test]
    fn half_connections_expire_on_their_own() {
        let now = 1000 * S;
        let [f1, _] = conn(PROTO_TCP, 1, 2, (now - 400 * S, 0), (0, 0));
        let [_, r2] = conn(PROTO_TCP, 2, 2, (0, now - 400 * S), (0, FLOW_F_RST));
        let [_, r3] = conn(PROTO_TCP, 3, 2, (0, now - 5 * S), (0, 0));
        let p = run(vec![f1, r2, r3], now);
        assert_eq!(p.expired.len(), 2);
        let rev_only = p.expired.iter().find(|e| e.fwd.is_none()).unwrap();
        assert_eq!(rev_only.rev, Some(r2));
        assert_eq!(rev_only.reason, EndReason::Rst);
        let fwd_only = p.expired.iter().find(|e| e.rev.is_none()).unwrap();
        assert_eq!(fwd_only.fwd, Some(f1));
        // Reverse-only entries are not counted as connections.
        assert_eq!(p.active_per_host, [0, 0, 0, 0]);
    }

    #[test]
    fn long_passes_pause_longer() {
        assert_eq!(
            pause_after(Duration::from_millis(10)),
            Duration::from_millis(1990)
        );
        assert_eq!(
            pause_after(Duration::from_millis(500)),
            Duration::from_millis(4500)
        );
    }

    #[test]
    fn eviction_estimate_never_decreases() {
        let s = FlowGcState::default();
        s.update(10, 16, 0, vec![], 0);
        assert_eq!(s.totals().evictions_estimate, 4);
        s.update(10, 20, 0, vec![], 2);
        let t = s.totals();
        assert_eq!((t.entries, t.removed, t.evictions_estimate), (18, 2, 4));
        s.update(20, 20, 0, vec![], 0);
        assert_eq!(s.totals().evictions_estimate, 18);
    }
}

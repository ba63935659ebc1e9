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
    let rk = fk.reversed(&fv);
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
    assert_eq!(rk.reversed(&rv), fk);
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

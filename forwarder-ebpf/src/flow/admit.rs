//! What keeps a packet without a flow from opening one: the rule's local fallback, the
//! per-client new-connection limit and the SYN flood guard; and why `to_backend` returned
//! no flow (`Miss`).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use forwarder_common::{
    Counter, DataplaneConfig, FlowKey, PROTO_TCP, RULE_F_FALLBACK_LOCAL, RuleValue,
    SYN_RETRY_WINDOW_NS, SourceKey,
    packet::{PacketInfo, TCP_ACK, TCP_SYN},
};

use crate::{
    counters::count,
    maps::{GOOD_SOURCES, LIMITER, SCRATCH, SEEN_SOURCES, SYN_GUARD},
};

/// Whether the packet may start a new connection under the per-client limit (`rate` per
/// second, `burst` at once). Only called for packets that would create a flow.
#[inline(never)]
pub fn admit(info: &PacketInfo, rate: u16, burst: u16) -> bool {
    let key = SourceKey {
        addr: info.src,
        family: info.family,
        _pad: [0; 3],
    };
    // SAFETY: the helper takes no arguments and has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let tat = match LIMITER.get_ptr_mut(&key) {
        // SAFETY: the lookup succeeded: a live entry, valid for the program run (RCU).
        Some(p) => unsafe { *p },
        None => 0,
    };
    match forwarder_common::admit(tat, now, rate, burst) {
        Some(next) => {
            // Racing CPUs may both pass on the same state: the limit is approximate by at
            // most one connection per CPU.
            let _ = LIMITER.insert(&key, &next, 0);
            true
        }
        None => false,
    }
}

/// Why `to_backend` returned no flow (left in the per-CPU scratch, see `last_miss`).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Miss {
    /// The flow table refused the entries (counted as `flow_create_failed`).
    Failed = 0,
    /// New connection to a rule in local fallback: the VPS's own stack takes it.
    Fallback = 1,
    /// Its client is over `[limits] new_connections_per_second`.
    RateLimit = 2,
    /// A SYN flood is going on and its address has not earned a pass (see `SynGuard`).
    /// Counted by the guard (`syn_flood_drop`).
    SynFlood = 3,
}

/// Why the last `to_backend` on this CPU returned no flow.
#[inline(always)]
pub fn last_miss() -> Miss {
    // SAFETY: the lookup succeeded: this CPU's scratch slot, where `to_backend` left it.
    match SCRATCH.get_ptr(0).map(|s| unsafe { (*s).miss }) {
        Some(1) => Miss::Fallback,
        Some(2) => Miss::RateLimit,
        Some(3) => Miss::SynFlood,
        _ => Miss::Failed,
    }
}

/// What keeps a packet without a flow from opening one: the rule's local fallback, the
/// per-client limit and the SYN flood guard. Checked on the flow table's miss path, so
/// a new connection looks its flow up once.
#[inline(always)]
pub fn refused(cfg: &DataplaneConfig, info: &PacketInfo, rule: &RuleValue) -> Option<Miss> {
    if rule.flags & RULE_F_FALLBACK_LOCAL != 0 {
        return Some(Miss::Fallback);
    }
    if cfg.conn_rate != 0 && opens_connection(info) && !admit(info, cfg.conn_rate, cfg.conn_burst) {
        return Some(Miss::RateLimit);
    }
    if cfg.syn_flood_threshold != 0
        && is_syn(info)
        && !syn_guard_admits(info, cfg.syn_flood_threshold)
    {
        return Some(Miss::SynFlood);
    }
    None
}

/// Whether the packet is a SYN (without ACK) of TCP.
#[inline(always)]
pub fn is_syn(info: &PacketInfo) -> bool {
    info.proto == PROTO_TCP && info.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The SYN flood guard (see `forwarder_common::SynGuard`): whether a SYN without a flow
/// may open its connection.
#[inline(never)]
pub fn syn_guard_admits(info: &PacketInfo, threshold: u32) -> bool {
    // SAFETY: the helper takes no arguments and has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(g) = SYN_GUARD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: the lookup succeeded: this CPU's slot, used by this program run only.
    if !forwarder_common::syn_guard_tick(unsafe { &mut *g }, now, threshold) {
        return true;
    }
    let key = SourceKey {
        addr: info.src,
        family: info.family,
        _pad: [0; 3],
    };
    if GOOD_SOURCES.get_ptr(&key).is_some() {
        return true;
    }
    if let Some(first) = SEEN_SOURCES.get_ptr(&key)
        // SAFETY: the lookup succeeded: a live entry, valid for the program run (RCU).
        && now.wrapping_sub(unsafe { *first }) < SYN_RETRY_WINDOW_NS
    {
        let _ = GOOD_SOURCES.insert(&key, &now, 0);
        count(Counter::SynFloodRetryPass);
        return true;
    }
    let _ = SEEN_SOURCES.insert(&key, &now, 0);
    count(Counter::SynFloodDrop);
    false
}

/// Remembers a client address that completed a connection, for the SYN flood guard.
#[inline(always)]
pub fn mark_good(key: &FlowKey) {
    let k = SourceKey {
        addr: key.src,
        family: key.family,
        _pad: [0; 3],
    };
    // A lookup refreshes an LRU entry too, and costs far less than an update, which takes
    // a free element and unlinks the old one: most connections come from known clients.
    if GOOD_SOURCES.get_ptr(&k).is_none() {
        // SAFETY: the helper takes no arguments and has no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        let _ = GOOD_SOURCES.insert(&k, &now, 0);
    }
}

/// Whether the packet would open a connection: a TCP SYN (without ACK), or any UDP packet
/// (checked against the flow table afterwards).
#[inline(always)]
pub fn opens_connection(info: &PacketInfo) -> bool {
    info.proto != PROTO_TCP || info.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

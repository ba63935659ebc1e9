//! What keeps a packet without a flow from opening one: a source no client has, a TCP
//! packet other than a SYN (beyond the re-creation budget), the rule's local fallback,
//! the per-client new-connection limit and the SYN flood guard; and why `to_backend`
//! returned no flow (`Miss`).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use forwarder_common::{
    Counter, DataplaneConfig, FlowKey, PROTO_TCP, RULE_F_FALLBACK_LOCAL, RuleValue, SeenKey,
    SeenSyn, SourceKey,
    admission::{is_bogon_source, source_key},
    is_syn_retry,
    packet::{PacketInfo, TCP_ACK, TCP_RST, TCP_SYN},
    source_deny_key,
};

use crate::{
    counters::count,
    maps::{
        FLOW_PRESSURE, GOOD_SOURCES, LIMITER, RECREATE_RATE, SCRATCH, SEEN_SOURCES, SOURCE_DENY,
        SYN_GUARD,
    },
};

/// The key of the packet's client under which per-client state is kept.
#[inline(always)]
fn client_key(cfg: &DataplaneConfig, info: &PacketInfo) -> SourceKey {
    source_key(info.family, &info.src, cfg.v6_source_prefix)
}

/// Whether the packet may start a new connection under the per-client limit (`rate` per
/// second, `burst` at once). Only called for packets that would create a flow.
#[inline(never)]
pub fn admit(cfg: &DataplaneConfig, info: &PacketInfo, rate: u16, burst: u16) -> bool {
    let key = client_key(cfg, info);
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
    /// The other misses, each counted where found: a TCP packet without a flow that may
    /// not open one (`drop_no_flow`), a client packet of an opening connection that does
    /// not complete its handshake (`drop_unconfirmed`), a source no client has
    /// (`drop_bogon_source`), a key of the other direction (`drop_wrong_direction`), a
    /// RST outside its connection's window (`end_out_of_window`).
    Dropped = 4,
}

/// Why the last `to_backend` on this CPU returned no flow.
#[inline(always)]
pub fn last_miss() -> Miss {
    // SAFETY: the lookup succeeded: this CPU's scratch slot, where `to_backend` left it.
    match SCRATCH.get_ptr(0).map(|s| unsafe { (*s).miss }) {
        Some(1) => Miss::Fallback,
        Some(2) => Miss::RateLimit,
        Some(3) => Miss::SynFlood,
        Some(4) => Miss::Dropped,
        _ => Miss::Failed,
    }
}

/// What keeps a packet without a flow from opening one: a source no client has, the
/// rule's local fallback, a TCP packet that is not a SYN (beyond the re-creation budget),
/// the per-client limit and the SYN flood guard. Checked on the flow table's miss path,
/// so a new connection looks its flow up once, and an established one pays nothing.
#[inline(always)]
pub fn refused(cfg: &DataplaneConfig, info: &PacketInfo, rule: &RuleValue) -> Option<Miss> {
    if bogon(info) {
        count(Counter::DropBogonSource);
        return Some(Miss::Dropped);
    }
    if rule.flags & RULE_F_FALLBACK_LOCAL != 0 {
        // The VPS's own stack serves the port: packets of its connections have no flow.
        return Some(Miss::Fallback);
    }
    if info.proto == PROTO_TCP && !is_syn(info) && !may_recreate(cfg, info) {
        count(Counter::DropNoFlow);
        return Some(Miss::Dropped);
    }
    if cfg.conn_rate != 0
        && opens_connection(info)
        && !admit(cfg, info, cfg.conn_rate, cfg.conn_burst)
    {
        return Some(Miss::RateLimit);
    }
    if cfg.syn_flood_threshold != 0 && is_syn(info) && !syn_guard_admits(cfg, info) {
        return Some(Miss::SynFlood);
    }
    None
}

/// Whether the packet is a SYN (without ACK) of TCP.
#[inline(always)]
pub fn is_syn(info: &PacketInfo) -> bool {
    info.proto == PROTO_TCP && info.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// Whether the source is one no client has: fixed ranges (`is_bogon_source`), then the
/// addresses of this setup the daemon wrote into `SOURCE_DENY`.
#[inline(never)]
fn bogon(info: &PacketInfo) -> bool {
    if is_bogon_source(info.family, &info.src) {
        return true;
    }
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let Some(s) = (unsafe { SCRATCH.get_ptr_mut(0).map(|p| &mut *p) }) else {
        return false;
    };
    s.deny_key.prefix_len = 160;
    s.deny_key.data = source_deny_key(info.family, &info.src);
    SOURCE_DENY.get(&s.deny_key).is_some()
}

/// Whether a TCP packet other than a SYN may re-create the flow of its connection, whose
/// entries are gone (evicted from a full table; a daemon restart keeps them): an ACK
/// without RST, while the established table is nearly full (`FLOW_PRESSURE`, so at other
/// times no made-up ACK reaches home at all), within the per-CPU budget, while no SYN
/// flood is on. The new entries
/// are marked so that home's RST (to a connection it does not have) ends them without
/// reaching the client, and the source earns nothing from them.
#[inline(never)]
fn may_recreate(cfg: &DataplaneConfig, info: &PacketInfo) -> bool {
    if cfg.recreate_rate == 0 || info.tcp_flags & (TCP_ACK | TCP_RST) != TCP_ACK {
        return false;
    }
    if FLOW_PRESSURE.get(0).copied() != Some(1) {
        return false;
    }
    // SAFETY: the helper takes no arguments and has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(g) = SYN_GUARD.get_ptr(0)
        // SAFETY: the lookup succeeded: this CPU's slot, used by this program run only.
        && now < unsafe { (*g).active_until_ns }
    {
        return false;
    }
    let Some(tat) = RECREATE_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the lookup succeeded: this CPU's slot, used by this program run only.
    let tat = unsafe { &mut *tat };
    match forwarder_common::admit(*tat, now, cfg.recreate_rate, cfg.recreate_rate) {
        Some(next) => {
            *tat = next;
            count(Counter::FlowsRecreated);
            true
        }
        None => false,
    }
}

/// The SYN flood guard (see `forwarder_common::SynGuard`): whether a SYN without a flow
/// may open its connection. During a flood only addresses that completed a handshake
/// before pass, and the retransmission of a SYN dropped at least `SYN_RETRY_MIN_NS`
/// earlier (same address, port and sequence number).
#[inline(never)]
pub fn syn_guard_admits(cfg: &DataplaneConfig, info: &PacketInfo) -> bool {
    // SAFETY: the helper takes no arguments and has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(g) = SYN_GUARD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: the lookup succeeded: this CPU's slot, used by this program run only.
    if !forwarder_common::syn_guard_tick(unsafe { &mut *g }, now, cfg.syn_flood_threshold) {
        return true;
    }
    let key = client_key(cfg, info);
    if GOOD_SOURCES.get_ptr(&key).is_some() {
        return true;
    }
    let seen_key = SeenKey {
        addr: key.addr,
        family: key.family,
        _pad: 0,
        sport: info.sport,
    };
    if let Some(seen) = SEEN_SOURCES.get_ptr(&seen_key) {
        // SAFETY: the lookup succeeded: a live entry, valid for the program run (RCU).
        let seen = unsafe { &*seen };
        if is_syn_retry(seen, now, info.tcp_seq) {
            let _ = SEEN_SOURCES.remove(&seen_key);
            count(Counter::SynFloodRetryPass);
            return true;
        }
        if seen.seq == info.tcp_seq {
            // The same SYN again too soon: the first one's time stands, or repeating it
            // would restart the wait.
            count(Counter::SynFloodRetryRefused);
            return false;
        }
    }
    let seen = SeenSyn {
        first_ns: now,
        seq: info.tcp_seq,
        _pad: 0,
    };
    let _ = SEEN_SOURCES.insert(&seen_key, &seen, 0);
    count(Counter::SynFloodDrop);
    false
}

/// Remembers a client that completed a handshake (its ACK acknowledged home's SYN-ACK),
/// for the SYN flood guard.
#[inline(always)]
pub fn mark_good(cfg: &DataplaneConfig, key: &FlowKey) {
    let k = source_key(key.family, &key.src, cfg.v6_source_prefix);
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

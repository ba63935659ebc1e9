//! The flow table: one entry per direction so that both directions of a connection are
//! translated consistently, even if the rules change while it runs.

use aya_ebpf::{EbpfContext, helpers::bpf_ktime_get_ns};
use aya_log_ebpf::{debug, warn};
use forwarder_common::{
    CLASS_PENDING, Counter, DIR_TO_BACKEND, DIR_TO_CLIENT, DataplaneConfig, FLOW_F_END_REPORTED,
    FLOW_F_FIN, FLOW_F_RST, FLOW_F_UDP, FlowKey, FlowValue, HOST_DROP_FLOW_TABLE_FULL,
    HOST_UNKNOWN, PROTO_TCP, PROTO_UDP, RULE_F_FALLBACK_LOCAL, RuleValue, SYN_RETRY_WINDOW_NS,
    SourceKey,
    packet::{PacketInfo, TCP_ACK, TCP_SYN},
};

use crate::maps::{
    FLOWS, GOOD_SOURCES, LIMITER, NEW_FLOWS, SCRATCH, SEEN_SOURCES, SYN_GUARD, count,
};

#[inline(always)]
pub fn forward_key(info: &PacketInfo) -> FlowKey {
    FlowKey {
        src: info.src,
        dst: info.dst,
        sport: info.sport,
        dport: info.dport,
        proto: info.proto,
        family: info.family,
        _pad: [0; 2],
    }
}

const ZERO_FLOW: FlowValue = FlowValue {
    nat_addr: [0; 4],
    nat_port: 0,
    direction: 0,
    class_state: 0,
    ifindex: 0,
    host_id: HOST_UNKNOWN,
    flags: 0,
    ack_expect: 0,
    quic_initials: 0,
    packets: 0,
    bytes: 0,
    first_ns: 0,
    last_ns: 0,
};

#[inline(always)]
fn zero_counts(v: &mut FlowValue) {
    unsafe {
        core::ptr::write_volatile(&mut v.host_id, HOST_UNKNOWN);
        core::ptr::write_volatile(&mut v.flags, 0);
        core::ptr::write_volatile(&mut v.ack_expect, 0);
        core::ptr::write_volatile(&mut v.quic_initials, 0);
        core::ptr::write_volatile(&mut v.packets, 0);
        core::ptr::write_volatile(&mut v.bytes, 0);
        core::ptr::write_volatile(&mut v.first_ns, 0);
        core::ptr::write_volatile(&mut v.last_ns, 0);
    }
}

/// The entry of `key`: an established connection's, or else one still opening.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<&'static mut FlowValue> {
    if let Some(p) = FLOWS.get_ptr_mut(key) {
        return Some(unsafe { &mut *p });
    }
    // Keeps the two lookups apart (see `maps::rule`).
    unsafe { core::arch::asm!("", options(nomem, nostack, preserves_flags)) };
    NEW_FLOWS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
}

/// Whether the client ended the connection of this entry (FIN or RST seen, or reported).
#[inline(always)]
fn ended(v: &FlowValue) -> bool {
    v.flags & (FLOW_F_FIN | FLOW_F_RST | FLOW_F_END_REPORTED) != 0
}

/// Returns the translation for a client -> public packet, creating both flow entries from
/// `rule` when the connection is new (or its entry was evicted) and may be opened. `None`
/// says why in `last_miss`.
///
/// New entries go into `NEW_FLOWS`; `confirm` moves them into `FLOWS` once the backend
/// answered and the client's next packet proves it saw the answer (for TCP, the ACK of the
/// backend's SYN-ACK). A flood of connections that never complete, spoofed or not, only
/// churns `NEW_FLOWS`: the kernel's LRU evicts by force when a table is full, whatever is
/// in use, and established connections must not be what it evicts.
// Not inlined, and building entries in per-CPU scratch space: keys and values would
// otherwise crowd the caller's 512-byte stack.
#[inline(never)]
pub fn to_backend<C: EbpfContext>(
    ctx: &C,
    cfg: &DataplaneConfig,
    info: &PacketInfo,
    rule: &RuleValue,
) -> Option<&'static mut FlowValue> {
    let s = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    s.fwd_key = forward_key(info);
    // A SYN where the client already ended the connection is a new one on the same ports
    // (its port came round again before the entry expired): it gets fresh entries, so it
    // is classified and counted as the new connection it is.
    let mut stale = false;
    if let Some(v) = FLOWS.get_ptr_mut(&s.fwd_key) {
        let v = unsafe { &mut *v };
        if !(is_syn(info) && ended(v)) {
            return Some(v);
        }
        // The old connection's entries leave the established table: lookups try it first.
        opposite_key(&s.fwd_key, v, &mut s.rev_key);
        stale = true;
    } else if let Some(v) = NEW_FLOWS.get_ptr_mut(&s.fwd_key) {
        let v = unsafe { &mut *v };
        if !is_syn(info) {
            return confirm(info, v);
        }
        if !ended(v) {
            // A retransmitted SYN.
            return Some(v);
        }
    }
    if let Some(m) = refused(cfg, info, rule) {
        s.miss = m as u32;
        return None;
    }
    s.miss = Miss::Failed as u32;
    if stale {
        let _ = FLOWS.remove(&s.rev_key);
        let _ = FLOWS.remove(&s.fwd_key);
    }
    let public_ifindex = cfg.public_ifindex;
    // The zero fields are written one by one below: as part of the struct, LLVM turns
    // them into a call to a byte-by-byte memset subprogram.
    s.fwd = FlowValue {
        nat_addr: rule.backend_addr,
        nat_port: rule.backend_port,
        direction: DIR_TO_BACKEND,
        class_state: CLASS_PENDING,
        ifindex: rule.tunnel_ifindex,
        ..ZERO_FLOW
    };
    zero_counts(&mut s.fwd);
    s.rev_key = FlowKey {
        src: rule.backend_addr,
        dst: info.src,
        sport: rule.backend_port,
        dport: info.sport,
        proto: info.proto,
        family: info.family,
        _pad: [0; 2],
    };
    s.rev = FlowValue {
        nat_addr: info.dst,
        nat_port: info.dport,
        direction: DIR_TO_CLIENT,
        class_state: CLASS_PENDING,
        ifindex: public_ifindex,
        ..ZERO_FLOW
    };
    zero_counts(&mut s.rev);
    if info.proto == PROTO_UDP {
        s.fwd.flags = FLOW_F_UDP;
        s.rev.flags = FLOW_F_UDP;
    }
    // Reverse entry first: a reply must never arrive for a flow we cannot translate back.
    if NEW_FLOWS.insert(&s.rev_key, &s.rev, 0).is_err()
        || NEW_FLOWS.insert(&s.fwd_key, &s.fwd, 0).is_err()
    {
        count(Counter::FlowCreateFailed);
        // The packet is dropped; whose it was is not known yet.
        crate::visibility::host_drop(
            HOST_UNKNOWN,
            info.proto == PROTO_UDP,
            HOST_DROP_FLOW_TABLE_FULL,
        );
        warn!(ctx, "flow table insert failed (proto {})", info.proto);
    } else {
        count(Counter::FlowsCreated);
        // Once per connection, and filtered in the kernel below the configured level.
        debug!(
            ctx,
            "new flow proto {} client port {} -> backend port {}",
            info.proto,
            u16::from_be(info.sport),
            u16::from_be(rule.backend_port)
        );
    }
    NEW_FLOWS
        .get_ptr_mut(&s.fwd_key)
        .map(|p| unsafe { &mut *p })
}

/// The key of the entry for the other direction of the same connection.
#[inline(always)]
pub fn opposite_key(key: &FlowKey, v: &FlowValue, out: &mut FlowKey) {
    if v.direction == DIR_TO_BACKEND {
        // client -> public; the reply travels backend -> client.
        out.src = v.nat_addr;
        out.sport = v.nat_port;
        out.dst = key.src;
        out.dport = key.sport;
    } else {
        // backend -> client; the client sends client -> public.
        out.src = key.dst;
        out.sport = key.dport;
        out.dst = v.nat_addr;
        out.dport = v.nat_port;
    }
    out.proto = key.proto;
    out.family = key.family;
    out._pad = [0; 2];
}

/// A client packet `info` of the opening connection `fwd` (in `NEW_FLOWS`, key in the
/// scratch): moves both entries into `FLOWS` if the connection is established by now.
/// TCP: the packet acknowledges the backend's SYN-ACK exactly, which a sender of made-up
/// addresses never saw. UDP: the backend answered. Returns the entry to translate with.
#[inline(never)]
fn confirm(info: &PacketInfo, fwd: &'static mut FlowValue) -> Option<&'static mut FlowValue> {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return Some(fwd);
    };
    let s = unsafe { &mut *s };
    opposite_key(&s.fwd_key, fwd, &mut s.rev_key);
    let Some(rev) = NEW_FLOWS.get_ptr(&s.rev_key) else {
        return Some(fwd);
    };
    let rev = unsafe { &*rev };
    let established = if info.proto == PROTO_TCP {
        rev.ack_expect != 0 && info.tcp_flags & TCP_ACK != 0 && info.tcp_ack == rev.ack_expect
    } else {
        rev.packets != 0
    };
    if !established {
        return Some(fwd);
    }
    s.fwd = *fwd;
    s.rev = *rev;
    // Reverse entry first, as when created. Until the entries leave `NEW_FLOWS` below,
    // both tables hold them; lookups find the established ones.
    if FLOWS.insert(&s.rev_key, &s.rev, 0).is_err() {
        count(Counter::FlowConfirmFailed);
        return Some(fwd);
    }
    if FLOWS.insert(&s.fwd_key, &s.fwd, 0).is_err() {
        let _ = FLOWS.remove(&s.rev_key);
        count(Counter::FlowConfirmFailed);
        return Some(fwd);
    }
    let _ = NEW_FLOWS.remove(&s.fwd_key);
    let _ = NEW_FLOWS.remove(&s.rev_key);
    count(Counter::FlowsConfirmed);
    // `fwd` is freed now: the packet goes on with the established entry.
    FLOWS.get_ptr_mut(&s.fwd_key).map(|p| unsafe { &mut *p })
}

/// Whether the packet may start a new connection under the per-client limit (`rate` per
/// second, `burst` at once). Only called for packets that would create a flow.
#[inline(never)]
pub fn admit(info: &PacketInfo, rate: u16, burst: u16) -> bool {
    let key = SourceKey {
        addr: info.src,
        family: info.family,
        _pad: [0; 3],
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let tat = match LIMITER.get_ptr_mut(&key) {
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
fn refused(cfg: &DataplaneConfig, info: &PacketInfo, rule: &RuleValue) -> Option<Miss> {
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
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(g) = SYN_GUARD.get_ptr_mut(0) else {
        return true;
    };
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

/// The key of the flow `to_backend` returned last on this CPU.
#[inline(always)]
pub fn last_forward_key() -> Option<&'static FlowKey> {
    SCRATCH.get_ptr(0).map(|p| unsafe { &(*p).fwd_key })
}

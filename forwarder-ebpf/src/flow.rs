//! Connections. Here the flow table: one entry per direction so that both directions of a
//! connection are translated consistently, even if the rules change while it runs; entries
//! start in `NEW_FLOWS` and move to `FLOWS` once the connection is established. Beside it,
//! what may open a flow (`admit`), a connection getting its host (`attribute`) and a
//! connection's end (`end`).
//!
//! The table is this file rather than a child module: its log records carry the module
//! path and file (`forwarder_ebpf::flow`, `src/flow.rs`), which the daemon's log shows and
//! which every record writes out byte by byte.

use aya_ebpf::EbpfContext;
use aya_log_ebpf::{debug, warn};
use forwarder_common::{
    CLASS_PENDING, Counter, DIR_TO_BACKEND, DIR_TO_CLIENT, DataplaneConfig, FLOW_F_ACKED,
    FLOW_F_END_REPORTED, FLOW_F_FIN, FLOW_F_RECREATED, FLOW_F_RST, FLOW_F_UDP, FLOW_F_UNKNOWN_DROP,
    FlowKey, FlowValue, HOST_DROP_FLOW_TABLE_FULL, HOST_UNKNOWN, PROTO_TCP, PROTO_UDP,
    RULE_F_UNKNOWN_DROP, RuleValue,
    admission::end_in_window,
    packet::{PacketInfo, TCP_ACK, TCP_RST},
};

mod admit;
pub mod attribute;
pub mod end;

pub use admit::{Miss, last_miss};

use self::admit::{is_syn, mark_good, refused};
use crate::{
    counters::{count, host_drop},
    maps::{FLOWS, NEW_FLOWS, SCRATCH},
};

/// The key of the packet's own direction.
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
    seq_next: 0,
    ack_hi: 0,
};

/// UDP: the backend's datagrams and the client's that a flow must have carried before it
/// counts as established (the client's next one confirms it). A spoofer can make home
/// answer once; a conversation takes a client that receives.
const UDP_CONFIRM_REPLIES: u64 = 2;
const UDP_CONFIRM_REQUESTS: u64 = 2;

#[inline(always)]
fn zero_counts(v: &mut FlowValue) {
    // SAFETY: every pointer is a field of `v`, a valid and exclusive reference.
    unsafe {
        core::ptr::write_volatile(&mut v.host_id, HOST_UNKNOWN);
        core::ptr::write_volatile(&mut v.flags, 0);
        core::ptr::write_volatile(&mut v.ack_expect, 0);
        core::ptr::write_volatile(&mut v.quic_initials, 0);
        core::ptr::write_volatile(&mut v.packets, 0);
        core::ptr::write_volatile(&mut v.bytes, 0);
        core::ptr::write_volatile(&mut v.first_ns, 0);
        core::ptr::write_volatile(&mut v.last_ns, 0);
        core::ptr::write_volatile(&mut v.seq_next, 0);
        core::ptr::write_volatile(&mut v.ack_hi, 0);
    }
}

/// The entry of `key`: an established connection's, or else one still opening.
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<&'static mut FlowValue> {
    if let Some(p) = FLOWS.get_ptr_mut(key) {
        // SAFETY: the lookup succeeded: `p` points to a live entry, which stays valid for
        // the rest of the program run (RCU). Other CPUs may update the same entry; the
        // fields they share are counted atomically (`counters::account`).
        return Some(unsafe { &mut *p });
    }
    // Keeps the two lookups apart (see `maps::rule`).
    // SAFETY: an empty asm statement: it touches no memory and no register.
    unsafe { core::arch::asm!("", options(nomem, nostack, preserves_flags)) };
    // SAFETY: as for `FLOWS` above.
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
    // SAFETY: the lookup succeeded (`?`), so the pointer is this CPU's scratch slot, which
    // only this program run uses.
    let s = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    s.fwd_key = forward_key(info);
    // A SYN where the client already ended the connection is a new one on the same ports
    // (its port came round again before the entry expired): it gets fresh entries, so it
    // is classified and counted as the new connection it is.
    let mut stale = false;
    if let Some(v) = FLOWS.get_ptr_mut(&s.fwd_key) {
        // SAFETY: a live entry, as in `lookup`.
        let v = unsafe { &mut *v };
        if v.direction != DIR_TO_BACKEND {
            // A client packet whose key is a reply's: its source claims to be a backend.
            return dropped(Counter::DropWrongDirection);
        }
        if !(is_syn(info) && ended(v)) {
            return Some(v);
        }
        // The old connection's entries leave the established table: lookups try it first.
        s.fwd_key.reverse_into(v, &mut s.rev_key);
        stale = true;
    } else if let Some(v) = NEW_FLOWS.get_ptr_mut(&s.fwd_key) {
        // SAFETY: a live entry, as in `lookup`.
        let v = unsafe { &mut *v };
        if v.direction != DIR_TO_BACKEND {
            return dropped(Counter::DropWrongDirection);
        }
        if !is_syn(info) {
            return confirm(cfg, info, v);
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
    s.fwd_key.reverse_into(&s.fwd, &mut s.rev_key);
    s.rev = FlowValue {
        nat_addr: info.dst,
        nat_port: info.dport,
        direction: DIR_TO_CLIENT,
        class_state: CLASS_PENDING,
        ifindex: public_ifindex,
        ..ZERO_FLOW
    };
    zero_counts(&mut s.rev);
    let mut flags = if rule.flags & RULE_F_UNKNOWN_DROP != 0 {
        FLOW_F_UNKNOWN_DROP
    } else {
        0
    };
    if info.proto == PROTO_UDP {
        flags |= FLOW_F_UDP;
    } else if !is_syn(info) {
        // Let through by `refused` within the re-creation budget.
        flags |= FLOW_F_RECREATED;
    }
    s.fwd.flags = flags;
    s.rev.flags = flags;
    // Reverse entry first: a reply must never arrive for a flow we cannot translate back.
    if NEW_FLOWS.insert(&s.rev_key, &s.rev, 0).is_err()
        || NEW_FLOWS.insert(&s.fwd_key, &s.fwd, 0).is_err()
    {
        count(Counter::FlowCreateFailed);
        // The packet is dropped; whose it was is not known yet.
        host_drop(
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
        // SAFETY: a live entry, as in `lookup`.
        .map(|p| unsafe { &mut *p })
}

/// Records why `to_backend` returns no flow: counted here, dropped by the caller.
#[inline(always)]
fn dropped(c: Counter) -> Option<&'static mut FlowValue> {
    count(c);
    if let Some(s) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this run only.
        unsafe { (*s).miss = Miss::Dropped as u32 };
    }
    None
}

/// A client packet `info` of the opening connection `fwd` (in `NEW_FLOWS`, key in the
/// scratch): moves both entries into `FLOWS` if the connection is established by now.
/// TCP: the packet acknowledges the backend's SYN-ACK exactly, which a sender of made-up
/// addresses never saw; anything else but a RST inside the window is dropped, so a spoofed
/// SYN followed by spoofed segments sends home nothing but the SYN. A re-created TCP flow:
/// home answered (not with a RST, which ends it). UDP: the flow carried a conversation
/// both ways. Returns the entry to translate with.
#[inline(never)]
fn confirm(
    cfg: &DataplaneConfig,
    info: &PacketInfo,
    fwd: &'static mut FlowValue,
) -> Option<&'static mut FlowValue> {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return Some(fwd);
    };
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let s = unsafe { &mut *s };
    s.fwd_key.reverse_into(fwd, &mut s.rev_key);
    let Some(rev) = NEW_FLOWS.get_ptr(&s.rev_key) else {
        return Some(fwd);
    };
    // SAFETY: a live entry, as in `lookup`.
    let rev = unsafe { &*rev };
    let recreated = fwd.flags & FLOW_F_RECREATED != 0;
    let established = if info.proto != PROTO_TCP {
        rev.packets >= UDP_CONFIRM_REPLIES && fwd.packets >= UDP_CONFIRM_REQUESTS
    } else if recreated {
        rev.packets != 0
    } else {
        rev.ack_expect != 0 && info.tcp_flags & TCP_ACK != 0 && info.tcp_ack == rev.ack_expect
    };
    if !established {
        if info.proto == PROTO_TCP && !recreated {
            // A client aborting its own handshake resets at its SYN's sequence number + 1.
            let acked = (rev.flags & FLOW_F_ACKED != 0).then_some(rev.ack_hi);
            if info.tcp_flags & TCP_RST == 0 || !end_in_window(info.tcp_seq, fwd.seq_next, acked) {
                return dropped(Counter::DropUnconfirmed);
            }
        }
        return Some(fwd);
    }
    s.fwd = *fwd;
    s.rev = *rev;
    s.fwd.flags &= !FLOW_F_RECREATED;
    s.rev.flags &= !FLOW_F_RECREATED;
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
    if info.proto == PROTO_TCP && !recreated && cfg.syn_flood_threshold != 0 {
        // A handshake completed from this address: the SYN flood guard lets it through.
        mark_good(cfg, &s.fwd_key);
    }
    // `fwd` is freed now: the packet goes on with the established entry.
    // SAFETY: a live entry, as in `lookup`.
    FLOWS.get_ptr_mut(&s.fwd_key).map(|p| unsafe { &mut *p })
}

/// Removes both entries of an opening connection, given one of them and its key.
#[inline(never)]
pub fn forget(key: &FlowKey, v: &FlowValue) {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let s = unsafe { &mut *s };
    key.reverse_into(v, &mut s.rev_key);
    let _ = NEW_FLOWS.remove(&s.rev_key);
    let _ = NEW_FLOWS.remove(key);
}

/// The key of the flow `to_backend` returned last on this CPU.
#[inline(always)]
pub fn last_forward_key() -> Option<&'static FlowKey> {
    // SAFETY: the lookup succeeded: this CPU's scratch slot, where `to_backend` left it.
    SCRATCH.get_ptr(0).map(|p| unsafe { &(*p).fwd_key })
}

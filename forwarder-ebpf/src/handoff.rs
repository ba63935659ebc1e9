//! What the daemon needs to take over a connection whose host has policy `local` (see
//! `forwarder_common::handoff`): both SYNs' options, and the client's payload up to the
//! segment that named the host.

use aya_ebpf::EbpfContext;
use forwarder_common::{
    CFG_F_LOCAL_POLICY, Counter, DIR_TO_CLIENT, FlowKey, FlowValue,
    handoff::{HANDOFF_PAYLOAD_MAX, HandoffEvent, TCP_OPTIONS_MAX},
    packet::{PacketInfo, TCP_ACK, TCP_HLEN, TCP_SYN},
};

use crate::{
    counters::count,
    hook::LoadBytes,
    maps::{HANDOFF, HANDSHAKES, SCRATCH, config},
    pkt::opaque,
};

/// Whether the daemon wants handshakes and segments at all.
#[inline(always)]
pub fn wanted() -> bool {
    config().is_some_and(|c| c.flags & CFG_F_LOCAL_POLICY != 0)
}

/// Loads the options of the TCP header into `dst`; returns how many bytes there are.
#[inline(always)]
fn load_options<C: LoadBytes>(ctx: &C, info: &PacketInfo, dst: *mut u8) -> u32 {
    let n = (info.tcp_hlen as usize).saturating_sub(TCP_HLEN);
    if n == 0 || n > TCP_OPTIONS_MAX {
        return 0;
    }
    // Written so the verifier sees 1..=64 whatever the compiler does with `n`.
    let n = (opaque(n - 1) & 63) as u32 + 1;
    if n as usize > TCP_OPTIONS_MAX || !ctx.load(info.l4() + TCP_HLEN, dst, n) {
        return 0;
    }
    n
}

/// Records a client's SYN (not SYN-ACK) of the flow `key` toward the backend.
// The checks inline, the work out of line: every forwarded packet passes here, and a call
// costs more than the checks on this path.
#[inline(always)]
pub fn record_syn<C: LoadBytes>(ctx: &C, info: &PacketInfo, key: &FlowKey) {
    if info.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && wanted() {
        store_syn(ctx, info, key);
    }
}

#[inline(never)]
fn store_syn<C: LoadBytes>(ctx: &C, info: &PacketInfo, key: &FlowKey) {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let h = unsafe { &mut (*s).handshake };
    if !ctx.load(info.l4() + 4, &mut h.syn_seq as *mut u32 as *mut u8, 4) {
        return;
    }
    h.syn_len = load_options(ctx, info, h.syn_opts.as_mut_ptr()) as u8;
    h.synack_len = 0;
    h.synack_seen = 0;
    h._pad = 0;
    h.synack_seq = 0;
    let _ = HANDSHAKES.insert(key, h, 0);
}

/// Records the backend's SYN-ACK of the reply flow `key` (backend -> client), translated
/// back by `nat`.
#[inline(always)]
pub fn record_synack<C: LoadBytes>(ctx: &C, info: &PacketInfo, key: &FlowKey, nat: &FlowValue) {
    if info.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK && wanted() {
        store_synack(ctx, info, key, nat);
    }
}

#[inline(never)]
fn store_synack<C: LoadBytes>(ctx: &C, info: &PacketInfo, key: &FlowKey, nat: &FlowValue) {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let s = unsafe { &mut *s };
    // The client's view of the connection: client -> public address, `nat` taken as the
    // reply entry the tunnel path looks up.
    let reply = FlowValue {
        direction: DIR_TO_CLIENT,
        ..*nat
    };
    key.reverse_into(&reply, &mut s.fwd_key);
    let Some(h) = HANDSHAKES.get_ptr_mut(&s.fwd_key) else {
        return;
    };
    // SAFETY: the lookup succeeded: a live entry, valid for the program run (RCU).
    let h = unsafe { &mut *h };
    h.synack_len = load_options(ctx, info, h.synack_opts.as_mut_ptr()) as u8;
    h.synack_seq = info.tcp_seq.to_be();
    h.synack_seen = 1;
}

/// Whether the client segment `info` of the flow `key` proves that its connection's
/// handshake with the backend completed: it acknowledges the backend's SYN-ACK exactly
/// (`Handshake::proves`), which a sender of made-up addresses never saw. Only such a
/// connection's segments go to the daemon: a spoofed SYN followed by a request for a
/// `local` host must neither reach the VPS's server nor make the VPS answer the forged
/// source, and must not take room in the daemon's tables.
#[inline(never)]
pub fn proven(info: &PacketInfo, key: &FlowKey) -> bool {
    if info.tcp_flags & TCP_ACK == 0 {
        return false;
    }
    let Some(h) = HANDSHAKES.get_ptr(key) else {
        return false;
    };
    // SAFETY: the lookup succeeded: a live entry, valid for the program run (RCU).
    unsafe { &*h }.proves(info.tcp_ack)
}

/// Hands a client segment of `key` to the daemon: `kind` is `HANDOFF_SEGMENT` for one that
/// went home before the host was known, `HANDOFF_LOCAL` for the one that named a `local`
/// host. False if the event was lost.
#[inline(never)]
pub fn emit<C: EbpfContext + LoadBytes>(
    ctx: &C,
    info: &PacketInfo,
    key: &FlowKey,
    kind: u32,
    host_id: u32,
) -> bool {
    let Some(mut e) = HANDOFF.reserve::<HandoffEvent>(0) else {
        count(Counter::HandoffLost);
        return false;
    };
    let p = e.as_mut_ptr();
    // SAFETY: `p` is the reserved record, valid and exclusively ours until it is submitted
    // or discarded below.
    let ev = unsafe { &mut *p };
    ev.kind = kind;
    ev.host_id = host_id;
    ev.key = *key;
    ev._pad = 0;
    // seq, ack, offset and flags, window: adjacent in the header and in the event.
    let ok = ctx.load(info.l4() + 4, &mut ev.seq as *mut u32 as *mut u8, 12);
    ev.opts_len = load_options(ctx, info, ev.opts.as_mut_ptr());
    let payload_len = info.payload_len();
    let n = if payload_len == 0 || payload_len > HANDOFF_PAYLOAD_MAX {
        0
    } else {
        (opaque(payload_len - 1) & (HANDOFF_PAYLOAD_MAX - 1)) as u32 + 1
    };
    let ok = ok
        && n > 0
        && ctx.load(
            info.l4() + info.tcp_hlen as usize,
            ev.payload.as_mut_ptr(),
            n,
        );
    ev.payload_len = n;
    if !ok {
        e.discard(0);
        count(Counter::HandoffLost);
        return false;
    }
    e.submit(0);
    true
}

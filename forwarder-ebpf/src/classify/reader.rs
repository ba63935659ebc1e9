//! Reader dispatch: the forwarding programs hand a packet to the name reader by tail call
//! (`to_reader`), and the reader programs classify it (`read_name`): TCP by the parser,
//! UDP by the QUIC hand-off.

use aya_ebpf::{EbpfContext, maps::ProgramArray};
use forwarder_common::{Counter, FLOW_F_CUT, FlowKey, FlowValue, HOST_UNKNOWN, PROTO_TCP};

use super::segment::classify_segment;
use crate::{
    counters::stats_index,
    flow::{self, attribute::finish},
    hook::LoadBytes,
    maps::{SCRATCH, packet_info},
    quic,
};

/// Tail-calls the name reader in `readers`. `key` must be the per-CPU
/// `SCRATCH.fwd_key`, where the reader finds it. Returns only if there is no reader (the
/// daemon could not load it): the connection is then counted as unknown.
#[inline(always)]
pub fn to_reader<C: EbpfContext>(
    ctx: &C,
    readers: &ProgramArray,
    key: &FlowKey,
    flow: &mut FlowValue,
) {
    if let Some(s) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run
        // (and the reader it tail-calls) only.
        unsafe { (*s).redirect_ifindex = flow.ifindex };
    }
    // SAFETY: `ctx` is this program's context, and `readers` holds only programs of this
    // program's type (one array per type); nothing here needs dropping.
    unsafe { readers.tail_call(ctx, 0) };
    finish(key, flow, HOST_UNKNOWN, Counter::ClassifyUnavailable);
}

/// The body of the name reader programs: classifies the packet `to_reader` handed over.
/// Returns where tc must send it (the flow's tunnel interface; 0 when the packet must be
/// dropped because its host's policy cut the connection) and where the flow's host
/// statistics are (`host_stats_index`).
#[inline(always)]
pub fn read_name<C: EbpfContext + LoadBytes>(ctx: &C) -> (u32, u32) {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return (0, HOST_UNKNOWN);
    };
    // SAFETY: the lookup succeeded: this CPU's scratch slot, where the forwarding program
    // that tail-called this one left the packet's state.
    let ifindex = unsafe { (*s).redirect_ifindex };
    let Some(info) = packet_info() else {
        return (ifindex, HOST_UNKNOWN);
    };
    // The key stays in the per-CPU scratch; `finish` only writes other fields of it.
    // SAFETY: as above.
    let key = unsafe { &(*s).fwd_key };
    // The entry is looked up again wherever the reader changes it: it may be in either
    // flow table, and a pointer kept across the parse would make the verifier walk the
    // whole parser once per table.
    let Some(flags) = flow::lookup(key).map(|f| f.flags) else {
        return (ifindex, HOST_UNKNOWN);
    };
    if info.proto == PROTO_TCP {
        classify_segment(ctx, info, key, flags);
    } else {
        quic::on_datagram(ctx, info, key, flags);
    }
    let Some(flow) = flow::lookup(key) else {
        return (ifindex, HOST_UNKNOWN);
    };
    if flow.flags & FLOW_F_CUT != 0 {
        return (0, 0);
    }
    (ifindex, stats_index(flow))
}

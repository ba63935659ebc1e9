//! A TCP connection's end: FIN and RST marked on the entries, the "ended" event emitted
//! once the connection is over.

use forwarder_common::{
    DIR_TO_BACKEND, END_FIN, END_RST, EVENT_ENDED, FLOW_F_END_REPORTED, FLOW_F_FIN, FLOW_F_RST,
    FlowKey, FlowValue,
    packet::{PacketInfo, TCP_RST},
};

use super::lookup;
use crate::{events::emit, maps::SCRATCH};

/// On FIN or RST: marks the entry, and reports the connection's end once it is over
/// (RST, or FIN in both directions).
#[inline(never)]
pub fn connection_end(info: &PacketInfo, key: &FlowKey, flow: &mut FlowValue) {
    let rst = info.tcp_flags & TCP_RST != 0;
    flow.flags |= if rst { FLOW_F_RST } else { FLOW_F_FIN };
    if flow.flags & FLOW_F_END_REPORTED != 0 {
        return;
    }
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let Some(s) = (unsafe { SCRATCH.get_ptr_mut(0).map(|p| &mut *p) }) else {
        return;
    };
    key.reverse_into(flow, &mut s.rev_key);
    let Some(other) = lookup(&s.rev_key) else {
        return;
    };
    if !rst && other.flags & FLOW_F_FIN == 0 {
        return;
    }
    flow.flags |= FLOW_F_END_REPORTED;
    other.flags |= FLOW_F_END_REPORTED;
    let reason = if rst { END_RST } else { END_FIN };
    if flow.direction == DIR_TO_BACKEND {
        emit(EVENT_ENDED, reason, key, flow, Some(other));
    } else {
        // Events are described from the client's side: the forward entry and its key.
        s.fwd_key = s.rev_key;
        emit(EVENT_ENDED, reason, &s.fwd_key, other, Some(flow));
    }
}

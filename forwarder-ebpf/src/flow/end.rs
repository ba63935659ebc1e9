//! A TCP connection's end: FIN and RST marked on the entries, the "ended" event emitted
//! once the connection is over.

use forwarder_common::{
    Counter, DIR_TO_BACKEND, END_FIN, END_RST, EVENT_ENDED, FLOW_F_ACKED, FLOW_F_END_REPORTED,
    FLOW_F_FIN, FLOW_F_RST, FlowKey, FlowValue,
    admission::end_in_window,
    packet::{PacketInfo, TCP_RST},
};

use super::lookup;
use crate::{counters::count, events::emit, maps::SCRATCH};

/// On FIN or RST: marks the entry, and reports the connection's end once it is over
/// (RST, or FIN in both directions). A client's FIN or RST counts only inside the window
/// its connection has seen (`end_in_window`): a stranger's guess ends nothing, and false
/// returns say so (counted as `end_out_of_window`). Home's are taken as they come.
#[inline(never)]
pub fn connection_end(info: &PacketInfo, key: &FlowKey, flow: &mut FlowValue) -> bool {
    let rst = info.tcp_flags & TCP_RST != 0;
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let Some(s) = (unsafe { SCRATCH.get_ptr_mut(0).map(|p| &mut *p) }) else {
        return false;
    };
    key.reverse_into(flow, &mut s.rev_key);
    // The two cases apart, each with its own null check: 6.1's verifier loses an `Option`
    // of a map value kept across the window check.
    let Some(other) = lookup(&s.rev_key) else {
        if flow.direction == DIR_TO_BACKEND && !end_in_window(info.tcp_seq, flow.seq_next, None) {
            count(Counter::EndOutOfWindow);
            return false;
        }
        flow.flags |= if rst { FLOW_F_RST } else { FLOW_F_FIN };
        return true;
    };
    if flow.direction == DIR_TO_BACKEND {
        let acked = if other.flags & FLOW_F_ACKED != 0 {
            Some(other.ack_hi)
        } else {
            None
        };
        if !end_in_window(info.tcp_seq, flow.seq_next, acked) {
            count(Counter::EndOutOfWindow);
            return false;
        }
    }
    flow.flags |= if rst { FLOW_F_RST } else { FLOW_F_FIN };
    if flow.flags & FLOW_F_END_REPORTED != 0 {
        return true;
    }
    if !rst && other.flags & FLOW_F_FIN == 0 {
        return true;
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
    true
}

//! Per-packet bookkeeping of the forwarding paths: every forwarded packet counted under
//! its flow and host, the connection's end noticed, the first payload flagged for the name
//! reader; and what becomes of a client packet of a connection its host's policy cut.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use forwarder_common::{
    CLASS_PENDING, Counter, DIR_TO_BACKEND, DIR_TO_CLIENT, FLOW_F_ACKED, FLOW_F_CLS_STATE,
    FLOW_F_CUT, FLOW_F_HANDOFF_REFUSED, FLOW_F_HANDOFF_WAIT, FLOW_F_LOCAL, FLOW_F_UNKNOWN_DROP,
    FlowKey, FlowValue, HANDOFF_WAIT_NS, HOST_UNKNOWN, PROTO_TCP,
    admission::{SEQ_SLACK, seq_end},
    packet::{PacketInfo, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

use crate::{
    counters::{account, count},
    flow::{attribute::finish, end::connection_end},
    quic,
};

/// A client packet of a cut connection, left to the VPS's own stack: one handed to the
/// daemon (policy `local`) is still counted under its host, which also keeps its flow
/// entries from ageing out while the daemon serves it.
/// Returns false when the packet must be dropped: its connection is being handed over
/// and the daemon's socket does not exist yet.
#[inline(always)]
pub fn on_cut_packet(info: &PacketInfo, flow: &mut FlowValue) -> bool {
    if flow.flags & FLOW_F_HANDOFF_REFUSED != 0 {
        // A `local` host named by a source nothing proved (see `handoff::proven`).
        count(Counter::DropHandoffRefused);
        return false;
    }
    if flow.flags & FLOW_F_LOCAL == 0 {
        return true;
    }
    if flow.flags & FLOW_F_HANDOFF_WAIT != 0 {
        // `last_ns` is the held-back segment's time until the wait is over.
        // SAFETY: the helper takes no arguments and has no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        if now.wrapping_sub(flow.last_ns) < HANDOFF_WAIT_NS {
            count(Counter::DropHandoffWait);
            return false;
        }
    }
    account(flow, info.l4_len as u64 + (info.l4() - info.l3()) as u64);
    true
}

/// Per-packet bookkeeping of a forwarded packet: counting, sequence numbers, connection
/// end on FIN/RST. `Some(true)` when the packet carries payload of a connection whose host
/// is not known yet: the caller then hands it to the name reader (`classify::to_reader`)
/// once it is done with it. `None`: the caller drops the packet: a client RST outside its
/// connection's window (counted as `end_out_of_window`), or the packet of a connection
/// just cut because its host cannot be read (`unknown_policy = "drop"`).
#[inline(always)]
pub fn on_packet(info: &PacketInfo, key: &FlowKey, flow: &mut FlowValue) -> Option<bool> {
    let ip_len = info.l4_len as u64 + (info.l4() - info.l3()) as u64;
    let first = flow.packets == 0;
    // Whether the segment starts where the client's byte stream stands (taken before
    // `track_seq` moves it).
    let in_order = info.tcp_seq == flow.seq_next;
    account(flow, ip_len);
    let tcp = info.proto == PROTO_TCP;
    // A FIN or RST that does not end anything (outside the window) is looked at no
    // further: it does not finish the classification either.
    let mut ends = false;
    if tcp && info.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        ends = connection_end(info, key, flow);
        if !ends && info.tcp_flags & TCP_RST != 0 {
            return None;
        }
    }
    if tcp {
        track_seq(info, flow, first);
    }
    let mut read = false;
    if flow.class_state == CLASS_PENDING && flow.direction == DIR_TO_BACKEND {
        let payload = info.payload_len() > 0;
        if ends && !payload {
            // The connection ends before any payload: no name to read, and none to refuse
            // it for: only its handshake went home, and home's stack takes no data after
            // the client's FIN or RST.
            flow.flags &= !FLOW_F_UNKNOWN_DROP;
            finish(key, flow, HOST_UNKNOWN, Counter::ClassifyNotTlsOrHttp);
        } else if !tcp && !quic::wanted() {
            // A UDP flow while QUIC connections are not classified: no name to read.
            finish(key, flow, HOST_UNKNOWN, Counter::ClassifyNotTlsOrHttp);
        } else if tcp && payload && !first && !in_order && flow.flags & FLOW_F_CLS_STATE == 0 {
            // The first payload the reader would see does not start the byte stream: a
            // segment ahead of one still missing (reordered, or sent so that home reads
            // other bytes first than the reader would). Not read: a gap.
            finish(key, flow, HOST_UNKNOWN, Counter::ClassifyGaveUp);
        } else if payload {
            // TCP: the first payload (also one that ends the connection); UDP: a datagram
            // of a possible QUIC connection.
            read = true;
        }
        if flow.flags & FLOW_F_CUT != 0 {
            // Left unknown on a rule with `unknown_policy = "drop"`: not even this packet
            // goes home.
            return None;
        }
    }
    Some(read)
}

/// Moves the direction's `seq_next` forward, and for home's direction its highest
/// acknowledgment. A client segment moves it at most `SEQ_SLACK` past what was seen, so
/// a blind one cannot shift the window that RSTs and FINs are checked against.
#[inline(always)]
fn track_seq(info: &PacketInfo, flow: &mut FlowValue, first: bool) {
    let end = seq_end(
        info.tcp_seq,
        info.payload_len() as u32,
        info.tcp_flags & TCP_SYN != 0,
        info.tcp_flags & TCP_FIN != 0,
    );
    let trusted = flow.direction == DIR_TO_CLIENT;
    let advances = end.wrapping_sub(flow.seq_next) as i32 > 0
        && (trusted || info.tcp_seq.wrapping_sub(flow.seq_next) as i32 <= SEQ_SLACK as i32);
    if first || advances {
        flow.seq_next = end;
    }
    if trusted && info.tcp_flags & TCP_ACK != 0 {
        if flow.flags & FLOW_F_ACKED == 0 {
            flow.ack_hi = info.tcp_ack;
            flow.flags |= FLOW_F_ACKED;
        } else if info.tcp_ack.wrapping_sub(flow.ack_hi) as i32 > 0 {
            flow.ack_hi = info.tcp_ack;
        }
    }
}

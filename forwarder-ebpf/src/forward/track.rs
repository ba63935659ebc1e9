//! Per-packet bookkeeping of the forwarding paths: every forwarded packet counted under
//! its flow and host, the connection's end noticed, the first payload flagged for the name
//! reader; and what becomes of a client packet of a connection its host's policy cut.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use forwarder_common::{
    CLASS_PENDING, Counter, DIR_TO_BACKEND, FLOW_F_HANDOFF_REFUSED, FLOW_F_HANDOFF_WAIT,
    FLOW_F_LOCAL, FlowKey, FlowValue, HANDOFF_WAIT_NS, HOST_UNKNOWN, PROTO_TCP,
    packet::{PacketInfo, TCP_FIN, TCP_RST},
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

/// Per-packet bookkeeping of a forwarded packet: counting, connection end on FIN/RST.
/// True when the packet carries payload of a connection whose host is not known yet: the
/// caller then hands it to the name reader (`classify::to_reader`) once it is done with it.
#[inline(always)]
pub fn on_packet(info: &PacketInfo, key: &FlowKey, flow: &mut FlowValue) -> bool {
    let ip_len = info.l4_len as u64 + (info.l4() - info.l3()) as u64;
    account(flow, ip_len);
    let mut read = false;
    if flow.class_state == CLASS_PENDING && flow.direction == DIR_TO_BACKEND {
        if info.proto == PROTO_TCP && info.tcp_flags & (TCP_FIN | TCP_RST) != 0
            || info.proto != PROTO_TCP && !quic::wanted()
        {
            // The connection ends before any payload, or a UDP flow while QUIC
            // connections are not classified: no name to read.
            finish(key, flow, HOST_UNKNOWN, Counter::ClassifyNotTlsOrHttp);
        } else if info.payload_len() > 0 {
            // TCP: the first payload; UDP: a datagram of a possible QUIC connection.
            read = true;
        }
    }
    if info.proto == PROTO_TCP && info.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        connection_end(info, key, flow);
    }
    read
}

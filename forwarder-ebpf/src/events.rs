//! Connection events for the daemon's connection log (`EVENTS`): a connection classified,
//! a connection ended.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use forwarder_common::{
    ConnEvent, Counter, EVENT_RECORD_BYTES, EVENTS_WAKE_BYTES, FlowKey, FlowValue,
};

use crate::{counters::count, maps::EVENTS};

/// Emits a connection event built from both entries of a connection.
#[inline(always)]
pub fn emit(kind: u32, reason: u32, fwd_key: &FlowKey, fwd: &FlowValue, rev: Option<&FlowValue>) {
    let Some(mut e) = EVENTS.reserve::<ConnEvent>(0) else {
        count(Counter::EventsLost);
        return;
    };
    let (rp, rb, rlast) = match rev {
        Some(r) => (r.packets, r.bytes, r.last_ns),
        None => (0, 0, 0),
    };
    e.write(ConnEvent {
        kind,
        host_id: fwd.host_id,
        client_addr: fwd_key.src,
        client_port: fwd_key.sport,
        family: fwd_key.family,
        proto: fwd_key.proto,
        reason,
        _pad: 0,
        packets_to_backend: fwd.packets,
        bytes_to_backend: fwd.bytes,
        packets_to_client: rp,
        bytes_to_client: rb,
        first_ns: fwd.first_ns,
        last_ns: if rlast > fwd.last_ns {
            rlast
        } else {
            fwd.last_ns
        },
    });
    // No wake-up per event (see EVENTS_WAKE_BYTES): the daemon drains the ring on a timer,
    // and is woken once when the unread bytes cross the mark (not by every event beyond
    // it, which would cost the most when the daemon is slow).
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if (EVENTS_WAKE_BYTES..EVENTS_WAKE_BYTES + EVENT_RECORD_BYTES).contains(&unread) {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    e.submit(flags as u64);
}

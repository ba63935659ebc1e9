//! A connection gets its host: both flow entries attributed (their counts moved to the
//! host), the connection counted, the "classified" event emitted. Reached from the name
//! readers, from the QUIC verdict, and wherever a connection's name is given up on.

use forwarder_common::{
    Counter, EVENT_CLASSIFIED, FLOW_F_CUT, FLOW_F_LOCAL, FLOW_F_UNKNOWN_DROP, FlowKey, FlowValue,
    HOST_DROP_POLICY, HOST_UNKNOWN,
};

use super::lookup;
use crate::{
    counters::{attribute, count, host_drop, is_udp, stats},
    events::emit,
    maps::{CLASSIFY, SCRATCH},
};

/// Gives the connection its host: both entries, the connection counter, the event. A
/// connection left `unknown` on a rule with `unknown_policy = "drop"` is cut here, as
/// policy `drop` cuts a named one: whatever made its name unreadable (no SNI, junk, a
/// request spread past what the reader follows, a gap), it does not go home.
#[inline(never)]
pub fn finish(fwd_key: &FlowKey, fwd: &mut FlowValue, id: u32, c: Counter) {
    count(c);
    if id == HOST_UNKNOWN && fwd.flags & (FLOW_F_UNKNOWN_DROP | FLOW_F_CUT) == FLOW_F_UNKNOWN_DROP {
        fwd.flags |= FLOW_F_CUT;
        count(Counter::PolicyUnknownCut);
        host_drop(HOST_UNKNOWN, is_udp(fwd), HOST_DROP_POLICY);
    }
    attribute(fwd, id);
    // SAFETY: the lookup succeeded: this CPU's scratch slot, used by this program run only.
    let Some(s) = (unsafe { SCRATCH.get_ptr_mut(0).map(|p| &mut *p) }) else {
        return;
    };
    fwd_key.reverse_into(fwd, &mut s.rev_key);
    let mut rev = lookup(&s.rev_key);
    if let Some(r) = rev.as_deref_mut() {
        attribute(r, id);
        // The backend's packets of a cut connection must not reach the client any more.
        r.flags |= fwd.flags & (FLOW_F_CUT | FLOW_F_LOCAL);
    }
    if let Some(st) = stats(id, is_udp(fwd)) {
        st.connections += 1;
    }
    emit(EVENT_CLASSIFIED, 0, fwd_key, fwd, rev.map(|r| &*r));
}

/// Gives the connection of `fwd_key` its host `id` and the `flags` its policy adds;
/// `in_map`: its parse state is in `CLASSIFY` and goes now.
#[inline(always)]
pub fn end_classification(fwd_key: &FlowKey, flags: u32, id: u32, c: Counter, in_map: bool) {
    if in_map {
        let _ = CLASSIFY.remove(fwd_key);
    }
    if let Some(fwd) = lookup(fwd_key) {
        fwd.flags |= flags;
        finish(fwd_key, fwd, id, c);
    }
}

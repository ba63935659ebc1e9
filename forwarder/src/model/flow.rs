//! A connection's two flow entries, and one the flow table no longer holds (why it
//! ended).

use forwarder_common::{FlowKey, FlowValue};

/// Why a connection was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Fin,
    Rst,
    Idle,
}

impl EndReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Idle => "idle",
        }
    }
}

/// A connection the GC decided to remove: its entries as they were seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    /// The client -> backend entry (missing if the LRU evicted it).
    pub fwd: Option<(FlowKey, FlowValue)>,
    /// The backend -> client entry (missing if the LRU evicted it).
    pub rev: Option<(FlowKey, FlowValue)>,
    pub reason: EndReason,
    /// No "ended" event was reported by the kernel: the daemon logs one.
    pub report: bool,
}

/// The reverse (backend -> client) key of a forward entry.
pub fn reverse_key(k: &FlowKey, v: &FlowValue) -> FlowKey {
    FlowKey {
        src: v.nat_addr,
        dst: k.src,
        sport: v.nat_port,
        dport: k.sport,
        proto: k.proto,
        family: k.family,
        _pad: [0; 2],
    }
}

/// The forward (client -> public) key of a reverse entry.
pub fn forward_key(k: &FlowKey, v: &FlowValue) -> FlowKey {
    FlowKey {
        src: k.dst,
        dst: v.nat_addr,
        sport: k.dport,
        dport: v.nat_port,
        proto: k.proto,
        family: k.family,
        _pad: [0; 2],
    }
}

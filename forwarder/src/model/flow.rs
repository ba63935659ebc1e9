//! A connection the flow table no longer holds, and why it ended.

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

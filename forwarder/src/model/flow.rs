//! A connection the flow table no longer holds, and why it ended.

use forwarder_common::{FlowKey, FlowValue};

/// Why a connection was removed; named in snake_case (`fin`) in the connection log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum EndReason {
    Fin,
    Rst,
    Idle,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        self.into()
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

#[cfg(test)]
mod tests {
    use super::EndReason;

    #[test]
    fn end_reasons_keep_their_log_names() {
        let names = [EndReason::Fin, EndReason::Rst, EndReason::Idle].map(EndReason::as_str);
        assert_eq!(names, ["fin", "rst", "idle"]);
    }
}

//! The ring buffers through which the kernel hands connections to the daemon, with the
//! map the daemon answers in.

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
};
use forwarder_common::{
    FlowKey, HANDOFF_MAP, HANDSHAKES_MAP, QUIC_INITIALS_MAP, QUIC_VERDICTS_MAP, QuicVerdict,
    handoff::Handshake,
};
use tracing::warn;

/// What the kernel keeps for the hand-off: its event ring buffer and the handshakes.
pub struct HandoffMaps {
    pub events: RingBuf<MapData>,
    pub handshakes: BpfHashMap<MapData, FlowKey, Handshake>,
}

impl HandoffMaps {
    /// Takes the hand-off maps out of `ebpf`; `None` (with a warning) for an object
    /// without them.
    pub fn take(ebpf: &mut Ebpf) -> Option<Self> {
        match crate::dataplane::maps::take_ring_and_map(ebpf, HANDOFF_MAP, HANDSHAKES_MAP) {
            Some((events, handshakes)) => Some(Self { events, handshakes }),
            None => {
                warn!(
                    "the kernel object has no hand-off maps: host policy \"local\" cuts connections instead"
                );
                None
            }
        }
    }
}

/// The kernel side of the exchange.
pub struct QuicMaps {
    pub initials: RingBuf<MapData>,
    pub verdicts: BpfHashMap<MapData, FlowKey, QuicVerdict>,
}

impl QuicMaps {
    /// Takes the QUIC maps out of `ebpf`; `None` (with a warning) for an object without
    /// them.
    pub fn take(ebpf: &mut Ebpf) -> Option<Self> {
        match crate::dataplane::maps::take_ring_and_map(ebpf, QUIC_INITIALS_MAP, QUIC_VERDICTS_MAP)
        {
            Some((initials, verdicts)) => Some(Self { initials, verdicts }),
            None => {
                warn!(
                    "the kernel object has no QUIC maps: QUIC connections are counted as unknown"
                );
                None
            }
        }
    }
}

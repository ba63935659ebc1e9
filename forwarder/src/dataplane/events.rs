//! The ring buffers through which the kernel hands connections to the daemon, with the
//! maps the daemon answers in.

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, MapError, RingBuf},
};
use forwarder_common::{
    FlowKey, HANDOFF_MAP, HANDSHAKES_MAP, QUIC_INITIALS_MAP, QUIC_VERDICTS_MAP, QuicInitialEvent,
    QuicVerdict,
    handoff::{HandoffEvent, Handshake},
};
use tracing::warn;

use crate::dataplane::ring::Ring;

/// What the kernel keeps for the hand-off: its event ring buffer and the handshakes.
pub struct HandoffMaps {
    pub events: Ring<HandoffEvent>,
    pub handshakes: Handshakes,
}

/// The handshakes the kernel recorded for connections that may be handed off.
pub struct Handshakes(BpfHashMap<MapData, FlowKey, Handshake>);

impl Handshakes {
    /// Takes `key`'s handshake out of the map (it is never needed twice).
    pub fn take(&mut self, key: &FlowKey) -> Option<Handshake> {
        let hs = self.0.get(key, 0).ok();
        let _ = self.0.remove(key);
        hs
    }
}

impl HandoffMaps {
    /// Takes the hand-off maps out of `ebpf`; `None` (with a warning) for an object
    /// without them.
    pub fn take(ebpf: &mut Ebpf) -> Option<Self> {
        match take_ring_and_map(ebpf, HANDOFF_MAP, HANDSHAKES_MAP) {
            Some((events, handshakes)) => Some(Self {
                events: Ring::new(events),
                handshakes: Handshakes(handshakes),
            }),
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
    pub initials: Ring<QuicInitialEvent>,
    pub verdicts: Verdicts,
}

/// The map in which the daemon answers the kernel's QUIC Initials.
pub struct Verdicts(BpfHashMap<MapData, FlowKey, QuicVerdict>);

/// The kernel refused a verdict.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct VerdictError(#[from] MapError);

impl Verdicts {
    /// Hands `key`'s connection its verdict.
    pub fn set(&mut self, key: FlowKey, verdict: QuicVerdict) -> Result<(), VerdictError> {
        Ok(self.0.insert(key, verdict, 0)?)
    }
}

impl QuicMaps {
    /// Takes the QUIC maps out of `ebpf`; `None` (with a warning) for an object without
    /// them.
    pub fn take(ebpf: &mut Ebpf) -> Option<Self> {
        match take_ring_and_map(ebpf, QUIC_INITIALS_MAP, QUIC_VERDICTS_MAP) {
            Some((initials, verdicts)) => Some(Self {
                initials: Ring::new(initials),
                verdicts: Verdicts(verdicts),
            }),
            None => {
                warn!(
                    "the kernel object has no QUIC maps: QUIC connections are counted as unknown"
                );
                None
            }
        }
    }
}

/// A ring buffer and a hash map the daemon serves together (a hand-off from the kernel
/// and the daemon's answers); `None` if the object lacks either.
fn take_ring_and_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    ring: &str,
    map: &str,
) -> Option<(RingBuf<MapData>, BpfHashMap<MapData, K, V>)> {
    let ring = ebpf
        .take_map(ring)
        .and_then(|m| RingBuf::try_from(m).ok())?;
    let map = ebpf
        .take_map(map)
        .and_then(|m| BpfHashMap::try_from(m).ok())?;
    Some((ring, map))
}

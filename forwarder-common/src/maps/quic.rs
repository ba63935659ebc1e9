//! The maps and records of the QUIC Initial hand-off: the kernel copies a new QUIC
//! connection's Initials to the daemon, which answers with the host it read.

use super::flow::FlowKey;

/// Ring buffer of `QuicInitialEvent`s: the Initial datagrams of new QUIC connections, for
/// the daemon to read their SNI from.
pub const QUIC_INITIALS_MAP: &str = "QUIC_INITIALS";
/// LRU hash, forward `FlowKey` -> `QuicVerdict`: what the daemon read from a connection's
/// Initials, taken by the kernel at the connection's next client packet.
pub const QUIC_VERDICTS_MAP: &str = "QUIC_VERDICTS";
/// Per-CPU `admit` state (a `u64`) of the Initial hand-off's rate limit.
pub const QUIC_RATE_MAP: &str = "QUIC_RATE";
/// Size of the Initial ring buffer: a few hundred datagrams.
pub const QUIC_INITIALS_BYTES: u32 = 1024 * 1024;
/// Bytes of a datagram copied: its first Initial is all the daemon reads, and a datagram on
/// a 1500-byte path is smaller.
pub const QUIC_COPY_MAX: usize = 2048;
/// Initial datagrams of one connection handed over at most: a post-quantum ClientHello
/// takes two, and one may be retransmitted.
pub const QUIC_MAX_INITIALS: u32 = 4;
/// How long a QUIC connection waits for the daemon's verdict before it is counted as
/// `unknown` for good.
pub const QUIC_VERDICT_WAIT_NS: u64 = 3_000_000_000;
/// Default `DataplaneConfig::quic_rate` and `quic_burst`.
pub const DEFAULT_QUIC_RATE: u16 = 2000;
pub const DEFAULT_QUIC_BURST: u16 = 200;

/// One Initial datagram of a new QUIC connection, copied by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QuicInitialEvent {
    /// The connection's forward key (client -> public address).
    pub key: FlowKey,
    /// Bytes of `data` in use (the UDP payload, up to `QUIC_COPY_MAX`).
    pub len: u32,
    /// The datagram's UDP payload length, which may exceed `len`.
    pub datagram_len: u32,
    pub data: [u8; QUIC_COPY_MAX],
}
const _: () = assert!(size_of::<QuicInitialEvent>() == 40 + 8 + QUIC_COPY_MAX);

/// The daemon's verdict on a QUIC connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuicVerdict {
    /// `QUIC_V_*`.
    pub code: u32,
    /// The host (`HOST_OTHER` for a name that is not configured) for `QUIC_V_NAME`.
    pub host_id: u32,
}
const _: () = assert!(size_of::<QuicVerdict>() == 8);

/// The ClientHello named a host.
pub const QUIC_V_NAME: u32 = 1;
/// The SNI is not a valid host name: counted under `other`.
pub const QUIC_V_BAD_NAME: u32 = 2;
/// A ClientHello without a server_name.
pub const QUIC_V_NO_SNI: u32 = 3;
/// The Initials could not be decoded.
pub const QUIC_V_UNDECODABLE: u32 = 4;

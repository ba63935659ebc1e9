//! Why a datagram or a connection's Initials gave no name.

/// Why a datagram or a connection's Initials gave no name. Every variant is a defined
/// outcome for the daemon's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialError {
    /// Shorter than its header or its Length field claims.
    Truncated,
    /// A short-header packet, or a long header without the fixed bit.
    NotLongHeader,
    /// Version negotiation (version 0).
    VersionNegotiation,
    /// A version other than 1 and 2.
    UnknownVersion(u32),
    /// A long-header packet of another type (0-RTT, Handshake, Retry).
    NotInitial,
    /// A connection ID longer than 20 bytes.
    BadConnectionId,
    /// The AEAD tag did not verify: not an Initial of this connection, or garbage.
    Decrypt,
    /// A frame an Initial may not carry, or one whose fields run past the packet.
    BadFrame,
    /// CRYPTO data beyond [`MAX_CRYPTO`], too many out-of-order pieces, or data that
    /// contradicts what was received before.
    ///
    /// [`MAX_CRYPTO`]: super::MAX_CRYPTO
    BadCrypto,
    /// The CRYPTO stream does not start with a ClientHello, or its TLS is malformed.
    NotClientHello,
}

impl core::fmt::Display for InitialError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated packet"),
            Self::NotLongHeader => f.write_str("not a long-header packet"),
            Self::VersionNegotiation => f.write_str("version negotiation packet"),
            Self::UnknownVersion(v) => write!(f, "unknown QUIC version {v:#010x}"),
            Self::NotInitial => f.write_str("not an Initial packet"),
            Self::BadConnectionId => f.write_str("connection ID longer than 20 bytes"),
            Self::Decrypt => f.write_str("Initial does not decrypt"),
            Self::BadFrame => f.write_str("malformed or forbidden frame in an Initial"),
            Self::BadCrypto => f.write_str("CRYPTO data out of bounds or inconsistent"),
            Self::NotClientHello => f.write_str("CRYPTO stream is not a ClientHello"),
        }
    }
}

impl core::error::Error for InitialError {}

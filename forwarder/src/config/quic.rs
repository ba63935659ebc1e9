//! The `[quic]` section: how many QUIC Initial datagrams the kernel hands to the daemon.

use serde::Deserialize;

/// The `[quic]` section. The kernel copies the Initial datagrams of each new QUIC
/// connection on a UDP rule to the daemon, which decrypts them (their keys are public) and
/// reads the SNI; this bounds how many it copies.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QuicSettings {
    /// Initial datagrams handed to the daemon per second, on each CPU (default 2000; a
    /// connection takes one or two). 0 turns QUIC classification off: QUIC connections
    /// are still forwarded, and counted under `unknown`.
    pub initials_per_second: Option<u16>,
    /// How many may come at once before the rate applies (default 200).
    pub burst: Option<u16>,
}

/// A `[quic]` section that contradicts itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    #[error("quic.burst = 0: at least 1 (or leave it out: 200)")]
    ZeroBurst,
    #[error("quic.burst with quic.initials_per_second = 0 (classification off): remove one")]
    BurstWhileOff,
}

impl QuicSettings {
    pub fn rate(&self) -> u16 {
        self.initials_per_second
            .unwrap_or(forwarder_common::DEFAULT_QUIC_RATE)
    }

    pub fn burst(&self) -> u16 {
        match self.rate() {
            0 => 0,
            _ => self.burst.unwrap_or(forwarder_common::DEFAULT_QUIC_BURST),
        }
    }

    pub fn validate(&self) -> Result<(), QuicError> {
        if self.burst == Some(0) {
            return Err(QuicError::ZeroBurst);
        }
        if self.burst.is_some() && self.initials_per_second == Some(0) {
            return Err(QuicError::BurstWhileOff);
        }
        Ok(())
    }
}

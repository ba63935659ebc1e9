//! The `[limits]` section: a per-client limit on new connections, and the SYN flood guard.

use serde::Deserialize;

/// Far above the new connections a home server takes per second, far below a flood.
pub const DEFAULT_SYN_FLOOD_THRESHOLD: u32 = 2000;

/// The `[limits]` section: a per-client limit on new connections, enforced in XDP (or tc)
/// before anything reaches the tunnel. Off by default.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// New connections per second one client address may open (0: no limit).
    pub new_connections_per_second: u16,
    /// How many it may open at once before the rate applies (default: the rate).
    pub burst: Option<u16>,
    /// SYNs of new connections per second, on one CPU, above which the data path treats
    /// the traffic as a SYN flood: for the next 10 s, an address that has not completed a
    /// connection before gets through on its second SYN (a real client's retransmission)
    /// instead of its first, so a flood from made-up addresses stays on the VPS. Default
    /// `DEFAULT_SYN_FLOOD_THRESHOLD`; 0 turns the guard off.
    pub syn_flood_threshold: Option<u32>,
}

/// A `[limits]` section that contradicts itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("limits.burst = 0: at least 1 (or leave it out: the rate)")]
    ZeroBurst,
    #[error("limits.burst without limits.new_connections_per_second: set the rate too")]
    BurstWithoutRate,
}

impl Limits {
    /// The SYN flood guard's threshold in force (0: off).
    pub fn syn_flood_threshold(&self) -> u32 {
        self.syn_flood_threshold
            .unwrap_or(DEFAULT_SYN_FLOOD_THRESHOLD)
    }

    /// `(rate, burst)` as the kernel takes them.
    pub fn kernel(&self) -> (u16, u16) {
        let rate = self.new_connections_per_second;
        (rate, self.burst.unwrap_or(rate))
    }

    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.burst == Some(0) {
            return Err(LimitsError::ZeroBurst);
        }
        if self.burst.is_some() && self.new_connections_per_second == 0 {
            return Err(LimitsError::BurstWithoutRate);
        }
        Ok(())
    }
}

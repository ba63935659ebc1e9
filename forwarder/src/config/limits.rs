//! The `[limits]` section: a per-client limit on new connections, and the SYN flood guard.

use serde::Deserialize;

/// Far above the new connections a home server takes per second, far below a flood.
pub const DEFAULT_SYN_FLOOD_THRESHOLD: u32 = 2000;
/// Mid-connection packets per second, on one CPU, that may re-create an evicted flow: a
/// full flow table loses connections at about this rate without sending home a flood of
/// made-up ACKs.
pub const DEFAULT_FLOW_RECREATE_PER_SECOND: u16 = 100;

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
    /// handshake before gets through on its retransmitted SYN (same port and sequence
    /// number, at least half a second later) instead of its first, so a flood from made-up
    /// addresses stays on the VPS. Default
    /// `DEFAULT_SYN_FLOOD_THRESHOLD`; 0 turns the guard off.
    pub syn_flood_threshold: Option<u32>,
    /// IPv6 clients are limited and guarded per prefix of this length (default 64: one
    /// host or home network usually holds a whole /64, so per-address state would give it
    /// 2^64 identities).
    pub ipv6_client_prefix: Option<u8>,
    /// Packets per second, on one CPU, that may re-create the flow of a connection whose
    /// entries are gone (evicted from a full flow table) while no SYN flood is on; any
    /// other TCP packet without a flow that is not a SYN is dropped. Default
    /// `DEFAULT_FLOW_RECREATE_PER_SECOND`; 0: never.
    pub flow_recreate_per_second: Option<u16>,
}

/// A `[limits]` section that contradicts itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("limits.burst = 0: at least 1 (or leave it out: the rate)")]
    ZeroBurst,
    #[error("limits.burst without limits.new_connections_per_second: set the rate too")]
    BurstWithoutRate,
    #[error(
        "limits.ipv6_client_prefix = {0}: between 32 and 128 (or leave it out: 64, one \
         host's or home's network)"
    )]
    Ipv6Prefix(u8),
}

impl Limits {
    /// The SYN flood guard's threshold in force (0: off).
    pub fn syn_flood_threshold(&self) -> u32 {
        self.syn_flood_threshold
            .unwrap_or(DEFAULT_SYN_FLOOD_THRESHOLD)
    }

    /// The prefix IPv6 clients are keyed by.
    pub fn ipv6_client_prefix(&self) -> u8 {
        self.ipv6_client_prefix
            .unwrap_or(forwarder_common::admission::DEFAULT_V6_SOURCE_PREFIX)
    }

    /// The re-creation budget in force (0: none).
    pub fn flow_recreate_per_second(&self) -> u16 {
        self.flow_recreate_per_second
            .unwrap_or(DEFAULT_FLOW_RECREATE_PER_SECOND)
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
        if let Some(p) = self.ipv6_client_prefix
            && !(32..=128).contains(&p)
        {
            return Err(LimitsError::Ipv6Prefix(p));
        }
        Ok(())
    }
}

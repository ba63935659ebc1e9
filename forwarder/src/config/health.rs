//! The `[health]` section: how backends are probed.

use std::time::Duration;

use serde::Deserialize;

/// The `[health]` section.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between two probes of a backend, in milliseconds.
    pub interval_ms: u64,
    /// How long a probe's TCP connect may take, in milliseconds (less than the interval).
    pub timeout_ms: u64,
    /// Consecutive failed probes after which an up backend is down.
    pub down_after: u32,
    /// Consecutive successful probes after which a down backend is up again.
    pub up_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: 2000,
            timeout_ms: 1000,
            down_after: 3,
            up_after: 2,
        }
    }
}

/// A `[health]` setting out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("health.interval_ms = {0}: at least 100 ms")]
    Interval(u64),
    #[error(
        "health.timeout_ms = {timeout_ms}: must be above 0 and below interval_ms ({interval_ms})"
    )]
    Timeout { timeout_ms: u64, interval_ms: u64 },
    #[error("health.down_after and health.up_after must be at least 1")]
    Counts,
}

impl HealthConfig {
    /// The first problem with the section.
    pub fn validate(&self) -> Result<(), HealthError> {
        if self.interval_ms < 100 {
            return Err(HealthError::Interval(self.interval_ms));
        }
        if self.timeout_ms == 0 || self.timeout_ms >= self.interval_ms {
            return Err(HealthError::Timeout {
                timeout_ms: self.timeout_ms,
                interval_ms: self.interval_ms,
            });
        }
        if self.down_after == 0 || self.up_after == 0 {
            return Err(HealthError::Counts);
        }
        Ok(())
    }

    /// Longest time from a backend going away to it being reported down.
    pub fn detection_bound(&self) -> Duration {
        Duration::from_millis(self.interval_ms * u64::from(self.down_after) + self.timeout_ms)
    }
}

//! The `[local]` section: how the daemon relays connections of hosts with policy `local`
//! to the VPS's own server.

use std::time::Duration;

use serde::Deserialize;

/// Most relays at once, whatever the file descriptor limit allows.
pub const DEFAULT_MAX_RELAYS: u32 = 4096;

/// The `[local]` section. Each connection handed to the VPS's server is relayed by the
/// daemon (two sockets); these bound what a visitor can hold.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSettings {
    /// A relay with no byte in either direction for this long is closed, in seconds.
    pub idle_timeout_s: u64,
    /// A relay is closed this long after it started, whatever it carries, in seconds.
    pub max_lifetime_s: u64,
    /// Relays at once; beyond it a hand-off is refused (the connection is reset). The
    /// daemon lowers it to what its file descriptor limit allows (two per relay, a
    /// reserve kept for everything else).
    pub max_connections: u32,
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            idle_timeout_s: 300,
            max_lifetime_s: 3600,
            max_connections: DEFAULT_MAX_RELAYS,
        }
    }
}

/// A `[local]` setting out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    #[error("local.idle_timeout_s = 0: at least 1 (seconds; default 300)")]
    ZeroIdle,
    #[error(
        "local.max_lifetime_s = {lifetime}: at least local.idle_timeout_s ({idle}; default 3600)"
    )]
    Lifetime { lifetime: u64, idle: u64 },
    #[error("local.max_connections = 0: at least 1 (default {DEFAULT_MAX_RELAYS})")]
    ZeroConnections,
}

impl LocalSettings {
    /// The first problem with the section.
    pub fn validate(&self) -> Result<(), LocalError> {
        if self.idle_timeout_s == 0 {
            return Err(LocalError::ZeroIdle);
        }
        if self.max_lifetime_s < self.idle_timeout_s {
            return Err(LocalError::Lifetime {
                lifetime: self.max_lifetime_s,
                idle: self.idle_timeout_s,
            });
        }
        if self.max_connections == 0 {
            return Err(LocalError::ZeroConnections);
        }
        Ok(())
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_what_is_refused() {
        let d = LocalSettings::default();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.idle_timeout(), Duration::from_secs(300));
        let bad = |s: LocalSettings| s.validate().unwrap_err().to_string();
        let e = bad(LocalSettings {
            idle_timeout_s: 0,
            ..d
        });
        assert!(e.contains("idle_timeout_s = 0"), "{e}");
        let e = bad(LocalSettings {
            idle_timeout_s: 60,
            max_lifetime_s: 30,
            ..d
        });
        assert!(
            e.contains("max_lifetime_s = 30") && e.contains("(60"),
            "{e}"
        );
        let e = bad(LocalSettings {
            max_connections: 0,
            ..d
        });
        assert!(e.contains("max_connections = 0"), "{e}");
    }

    #[test]
    fn the_section_parses_and_rejects_unknown_keys() {
        let s: LocalSettings = toml::from_str("idle_timeout_s = 2\nmax_lifetime_s = 10\n").unwrap();
        assert_eq!((s.idle_timeout_s, s.max_lifetime_s), (2, 10));
        assert_eq!(s.max_connections, DEFAULT_MAX_RELAYS);
        assert!(toml::from_str::<LocalSettings>("idle = 2\n").is_err());
    }
}

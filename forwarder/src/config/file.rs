//! The configuration file: its TOML form and how it is read.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::config::{
    health::HealthConfig, hosts::HostConfig, limits::Limits, local::LocalSettings,
    quic::QuicSettings, rule::RuleConfig,
};

/// WireGuard's default MTU, used when the tunnel's MTU cannot be read.
pub const DEFAULT_TUNNEL_MTU: u32 = 1420;

/// The file cannot be read, or is not a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The file format. Every field is optional so that flags can supply the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Interface facing the internet (where clients' packets arrive).
    pub public_iface: Option<String>,
    /// The WireGuard interface toward home.
    pub tunnel_iface: Option<String>,
    /// Overrides the tunnel MTU read from the interface (for MSS clamping).
    pub tunnel_mtu: Option<u32>,
    /// Default backends, one per address family, for rules that name none.
    #[serde(default)]
    pub backends: Vec<IpAddr>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// Names counted separately (per-host statistics, metrics, connection log).
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostConfig>,
    /// Backend health probes.
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Forward HTTP/3 too: the default rules (used while there is no `[[rule]]`) gain
    /// UDP 443.
    #[serde(default)]
    pub http3: bool,
    /// Classifying QUIC (HTTP/3) connections by host.
    #[serde(default)]
    pub quic: QuicSettings,
    /// Relaying connections of hosts with policy `local` to the VPS's own server.
    #[serde(default)]
    pub local: LocalSettings,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// `path` is what messages name.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_file_line_and_problem() {
        let text = "public_iface = \"eth0\"\n[[rule]]\nport = 99999\n";
        let e = FileConfig::parse(Path::new("/etc/f.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/f.toml:3:"), "{e}");
        assert!(e.contains("invalid value") || e.contains("u16"), "{e}");
        let e = FileConfig::parse(Path::new("f.toml"), "publc_iface = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.toml:1:1") && e.contains("unknown field"),
            "{e}"
        );
    }
}

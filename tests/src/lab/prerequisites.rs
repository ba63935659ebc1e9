//! Whether this machine can run the lab at all.

use std::path::Path;

use super::wireguard::{WireguardKind, wireguard_kind};
use crate::support::which;

/// Which checks a machine can run the lab at all; a missing piece is reported, not faked.
pub fn missing_prerequisites() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("the lab needs root (network namespaces, BPF)".into());
    }
    if wireguard_kind() == WireguardKind::Go && which("wireguard-go").is_none() {
        return Some(
            "the kernel has no WireGuard and wireguard-go is not installed (run `cargo xtask setup`)"
                .into(),
        );
    }
    for tool in ["ip", "wg", "nginx", "curl", "openssl", "socat", "ethtool"] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed (run `cargo xtask setup`)"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing (no TUN support)".into());
    }
    None
}

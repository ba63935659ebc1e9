//! Forwarding rules: the `[[rule]]` section as written, and the rule it resolves to.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use serde::Deserialize;

/// Ports forwarded when no rule is configured.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];
/// The UDP port the default rules add with `http3 = true` (QUIC).
pub const HTTP3_PORT: u16 = 443;

/// The rules in force while the configuration has none: TCP 80 and 443, and with `http3`
/// UDP 443.
pub fn default_rules(http3: bool) -> Vec<RuleConfig> {
    let mut rules: Vec<RuleConfig> = DEFAULT_PORTS
        .iter()
        .map(|&p| RuleConfig::port(Proto::Tcp, p))
        .collect();
    if http3 {
        rules.push(RuleConfig::port(Proto::Udp, HTTP3_PORT));
    }
    rules
}

/// How the default rules are named in messages.
pub fn default_rules_text(http3: bool) -> String {
    if http3 {
        "TCP 80 and 443, UDP 443".into()
    } else {
        "TCP 80 and 443".into()
    }
}

/// A rule's transport protocol. Its name is lowercase wherever it is written; any case is
/// read, as on the command line.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(
    serialize_all = "lowercase",
    ascii_case_insensitive,
    parse_err_ty = ProtoError,
    parse_err_fn = ProtoError::new
)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => forwarder_common::PROTO_TCP,
            Proto::Udp => forwarder_common::PROTO_UDP,
        }
    }
}

/// A protocol name that is neither `tcp` nor `udp`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (expected tcp or udp)")]
pub struct ProtoError(pub String);

impl ProtoError {
    fn new(name: &str) -> Self {
        ProtoError(name.to_owned())
    }
}

fn default_proto() -> Proto {
    Proto::Tcp
}

/// A `[[rule]]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default = "default_proto")]
    pub proto: Proto,
    pub port: u16,
    /// Backend address; defaults to the configured backend of the public address's family.
    pub backend: Option<IpAddr>,
    /// Backend port; defaults to `port`.
    pub backend_port: Option<u16>,
    /// Public address; defaults to every address of the public interface of the backend's
    /// family.
    pub public_addr: Option<IpAddr>,
    /// Where new connections go while the backend is down (see `[health]`): `"local"`,
    /// the VPS's own stack, or another backend (`"10.8.0.3"`, `"10.8.0.3:8080"`,
    /// `"[fd00::3]:8080"`). Without it they keep going to the backend.
    pub fallback: Option<String>,
}

impl RuleConfig {
    /// `proto` `port` forwarded with every default: the configured backend, the same port,
    /// every public address, no fallback (what a `[[rule]]` with only `port` says).
    pub fn port(proto: Proto, port: u16) -> Self {
        RuleConfig {
            proto,
            port,
            backend: None,
            backend_port: None,
            public_addr: None,
            fallback: None,
        }
    }
}

/// A rule's fallback, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fallback {
    /// The VPS's own stack (a local web server with a maintenance page, say).
    Local,
    /// Another backend (a second machine at home, another WireGuard peer).
    Backend(SocketAddr),
}

/// A `fallback` that is neither `local` nor an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "fallback {0:?}: expected \"local\" or a backend address (10.8.0.3, 10.8.0.3:8080, [fd00::3]:8080)"
)]
pub struct FallbackError(pub String);

impl Fallback {
    /// `backend_port` is the port of an address given without one.
    pub(super) fn parse(s: &str, backend_port: u16) -> Result<Self, FallbackError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("local") {
            return Ok(Fallback::Local);
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Fallback::Backend(a));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Fallback::Backend(SocketAddr::new(ip, backend_port)));
        }
        Err(FallbackError(s.to_owned()))
    }
}

/// A fully resolved forwarding rule, as written into the kernel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub public_addr: IpAddr,
    pub proto: Proto,
    pub port: u16,
    pub backend: IpAddr,
    pub backend_port: u16,
    pub fallback: Option<Fallback>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.proto,
            SocketAddr::new(self.public_addr, self.port),
            SocketAddr::new(self.backend, self.backend_port)
        )?;
        match self.fallback {
            Some(Fallback::Local) => write!(f, " (local fallback)")?,
            Some(Fallback::Backend(a)) => write!(f, " (fallback {a})")?,
            None => {}
        }
        Ok(())
    }
}

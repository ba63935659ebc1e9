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
    /// What happens to a connection whose host cannot be read (no SNI, not TLS or HTTP/1,
    /// a name the reader gave up on): `"forward"` (the default) sends it to the backend,
    /// `"drop"` cuts it as host policy `drop` would.
    #[serde(default, deserialize_with = "unknown_policy")]
    pub unknown_policy: UnknownPolicy,
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
            unknown_policy: UnknownPolicy::Forward,
        }
    }
}

/// What a rule does with a connection whose host cannot be read (`unknown`).
///
/// `Forward` keeps every client working, also those that send no name (old clients,
/// IP-literal URLs, health checkers hitting the address), but a client that makes its
/// connection unreadable on purpose gets past the hosts' `drop` and `local` policies.
/// `Drop` closes that door and refuses every client that sends no readable name.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    serde::Serialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(
    serialize_all = "lowercase",
    ascii_case_insensitive,
    parse_err_ty = UnknownPolicyError,
    parse_err_fn = UnknownPolicyError::new
)]
pub enum UnknownPolicy {
    #[default]
    Forward,
    Drop,
}

/// An `unknown_policy` that is neither `forward` nor `drop`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown_policy {0:?}: expected \"forward\" (connections without a readable name go to the backend, the default) or \"drop\" (they are cut)"
)]
pub struct UnknownPolicyError(pub String);

impl UnknownPolicyError {
    fn new(name: &str) -> Self {
        UnknownPolicyError(name.to_owned())
    }
}

/// Serde's message for an unknown variant does not say which setting it is about; this
/// one does. Any case is accepted, as on the command line.
fn unknown_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<UnknownPolicy, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
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
    pub unknown_policy: UnknownPolicy,
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
        if self.unknown_policy == UnknownPolicy::Drop {
            write!(f, " (unknown_policy = drop)")?;
        }
        Ok(())
    }
}

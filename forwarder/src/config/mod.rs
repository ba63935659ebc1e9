//! Configuration: a TOML file and/or command-line flags, validated completely before
//! anything touches the kernel.
//!
//! * `file`: the file's TOML form and how it is read ([`FileConfig`], [`ConfigError`]).
//! * `rule`, `hosts`, `limits`, `local`, `quic`, [`health`]: one section each, with its
//!   checks.
//! * `resolve`: the file and the flags against this machine's interfaces ([`Config`]).
//! * [`edit`]: the `rules`/`hosts`/`limits` commands' changes to the file, keeping its
//!   comments and layout.
//! * [`home`]: the home side's recipe (`forwarder home-config`).
//!
//! The sections do not use each other; `file` uses the sections, `resolve` and `edit` use
//! `file`.

pub mod edit;
mod file;
pub mod health;
pub mod home;
mod hosts;
mod limits;
mod local;
mod quic;
mod resolve;
mod rule;

pub use file::{ConfigError, DEFAULT_TUNNEL_MTU, FileConfig};
pub use hosts::{
    HostConfig, HostError, HostPolicy, HostPolicyError, MAX_CONFIGURED_HOSTS, resolve_hosts,
};
pub use limits::{DEFAULT_SYN_FLOOD_THRESHOLD, Limits, LimitsError};
pub use local::{DEFAULT_MAX_RELAYS, LocalError, LocalSettings};
pub use quic::{QuicError, QuicSettings};
pub use resolve::{Config, ResolveError};
pub use rule::{
    DEFAULT_PORTS, Fallback, FallbackError, HTTP3_PORT, Proto, ProtoError, Rule, RuleConfig,
    UnknownPolicy, UnknownPolicyError, default_rules, default_rules_text,
};

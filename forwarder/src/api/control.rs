//! The control protocol: what the CLI may ask the daemon over its Unix socket, and the
//! answer. One JSON request per connection, one JSON answer.
//!
//! Each request is a type of its own, and [`ControlRequest`] names the reply it gets: the
//! daemon's handler and the CLI's client are both written against that pairing, so the
//! compiler keeps the two sides in step.

use std::net::IpAddr;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::api::stats::{BackendSnapshot, LocalStats, TunnelState};

pub const DEFAULT_SOCKET: &str = "/run/forwarder/control.sock";
/// Largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// A request, and the type of the daemon's `result` for it.
pub trait ControlRequest: Into<Request> {
    type Reply: Serialize + DeserializeOwned;
}

/// What a client may ask: `{"cmd": "<name>", <the request's fields>}`.
///
/// The variants' order is the order the "unknown variant" error lists them in.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status(Status),
    Rules(Rules),
    Stop(Stop),
    Hosts(Hosts),
    RuleAdd(RuleAdd),
    RuleRemove(RuleRemove),
    HostAdd(HostAdd),
    HostRemove(HostRemove),
    HostSet(HostSet),
    Limits(Limits),
    Reload(Reload),
}

// The requests without fields are empty braced structs, not unit structs: serde reads an
// internally tagged unit struct only from a map with nothing but the tag, and would name
// an unknown field "invalid type: map" instead of the field. Without
// `deny_unknown_fields` they take anything; [`parse`] then names what is left over.

/// Attach mode, tunnel and backend health, fallback state, version.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Status {}

/// The forwarding rules in force.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Rules {}

/// Exit; with `detach`, also take the data path down.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    pub detach: bool,
}

/// The host table with each host's policy and id.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Hosts {}

/// Add a forwarding rule (as a `[[rule]]` section says it).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleAdd {
    pub rule: RuleSpec,
}

/// Remove the rule forwarding `proto` `port` (of `public_addr`, when the rule names one).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleRemove {
    pub proto: String,
    pub port: u16,
    pub public_addr: Option<IpAddr>,
}

/// Add a host to the host table, with a policy (default `forward`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostAdd {
    pub name: String,
    pub policy: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostRemove {
    pub name: String,
}

/// Change a host's policy (`forward`, `drop`, `local`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostSet {
    pub name: String,
    pub policy: String,
}

/// Set the per-client new-connection limit (0: off).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub new_connections_per_second: u16,
    pub burst: Option<u16>,
}

/// Re-read the config file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Reload {}

/// A rule as the CLI sends it: the fields of a `[[rule]]` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub proto: Option<String>,
    pub port: u16,
    pub backend: Option<IpAddr>,
    pub backend_port: Option<u16>,
    pub public_addr: Option<IpAddr>,
    pub fallback: Option<String>,
    /// `forward` (the default) or `drop`: what happens to connections whose host cannot
    /// be read. Left out when not given, so the request reads as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_policy: Option<String>,
}

macro_rules! requests {
    ($($request:ident => $reply:ty),* $(,)?) => {$(
        impl From<$request> for Request {
            fn from(r: $request) -> Self {
                Request::$request(r)
            }
        }
        impl ControlRequest for $request {
            type Reply = $reply;
        }
    )*};
}

requests! {
    Status => StatusReply,
    Rules => Vec<RuleEntry>,
    Stop => StopReply,
    Hosts => Vec<HostEntry>,
    RuleAdd => Changes,
    RuleRemove => Changes,
    HostAdd => Changes,
    HostRemove => Changes,
    HostSet => Changes,
    Limits => Changes,
    Reload => Changes,
}

/// The answer to [`Status`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct StatusReply {
    pub version: String,
    pub uptime_seconds: u64,
    /// `xdp-driver`, `xdp-generic` or `tc-only`.
    pub attach_mode: String,
    pub tunnel: TunnelState,
    pub backends: Vec<BackendSnapshot>,
    pub local: LocalStats,
    /// The rules whose backend is down, so that new connections go to their fallback.
    pub rules_in_fallback: Vec<String>,
    /// The daemon's config file (none when it runs on flags).
    pub config: Option<String>,
}

/// One rule in force, in the answer to [`Rules`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct RuleEntry {
    /// The rule as `forwarder check` prints it.
    pub rule: String,
    pub public: IpAddr,
    pub proto: String,
    pub port: u16,
    pub backend: IpAddr,
    pub backend_port: u16,
    /// `local`, or the fallback backend's `address:port`.
    pub fallback: Option<String>,
    pub in_fallback: bool,
    /// `drop` when the rule cuts connections whose host cannot be read; left out for the
    /// default, `forward` (the reply then reads as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_policy: Option<String>,
}

/// One host of the host table, in the answer to [`Hosts`].
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct HostEntry {
    pub host: String,
    pub policy: String,
    /// The host's id in the kernel's tables (none if it has none).
    pub id: Option<u32>,
}

/// The answer to [`Stop`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct StopReply {
    pub stopping: bool,
    pub detach: bool,
}

/// What a change did, as the CLI reports it: the answer to every request that changes
/// the configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Changes {
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub hosts_added: Vec<String>,
    pub hosts_removed: Vec<String>,
    pub hosts_changed: Vec<String>,
    pub limits_changed: bool,
    pub health_changed: bool,
    /// The config file the change was written to (none when the daemon runs on flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persisted_to: Option<String>,
}

/// The answer to every request: `result` is the request's reply when `ok`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Response<T = serde_json::Value> {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    // Not `#[serde(default)]`: that would ask `T: Default`; a missing `Option` is `None`
    // anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
}

impl<T> Response<T> {
    pub fn error(e: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(e.into()),
            result: None,
        }
    }
}

/// A reply as the protocol writes it, and as `--json` prints it: every object's keys in
/// alphabetical order (serde_json's maps are sorted), whatever order the types declare
/// their fields in, nested documents included.
pub fn encode(reply: &impl Serialize) -> serde_json::Result<serde_json::Value> {
    serde_json::to_value(reply)
}

/// Why a request was not understood.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("request larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("request is not UTF-8")]
    NotUtf8,
    #[error("empty request (expected e.g. {{\"cmd\":\"status\"}})")]
    Empty,
    #[error("bad request: {0}")]
    Json(#[from] serde_json::Error),
    #[error("bad request: expected a JSON object")]
    NotAnObject,
    #[error("bad request: unknown field `{0}`")]
    UnknownField(String),
}

/// Parses one request; the error says what was wrong with it.
pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
    if bytes.len() > MAX_REQUEST {
        return Err(ParseError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::NotUtf8)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    let v: serde_json::Value = serde_json::from_str(text)?;
    let obj = v.as_object().ok_or(ParseError::NotAnObject)?;
    let req: Request = serde_json::from_value(v.clone())?;
    // serde does not reject unknown fields next to a tag: a field the request does not
    // write back is one it does not know.
    let known = serde_json::to_value(&req)?;
    if let Some(k) = obj.keys().find(|k| known.get(k.as_str()).is_none()) {
        return Err(ParseError::UnknownField(k.clone()));
    }
    Ok(req)
}

#[cfg(test)]
pub(crate) mod tests;

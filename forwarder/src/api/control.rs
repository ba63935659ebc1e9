//! The control protocol: what the CLI may ask the daemon over its Unix socket, and the
//! answer. One JSON request per connection, one JSON answer.

use serde::{Deserialize, Serialize};

pub const DEFAULT_SOCKET: &str = "/run/forwarder/control.sock";
/// Largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What a client may ask.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Attach mode, tunnel and backend health, fallback state, version.
    Status,
    /// The forwarding rules in force.
    Rules,
    /// Exit; with `detach`, also take the data path down.
    Stop {
        detach: bool,
    },
    /// The host table with each host's policy and id.
    Hosts,
    /// Add a forwarding rule (as a `[[rule]]` section says it).
    RuleAdd {
        rule: RuleSpec,
    },
    /// Remove the rule forwarding `proto` `port` (of `public_addr`, when the rule names one).
    RuleRemove {
        proto: String,
        port: u16,
        public_addr: Option<std::net::IpAddr>,
    },
    /// Add a host to the host table, with a policy (default `forward`).
    HostAdd {
        name: String,
        policy: Option<String>,
    },
    HostRemove {
        name: String,
    },
    /// Change a host's policy (`forward`, `drop`, `local`).
    HostSet {
        name: String,
        policy: String,
    },
    /// Set the per-client new-connection limit (0: off).
    Limits {
        new_connections_per_second: u16,
        burst: Option<u16>,
    },
    /// Re-read the config file.
    Reload,
}

/// A rule as the CLI sends it: the fields of a `[[rule]]` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub proto: Option<String>,
    pub port: u16,
    pub backend: Option<std::net::IpAddr>,
    pub backend_port: Option<u16>,
    pub public_addr: Option<std::net::IpAddr>,
    pub fallback: Option<String>,
}

/// The answer to every request.
#[derive(Debug, Deserialize, Serialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Response {
    pub fn error(e: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(e.into()),
            result: None,
        }
    }
}

/// Parses one request; the error says what was wrong with it.
pub fn parse(bytes: &[u8]) -> Result<Request, String> {
    if bytes.len() > MAX_REQUEST {
        return Err(format!("request larger than {MAX_REQUEST} bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "request is not UTF-8".to_owned())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("empty request (expected e.g. {\"cmd\":\"status\"})".to_owned());
    }
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("bad request: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "bad request: expected a JSON object".to_owned())?;
    let req: Request =
        serde_json::from_value(v.clone()).map_err(|e| format!("bad request: {e}"))?;
    // serde does not reject unknown fields next to a tag: a field the request does not
    // write back is one it does not know.
    let known = serde_json::to_value(&req).map_err(|e| format!("bad request: {e}"))?;
    if let Some(k) = obj.keys().find(|k| known.get(k.as_str()).is_none()) {
        return Err(format!("bad request: unknown field `{k}`"));
    }
    Ok(req)
}

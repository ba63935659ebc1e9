//! The `[[host]]` sections: names counted under their own label, and what happens to
//! their connections.

use forwarder_common::{HOST_FIRST_CONFIGURED, MAX_HOSTS, host::HostPattern};
use serde::Deserialize;

/// Most hosts that can be configured (ids 0 and 1 are `unknown` and `other`).
pub const MAX_CONFIGURED_HOSTS: usize = (MAX_HOSTS - HOST_FIRST_CONFIGURED) as usize;

/// A `[[host]]` section: a name (from TLS SNI or the HTTP Host header) whose connections
/// are counted under their own label, and what happens to them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// `app.example.com` (exactly that name) or `*.example.com` (every name below it).
    pub name: String,
    /// What happens to connections naming this host: `"forward"` (the default) sends them
    /// to the rule's backend like any other; `"drop"` cuts them with a TCP RST; `"local"`
    /// hands them to the VPS's own stack.
    #[serde(default, deserialize_with = "host_policy")]
    pub policy: HostPolicy,
}

/// What the dataplane does with a connection once it knows which host it names.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
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
    parse_err_ty = HostPolicyError,
    parse_err_fn = HostPolicyError::new
)]
pub enum HostPolicy {
    #[default]
    Forward,
    Drop,
    Local,
}

impl HostPolicy {
    /// The value the kernel's host table carries.
    pub const fn code(self) -> u8 {
        match self {
            HostPolicy::Forward => 0,
            HostPolicy::Drop => 1,
            HostPolicy::Local => 2,
        }
    }
}

/// A policy name that is not one of the three.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown host policy {0:?} (expected forward, drop or local)")]
pub struct HostPolicyError(pub String);

impl HostPolicyError {
    fn new(name: &str) -> Self {
        HostPolicyError(name.to_owned())
    }
}

/// Serde's message for an unknown variant does not say which setting it is about; this
/// one does. Any case is accepted, as on the command line.
fn host_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HostPolicy, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Why the `[[host]]` sections cannot be used. `n` counts sections from 1, in file order.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{count} [[host]] sections: at most {MAX_CONFIGURED_HOSTS} hosts can be configured")]
    TooMany { count: usize },
    /// `problem` is what the shared crate's parser says about the name.
    #[error("[[host]] {n}: {problem}")]
    Pattern {
        n: usize,
        problem: forwarder_common::host::HostPatternError,
    },
    #[error("[[host]] {n}: host {label:?} is configured twice (also [[host]] {first})")]
    Twice {
        n: usize,
        label: String,
        first: usize,
    },
    #[error("[[host]] {n}: host {label:?} has the same hash as {other:?}; rename one of them")]
    SameHash {
        n: usize,
        label: String,
        other: String,
    },
}

/// Validates and normalises the `[[host]]` sections, keeping their order.
pub fn resolve_hosts(cfgs: &[HostConfig]) -> Result<Vec<HostPattern>, HostError> {
    if cfgs.len() > MAX_CONFIGURED_HOSTS {
        return Err(HostError::TooMany { count: cfgs.len() });
    }
    let mut hosts: Vec<HostPattern> = Vec::with_capacity(cfgs.len());
    for (i, hc) in cfgs.iter().enumerate() {
        let n = i + 1;
        let p =
            HostPattern::parse(&hc.name).map_err(|problem| HostError::Pattern { n, problem })?;
        if let Some(j) = hosts.iter().position(|h| h.label == p.label) {
            return Err(HostError::Twice {
                n,
                label: p.label,
                first: j + 1,
            });
        }
        if let Some(prev) = hosts.iter().find(|h| h.key() == p.key()) {
            return Err(HostError::SameHash {
                n,
                label: p.label,
                other: prev.label.clone(),
            });
        }
        hosts.push(p);
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_policy_text_and_codes() {
        for (p, code) in [
            (HostPolicy::Forward, 0),
            (HostPolicy::Drop, 1),
            (HostPolicy::Local, 2),
        ] {
            assert_eq!(p.code(), code);
            assert_eq!(p.to_string().parse::<HostPolicy>(), Ok(p));
            assert_eq!(p.to_string().to_uppercase().parse::<HostPolicy>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<HostPolicy>(&json).unwrap(), p);
        }
        assert_eq!(HostPolicy::default(), HostPolicy::Forward);
        let e = "reject".parse::<HostPolicy>().unwrap_err().to_string();
        assert!(
            e.contains("\"reject\"") && e.contains("forward, drop or local"),
            "{e}"
        );
    }

    #[test]
    fn too_many_hosts_are_rejected() {
        let hosts: Vec<HostConfig> = (0..=MAX_CONFIGURED_HOSTS)
            .map(|i| HostConfig {
                name: format!("h{i}.example.com"),
                policy: HostPolicy::default(),
            })
            .collect();
        let e = resolve_hosts(&hosts).unwrap_err().to_string();
        assert!(e.contains("at most 1022"), "{e}");
        assert_eq!(
            resolve_hosts(&hosts[..MAX_CONFIGURED_HOSTS]).unwrap().len(),
            MAX_CONFIGURED_HOSTS
        );
    }
}

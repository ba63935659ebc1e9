//! Resolving the file and the flags against this machine: the [`Config`] the daemon runs
//! with, every rule spelled out per public address.

use std::{
    collections::BTreeSet,
    error::Error,
    net::{IpAddr, SocketAddr},
};

use forwarder_common::host::HostPattern;

use crate::config::{
    file::FileConfig,
    health::{HealthConfig, HealthError},
    hosts::{HostError, HostPolicy, resolve_hosts},
    limits::{Limits, LimitsError},
    local::{LocalError, LocalSettings},
    quic::{QuicError, QuicSettings},
    rule::{Fallback, FallbackError, Proto, Rule, UnknownPolicy, default_rules},
};

/// Why the file and flags do not make a configuration. `n` counts `[[rule]]` sections
/// from 1, in file order.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no public interface: pass --public-iface or set public_iface")]
    NoPublicIface,
    #[error("no tunnel interface: pass --tunnel or set tunnel_iface")]
    NoTunnelIface,
    #[error(transparent)]
    Hosts(#[from] HostError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error(transparent)]
    Quic(#[from] QuicError),
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error("tunnel_mtu = {0} is out of range (1280..=9000)")]
    TunnelMtu(u32),
    #[error(
        "two backends of the same address family ({first} and {second}): give at most one IPv4 and one IPv6 backend"
    )]
    SameFamilyBackends { first: IpAddr, second: IpAddr },
    #[error("nothing to forward: pass --backend ADDR (e.g. 10.8.0.2) or add [[rule]] sections")]
    NothingToForward,
    /// The public interface's addresses cannot be read.
    #[error("{0}")]
    Addresses(Box<dyn Error + Send + Sync>),
    #[error("{what} {addr} is not a unicast address that can be forwarded to")]
    NotUnicast { what: &'static str, addr: IpAddr },
    #[error("{what} {addr} is a broadcast address")]
    Broadcast { what: &'static str, addr: IpAddr },
    #[error("rule {n}: a fallback needs a TCP rule (backends are health-checked over TCP)")]
    FallbackNeedsTcp { n: usize },
    #[error("rule {n}: port 0 is not a valid port")]
    PortZero { n: usize },
    #[error("rule {n} ({proto} {port}): {iface} has no address of the backend's family to forward")]
    NoPublicAddress {
        n: usize,
        proto: Proto,
        port: u16,
        iface: String,
    },
    #[error("rule {n} ({proto} {public} port {port}): no backend of that address family")]
    NoBackend {
        n: usize,
        proto: Proto,
        public: IpAddr,
        port: u16,
    },
    #[error(
        "rule {n}: public address {public} and backend {backend} are of different address families"
    )]
    MixedFamilies {
        n: usize,
        public: IpAddr,
        backend: IpAddr,
    },
    #[error("rule {n}: {proto} {public} port {port} is forwarded twice")]
    Twice {
        n: usize,
        proto: Proto,
        public: IpAddr,
        port: u16,
    },
    #[error("rule {n}: {problem}")]
    Fallback { n: usize, problem: FallbackError },
    #[error("rule {n}: the fallback {fallback} is the backend itself")]
    FallbackIsBackend { n: usize, fallback: SocketAddr },
}

/// The validated configuration the daemon runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub public_iface: String,
    pub tunnel_iface: String,
    pub tunnel_mtu: Option<u32>,
    pub rules: Vec<Rule>,
    /// Configured hosts in configuration order; the one at index `i` has host id
    /// `HOST_FIRST_CONFIGURED + i`.
    pub hosts: Vec<HostPattern>,
    /// Each host's policy, index-aligned with `hosts`.
    pub host_policies: Vec<HostPolicy>,
    pub health: HealthConfig,
    pub limits: Limits,
    pub http3: bool,
    pub quic: QuicSettings,
    pub local: LocalSettings,
}

impl Config {
    /// The `CFG_F_*` bits this configuration asks of the kernel programs.
    pub fn kernel_flags(&self) -> u32 {
        if self.host_policies.contains(&HostPolicy::Local) {
            forwarder_common::CFG_F_LOCAL_POLICY
        } else {
            0
        }
    }

    /// Combines file and flags (flags win) and resolves every rule against the public
    /// interface's addresses. Nothing is applied unless all of it is valid.
    pub fn resolve<E>(
        file: FileConfig,
        public_iface: Option<String>,
        tunnel_iface: Option<String>,
        backends: Vec<IpAddr>,
        public_addrs: impl Fn(&str) -> Result<Vec<IpAddr>, E>,
    ) -> Result<Self, ResolveError>
    where
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let public_iface = public_iface
            .or(file.public_iface)
            .ok_or(ResolveError::NoPublicIface)?;
        let tunnel_iface = tunnel_iface
            .or(file.tunnel_iface)
            .ok_or(ResolveError::NoTunnelIface)?;
        let hosts = resolve_hosts(&file.hosts)?;
        let host_policies: Vec<HostPolicy> = file.hosts.iter().map(|h| h.policy).collect();
        file.health.validate()?;
        file.limits.validate()?;
        file.quic.validate()?;
        file.local.validate()?;
        if let Some(mtu) = file.tunnel_mtu
            && !(1280..=9000).contains(&mtu)
        {
            return Err(ResolveError::TunnelMtu(mtu));
        }
        let backends = if backends.is_empty() {
            file.backends
        } else {
            backends
        };
        let mut v4 = None;
        let mut v6 = None;
        for b in &backends {
            check_unicast(*b, "backend")?;
            let slot = if b.is_ipv4() { &mut v4 } else { &mut v6 };
            if let Some(prev) = slot.replace(*b) {
                return Err(ResolveError::SameFamilyBackends {
                    first: prev,
                    second: *b,
                });
            }
        }
        let mut rule_cfgs = file.rules;
        if rule_cfgs.is_empty() {
            if backends.is_empty() {
                return Err(ResolveError::NothingToForward);
            }
            rule_cfgs = default_rules(file.http3);
        }
        let addrs = public_addrs(&public_iface).map_err(|e| ResolveError::Addresses(e.into()))?;
        let mut rules = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, rc) in rule_cfgs.iter().enumerate() {
            let n = i + 1;
            if rc.fallback.is_some() && rc.proto != Proto::Tcp {
                return Err(ResolveError::FallbackNeedsTcp { n });
            }
            if rc.port == 0 || rc.backend_port == Some(0) {
                return Err(ResolveError::PortZero { n });
            }
            let publics: Vec<IpAddr> = match (rc.public_addr, rc.backend) {
                (Some(p), _) => vec![p],
                (None, Some(b)) => addrs
                    .iter()
                    .copied()
                    .filter(|a| a.is_ipv4() == b.is_ipv4())
                    .collect(),
                (None, None) => addrs
                    .iter()
                    .copied()
                    .filter(|a| {
                        if a.is_ipv4() {
                            v4.is_some()
                        } else {
                            v6.is_some()
                        }
                    })
                    .collect(),
            };
            if publics.is_empty() {
                return Err(ResolveError::NoPublicAddress {
                    n,
                    proto: rc.proto,
                    port: rc.port,
                    iface: public_iface,
                });
            }
            for public in publics {
                check_unicast(public, "public address")?;
                let backend = rc
                    .backend
                    .or(if public.is_ipv4() { v4 } else { v6 })
                    .ok_or(ResolveError::NoBackend {
                        n,
                        proto: rc.proto,
                        public,
                        port: rc.port,
                    })?;
                check_unicast(backend, "backend")?;
                if backend.is_ipv4() != public.is_ipv4() {
                    return Err(ResolveError::MixedFamilies { n, public, backend });
                }
                if !seen.insert((public, rc.proto, rc.port)) {
                    return Err(ResolveError::Twice {
                        n,
                        proto: rc.proto,
                        public,
                        port: rc.port,
                    });
                }
                let backend_port = rc.backend_port.unwrap_or(rc.port);
                let fallback = match &rc.fallback {
                    None => None,
                    Some(s) => {
                        let f = Fallback::parse(s, backend_port)
                            .map_err(|problem| ResolveError::Fallback { n, problem })?;
                        match f {
                            Fallback::Backend(a) => {
                                check_unicast(a.ip(), "fallback backend")?;
                                if a.ip() == backend && a.port() == backend_port {
                                    return Err(ResolveError::FallbackIsBackend { n, fallback: a });
                                }
                                // A rule expands per public address; only those of the
                                // fallback's family can use it.
                                (a.is_ipv4() == public.is_ipv4()).then_some(f)
                            }
                            Fallback::Local => Some(f),
                        }
                    }
                };
                rules.push(Rule {
                    public_addr: public,
                    proto: rc.proto,
                    port: rc.port,
                    backend,
                    backend_port,
                    fallback,
                    unknown_policy: rc.unknown_policy,
                });
            }
        }
        rules.sort();
        Ok(Config {
            public_iface,
            tunnel_iface,
            tunnel_mtu: file.tunnel_mtu,
            rules,
            hosts,
            host_policies,
            health: file.health,
            limits: file.limits,
            http3: file.http3,
            quic: file.quic,
            local: file.local,
        })
    }

    /// What `forwarder check` points out about the rules' `unknown_policy = "drop"`: valid,
    /// but maybe not what was meant. One line per protocol and port.
    pub fn unknown_policy_warnings(&self) -> Vec<String> {
        let ports: BTreeSet<(Proto, u16)> = self
            .rules
            .iter()
            .filter(|r| r.unknown_policy == UnknownPolicy::Drop)
            .map(|r| (r.proto, r.port))
            .collect();
        let guarded = self
            .host_policies
            .iter()
            .any(|p| matches!(p, HostPolicy::Drop | HostPolicy::Local));
        let mut out = Vec::new();
        for (proto, port) in ports {
            if proto == Proto::Udp && self.quic.rate() == 0 {
                out.push(format!(
                    "{proto} port {port}: unknown_policy = \"drop\" cuts every connection while QUIC classification is off ([quic] initials_per_second = 0): turn it on or use \"forward\""
                ));
            } else if !guarded {
                out.push(format!(
                    "{proto} port {port}: unknown_policy = \"drop\" refuses clients that send no readable name (no SNI, an IP-literal URL) although no [[host]] has policy drop or local to protect: \"forward\" serves them"
                ));
            }
        }
        out
    }

    pub fn backends(&self) -> BTreeSet<IpAddr> {
        self.rules.iter().map(|r| r.backend).collect()
    }

    /// What the health checks probe: each TCP backend address and port.
    pub fn tcp_backends(&self) -> Vec<SocketAddr> {
        let set: BTreeSet<SocketAddr> = self
            .rules
            .iter()
            .filter(|r| r.proto == Proto::Tcp)
            .flat_map(|r| {
                let alt = match r.fallback {
                    Some(Fallback::Backend(a)) => Some(a),
                    _ => None,
                };
                std::iter::once(SocketAddr::new(r.backend, r.backend_port)).chain(alt)
            })
            .collect();
        set.into_iter().collect()
    }
}

fn check_unicast(addr: IpAddr, what: &'static str) -> Result<(), ResolveError> {
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err(ResolveError::NotUnicast { what, addr });
    }
    if let IpAddr::V4(v4) = addr
        && v4.is_broadcast()
    {
        return Err(ResolveError::Broadcast { what, addr });
    }
    Ok(())
}

#[cfg(test)]
mod tests;

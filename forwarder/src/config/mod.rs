//! Configuration: a TOML file and/or command-line flags, validated completely before
//! anything touches the kernel.

pub mod edit;
pub mod health;
pub mod home;

use std::{
    collections::BTreeSet,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use forwarder_common::{HOST_FIRST_CONFIGURED, MAX_HOSTS, host::HostPattern};
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
/// WireGuard's default MTU, used when the tunnel's MTU cannot be read.
pub const DEFAULT_TUNNEL_MTU: u32 = 1420;

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
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("unknown protocol {s:?} (expected tcp or udp)")),
        }
    }
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
    pub health: health::HealthConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Forward HTTP/3 too: the default rules (used while there is no `[[rule]]`) gain
    /// UDP 443.
    #[serde(default)]
    pub http3: bool,
    /// Classifying QUIC (HTTP/3) connections by host.
    #[serde(default)]
    pub quic: QuicSettings,
}

/// The `[quic]` section. The kernel copies the Initial datagrams of each new QUIC
/// connection on a UDP rule to the daemon, which decrypts them (their keys are public) and
/// reads the SNI; this bounds how many it copies.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QuicSettings {
    /// Initial datagrams handed to the daemon per second, on each CPU (default 2000; a
    /// connection takes one or two). 0 turns QUIC classification off: QUIC connections
    /// are still forwarded, and counted under `unknown`.
    pub initials_per_second: Option<u16>,
    /// How many may come at once before the rate applies (default 200).
    pub burst: Option<u16>,
}

impl QuicSettings {
    pub fn rate(&self) -> u16 {
        self.initials_per_second
            .unwrap_or(forwarder_common::DEFAULT_QUIC_RATE)
    }

    pub fn burst(&self) -> u16 {
        match self.rate() {
            0 => 0,
            _ => self.burst.unwrap_or(forwarder_common::DEFAULT_QUIC_BURST),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.burst == Some(0) {
            return Err("quic.burst = 0: at least 1 (or leave it out: 200)".into());
        }
        if self.burst.is_some() && self.initials_per_second == Some(0) {
            return Err(
                "quic.burst with quic.initials_per_second = 0 (classification off): remove one"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The `[limits]` section: a per-client limit on new connections, enforced in XDP (or tc)
/// before anything reaches the tunnel. Off by default.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// New connections per second one client address may open (0: no limit).
    pub new_connections_per_second: u16,
    /// How many it may open at once before the rate applies (default: the rate).
    pub burst: Option<u16>,
    /// SYNs of new connections per second, on one CPU, above which the data path treats
    /// the traffic as a SYN flood: for the next 10 s, an address that has not completed a
    /// connection before gets through on its second SYN (a real client's retransmission)
    /// instead of its first, so a flood from made-up addresses stays on the VPS. Default
    /// `DEFAULT_SYN_FLOOD_THRESHOLD`; 0 turns the guard off.
    pub syn_flood_threshold: Option<u32>,
}

/// Far above the new connections a home server takes per second, far below a flood.
pub const DEFAULT_SYN_FLOOD_THRESHOLD: u32 = 2000;

impl Limits {
    /// The SYN flood guard's threshold in force (0: off).
    pub fn syn_flood_threshold(&self) -> u32 {
        self.syn_flood_threshold
            .unwrap_or(DEFAULT_SYN_FLOOD_THRESHOLD)
    }

    /// `(rate, burst)` as the kernel takes them.
    pub fn kernel(&self) -> (u16, u16) {
        let rate = self.new_connections_per_second;
        (rate, self.burst.unwrap_or(rate))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.burst == Some(0) {
            return Err("limits.burst = 0: at least 1 (or leave it out: the rate)".into());
        }
        if self.burst.is_some() && self.new_connections_per_second == 0 {
            return Err(
                "limits.burst without limits.new_connections_per_second: set the rate too".into(),
            );
        }
        Ok(())
    }
}

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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

impl fmt::Display for HostPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostPolicy::Forward => "forward",
            HostPolicy::Drop => "drop",
            HostPolicy::Local => "local",
        })
    }
}

impl FromStr for HostPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "forward" => Ok(HostPolicy::Forward),
            "drop" => Ok(HostPolicy::Drop),
            "local" => Ok(HostPolicy::Local),
            _ => Err(format!(
                "unknown host policy {s:?} (expected forward, drop or local)"
            )),
        }
    }
}

/// Serde's message for an unknown variant does not say which setting it is about; this
/// one does. Any case is accepted, as on the command line.
fn host_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HostPolicy, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Most hosts that can be configured (ids 0 and 1 are `unknown` and `other`).
pub const MAX_CONFIGURED_HOSTS: usize = (MAX_HOSTS - HOST_FIRST_CONFIGURED) as usize;

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
    Backend(std::net::SocketAddr),
}

impl Fallback {
    fn parse(s: &str, backend_port: u16) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("local") {
            return Ok(Fallback::Local);
        }
        if let Ok(a) = s.parse::<std::net::SocketAddr>() {
            return Ok(Fallback::Backend(a));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Fallback::Backend(std::net::SocketAddr::new(
                ip,
                backend_port,
            )));
        }
        Err(format!(
            "fallback {s:?}: expected \"local\" or a backend address (10.8.0.3, 10.8.0.3:8080, [fd00::3]:8080)"
        ))
    }
}

fn default_proto() -> Proto {
    Proto::Tcp
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

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

pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
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
            sock(self.public_addr, self.port),
            sock(self.backend, self.backend_port)
        )?;
        match self.fallback {
            Some(Fallback::Local) => write!(f, " (local fallback)")?,
            Some(Fallback::Backend(a)) => write!(f, " (fallback {a})")?,
            None => {}
        }
        Ok(())
    }
}

fn sock(a: IpAddr, p: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    }
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
    pub health: health::HealthConfig,
    pub limits: Limits,
    pub http3: bool,
    pub quic: QuicSettings,
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
    pub fn resolve(
        file: FileConfig,
        public_iface: Option<String>,
        tunnel_iface: Option<String>,
        backends: Vec<IpAddr>,
        public_addrs: impl Fn(&str) -> Result<Vec<IpAddr>, String>,
    ) -> Result<Self, ConfigError> {
        let public_iface = public_iface.or(file.public_iface).ok_or_else(|| {
            ConfigError::Invalid(
                "no public interface: pass --public-iface or set public_iface".into(),
            )
        })?;
        let tunnel_iface = tunnel_iface.or(file.tunnel_iface).ok_or_else(|| {
            ConfigError::Invalid("no tunnel interface: pass --tunnel or set tunnel_iface".into())
        })?;
        let hosts = resolve_hosts(&file.hosts)?;
        let host_policies: Vec<HostPolicy> = file.hosts.iter().map(|h| h.policy).collect();
        file.health.validate().map_err(ConfigError::Invalid)?;
        file.limits.validate().map_err(ConfigError::Invalid)?;
        file.quic.validate().map_err(ConfigError::Invalid)?;
        if let Some(mtu) = file.tunnel_mtu
            && !(1280..=9000).contains(&mtu)
        {
            return Err(ConfigError::Invalid(format!(
                "tunnel_mtu = {mtu} is out of range (1280..=9000)"
            )));
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
                return Err(ConfigError::Invalid(format!(
                    "two backends of the same address family ({prev} and {b}): give at most one IPv4 and one IPv6 backend"
                )));
            }
        }
        let mut rule_cfgs = file.rules;
        if rule_cfgs.is_empty() {
            if backends.is_empty() {
                return Err(ConfigError::Invalid(
                    "nothing to forward: pass --backend ADDR (e.g. 10.8.0.2) or add [[rule]] sections".into(),
                ));
            }
            rule_cfgs = default_rules(file.http3);
        }
        let addrs = public_addrs(&public_iface).map_err(ConfigError::Invalid)?;
        let mut rules = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, rc) in rule_cfgs.iter().enumerate() {
            let n = i + 1;
            if rc.fallback.is_some() && rc.proto != Proto::Tcp {
                return Err(ConfigError::Invalid(format!(
                    "rule {n}: a fallback needs a TCP rule (backends are health-checked over TCP)"
                )));
            }
            if rc.port == 0 || rc.backend_port == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "rule {n}: port 0 is not a valid port"
                )));
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
                return Err(ConfigError::Invalid(format!(
                    "rule {n} ({} {}): {public_iface} has no address of the backend's family to forward",
                    rc.proto, rc.port
                )));
            }
            for public in publics {
                check_unicast(public, "public address")?;
                let backend = match rc.backend.or(if public.is_ipv4() { v4 } else { v6 }) {
                    Some(b) => b,
                    None => {
                        return Err(ConfigError::Invalid(format!(
                            "rule {n} ({} {public} port {}): no backend of that address family",
                            rc.proto, rc.port
                        )));
                    }
                };
                check_unicast(backend, "backend")?;
                if backend.is_ipv4() != public.is_ipv4() {
                    return Err(ConfigError::Invalid(format!(
                        "rule {n}: public address {public} and backend {backend} are of different address families"
                    )));
                }
                if !seen.insert((public, rc.proto, rc.port)) {
                    return Err(ConfigError::Invalid(format!(
                        "rule {n}: {} {public} port {} is forwarded twice",
                        rc.proto, rc.port
                    )));
                }
                let backend_port = rc.backend_port.unwrap_or(rc.port);
                let fallback = match &rc.fallback {
                    None => None,
                    Some(s) => {
                        let f = Fallback::parse(s, backend_port)
                            .map_err(|e| ConfigError::Invalid(format!("rule {n}: {e}")))?;
                        match f {
                            Fallback::Backend(a) => {
                                check_unicast(a.ip(), "fallback backend")?;
                                if a.ip() == backend && a.port() == backend_port {
                                    return Err(ConfigError::Invalid(format!(
                                        "rule {n}: the fallback {a} is the backend itself"
                                    )));
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
        })
    }

    pub fn backends(&self) -> BTreeSet<IpAddr> {
        self.rules.iter().map(|r| r.backend).collect()
    }

    /// What the health checks probe: each TCP backend address and port.
    pub fn tcp_backends(&self) -> Vec<std::net::SocketAddr> {
        let set: BTreeSet<std::net::SocketAddr> = self
            .rules
            .iter()
            .filter(|r| r.proto == Proto::Tcp)
            .flat_map(|r| {
                let alt = match r.fallback {
                    Some(Fallback::Backend(a)) => Some(a),
                    _ => None,
                };
                std::iter::once(std::net::SocketAddr::new(r.backend, r.backend_port)).chain(alt)
            })
            .collect();
        set.into_iter().collect()
    }
}

/// Validates and normalises the `[[host]]` sections, keeping their order.
pub fn resolve_hosts(cfgs: &[HostConfig]) -> Result<Vec<HostPattern>, ConfigError> {
    if cfgs.len() > MAX_CONFIGURED_HOSTS {
        return Err(ConfigError::Invalid(format!(
            "{} [[host]] sections: at most {MAX_CONFIGURED_HOSTS} hosts can be configured",
            cfgs.len()
        )));
    }
    let mut hosts: Vec<HostPattern> = Vec::with_capacity(cfgs.len());
    for (i, hc) in cfgs.iter().enumerate() {
        let n = i + 1;
        let p = HostPattern::parse(&hc.name)
            .map_err(|e| ConfigError::Invalid(format!("[[host]] {n}: {e}")))?;
        if let Some(j) = hosts.iter().position(|h| h.label == p.label) {
            return Err(ConfigError::Invalid(format!(
                "[[host]] {n}: host {:?} is configured twice (also [[host]] {})",
                p.label,
                j + 1
            )));
        }
        if let Some(prev) = hosts.iter().find(|h| h.key() == p.key()) {
            return Err(ConfigError::Invalid(format!(
                "[[host]] {n}: host {:?} has the same hash as {:?}; rename one of them",
                p.label, prev.label
            )));
        }
        hosts.push(p);
    }
    Ok(hosts)
}

fn check_unicast(a: IpAddr, what: &str) -> Result<(), ConfigError> {
    if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
        return Err(ConfigError::Invalid(format!(
            "{what} {a} is not a unicast address that can be forwarded to"
        )));
    }
    if let IpAddr::V4(v4) = a
        && v4.is_broadcast()
    {
        return Err(ConfigError::Invalid(format!(
            "{what} {a} is a broadcast address"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(_: &str) -> Result<Vec<IpAddr>, String> {
        Ok(vec![
            "203.0.113.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ])
    }

    #[test]
    fn simple_case_forwards_80_and_443_per_family() {
        let c = Config::resolve(
            FileConfig::default(),
            Some("eth0".into()),
            Some("wg0".into()),
            vec!["10.8.0.2".parse().unwrap()],
            addrs,
        )
        .unwrap();
        let shown: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "tcp 203.0.113.1:80 -> 10.8.0.2:80",
                "tcp 203.0.113.1:443 -> 10.8.0.2:443"
            ]
        );
    }

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

    #[test]
    fn file_rules_with_udp_and_backend_port() {
        let text = r#"
public_iface = "eth0"
tunnel_iface = "wg0"
backends = ["10.8.0.2", "fd00::2"]
[[rule]]
proto = "udp"
port = 5353
backend_port = 53
[[rule]]
port = 443
"#;
        let f = FileConfig::parse(Path::new("f"), text).unwrap();
        let c = Config::resolve(f, None, None, vec![], addrs).unwrap();
        let shown: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "tcp 203.0.113.1:443 -> 10.8.0.2:443",
                "udp 203.0.113.1:5353 -> 10.8.0.2:53",
                "tcp [2001:db8::1]:443 -> [fd00::2]:443",
                "udp [2001:db8::1]:5353 -> [fd00::2]:53",
            ]
        );
    }

    #[test]
    fn http3_adds_udp_443_to_the_default_rules_and_quic_settings_are_checked() {
        let c = resolve_text("backends = [\"10.8.0.2\"]\nhttp3 = true\n").unwrap();
        let shown: Vec<String> = c.rules.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "tcp 203.0.113.1:80 -> 10.8.0.2:80",
                "tcp 203.0.113.1:443 -> 10.8.0.2:443",
                "udp 203.0.113.1:443 -> 10.8.0.2:443",
            ]
        );
        assert_eq!((c.quic.rate(), c.quic.burst()), (2000, 200));
        let c =
            resolve_text("backends = [\"10.8.0.2\"]\n[quic]\ninitials_per_second = 0\n").unwrap();
        assert_eq!((c.quic.rate(), c.quic.burst()), (0, 0));
        for (text, want) in [
            ("[quic]\nburst = 0\n", "quic.burst = 0"),
            (
                "[quic]\ninitials_per_second = 0\nburst = 5\n",
                "classification off",
            ),
            ("[quic]\nrate = 5\n", "unknown field"),
        ] {
            let e = resolve_text(&format!("backends = [\"10.8.0.2\"]\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    fn resolve_text(text: &str) -> Result<Config, ConfigError> {
        let f = FileConfig::parse(Path::new("f.toml"), text)?;
        Config::resolve(
            f,
            Some("eth0".into()),
            Some("wg0".into()),
            vec!["10.8.0.2".parse().unwrap()],
            addrs,
        )
    }

    #[test]
    fn fallbacks_and_health_settings_are_checked() {
        let c = resolve_text(
            "[[rule]]\nport = 80\nfallback = \"local\"\n[[rule]]\nport = 443\n\
             [health]\ninterval_ms = 500\ntimeout_ms = 300\n",
        )
        .unwrap();
        let f: Vec<_> = c.rules.iter().map(|r| (r.port, r.fallback)).collect();
        assert!(f.contains(&(80, Some(Fallback::Local))), "{f:?}");
        assert!(f.contains(&(443, None)), "{f:?}");
        assert_eq!(c.health.interval_ms, 500);
        assert_eq!(c.health.down_after, 3, "unset fields keep their defaults");
        let e = resolve_text("[[rule]]\nproto = \"udp\"\nport = 53\nfallback = \"local\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fallback needs a TCP rule"), "{e}");
        let c = resolve_text("[[rule]]\nport = 80\nfallback = \"10.8.0.3\"\n").unwrap();
        assert_eq!(
            c.rules[0].fallback,
            Some(Fallback::Backend("10.8.0.3:80".parse().unwrap())),
            "the port defaults to the backend port"
        );
        let e = resolve_text("[[rule]]\nport = 80\nfallback = \"10.8.0.2:80\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the backend itself"), "{e}");
        let e = resolve_text("[[rule]]\nport = 80\nfallback = \"elsewhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("elsewhere") || e.contains("unknown variant"),
            "{e}"
        );
        let e = resolve_text("[health]\ninterval_ms = 1000\ntimeout_ms = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeout_ms"), "{e}");
        let c = resolve_text("[limits]\nnew_connections_per_second = 20\n").unwrap();
        assert_eq!(c.limits.kernel(), (20, 20), "burst defaults to the rate");
        let c = resolve_text("[limits]\nnew_connections_per_second = 20\nburst = 50\n").unwrap();
        assert_eq!(c.limits.kernel(), (20, 50));
        assert_eq!(
            resolve_text("").unwrap().limits.kernel(),
            (0, 0),
            "off by default"
        );
        let e = resolve_text("[limits]\nburst = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("new_connections_per_second"), "{e}");
        let e = resolve_text("[limits]\nnew_connections_per_second = 70000\n")
            .unwrap_err()
            .to_string();
        // Named by position: line 2, where the value is.
        assert!(e.contains("f.toml:2:") && e.contains("70000"), "{e}");
        let e = resolve_text("[health]\nintervall_ms = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("intervall_ms"), "{e}");
    }

    #[test]
    fn hosts_keep_config_order_and_are_normalised() {
        let c = resolve_text(
            "[[host]]\nname = \"App.Example.com.\"\n[[host]]\nname = \"*.example.com\"\n[[host]]\nname = \"example.com\"\n",
        )
        .unwrap();
        let labels: Vec<&str> = c.hosts.iter().map(|h| h.label.as_str()).collect();
        assert_eq!(labels, ["app.example.com", "*.example.com", "example.com"]);
        assert!(c.hosts[1].wildcard);
        assert_eq!(c.hosts[1].name, "example.com");
        assert_eq!(
            c.hosts[1].key().hash,
            forwarder_common::host::name_hash(b"example.com")
        );
        assert_ne!(c.hosts[1].key(), c.hosts[2].key());
        assert!(resolve_text("").unwrap().hosts.is_empty());
    }

    #[test]
    fn duplicate_hosts_are_rejected_naming_the_host() {
        let e = resolve_text(
            "[[host]]\nname = \"app.example.com\"\n[[host]]\nname = \"blog.example.com\"\n[[host]]\nname = \"APP.example.com\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"app.example.com\""), "{e}");
        assert!(e.contains("twice"), "{e}");
        assert!(e.contains("[[host]] 3") && e.contains("[[host]] 1"), "{e}");
        let e = resolve_text("[[host]]\nname = \"*.a.b\"\n[[host]]\nname = \"*.a.b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"*.a.b\"") && e.contains("twice"), "{e}");
    }

    #[test]
    fn bad_hosts_are_rejected_with_reason() {
        for (text, want) in [
            ("[[host]]\nname = \"a..b\"\n", "empty label"),
            ("[[host]]\nname = \"a.*.b\"\n", "wildcard"),
            ("[[host]]\nname = \"other\"\n", "reserved"),
            ("[[host]]\nname = \"bad name\"\n", "invalid character"),
        ] {
            let e = resolve_text(text).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("[[host]] 1"), "{text}: {e}");
        }
        let e = FileConfig::parse(Path::new("f.toml"), "[[host]]\nname = \"a.b\"\nwat = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.toml:3:") && e.contains("unknown field"),
            "{e}"
        );
        let e = FileConfig::parse(Path::new("f.toml"), "[[host]]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("name"), "{e}");
    }

    #[test]
    fn host_policies_follow_their_hosts() {
        let c = resolve_text(
            "[[host]]\nname = \"a.example.com\"\npolicy = \"drop\"\n\
             [[host]]\nname = \"b.example.com\"\n\
             [[host]]\nname = \"*.c.example.com\"\npolicy = \"Forward\"\n",
        )
        .unwrap();
        assert_eq!(
            c.host_policies,
            [HostPolicy::Drop, HostPolicy::Forward, HostPolicy::Forward]
        );
        assert_eq!(c.hosts.len(), c.host_policies.len());
        assert!(resolve_text("").unwrap().host_policies.is_empty());
        let c = resolve_text("[[host]]\nname = \"a.example.com\"\npolicy = \"local\"\n").unwrap();
        assert_eq!(c.host_policies, [HostPolicy::Local]);
        assert_eq!(c.kernel_flags(), forwarder_common::CFG_F_LOCAL_POLICY);
        assert_eq!(resolve_text("").unwrap().kernel_flags(), 0);
    }

    #[test]
    fn the_syn_flood_guard_is_on_by_default_and_can_be_turned_off() {
        let c = resolve_text("").unwrap();
        assert_eq!(c.limits.syn_flood_threshold(), DEFAULT_SYN_FLOOD_THRESHOLD);
        let c = resolve_text("[limits]\nsyn_flood_threshold = 0\n").unwrap();
        assert_eq!(c.limits.syn_flood_threshold(), 0);
        let c = resolve_text("[limits]\nsyn_flood_threshold = 50000\n").unwrap();
        assert_eq!(c.limits.syn_flood_threshold(), 50000);
    }

    #[test]
    fn unknown_host_policy_names_the_field_and_the_choices() {
        let e = FileConfig::parse(
            Path::new("f.toml"),
            "[[host]]\nname = \"a.b\"\npolicy = \"bounce\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.toml:3:"), "{e}");
        assert!(
            e.contains("policy")
                && e.contains("\"bounce\"")
                && e.contains("forward, drop or local"),
            "{e}"
        );
        let e = FileConfig::parse(
            Path::new("f.toml"),
            "[[host]]\nname = \"a.b\"\npolicy = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.toml:3:"), "{e}");
    }

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
        let e = "reject".parse::<HostPolicy>().unwrap_err();
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

    #[test]
    fn contradictions_are_rejected_with_reason() {
        let none = Config::resolve(
            FileConfig::default(),
            Some("e".into()),
            Some("w".into()),
            vec![],
            addrs,
        );
        assert!(none.unwrap_err().to_string().contains("--backend"));
        let two = Config::resolve(
            FileConfig::default(),
            Some("e".into()),
            Some("w".into()),
            vec!["10.8.0.2".parse().unwrap(), "10.8.0.3".parse().unwrap()],
            addrs,
        );
        assert!(two.unwrap_err().to_string().contains("same address family"));
        let text = "backends=[\"10.8.0.2\"]\n[[rule]]\nport=443\n[[rule]]\nport=443\n";
        let f = FileConfig::parse(Path::new("f"), text).unwrap();
        let dup = Config::resolve(f, Some("e".into()), Some("w".into()), vec![], addrs);
        assert!(dup.unwrap_err().to_string().contains("forwarded twice"));
        let text = "[[rule]]\nport=443\nbackend=\"fd00::2\"\npublic_addr=\"203.0.113.1\"\n";
        let f = FileConfig::parse(Path::new("f"), text).unwrap();
        let mixed = Config::resolve(f, Some("e".into()), Some("w".into()), vec![], addrs);
        assert!(
            mixed
                .unwrap_err()
                .to_string()
                .contains("different address families")
        );
    }
}

//! Loading the kernel programs, filling their maps and attaching them.

mod attach;
pub mod deny;
pub mod events;
pub mod flows;
pub mod maps;
pub mod pin;
pub mod ring;

use std::{collections::BTreeMap, sync::Arc};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, ProgramArray},
    programs::{SchedClassifier, Xdp},
    util::KernelVersion,
};
use forwarder_common::{
    CONFIG_MAP, ConnEvent, Counter, DataplaneConfig, HOST_FIRST_CONFIGURED, HOSTS_MAP, HostKey,
    HostValue, MAX_HOSTS, PINNED_MAPS, RULE_F_UNKNOWN_DROP, RuleKey, RuleValue, TC_INGRESS_PROG,
    TC_READER_MAP, TC_READER_PROG, TC_TUNNEL_PROG, XDP_READER_MAP, XDP_READER_PROG, addr_words,
    tunnel_mss,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::attach::{
    TC_FILTER_HANDLE, TC_FILTER_PRIORITY, XdpPreference, remove_lasting_filters,
};
pub use crate::api::stats::AttachMode;
use crate::{
    config::{Config, Rule, UnknownPolicy},
    dataplane::{
        attach::{attach_loaded_tc, attach_tc, attach_xdp},
        events::{HandoffMaps, QuicMaps},
        maps::Maps,
        pin::PinDir,
        ring::Ring,
    },
    model::labels::HostLabels,
    sys::netif,
};

/// The kernel object, built by build.rs and embedded so the binary is all a VPS needs.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/forwarder-ebpf"));

/// Kernel-side log level from `FORWARDER_KERNEL_LOG` (off, error, warn, info, debug,
/// trace; default warn). Below the level, a log statement in the programs costs one
/// comparison and emits nothing.
fn kernel_log_level() -> u8 {
    match std::env::var("FORWARDER_KERNEL_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "off" => 0,
        "error" => 1,
        "info" => 3,
        "debug" => 4,
        "trace" => 5,
        _ => 2,
    }
}

pub fn load() -> anyhow::Result<Ebpf> {
    load_pinned(None)
}

/// Loads the object; with `pins`, every map is created at (or adopted from) its pin.
pub fn load_pinned(pins: Option<&PinDir>) -> anyhow::Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        bail!(
            "this binary was built without its kernel programs (FORWARDER_SKIP_EBPF=1); rebuild it with `cargo xtask build`"
        );
    }
    let level = kernel_log_level();
    let mut loader = aya::EbpfLoader::new();
    loader.override_global(aya_log::LEVEL, &level, true);
    let paths: Vec<(&str, std::path::PathBuf)> = pins
        .map(|p| PINNED_MAPS.iter().map(|m| (*m, p.map_path(m))).collect())
        .unwrap_or_default();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    loader.load(EBPF_OBJECT).context(
        "loading the kernel programs (needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, i.e. root)",
    )
}

/// A running data path. Dropping it detaches every program; the maps live on until the
/// last handle on them (`maps`, the event ring buffer) is dropped too.
pub struct Dataplane {
    pub ebpf: Ebpf,
    pub mode: AttachMode,
    /// The maps the daemon keeps reading and writing while it runs.
    pub maps: Arc<Maps>,
    events: Option<Ring<ConnEvent>>,
    handoff: Option<HandoffMaps>,
    quic: Option<QuicMaps>,
    kernel_log: Option<KernelLogger>,
    /// Host id -> label, as assigned in the host table.
    pub labels: HostLabels,
    pub tunnel_ifindex: u32,
    /// Whether an earlier daemon's data path was taken over.
    pub adopted: bool,
    /// tc programs are attached as TCX links (kernel 6.6+), not to a clsact qdisc.
    tcx: bool,
}

impl Dataplane {
    /// Loads, fills and attaches the data path. With `pins`, a data path an earlier daemon
    /// left there is adopted: its maps (flows, counters, host ids) are kept and its programs
    /// are replaced atomically, so established connections keep flowing.
    pub fn start(cfg: &Config, xdp: XdpPreference, pins: Option<&PinDir>) -> anyhow::Result<Self> {
        let public_ifindex = netif::ifindex(&cfg.public_iface)?;
        let tunnel_ifindex = netif::ifindex(&cfg.tunnel_iface)?;
        let mtu = match cfg.tunnel_mtu {
            Some(m) => m,
            None => netif::mtu(&cfg.tunnel_iface)?,
        };
        let (mss_v4, mss_v6) = (tunnel_mss(mtu, false), tunnel_mss(mtu, true));

        let tunnel_l2_len = netif::link_header_len(&cfg.tunnel_iface)?;
        let adopting = pins.is_some_and(PinDir::has_state);
        if let Some(p) = pins {
            p.check_layouts(EBPF_OBJECT)?;
        }
        let mut ebpf = load_pinned(pins)?;
        let kernel_log = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                warn!("kernel-side logging unavailable: {e}");
                None
            }
        };
        // A reader swapped into a running data path serves the old forwarding programs
        // until they are replaced too; both read the same (pinned) per-packet state.
        let readers = match load_readers(&mut ebpf) {
            Ok(()) => true,
            Err(e) => {
                warn!(
                    "the host name reader did not load: {e:#}; connections are counted under host \"unknown\" (counter classify_unavailable)"
                );
                false
            }
        };
        let previous = {
            let cfg_map: Array<&MapData, DataplaneConfig> =
                Array::try_from(ebpf.map(CONFIG_MAP).context("CONFIG map missing")?)?;
            cfg_map
                .get(&0, 0)
                .context("reading the data path configuration")?
        };
        let previous_mode = (previous.enabled != 0)
            .then(|| AttachMode::from_code(previous.attach_mode))
            .flatten();

        // Attach the tunnel side and the tc hand-off before XDP, so that no packet is
        // translated before something can deliver it.
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        attach_tc(&mut ebpf, TC_TUNNEL_PROG, &cfg.tunnel_iface, tcx, pins)?;
        attach_tc(&mut ebpf, TC_INGRESS_PROG, &cfg.public_iface, tcx, pins)?;
        let mode = attach_xdp(&mut ebpf, &cfg.public_iface, xdp, pins, previous_mode)?;

        for name in forwarder_common::ALL_PROGS {
            let info = ebpf.program(name).and_then(|p| p.info().ok());
            if let Some(i) = info {
                // How much of the verifier's one-million-instruction budget it took.
                let verified = i.verified_instruction_count().unwrap_or(0);
                info!(program = name, verified, id = i.id(), "program loaded");
            }
        }
        let (maps, events) = Maps::take(&mut ebpf)?;
        let handoff = HandoffMaps::take(&mut ebpf);
        let quic = QuicMaps::take(&mut ebpf);
        let labels = sync_hosts(&maps, cfg)?;
        let (rate, burst) = cfg.limits.kernel();
        maps.rules()
            .install(rule_table(cfg, tunnel_ifindex), |c| {
                *c = DataplaneConfig {
                    public_ifindex,
                    mss_v4,
                    mss_v6,
                    enabled: 1,
                    tc_translate: u32::from(mode == AttachMode::TcOnly),
                    tunnel_l2_len,
                    conn_rate: rate,
                    conn_burst: burst,
                    rules_set: c.rules_set,
                    attach_mode: mode.code(),
                    flags: cfg.kernel_flags(),
                    syn_flood_threshold: cfg.limits.syn_flood_threshold(),
                    quic_rate: cfg.quic.rate(),
                    quic_burst: cfg.quic.burst(),
                    recreate_rate: cfg.limits.flow_recreate_per_second(),
                    v6_source_prefix: cfg.limits.ipv6_client_prefix(),
                    _pad: 0,
                }
            })
            .context("writing the rules and the data path configuration")?;
        info!(
            public = %cfg.public_iface,
            tunnel = %cfg.tunnel_iface,
            tunnel_mtu = mtu,
            mss_v4,
            mss_v6,
            mode = mode.as_str(),
            readers,
            adopted = adopting,
            new_connections_per_second = rate,
            "data path attached"
        );
        Ok(Self {
            ebpf,
            mode,
            maps: Arc::new(maps),
            events,
            handoff,
            quic,
            kernel_log,
            labels,
            tunnel_ifindex,
            adopted: adopting,
            tcx,
        })
    }

    /// Follows the tunnel interface when it was deleted and created again (wireguard-go
    /// or `wg-quick` restarted): attaches the tunnel program to the new interface and
    /// returns the old and new ifindex; the caller moves rules and flows over. `None`
    /// while the interface is unchanged, or gone (then there is nothing to attach to yet).
    pub fn follow_tunnel(
        &mut self,
        iface: &str,
        pins: Option<&PinDir>,
    ) -> anyhow::Result<Option<(u32, u32)>> {
        let Ok(now) = netif::ifindex(iface) else {
            return Ok(None);
        };
        if now == self.tunnel_ifindex {
            return Ok(None);
        }
        attach_loaded_tc(&mut self.ebpf, TC_TUNNEL_PROG, iface, self.tcx, pins)?;
        let old = std::mem::replace(&mut self.tunnel_ifindex, now);
        Ok(Some((old, now)))
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> anyhow::Result<Vec<(Counter, u64)>> {
        Ok(self.maps.counters()?)
    }

    /// The connection event ring buffer, if the kernel programs have one (once).
    pub fn take_events(&mut self) -> Option<Ring<ConnEvent>> {
        self.events.take()
    }

    /// The maps of the hand-off of `local` connections, once.
    pub fn take_handoff(&mut self) -> Option<HandoffMaps> {
        self.handoff.take()
    }

    /// The QUIC Initial ring buffer and the verdict map, for the daemon's QUIC task.
    pub fn take_quic(&mut self) -> Option<QuicMaps> {
        self.quic.take()
    }

    /// The task that copies the kernel programs' log lines into the daemon's until
    /// `cancel` (once; `None` without kernel-side logging).
    pub fn kernel_log(
        &mut self,
        cancel: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let logger = self.kernel_log.take()?;
        Some(serve_kernel_log(logger, cancel))
    }
}

/// Makes the host table what `cfg` says. A host already in the table (adopted from an
/// earlier daemon, or unchanged by a reload) keeps its id, so its statistics continue; a
/// new host gets the lowest free id, with that id's statistics zeroed first; hosts no
/// longer configured are removed.
pub fn sync_hosts(maps: &Maps, cfg: &Config) -> anyhow::Result<HostLabels> {
    let Some(mut table) = maps.hosts() else {
        if !cfg.hosts.is_empty() {
            warn!(
                "the kernel programs have no {HOSTS_MAP} map: connections are not classified by host, the {} [[host]] section(s) have no effect",
                cfg.hosts.len()
            );
        }
        return Ok(HostLabels::default());
    };
    let existing: std::collections::HashMap<HostKey, HostValue> =
        table.iter().filter_map(Result::ok).collect();
    let mut used: std::collections::BTreeSet<u32> = cfg
        .hosts
        .iter()
        .filter_map(|h| existing.get(&h.key()).map(|v| v.id))
        .collect();
    let mut assigned = Vec::with_capacity(cfg.hosts.len());
    for (i, h) in cfg.hosts.iter().enumerate() {
        let key = h.key();
        let id = match existing.get(&key) {
            Some(v) => v.id,
            None => {
                let id = (HOST_FIRST_CONFIGURED..MAX_HOSTS)
                    .find(|id| !used.contains(id))
                    .context("no free host id")?;
                used.insert(id);
                maps.reset_host_stats(id)?;
                id
            }
        };
        let policy = cfg.host_policies.get(i).copied().unwrap_or_default();
        // The policy first: a connection that finds the host finds its policy too.
        maps.set_host_policy(id, u32::from(policy.code()))?;
        let value = HostValue { id, _pad: 0 };
        if existing.get(&key) != Some(&value) {
            table
                .insert(key, value, 0)
                .with_context(|| format!("adding host {} to the host table", h.label))?;
            info!(host = %h.label, id, policy = %policy, "counting host");
        }
        assigned.push((id, h.label.clone()));
    }
    let wanted: std::collections::HashSet<HostKey> = cfg.hosts.iter().map(|h| h.key()).collect();
    for key in existing.keys().filter(|k| !wanted.contains(k)) {
        table
            .remove(key)
            .context("removing a host from the host table")?;
    }
    Ok(HostLabels::from_assigned(assigned))
}

/// The kernel's key of a rule.
pub fn rule_key(r: &Rule) -> RuleKey {
    let (addr, family) = addr_words(r.public_addr);
    RuleKey {
        addr,
        port: r.port.to_be(),
        proto: r.proto.number(),
        family,
    }
}

/// The rule set `cfg` asks for, as the kernel holds it (no rule in fallback).
pub fn rule_table(cfg: &Config, tunnel_ifindex: u32) -> BTreeMap<RuleKey, RuleValue> {
    cfg.rules
        .iter()
        .map(|r| {
            let key = rule_key(r);
            let (backend_addr, _) = addr_words(r.backend);
            let value = RuleValue {
                backend_addr,
                backend_port: r.backend_port.to_be(),
                family: key.family,
                flags: if r.unknown_policy == UnknownPolicy::Drop {
                    RULE_F_UNKNOWN_DROP
                } else {
                    0
                },
                tunnel_ifindex,
            };
            (key, value)
        })
        .collect()
}

/// Loads the name readers and puts them where the forwarding programs tail-call them.
/// The program arrays stay owned by `ebpf`: the kernel empties a program array once no
/// process holds it open any more.
pub fn load_readers(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let xdp: &mut Xdp = ebpf
        .program_mut(XDP_READER_PROG)
        .context("XDP reader missing from the object")?
        .try_into()?;
    xdp.load().context("verifying the XDP name reader")?;
    let xdp_fd = xdp.fd()?.try_clone()?;
    let tc: &mut SchedClassifier = ebpf
        .program_mut(TC_READER_PROG)
        .context("tc reader missing from the object")?
        .try_into()?;
    tc.load().context("verifying the tc name reader")?;
    let tc_fd = tc.fd()?.try_clone()?;
    for (map, fd) in [(XDP_READER_MAP, &xdp_fd), (TC_READER_MAP, &tc_fd)] {
        let mut a = ProgramArray::try_from(
            ebpf.map_mut(map)
                .with_context(|| format!("{map} map missing"))?,
        )?;
        a.set(0, fd, 0)
            .with_context(|| format!("installing the name reader in {map}"))?;
    }
    Ok(())
}

type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

async fn serve_kernel_log(logger: KernelLogger, cancel: CancellationToken) {
    // SAFETY: the logger owns its ring buffer's fd, which stays open and unchanged for as
    // long as the logger lives inside the AsyncFd.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let Ok(mut fd) = registered else {
        warn!("kernel-side logging unavailable: cannot poll its ring buffer");
        return;
    };
    loop {
        let mut guard = tokio::select! {
            r = fd.readable_mut() => match r {
                Ok(guard) => guard,
                Err(_) => return,
            },
            () = cancel.cancelled() => break,
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
    // What the programs logged before the daemon stopped.
    fd.get_mut().flush();
}

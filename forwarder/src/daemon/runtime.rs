//! What the running daemon may change without a restart: the rules, the host table and
//! its policies, the connection limit, the health settings. Every change, from the CLI
//! (`forwarder rules add`, `forwarder hosts set`, ...) or a reload (`forwarder reload`,
//! SIGHUP), goes the same way:
//!
//! 1. the whole new configuration is resolved and validated (nothing is touched yet);
//! 2. an edit of the config file is written atomically (temp file + rename), comments kept;
//! 3. the host table is synced (hosts that stay keep their ids, so their counters go on),
//!    then the new rule set is written into the rule map not in force and switched to with
//!    one update, so no packet sees half a rule set; if this fails, the file is restored.
//!
//! Rules that stay keep their flows: the flow table is not touched, and a rule's key and
//! value only change if the rule itself changed.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
};

use forwarder_common::{RULE_F_FALLBACK_LOCAL, RuleKey, RuleValue, addr_words};
use tracing::{info, warn};

use crate::{
    api::control::Changes,
    config::{
        Config, ConfigError, Fallback, FileConfig, HostConfig, HostPolicy, Limits, LimitsError,
        Proto, ResolveError, RuleConfig,
        edit::{ConfigDoc, EditError},
    },
    daemon::health::Health,
    dataplane::{
        deny::denied_sources,
        maps::{Maps, MapsError, display_chain},
        rule_key, rule_table, sync_hosts,
    },
    model::labels::SharedLabels,
    sys::netif,
};

/// Where the configuration comes from: the file (if any) and the flags that override it.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub config: Option<PathBuf>,
    pub public_iface: Option<String>,
    pub tunnel_iface: Option<String>,
    pub backends: Vec<IpAddr>,
}

impl Sources {
    pub fn resolve(&self, file: FileConfig) -> Result<Config, ResolveError> {
        Config::resolve(
            file,
            self.public_iface.clone(),
            self.tunnel_iface.clone(),
            self.backends.clone(),
            |i| netif::addresses(i).map_err(|e| e.to_string()),
        )
    }

    pub fn load(&self) -> Result<Config, RuntimeError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        Ok(self.resolve(file)?)
    }
}

/// Why a change or a reload was refused; the running state is then as it was.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the daemon runs without a config file (--config): nothing to reload")]
    NothingToReload,
    #[error(
        "the daemon runs without a config file (--config), so a change could not outlive it; start it with --config FILE"
    )]
    NoConfigFile,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file, or the configuration it resolves to, is not one the daemon can run.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration does not resolve against this machine.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The edit itself cannot be made (a conflict, nothing to remove, the file not written).
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The connection limit asked for contradicts itself.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error("changing {what} ({from} -> {to}) needs a restart of the daemon")]
    NeedsRestart {
        what: &'static str,
        from: String,
        to: String,
    },
    #[error("changing tunnel_mtu needs a restart of the daemon")]
    MtuNeedsRestart,
    /// The host table could not be brought in line (it is put back).
    #[error("{0:#}")]
    Hosts(anyhow::Error),
    /// The kernel refused the new rule set (the one in force stays).
    #[error("{}", display_chain(.0))]
    Rules(MapsError),
}

/// One change asked for over the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    AddRule(RuleConfig),
    RemoveRule {
        proto: Proto,
        port: u16,
        public_addr: Option<IpAddr>,
    },
    AddHost(HostConfig),
    RemoveHost(String),
    SetHostPolicy(String, HostPolicy),
    SetLimits(Limits),
}

struct Inner {
    cfg: Config,
    health_task: Option<tokio::task::JoinHandle<()>>,
    shutdown: tokio_util::sync::CancellationToken,
}

/// The daemon's changeable state and the one way to change it.
pub struct Runtime {
    maps: Arc<Maps>,
    /// Changes when the tunnel interface is recreated (`tunnel_moved`).
    tunnel_ifindex: AtomicU32,
    sources: Sources,
    labels: SharedLabels,
    health: Arc<Health>,
    inner: Mutex<Inner>,
}

impl Runtime {
    pub fn new(
        maps: Arc<Maps>,
        tunnel_ifindex: u32,
        sources: Sources,
        labels: SharedLabels,
        health: Arc<Health>,
        cfg: Config,
    ) -> Arc<Self> {
        Arc::new(Self {
            maps,
            tunnel_ifindex: AtomicU32::new(tunnel_ifindex),
            sources,
            labels,
            health,
            inner: Mutex::new(Inner {
                cfg,
                health_task: None,
                shutdown: tokio_util::sync::CancellationToken::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.lock().cfg.clone()
    }

    /// Rewrites the sources the public side refuses (this machine's addresses, the
    /// tunnel's prefixes, the backends: `dataplane::deny`) from `cfg` and the addresses
    /// the machine has now. Failures are logged: the fixed ranges are still refused.
    pub fn refresh_sources_for(&self, cfg: &Config) {
        if let Some(deny) = self.maps.source_deny()
            && let Err(e) = deny.sync(&denied_sources(cfg))
        {
            warn!("{}", display_chain(&e));
        }
    }

    /// `refresh_sources_for` the configuration in force.
    pub fn refresh_sources(&self) {
        let cfg = self.config();
        self.refresh_sources_for(&cfg);
    }

    /// The config file changes are written to, if the daemon has one.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.sources.config.as_deref()
    }

    pub fn labels(&self) -> SharedLabels {
        self.labels.clone()
    }

    /// Starts probing the backends of the configuration in force (call within the tokio
    /// runtime); the probes stop at `shutdown`.
    pub fn start_health(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut inner = self.lock();
        inner.shutdown = shutdown;
        self.respawn_health(&mut inner);
    }

    fn respawn_health(self: &Arc<Self>, inner: &mut Inner) {
        if let Some(t) = inner.health_task.take() {
            t.abort();
        }
        let probed = inner.cfg.tcp_backends();
        if probed.is_empty() {
            return;
        }
        info!(
            backends = probed.len(),
            interval_ms = inner.cfg.health.interval_ms,
            detection_ms = inner.cfg.health.detection_bound().as_millis() as u64,
            "probing backends"
        );
        let me = Arc::downgrade(self);
        inner.health_task = Some(crate::daemon::health::spawn(
            probed,
            inner.cfg.health,
            Arc::clone(&self.health),
            inner.shutdown.child_token(),
            move |backend, up| {
                if let Some(rt) = me.upgrade() {
                    rt.on_health_change(backend, up);
                }
            },
        ));
    }

    /// Backends the probes see down.
    fn down(&self) -> HashSet<SocketAddr> {
        self.health
            .states()
            .into_iter()
            .filter(|b| !b.up)
            .map(|b| b.addr)
            .collect()
    }

    /// The rule set for `cfg` with the fallbacks of backends that are down in force.
    fn effective_rules(&self, cfg: &Config) -> BTreeMap<RuleKey, RuleValue> {
        let down = self.down();
        let mut table = rule_table(cfg, self.tunnel_ifindex.load(Ordering::SeqCst));
        for r in &cfg.rules {
            if !down.contains(&SocketAddr::new(r.backend, r.backend_port)) {
                continue;
            }
            let Some(v) = table.get_mut(&rule_key(r)) else {
                continue;
            };
            match r.fallback {
                Some(Fallback::Local) => v.flags |= RULE_F_FALLBACK_LOCAL,
                Some(Fallback::Backend(alt)) => {
                    v.backend_addr = addr_words(alt.ip()).0;
                    v.backend_port = alt.port().to_be();
                }
                None => {}
            }
        }
        table
    }

    fn on_health_change(&self, backend: SocketAddr, up: bool) {
        let inner = self.lock();
        let affected: Vec<&crate::config::Rule> = inner
            .cfg
            .rules
            .iter()
            .filter(|r| {
                r.fallback.is_some() && SocketAddr::new(r.backend, r.backend_port) == backend
            })
            .collect();
        if affected.is_empty() {
            return;
        }
        let table = self.effective_rules(&inner.cfg);
        if let Err(e) = self.maps.rules().install(table, |_| {}) {
            warn!(%backend, "switching the fallback failed: {}", display_chain(&e));
            return;
        }
        for r in affected {
            match (up, r.fallback) {
                (true, _) => info!(%backend, rule = %r, "new connections go to the backend again"),
                (false, Some(Fallback::Local)) => warn!(
                    %backend,
                    rule = %r,
                    "new connections go to the local stack (fallback)"
                ),
                (false, Some(Fallback::Backend(alt))) => warn!(
                    %backend,
                    fallback = %alt,
                    rule = %r,
                    "new connections go to the fallback backend"
                ),
                (false, None) => {}
            }
        }
    }

    /// The tunnel interface was recreated with ifindex `new` (its program is attached):
    /// rules and established flows are pointed at it. Returns how many flows moved.
    pub fn tunnel_moved(&self, old: u32, new: u32) -> anyhow::Result<usize> {
        let inner = self.lock();
        self.tunnel_ifindex.store(new, Ordering::SeqCst);
        let table = self.effective_rules(&inner.cfg);
        self.maps
            .rules()
            .install(table, |_| {})
            .map_err(|e| anyhow::anyhow!("installing the rules: {}", display_chain(&e)))?;
        self.maps
            .retarget_flows(old, new)
            .map_err(|e| anyhow::anyhow!("moving the flows: {}", display_chain(&e)))
    }

    /// Whether `r` currently sends new connections to its fallback.
    pub fn in_fallback(&self, r: &crate::config::Rule) -> bool {
        r.fallback.is_some()
            && self
                .down()
                .contains(&SocketAddr::new(r.backend, r.backend_port))
    }

    /// Re-reads the config file and puts it in force (`forwarder reload`, SIGHUP).
    pub fn reload(self: &Arc<Self>) -> Result<Changes, RuntimeError> {
        let Some(path) = &self.sources.config else {
            return Err(RuntimeError::NothingToReload);
        };
        let file = FileConfig::load(path)?;
        let next = self.sources.resolve(file)?;
        let mut inner = self.lock();
        let changes = self.apply(&mut inner, next)?;
        info!(?changes, "configuration reloaded from {}", path.display());
        Ok(changes)
    }

    /// Applies one edit: validated as a whole new configuration, written to the config
    /// file, then put in force.
    pub fn edit(self: &Arc<Self>, edit: Edit) -> Result<Changes, RuntimeError> {
        let mut inner = self.lock();
        let Some(path) = self.sources.config.clone() else {
            return Err(RuntimeError::NoConfigFile);
        };
        let original = std::fs::read_to_string(&path).map_err(|source| RuntimeError::Read {
            path: path.clone(),
            source,
        })?;
        let mut doc = ConfigDoc::parse(&path, &original)?;
        match &edit {
            Edit::AddRule(r) => doc.add_rule(r),
            Edit::RemoveRule {
                proto,
                port,
                public_addr,
            } => doc.remove_rule(*proto, *port, *public_addr).map(|_| ()),
            Edit::AddHost(h) => doc.add_host(h),
            Edit::RemoveHost(name) => doc.remove_host(name),
            Edit::SetHostPolicy(name, policy) => doc.set_host_policy(name, *policy),
            Edit::SetLimits(l) => {
                // Checked before the edit: a rate of 0 removes the keys, and with them a
                // contradictory burst the resolved configuration would never see.
                l.validate().map_err(RuntimeError::Limits)?;
                doc.set_limits(*l)
            }
        }?;
        let file = doc.file_config()?;
        let next = self.sources.resolve(file)?;
        // The file first: if it cannot be written, nothing has changed; if the kernel
        // refuses the change afterwards, the file is put back.
        match doc.write_atomic() {
            Ok(()) => {}
            // The file was replaced; only flushing its directory failed. The change stands,
            // so the running state must follow the file.
            Err(e @ EditError::Sync { .. }) => warn!("{e}"),
            Err(e) => return Err(e.into()),
        }
        match self.apply(&mut inner, next) {
            Ok(mut changes) => {
                changes.persisted_to = Some(path.display().to_string());
                info!(?edit, ?changes, "configuration changed");
                Ok(changes)
            }
            Err(e) => {
                let restored = ConfigDoc::parse(&path, &original).and_then(|d| d.write_atomic());
                if let Err(restore) = restored {
                    warn!("restoring {} failed: {restore}", path.display());
                }
                Err(e)
            }
        }
    }

    fn apply(self: &Arc<Self>, inner: &mut Inner, next: Config) -> Result<Changes, RuntimeError> {
        let cur = &inner.cfg;
        for (what, a, b) in [
            ("public_iface", &cur.public_iface, &next.public_iface),
            ("tunnel_iface", &cur.tunnel_iface, &next.tunnel_iface),
        ] {
            if a != b {
                return Err(RuntimeError::NeedsRestart {
                    what,
                    from: a.clone(),
                    to: b.clone(),
                });
            }
        }
        if cur.tunnel_mtu != next.tunnel_mtu {
            return Err(RuntimeError::MtuNeedsRestart);
        }
        if cur.local != next.local {
            return Err(RuntimeError::NeedsRestart {
                what: "[local]",
                from: format!("{:?}", cur.local),
                to: format!("{:?}", next.local),
            });
        }
        let changes = diff(cur, &next);
        let (rate, burst) = next.limits.kernel();
        let applied = sync_hosts(&self.maps, &next)
            .map_err(RuntimeError::Hosts)
            .and_then(|labels| {
                self.maps
                    .rules()
                    .install(self.effective_rules(&next), |c| {
                        c.conn_rate = rate;
                        c.conn_burst = burst;
                        c.flags = next.kernel_flags();
                        c.syn_flood_threshold = next.limits.syn_flood_threshold();
                        c.recreate_rate = next.limits.flow_recreate_per_second();
                        c.v6_source_prefix = next.limits.ipv6_client_prefix();
                    })
                    .map_err(RuntimeError::Rules)?;
                self.refresh_sources_for(&next);
                Ok(labels)
            });
        let labels = match applied {
            Ok(labels) => labels,
            Err(e) => {
                // The rules in force did not change; the host table goes back to match them.
                if let Err(undo) = sync_hosts(&self.maps, cur) {
                    warn!("restoring the host table failed: {undo:#}");
                }
                return Err(e);
            }
        };
        self.labels.set(labels);
        let health_changed = changes.health_changed
            || cur.tcp_backends() != next.tcp_backends()
            || cur
                .rules
                .iter()
                .map(|r| r.fallback)
                .ne(next.rules.iter().map(|r| r.fallback));
        inner.cfg = next;
        if health_changed {
            self.respawn_health(inner);
        }
        Ok(changes)
    }
}

fn diff(cur: &Config, next: &Config) -> Changes {
    let rules =
        |c: &Config| -> BTreeSet<String> { c.rules.iter().map(ToString::to_string).collect() };
    let (a, b) = (rules(cur), rules(next));
    let hosts = |c: &Config| -> BTreeMap<String, HostPolicy> {
        c.hosts
            .iter()
            .zip(
                c.host_policies
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(HostPolicy::Forward)),
            )
            .map(|(h, p)| (h.label.clone(), p))
            .collect()
    };
    let (ha, hb) = (hosts(cur), hosts(next));
    Changes {
        rules_added: b.difference(&a).cloned().collect(),
        rules_removed: a.difference(&b).cloned().collect(),
        hosts_added: hb
            .keys()
            .filter(|k| !ha.contains_key(*k))
            .cloned()
            .collect(),
        hosts_removed: ha
            .keys()
            .filter(|k| !hb.contains_key(*k))
            .cloned()
            .collect(),
        hosts_changed: hb
            .iter()
            .filter(|(k, p)| ha.get(*k).is_some_and(|q| q != *p))
            .map(|(k, p)| format!("{k}: policy {p}"))
            .collect(),
        limits_changed: cur.limits != next.limits,
        health_changed: cur.health != next.health,
        persisted_to: None,
    }
}

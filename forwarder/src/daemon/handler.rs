//! Answers the control socket's requests from the daemon's live state.

use std::sync::Arc;

use crate::{
    api::control,
    config::{self, HostConfig, HostPolicy},
    daemon::{
        control::Handler,
        runtime::{Changes, Edit, Runtime},
        stats::LiveStats,
    },
    observe::snapshot::SnapshotSource as _,
};

/// Answers the control socket's requests from the daemon's live state.
pub fn control_handler(
    runtime: Arc<Runtime>,
    stats: Arc<LiveStats>,
    stop_request: Arc<tokio::sync::Notify>,
    detach: Arc<std::sync::atomic::AtomicBool>,
) -> Handler {
    Arc::new(move |req| {
        let cfg = runtime.config();
        let changed = |r: Result<Changes, String>| {
            r.and_then(|c| serde_json::to_value(c).map_err(|e| e.to_string()))
        };
        match req {
            control::Request::Status => {
                let s = stats.snapshot().map_err(|e| e.to_string())?;
                Ok(serde_json::json!({
                    "version": s.version,
                    "uptime_seconds": s.uptime_seconds,
                    "attach_mode": s.attach_mode,
                    "tunnel": s.tunnel,
                    "backends": s.backends,
                    "local": s.local,
                    "rules_in_fallback": cfg
                        .rules
                        .iter()
                        .filter(|r| runtime.in_fallback(r))
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>(),
                    "config": runtime.config_path().map(|p| p.display().to_string()),
                }))
            }
            control::Request::Stop { detach: d } => {
                if *d {
                    detach.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                stop_request.notify_one();
                Ok(serde_json::json!({ "stopping": true, "detach": d }))
            }
            control::Request::Rules => Ok(serde_json::Value::Array(
                cfg.rules
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "rule": r.to_string(),
                            "public": r.public_addr,
                            "proto": r.proto.to_string(),
                            "port": r.port,
                            "backend": r.backend,
                            "backend_port": r.backend_port,
                            "fallback": match r.fallback {
                                Some(config::Fallback::Local) => Some("local".to_owned()),
                                Some(config::Fallback::Backend(a)) => Some(a.to_string()),
                                None => None,
                            },
                            "in_fallback": runtime.in_fallback(r),
                        })
                    })
                    .collect(),
            )),
            control::Request::Hosts => {
                let labels = runtime.labels().get();
                let ids: std::collections::HashMap<String, u32> = labels
                    .display_order()
                    .map(|id| (labels.label(id).to_owned(), id))
                    .collect();
                Ok(serde_json::Value::Array(
                    cfg.hosts
                        .iter()
                        .zip(cfg.host_policies.iter())
                        .map(|(h, p)| {
                            serde_json::json!({
                                "host": h.label,
                                "policy": p.to_string(),
                                "id": ids.get(&h.label),
                            })
                        })
                        .collect(),
                ))
            }
            control::Request::RuleAdd { rule } => {
                changed(runtime.edit(Edit::AddRule(rule_config(rule)?)))
            }
            control::Request::RuleRemove {
                proto,
                port,
                public_addr,
            } => changed(
                runtime.edit(Edit::RemoveRule {
                    proto: proto
                        .parse()
                        .map_err(|e: config::ProtoError| e.to_string())?,
                    port: *port,
                    public_addr: *public_addr,
                }),
            ),
            control::Request::HostAdd { name, policy } => {
                changed(runtime.edit(Edit::AddHost(HostConfig {
                    name: name.clone(),
                    policy: parse_policy(policy.as_deref())?,
                })))
            }
            control::Request::HostRemove { name } => {
                changed(runtime.edit(Edit::RemoveHost(name.clone())))
            }
            control::Request::HostSet { name, policy } => changed(runtime.edit(
                Edit::SetHostPolicy(name.clone(), parse_policy(Some(policy))?),
            )),
            control::Request::Limits {
                new_connections_per_second,
                burst,
            } => changed(runtime.edit(Edit::SetLimits(config::Limits {
                new_connections_per_second: *new_connections_per_second,
                burst: *burst,
                // `limits set` leaves the guard's threshold as the file has it.
                syn_flood_threshold: None,
            }))),
            control::Request::Reload => changed(runtime.reload()),
        }
    })
}

fn parse_policy(s: Option<&str>) -> Result<HostPolicy, String> {
    s.map_or(Ok(HostPolicy::Forward), |s| {
        s.parse()
            .map_err(|e: config::HostPolicyError| e.to_string())
    })
}

/// The rule a `rules add` request describes.
fn rule_config(spec: &control::RuleSpec) -> Result<config::RuleConfig, String> {
    Ok(config::RuleConfig {
        proto: match &spec.proto {
            Some(p) => p.parse().map_err(|e: config::ProtoError| e.to_string())?,
            None => config::Proto::Tcp,
        },
        port: spec.port,
        backend: spec.backend,
        backend_port: spec.backend_port,
        public_addr: spec.public_addr,
        fallback: spec.fallback.clone(),
    })
}

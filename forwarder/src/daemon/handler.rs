//! Answers the control socket's requests from the daemon's live state.
//!
//! Each request is answered by a method returning that request's reply type
//! ([`ControlRequest::Reply`]); [`reply`] ties the two, so an answer of the wrong shape
//! does not compile. The reply is encoded here, once, for the socket server
//! ([`crate::daemon::control`]) to send.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::Notify;

use crate::{
    api::control::{
        self, Changes, ControlRequest, HostEntry, Request, RuleEntry, StatusReply, StopReply,
    },
    config::{self, HostConfig, HostPolicy},
    daemon::{
        runtime::{Edit, Runtime, RuntimeError},
        stats::LiveStats,
    },
    dataplane::maps::MapsError,
    observe::snapshot::SnapshotSource as _,
};

/// Answers one request: its reply, encoded, or why there is none. The answer is ready
/// once a change it made is in force in the kernel (a rule switch may wait out the grace
/// of the one before), so a client that acts on the reply meets the new rules.
pub type Handler = Arc<
    dyn Fn(
            &Request,
        ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, HandlerError>> + Send>>
        + Send
        + Sync,
>;

/// Why a request was refused; the message is the answer's `error`.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The statistics could not be read from the kernel's maps.
    #[error(transparent)]
    Snapshot(#[from] MapsError),
    /// A protocol name that does not exist.
    #[error(transparent)]
    Proto(#[from] config::ProtoError),
    /// A host policy that does not exist.
    #[error(transparent)]
    Policy(#[from] config::HostPolicyError),
    /// A rule's `unknown_policy` that does not exist.
    #[error(transparent)]
    UnknownPolicy(#[from] config::UnknownPolicyError),
    /// The change or reload was refused.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

/// Answers the control socket's requests from the daemon's live state.
pub fn control_handler(
    runtime: Arc<Runtime>,
    stats: Arc<LiveStats>,
    stop_request: Arc<Notify>,
    detach: Arc<AtomicBool>,
) -> Handler {
    let answers = Answers {
        runtime,
        stats,
        stop_request,
        detach,
    };
    Arc::new(move |req| {
        let answer = answers.answer(req);
        let maps = Arc::clone(&answers.stats.maps);
        Box::pin(async move {
            maps.settle_rules().await;
            answer
        })
    })
}

/// `request`'s reply, encoded as the protocol writes it.
fn reply<R: ControlRequest>(
    _request: &R,
    reply: Result<R::Reply, HandlerError>,
) -> Result<serde_json::Value, HandlerError> {
    Ok(control::encode(&reply?)?)
}

struct Answers {
    runtime: Arc<Runtime>,
    stats: Arc<LiveStats>,
    stop_request: Arc<Notify>,
    detach: Arc<AtomicBool>,
}

impl Answers {
    fn answer(&self, req: &Request) -> Result<serde_json::Value, HandlerError> {
        match req {
            Request::Status(r) => reply(r, self.status()),
            Request::Stop(r) => reply(r, Ok(self.stop(r))),
            Request::Rules(r) => reply(r, Ok(self.rules())),
            Request::Hosts(r) => reply(r, Ok(self.hosts())),
            Request::RuleAdd(r) => reply(r, self.edit(Edit::AddRule(rule_config(&r.rule)?))),
            Request::RuleRemove(r) => reply(
                r,
                self.edit(Edit::RemoveRule {
                    proto: r.proto.parse().map_err(HandlerError::from)?,
                    port: r.port,
                    public_addr: r.public_addr,
                }),
            ),
            Request::HostAdd(r) => reply(
                r,
                self.edit(Edit::AddHost(HostConfig {
                    name: r.name.clone(),
                    policy: parse_policy(r.policy.as_deref())?,
                })),
            ),
            Request::HostRemove(r) => reply(r, self.edit(Edit::RemoveHost(r.name.clone()))),
            Request::HostSet(r) => reply(
                r,
                self.edit(Edit::SetHostPolicy(
                    r.name.clone(),
                    parse_policy(Some(&r.policy))?,
                )),
            ),
            Request::Limits(r) => reply(
                r,
                self.edit(Edit::SetLimits(config::Limits {
                    new_connections_per_second: r.new_connections_per_second,
                    burst: r.burst,
                    // `limits set` leaves the rest as the file has it.
                    ..config::Limits::default()
                })),
            ),
            Request::Reload(r) => reply(r, Ok(self.runtime.reload()?)),
        }
    }

    fn status(&self) -> Result<StatusReply, HandlerError> {
        let s = self.stats.snapshot()?;
        let cfg = self.runtime.config();
        Ok(StatusReply {
            version: s.version,
            uptime_seconds: s.uptime_seconds,
            attach_mode: s.attach_mode,
            tunnel: s.tunnel,
            backends: s.backends,
            local: s.local,
            rules_in_fallback: cfg
                .rules
                .iter()
                .filter(|r| self.runtime.in_fallback(r))
                .map(ToString::to_string)
                .collect(),
            config: self.runtime.config_path().map(|p| p.display().to_string()),
        })
    }

    fn stop(&self, r: &control::Stop) -> StopReply {
        if r.detach {
            self.detach.store(true, Ordering::SeqCst);
        }
        self.stop_request.notify_one();
        StopReply {
            stopping: true,
            detach: r.detach,
        }
    }

    fn rules(&self) -> Vec<RuleEntry> {
        self.runtime
            .config()
            .rules
            .iter()
            .map(|r| RuleEntry {
                rule: r.to_string(),
                public: r.public_addr,
                proto: r.proto.to_string(),
                port: r.port,
                backend: r.backend,
                backend_port: r.backend_port,
                fallback: match r.fallback {
                    Some(config::Fallback::Local) => Some("local".to_owned()),
                    Some(config::Fallback::Backend(a)) => Some(a.to_string()),
                    None => None,
                },
                in_fallback: self.runtime.in_fallback(r),
                unknown_policy: (r.unknown_policy != config::UnknownPolicy::default())
                    .then(|| r.unknown_policy.to_string()),
            })
            .collect()
    }

    fn hosts(&self) -> Vec<HostEntry> {
        let cfg = self.runtime.config();
        let labels = self.runtime.labels().get();
        let ids: HashMap<&str, u32> = labels
            .display_order()
            .map(|id| (labels.label(id), id))
            .collect();
        cfg.hosts
            .iter()
            .zip(cfg.host_policies.iter())
            .map(|(h, p)| HostEntry {
                host: h.label.clone(),
                policy: p.to_string(),
                id: ids.get(h.label.as_str()).copied(),
            })
            .collect()
    }

    fn edit(&self, edit: Edit) -> Result<Changes, HandlerError> {
        Ok(self.runtime.edit(edit)?)
    }
}

fn parse_policy(s: Option<&str>) -> Result<HostPolicy, HandlerError> {
    s.map_or(Ok(HostPolicy::Forward), str::parse)
        .map_err(HandlerError::from)
}

/// The rule a `rules add` request describes.
fn rule_config(spec: &control::RuleSpec) -> Result<config::RuleConfig, HandlerError> {
    Ok(config::RuleConfig {
        proto: match &spec.proto {
            Some(p) => p.parse().map_err(HandlerError::from)?,
            None => config::Proto::Tcp,
        },
        port: spec.port,
        backend: spec.backend,
        backend_port: spec.backend_port,
        public_addr: spec.public_addr,
        fallback: spec.fallback.clone(),
        unknown_policy: match &spec.unknown_policy {
            Some(p) => p.parse().map_err(HandlerError::from)?,
            None => config::UnknownPolicy::Forward,
        },
    })
}

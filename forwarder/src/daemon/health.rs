//! Backend health: the daemon connects to each backend (TCP, through the tunnel) at a fixed
//! interval and decides up/down with hysteresis, so that one lost probe does not flap the
//! state. The states are exported (metrics, `forwarder stats`) and logged on change.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::health::HealthConfig;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Connect(std::io::Error),
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("{0}")]
    Task(tokio::task::JoinError),
}

/// One backend's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendState {
    pub addr: SocketAddr,
    pub up: bool,
    /// Consecutive probes against the current state.
    streak: u32,
    pub since: Instant,
    pub transitions: u64,
    pub last_error: Option<String>,
}

impl BackendState {
    pub fn new(addr: SocketAddr, now: Instant) -> Self {
        // Up until probes say otherwise: the daemon must not start in fallback.
        BackendState {
            addr,
            up: true,
            streak: 0,
            since: now,
            transitions: 0,
            last_error: None,
        }
    }

    /// Takes one probe result; true when the state changed.
    pub fn observe(
        &mut self,
        result: Result<(), ProbeError>,
        cfg: &HealthConfig,
        now: Instant,
    ) -> bool {
        let ok = result.is_ok();
        if let Err(e) = result {
            self.last_error = Some(e.to_string());
        }
        if ok == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up {
            cfg.down_after
        } else {
            cfg.up_after
        };
        if self.streak < needed {
            return false;
        }
        self.up = ok;
        self.streak = 0;
        self.since = now;
        self.transitions += 1;
        true
    }
}

/// What the rest of the daemon reads.
#[derive(Default)]
pub struct Health {
    states: Mutex<Vec<BackendState>>,
}

impl Health {
    pub fn states(&self) -> Vec<BackendState> {
        self.states.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ProbeError::Connect(e)),
        Err(_) => Err(ProbeError::Timeout(timeout.as_millis())),
    }
}

/// Probes every backend at the configured interval, until the task is aborted or
/// `cancel`, and calls `on_change(backend, up)` on every transition.
pub fn spawn(
    backends: Vec<SocketAddr>,
    cfg: HealthConfig,
    health: Arc<Health>,
    cancel: CancellationToken,
    on_change: impl Fn(SocketAddr, bool) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let now = Instant::now();
    if let Ok(mut s) = health.states.lock() {
        // A backend probed before (the task is restarted when the rules change) keeps its
        // state: a reload neither forgets that home is down nor counts a transition.
        let old = std::mem::take(&mut *s);
        *s = backends
            .iter()
            .map(|&a| {
                old.iter()
                    .find(|o| o.addr == a)
                    .cloned()
                    .unwrap_or_else(|| BackendState::new(a, now))
            })
            .collect();
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(cfg.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let timeout = Duration::from_millis(cfg.timeout_ms);
        loop {
            let probes = async {
                tick.tick().await;
                run_concurrently(backends.iter().map(|&a| probe(a, timeout)).collect()).await
            };
            // Probes cut short change nothing: no state is half updated.
            let results = tokio::select! {
                r = probes => r,
                () = cancel.cancelled() => return,
            };
            let now = Instant::now();
            let mut changed = Vec::new();
            {
                let Ok(mut states) = health.states.lock() else {
                    return;
                };
                for (s, r) in states.iter_mut().zip(results) {
                    if s.observe(r, &cfg, now) {
                        if s.up {
                            info!(backend = %s.addr, "backend is up again");
                        } else {
                            warn!(
                                backend = %s.addr,
                                error = s.last_error.as_deref().unwrap_or(""),
                                "backend is down"
                            );
                        }
                        changed.push((s.addr, s.up));
                    }
                }
            }
            for (addr, up) in changed {
                on_change(addr, up);
            }
        }
    })
}

/// Runs the probes concurrently, so one unreachable backend does not delay the others.
async fn run_concurrently(
    probes: Vec<impl Future<Output = Result<(), ProbeError>> + Send + 'static>,
) -> Vec<Result<(), ProbeError>> {
    let handles: Vec<_> = probes.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or_else(|e| Err(ProbeError::Task(e))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "10.8.0.2:443".parse().unwrap()
    }

    #[test]
    fn goes_down_and_up_with_hysteresis() {
        let cfg = HealthConfig {
            down_after: 3,
            up_after: 2,
            ..HealthConfig::default()
        };
        let t = Instant::now();
        let mut s = BackendState::new(addr(), t);
        let fail = || Err(ProbeError::Connect(std::io::Error::other("refused")));
        assert!(!s.observe(fail(), &cfg, t));
        assert!(!s.observe(fail(), &cfg, t));
        // A success in between starts the count again.
        assert!(!s.observe(Ok(()), &cfg, t));
        assert!(!s.observe(fail(), &cfg, t));
        assert!(!s.observe(fail(), &cfg, t));
        assert!(s.up);
        assert!(s.observe(fail(), &cfg, t));
        assert!(!s.up);
        assert_eq!(s.last_error.as_deref(), Some("refused"));
        assert!(!s.observe(Ok(()), &cfg, t));
        assert!(!s.observe(fail(), &cfg, t));
        assert!(!s.observe(Ok(()), &cfg, t));
        assert!(s.observe(Ok(()), &cfg, t));
        assert!(s.up);
        assert_eq!(s.transitions, 2);
    }

    #[test]
    fn bad_sections_are_rejected_with_the_field_named() {
        let ok = HealthConfig::default();
        assert!(ok.validate().is_ok());
        let e = HealthConfig {
            timeout_ms: 5000,
            ..ok
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("timeout_ms"), "{e}");
        let e = HealthConfig {
            interval_ms: 10,
            ..ok
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("interval_ms"), "{e}");
        let e = HealthConfig {
            down_after: 0,
            ..ok
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("down_after"), "{e}");
    }

    #[tokio::test]
    async fn a_probe_reaches_a_listening_port_and_not_a_closed_one() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap();
        probe(open, Duration::from_secs(1))
            .await
            .expect("a listening port answers");
        drop(l);
        assert!(probe(open, Duration::from_secs(1)).await.is_err());
    }
}

//! Real clients during a flood: a new HTTPS connection (curl, in the client namespace)
//! at a fixed interval, each on a clock of its own so that a slow one does not delay the
//! next; success and latency per request.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::lab::{Lab, SUBDOMAINS, VPS_V4};

/// Longest the clients run, whatever the caller does.
const MAX_RUN: Duration = Duration::from_secs(120);
/// A request that takes longer failed (a SYN lost twice takes 3 s).
const REQUEST_TIMEOUT_S: &str = "10";

/// What the real clients saw.
#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    pub requests: u32,
    /// Latencies of the requests that succeeded (HTTP 200), in ms.
    pub ok_ms: Vec<f64>,
    /// Why the others failed (curl's exit and message).
    pub failures: Vec<String>,
}

impl ClientStats {
    pub fn success_pct(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        100.0 * self.ok_ms.len() as f64 / f64::from(self.requests)
    }

    /// The `p`-th percentile (nearest rank) of the successful requests' latencies, in ms.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let mut v = self.ok_ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v.get(rank.clamp(1, v.len().max(1)) - 1).copied()
    }
}

/// Clients running in the background until [`RealClients::stop`].
pub struct RealClients {
    stop: Arc<AtomicBool>,
    ticker: JoinHandle<Vec<JoinHandle<Result<f64, String>>>>,
}

impl RealClients {
    /// Starts a request to `https://app.example.test/` every `interval`.
    pub fn start(lab: &Lab, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let host = SUBDOMAINS[0];
        let args: Vec<String> = [
            "netns",
            "exec",
            &lab.client,
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total}",
            "--max-time",
            REQUEST_TIMEOUT_S,
            "--resolve",
            &format!("{host}:443:{VPS_V4}"),
            "--cacert",
            &lab.cert().display().to_string(),
            &format!("https://{host}/"),
        ]
        .map(String::from)
        .into();
        let ticker = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let start = Instant::now();
                let mut requests = Vec::new();
                let mut next = start;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < MAX_RUN {
                    let args = args.clone();
                    requests.push(std::thread::spawn(move || request(&args)));
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                requests
            }
        });
        RealClients { stop, ticker }
    }

    /// Stops starting requests, waits for those under way, and returns what they saw.
    pub fn stop(self) -> ClientStats {
        self.stop.store(true, Ordering::Relaxed);
        let requests = self.ticker.join().unwrap_or_default();
        let mut s = ClientStats::default();
        for r in requests {
            s.requests += 1;
            match r.join() {
                Ok(Ok(ms)) => s.ok_ms.push(ms),
                Ok(Err(e)) => s.failures.push(e),
                Err(_) => s.failures.push("request thread panicked".into()),
            }
        }
        s
    }
}

/// One request: its latency in ms if it got HTTP 200.
fn request(args: &[String]) -> Result<f64, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let (code, secs) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    if !out.status.success() || code != "200" {
        return Err(format!(
            "curl {}, HTTP {code}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    secs.parse::<f64>()
        .map(|s| s * 1000.0)
        .map_err(|_| format!("curl's timing {secs:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = ClientStats {
            requests: 101,
            ok_ms: (1..=100).map(f64::from).collect(),
            failures: vec!["x".into()],
        };
        assert_eq!(s.percentile_ms(99.0), Some(99.0));
        assert_eq!(s.percentile_ms(50.0), Some(50.0));
        assert!((s.success_pct() - 99.0099).abs() < 0.01);
        assert_eq!(ClientStats::default().percentile_ms(99.0), None);
    }
}

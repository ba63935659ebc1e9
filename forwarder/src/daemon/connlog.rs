//! The connection log: one JSON line per connection event ("classified" when the kernel
//! learned a connection's host, "ended" when it closed or idled out), rate-limited by a
//! token bucket. Events come from the kernel's `EVENTS` ring buffer and from the flow GC.

use std::{
    fs::OpenOptions,
    io::{self, Write},
    net::IpAddr,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use forwarder_common::{
    ConnEvent, END_FIN, END_IDLE, END_RST, EVENT_CLASSIFIED, EVENT_ENDED, PROTO_TCP, PROTO_UDP,
    words_to_addr,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    dataplane::ring::{Records, Ring},
    model::{
        clock::{WallClock, rfc3339_ms},
        flow::Expired,
        labels::{HostLabels, SharedLabels},
    },
};

/// Lines per second the log may write on average.
pub const DEFAULT_RATE: u32 = 200;
/// Lines the log may write in a burst.
pub const DEFAULT_BURST: u32 = 1000;
/// At most one "lines suppressed" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// `--conn-log` names no target.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnLogTargetError {
    #[error("empty path (use - for standard output)")]
    Empty,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnLogError {
    #[error("cannot open the connection log {path} (--conn-log)")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the connection log {path} is a symbolic link: refused (--conn-log needs the file's real path)"
    )]
    Symlink { path: PathBuf },
    #[error("the connection log {path} is not a regular file (--conn-log needs a file)")]
    NotAFile { path: PathBuf },
}

/// Opens (or creates) the log file for appending: never through a symbolic link at the
/// path (another user able to write the directory would make the daemon append client
/// addresses to a file of their choice), only a regular file, and readable by owner and
/// group at most (0640: it holds client addresses).
fn open_file(path: &Path) -> Result<std::fs::File, ConnLogError> {
    let err = |source: io::Error| ConnLogError::Open {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => ConnLogError::Symlink {
                path: path.to_owned(),
            },
            _ => err(e),
        })?;
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(ConnLogError::NotAFile {
            path: path.to_owned(),
        });
    }
    // An existing file keeps its owner, but loses any permission beyond 0640.
    let mode = meta.permissions().mode() & 0o7777;
    if mode & !0o640 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o640))
            .map_err(err)?;
    }
    Ok(file)
}

/// Where the log goes: `-` for standard output, else a file (appended to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnLogTarget {
    Stdout,
    File(PathBuf),
}

impl FromStr for ConnLogTarget {
    type Err = ConnLogTargetError;
    fn from_str(s: &str) -> Result<Self, ConnLogTargetError> {
        match s {
            "" => Err(ConnLogTargetError::Empty),
            "-" => Ok(ConnLogTarget::Stdout),
            p => Ok(ConnLogTarget::File(PathBuf::from(p))),
        }
    }
}

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct ConnLogCounters {
    pub enabled: bool,
    pub lines: AtomicU64,
    pub suppressed: AtomicU64,
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate == 0` means no limit.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One line of the connection log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnRecord {
    pub ts: String,
    /// `classified` or `ended`.
    pub event: &'static str,
    pub client: IpAddr,
    pub client_port: u16,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// The protocol label of the host statistics it is counted under: `tcp`, or `quic`
    /// for UDP flows (HTTP/3).
    pub protocol: &'static str,
    /// A configured pattern, `other` or `unknown`.
    pub host: String,
    pub verdict: &'static str,
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    pub duration_ms: u64,
    /// `fin`, `rst` or `idle` (ended events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// `HOST_PROTOCOLS`' label for a flow of transport protocol `p`.
fn protocol_label(p: u8) -> &'static str {
    forwarder_common::HOST_PROTOCOLS[usize::from(p == PROTO_UDP)]
}

fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "other",
    }
}

fn duration_ms(first_ns: u64, last_ns: u64) -> u64 {
    if first_ns == 0 {
        return 0;
    }
    last_ns.saturating_sub(first_ns) / 1_000_000
}

impl ConnRecord {
    /// A kernel event; `None` for an event kind or address family this daemon does not
    /// know.
    pub fn from_event(ev: &ConnEvent, labels: &HostLabels, clock: &WallClock) -> Option<Self> {
        let (event, reason) = match ev.kind {
            EVENT_CLASSIFIED => ("classified", None),
            EVENT_ENDED => (
                "ended",
                Some(match ev.reason {
                    END_FIN => "fin",
                    END_RST => "rst",
                    END_IDLE => "idle",
                    _ => "other",
                }),
            ),
            _ => return None,
        };
        Some(Self {
            ts: rfc3339_ms(clock.unix_ms(ev.last_ns)),
            event,
            client: words_to_addr(ev.client_addr, ev.family)?,
            client_port: u16::from_be(ev.client_port),
            proto: proto_name(ev.proto),
            protocol: protocol_label(ev.proto),
            host: labels.label(ev.host_id).to_owned(),
            verdict: "forwarded",
            packets_to_backend: ev.packets_to_backend,
            bytes_to_backend: ev.bytes_to_backend,
            packets_to_client: ev.packets_to_client,
            bytes_to_client: ev.bytes_to_client,
            duration_ms: duration_ms(ev.first_ns, ev.last_ns),
            reason,
        })
    }

    /// A connection the flow GC removed at monotonic time `now_ns`. Closed connections are
    /// stamped with their last packet, idle ones with the time they were declared ended.
    pub fn from_expired(
        e: &Expired,
        labels: &HostLabels,
        clock: &WallClock,
        now_ns: u64,
    ) -> Option<Self> {
        let (client, client_port, proto, family) = match (&e.fwd, &e.rev) {
            (Some((k, _)), _) => (k.src, k.sport, k.proto, k.family),
            (None, Some((k, _))) => (k.dst, k.dport, k.proto, k.family),
            (None, None) => return None,
        };
        let fwd = e.fwd.map(|f| f.1).unwrap_or_default();
        let rev = e.rev.map(|r| r.1).unwrap_or_default();
        let host_id = e.fwd.map_or(rev.host_id, |f| f.1.host_id);
        let first = [fwd.first_ns, rev.first_ns]
            .into_iter()
            .filter(|t| *t != 0)
            .min()
            .unwrap_or(0);
        let last = fwd.last_ns.max(rev.last_ns);
        let reason = e.reason.as_str();
        let ts_ns = if reason == "idle" { now_ns } else { last };
        Some(Self {
            ts: rfc3339_ms(clock.unix_ms(ts_ns)),
            event: "ended",
            client: words_to_addr(client, family)?,
            client_port: u16::from_be(client_port),
            proto: proto_name(proto),
            protocol: protocol_label(proto),
            host: labels.label(host_id).to_owned(),
            verdict: "forwarded",
            packets_to_backend: fwd.packets,
            bytes_to_backend: fwd.bytes,
            packets_to_client: rev.packets,
            bytes_to_client: rev.bytes,
            duration_ms: duration_ms(first, last),
            reason: Some(reason),
        })
    }
}

struct Writer {
    out: Box<dyn Write + Send>,
    bucket: TokenBucket,
    rate: u32,
    suppressed_since_warn: u64,
    last_warn: Option<Instant>,
    last_error: Option<Instant>,
}

/// The connection log (possibly disabled: then nothing is written or counted).
pub struct ConnLog {
    counters: Arc<ConnLogCounters>,
    writer: Option<Mutex<Writer>>,
}

impl ConnLog {
    pub fn disabled() -> Self {
        Self {
            counters: Arc::default(),
            writer: None,
        }
    }

    /// Opens the log; `rate` lines per second (0: unlimited), bursts of
    /// `max(rate, DEFAULT_BURST)`.
    pub fn open(target: &ConnLogTarget, rate: u32) -> Result<Self, ConnLogError> {
        let out: Box<dyn Write + Send> = match target {
            ConnLogTarget::Stdout => Box::new(io::stdout()),
            ConnLogTarget::File(path) => Box::new(open_file(path)?),
        };
        Ok(Self::with_writer(out, rate, rate.max(DEFAULT_BURST)))
    }

    pub fn with_writer(out: Box<dyn Write + Send>, rate: u32, burst: u32) -> Self {
        Self {
            counters: Arc::new(ConnLogCounters {
                enabled: true,
                ..Default::default()
            }),
            writer: Some(Mutex::new(Writer {
                out,
                bucket: TokenBucket::new(rate, burst, Instant::now()),
                rate,
                suppressed_since_warn: 0,
                last_warn: None,
                last_error: None,
            })),
        }
    }

    pub fn counters(&self) -> Arc<ConnLogCounters> {
        Arc::clone(&self.counters)
    }

    pub fn is_enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Writes one line, unless the rate limit says no (then it is counted as suppressed).
    pub fn write(&self, rec: &ConnRecord) {
        self.write_at(rec, Instant::now());
    }

    fn write_at(&self, rec: &ConnRecord, now: Instant) {
        let Some(w) = &self.writer else { return };
        let mut w = w.lock().unwrap_or_else(PoisonError::into_inner);
        if !w.bucket.take(now) {
            self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
            w.suppressed_since_warn += 1;
            if w.last_warn
                .is_none_or(|t| now.saturating_duration_since(t) >= WARN_INTERVAL)
            {
                warn!(
                    "connection log: {} line(s) suppressed by the rate limit ({}/s, --conn-log-rate)",
                    w.suppressed_since_warn, w.rate
                );
                w.suppressed_since_warn = 0;
                w.last_warn = Some(now);
            }
            return;
        }
        let mut line = match serde_json::to_vec(rec) {
            Ok(l) => l,
            Err(e) => {
                warn!("connection log: cannot encode a record: {e}");
                return;
            }
        };
        line.push(b'\n');
        match w.out.write_all(&line).and_then(|()| w.out.flush()) {
            Ok(()) => {
                self.counters.lines.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if w.last_error
                    .is_none_or(|t| now.saturating_duration_since(t) >= WARN_INTERVAL)
                {
                    warn!("connection log: write failed: {e}");
                    w.last_error = Some(now);
                }
            }
        }
    }
}

/// Parses a ring buffer record into a `ConnEvent`; `None` if it is too short.
pub fn parse_event(bytes: &[u8]) -> Option<ConnEvent> {
    crate::dataplane::ring::read_record(bytes)
}

/// Reads the kernel's connection events until `cancel`, writing them to the log (and just
/// draining them when the log is off, so the kernel never sees it full). Each event is
/// written whole; those the kernel submitted before `cancel` are written too.
pub async fn serve_events(
    events: Ring<ConnEvent>,
    log: Arc<ConnLog>,
    labels: SharedLabels,
    cancel: CancellationToken,
) {
    // The kernel submits events without waking us up until the ring holds
    // EVENTS_WAKE_BYTES, so it is drained on a timer as well as when woken.
    let drain = Duration::from_millis(forwarder_common::EVENTS_DRAIN_MS);
    let mut reader = match events.reader(Some(drain)) {
        Ok(r) => r,
        Err(e) => {
            warn!("connection events unavailable: cannot poll their ring buffer: {e}");
            return;
        }
    };
    while let Some(batch) = reader.next_batch_until(&cancel).await {
        write_events(batch, &log, &labels);
    }
    // What the kernel wrote before the stop is logged too.
    write_events(reader.drain_now(), &log, &labels);
}

fn write_events(batch: Records<'_, ConnEvent>, log: &ConnLog, labels: &SharedLabels) {
    let clock = WallClock::now();
    let labels = labels.get();
    for ev in batch {
        if !log.is_enabled() {
            continue;
        }
        if let Some(rec) = ConnRecord::from_event(&ev, &labels, &clock) {
            log.write(&rec);
        }
    }
}

#[cfg(test)]
mod tests;

//! Host policy `local`: connections whose name (SNI / Host) belongs to a `local` host are
//! served by the VPS's own web server instead of going home.
//!
//! The name is only known from the client's first payload, after its TCP handshake went
//! home. The kernel programs therefore record both SYNs' options, hold back the segment
//! that names the host, and hand it (with any earlier segments of the same first payload)
//! to this module. Here the connection is rebuilt as a local socket in TCP repair mode,
//! with the sequence numbers, window scaling, SACK and timestamps the client agreed with
//! the backend, so that the client carries on without noticing. The daemon then relays
//! it to the local server (by default whatever listens on the address and port the
//! client connected to), replaying the payload first.
//!
//! Anything that keeps a connection from being rebuilt (missing handshake, lost segment,
//! a failed system call, no local server) leaves it cut: the VPS's stack resets it and the
//! client fails fast, as with policy `drop`.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use forwarder_common::{
    FAMILY_V4, FAMILY_V6, FlowKey,
    handoff::{
        HANDOFF_LOCAL, HANDOFF_SEGMENT, HandoffEvent, Handshake, Negotiated, parse_tcp_options,
    },
    words_to_addr,
};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use self::relay::{Ended, end_wait, forget_flow, relay};
use crate::{
    dataplane::{events::HandoffMaps, maps::Maps},
    sys::socket::{self as sys, cvt, setopt, sockaddr},
};

/// How long earlier segments of a first payload wait for the segment naming the host.
const PENDING_TTL: Duration = Duration::from_secs(10);
/// Connections whose first payload spans segments, tracked at once.
const PENDING_MAX: usize = 1024;
/// Of those, from one client address: one client cannot crowd out the others. (Only
/// connections whose handshake with home provably completed get here: see
/// `forwarder_ebpf::handoff::proven`.)
const PENDING_PER_SOURCE: usize = 32;
/// Bytes kept per such connection: the name reader gives up after four segments.
const PENDING_BYTES_MAX: usize = 4 * forwarder_common::handoff::HANDOFF_PAYLOAD_MAX;
/// How long connecting to the local server may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the flow entries of a connection served locally outlive it, so that its
/// closing handshake still reaches the local socket.
const LINGER: Duration = Duration::from_secs(10);
/// How often a refusal for want of relays is logged at most.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Outcomes, for the metrics.
#[derive(Debug, Default)]
pub struct HandoffStats {
    pub served: AtomicU64,
    pub failed: AtomicU64,
    pub active: AtomicU64,
    /// Hand-offs refused because `budget` relays were running.
    pub refused: AtomicU64,
    /// Relays closed for idling past the idle timeout, or for running past the lifetime.
    pub closed_idle: AtomicU64,
    pub closed_lifetime: AtomicU64,
    /// Relays allowed at once (see [`relay_budget`]).
    pub budget: AtomicU64,
}

/// How the hand-off serves connections: the bounds of each relay, and how many at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandoffSettings {
    pub limits: RelayLimits,
    pub budget: usize,
}

/// A connection rebuilt on the VPS: everything the repair needs, in host byte order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebuild {
    /// The VPS's address the client connected to, and the client.
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Next sequence number to send (the backend's, as the client expects it).
    pub snd_nxt: u32,
    /// Next sequence number expected from the client (after the held-back segment).
    pub rcv_nxt: u32,
    pub negotiated: Negotiated,
    /// The client's window as it advertised it last, scaled.
    pub snd_wnd: u32,
    /// The timestamp the local socket continues from (the backend's last one + 1).
    pub tsval: Option<u32>,
    /// The client's payload so far, to replay to the local server.
    pub payload: Vec<u8>,
}

/// Why a connection could not be rebuilt.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RebuildError {
    #[error("no handshake recorded (it started before policy \"local\" was set, or was evicted)")]
    NoHandshake,
    #[error("the backend's SYN-ACK was not seen")]
    NoSynAck,
    #[error("the segment does not acknowledge the backend's SYN-ACK (its source may be forged)")]
    Unproven,
    #[error("malformed TCP options in the {0}")]
    BadOptions(&'static str),
    #[error("bytes of the first payload went home before the name and are missing here")]
    MissingBytes,
}

/// A key's address and port; the kernel hands off IPv4 and IPv6 only, so anything but
/// IPv4 is read as IPv6.
fn addr(a: &[u32; 4], family: u8, port: u16) -> SocketAddr {
    let family = if family == FAMILY_V4 {
        FAMILY_V4
    } else {
        FAMILY_V6
    };
    let ip = words_to_addr(*a, family).unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    SocketAddr::new(ip, u16::from_be(port))
}

impl Rebuild {
    /// Puts together the repair of `ev`'s connection from its handshake and the bytes that
    /// went home before it (`earlier`, starting right after the client's SYN).
    pub fn new(ev: &HandoffEvent, hs: &Handshake, earlier: &[u8]) -> Result<Self, RebuildError> {
        let syn_opts = &hs.syn_opts[..(hs.syn_len as usize).min(hs.syn_opts.len())];
        let synack_opts = &hs.synack_opts[..(hs.synack_len as usize).min(hs.synack_opts.len())];
        if hs.synack_seen == 0 {
            return Err(RebuildError::NoSynAck);
        }
        // The kernel hands over only segments that prove this; checked again here, as
        // the sequence number the rebuilt socket sends from is the acknowledgment's.
        if !hs.proves(ev.ack()) {
            return Err(RebuildError::Unproven);
        }
        let syn = parse_tcp_options(syn_opts).map_err(|_| RebuildError::BadOptions("SYN"))?;
        let synack =
            parse_tcp_options(synack_opts).map_err(|_| RebuildError::BadOptions("SYN-ACK"))?;
        let seg =
            parse_tcp_options(ev.options()).map_err(|_| RebuildError::BadOptions("segment"))?;
        let negotiated = Negotiated::from_syns(&syn, &synack);
        let first_seq = u32::from_be(hs.syn_seq).wrapping_add(1);
        if ev.seq().wrapping_sub(first_seq) as usize != earlier.len() {
            return Err(RebuildError::MissingBytes);
        }
        let mut payload = Vec::with_capacity(earlier.len() + ev.payload().len());
        payload.extend_from_slice(earlier);
        payload.extend_from_slice(ev.payload());
        let shift = negotiated.wscale.map_or(0, |(c, _)| c);
        Ok(Rebuild {
            local: addr(&ev.key.dst, ev.key.family, ev.key.dport),
            peer: addr(&ev.key.src, ev.key.family, ev.key.sport),
            snd_nxt: ev.ack(),
            rcv_nxt: ev.seq().wrapping_add(ev.payload().len() as u32),
            negotiated,
            snd_wnd: u32::from(ev.window()) << shift,
            tsval: if negotiated.timestamps {
                seg.timestamp.map(|(_, ecr)| ecr.wrapping_add(1))
            } else {
                None
            },
            payload,
        })
    }

    /// The local socket, established, as the client knows the connection.
    pub fn socket(&self) -> io::Result<std::net::TcpStream> {
        let v4 = self.local.is_ipv4();
        // SAFETY: a plain socket(2) call; `owned` checks the result.
        let fd = sys::owned(unsafe {
            libc::socket(
                if v4 { libc::AF_INET } else { libc::AF_INET6 },
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        let s = fd.as_raw_fd();
        // Repair mode: bind, connect and the queues' sequence numbers take effect without a
        // packet being sent, and bind may share the address with a listening server (as
        // long as SO_REUSEADDR is left alone: it would undo that).
        setopt(s, libc::SOL_TCP, libc::TCP_REPAIR, 1i32)?;
        if !v4 {
            setopt(s, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1i32)?;
        }
        let (local, local_len) = sockaddr(&self.local);
        cvt(unsafe { libc::bind(s, (&raw const local).cast(), local_len) })?;
        const TCP_RECV_QUEUE: i32 = 1;
        const TCP_SEND_QUEUE: i32 = 2;
        setopt(s, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        setopt(s, libc::SOL_TCP, libc::TCP_QUEUE_SEQ, self.snd_nxt)?;
        setopt(s, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
        setopt(s, libc::SOL_TCP, libc::TCP_QUEUE_SEQ, self.rcv_nxt)?;
        let (peer, peer_len) = sockaddr(&self.peer);
        cvt(unsafe { libc::connect(s, (&raw const peer).cast(), peer_len) })?;
        let n = &self.negotiated;
        let mut opts = vec![RepairOpt {
            code: 2,
            val: u32::from(n.client_mss),
        }];
        if let Some((client, backend)) = n.wscale {
            // Low half: the peer's shift (applied to its windows); high half: ours, which
            // must be the backend's, as the client scales our windows by it.
            opts.push(RepairOpt {
                code: 3,
                val: u32::from(client) | (u32::from(backend) << 16),
            });
        }
        if n.sack {
            opts.push(RepairOpt { code: 4, val: 0 });
        }
        if n.timestamps {
            opts.push(RepairOpt { code: 8, val: 0 });
        }
        cvt(unsafe {
            libc::setsockopt(
                s,
                libc::SOL_TCP,
                libc::TCP_REPAIR_OPTIONS,
                opts.as_ptr().cast(),
                (opts.len() * size_of::<RepairOpt>()) as libc::socklen_t,
            )
        })?;
        if let Some(ts) = self.tsval {
            // The client drops segments whose timestamp is older than the backend's last
            // (PAWS): continue from there.
            setopt(s, libc::SOL_TCP, libc::TCP_TIMESTAMP, ts)?;
        }
        let backend_shift = n.wscale.map_or(0, |(_, b)| b);
        let window = RepairWindow {
            snd_wl1: self.rcv_nxt.wrapping_sub(1),
            snd_wnd: self.snd_wnd,
            max_window: self.snd_wnd,
            rcv_wnd: 65535u32 << backend_shift.min(2),
            rcv_wup: self.rcv_nxt,
        };
        setopt(s, libc::SOL_TCP, libc::TCP_REPAIR_WINDOW, window)?;
        // Leaving repair mode sends a window probe: it acknowledges the held-back segment,
        // so the client does not even retransmit it.
        setopt(s, libc::SOL_TCP, libc::TCP_REPAIR, 0i32)?;
        let stream = std::net::TcpStream::from(fd);
        stream.set_nonblocking(true)?;
        Ok(stream)
    }
}

#[repr(C)]
struct RepairOpt {
    code: u32,
    val: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RepairWindow {
    snd_wl1: u32,
    snd_wnd: u32,
    max_window: u32,
    rcv_wnd: u32,
    rcv_wup: u32,
}

/// Earlier segments of first payloads still being read, by connection.
#[derive(Default)]
pub struct Pending {
    flows: HashMap<FlowKey, (Instant, u32, Vec<u8>)>,
}

impl Pending {
    /// Keeps a segment that went home before its connection's host was known.
    pub fn add(&mut self, ev: &HandoffEvent, now: Instant) {
        if let Some((_, next, bytes)) = self.flows.get_mut(&ev.key) {
            if ev.seq() == *next && bytes.len() + ev.payload().len() <= PENDING_BYTES_MAX {
                bytes.extend_from_slice(ev.payload());
                *next = next.wrapping_add(ev.payload().len() as u32);
            } else {
                // Out of order or too long: the bytes cannot be replayed whole.
                self.flows.remove(&ev.key);
            }
            return;
        }
        self.expire(now);
        if self.flows.len() >= PENDING_MAX {
            return;
        }
        let same_source = self
            .flows
            .keys()
            .filter(|k| k.src == ev.key.src && k.family == ev.key.family)
            .count();
        if same_source >= PENDING_PER_SOURCE {
            return;
        }
        let next = ev.seq().wrapping_add(ev.payload().len() as u32);
        self.flows
            .insert(ev.key, (now, next, ev.payload().to_vec()));
    }

    /// The bytes before `ev`, if they are all here (empty when `ev` is the first).
    pub fn take(&mut self, ev: &HandoffEvent) -> Vec<u8> {
        match self.flows.remove(&ev.key) {
            Some((_, next, bytes)) if next == ev.seq() => bytes,
            _ => Vec::new(),
        }
    }

    pub fn expire(&mut self, now: Instant) {
        self.flows
            .retain(|_, (at, _, _)| now.duration_since(*at) < PENDING_TTL);
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

/// Serves hand-offs until `cancel`. The connections served locally are spawned on
/// `tracker`; on `cancel` they are closed (see [`serve_connection`]).
pub async fn serve(
    hm: HandoffMaps,
    maps: Arc<Maps>,
    stats: Arc<HandoffStats>,
    settings: HandoffSettings,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let HandoffMaps {
        events,
        mut handshakes,
    } = hm;
    let mut reader = match events.reader(None) {
        Ok(r) => r,
        Err(e) => {
            warn!("host policy \"local\" unavailable: cannot poll the hand-off ring buffer: {e}");
            return;
        }
    };
    let mut pending = Pending::default();
    let limit = Arc::new(Semaphore::new(settings.budget));
    stats
        .budget
        .store(settings.budget as u64, Ordering::Relaxed);
    let mut refused_logged: Option<(Instant, u64)> = None;
    loop {
        let Some(batch) = reader.next_batch_until(&cancel).await else {
            return;
        };
        let now = Instant::now();
        pending.expire(now);
        for ev in batch {
            match ev.kind {
                HANDOFF_SEGMENT => pending.add(&ev, now),
                HANDOFF_LOCAL => {
                    // Whatever happens to the client's side, home's is over.
                    if let Err(e) = reset_backend(&maps, &ev) {
                        warn!(client = %addr(&ev.key.src, ev.key.family, ev.key.sport), "resetting the backend's side of a connection served locally failed (home keeps it open until its own timeout): {e}");
                    }
                    let earlier = pending.take(&ev);
                    let rebuilt = match handshakes.take(&ev.key) {
                        Some(hs) => Rebuild::new(&ev, &hs, &earlier),
                        None => Err(RebuildError::NoHandshake),
                    };
                    match (rebuilt, limit.clone().try_acquire_owned()) {
                        (Ok(r), Ok(permit)) => {
                            let (maps, stats) = (maps.clone(), stats.clone());
                            let cancel = cancel.child_token();
                            let limits = settings.limits;
                            tracker.spawn(async move {
                                serve_connection(r, ev.key, &maps, &stats, limits, &cancel).await;
                                drop(permit);
                            });
                        }
                        (Ok(r), Err(_)) => {
                            end_wait(&maps, &ev.key);
                            let n = stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
                            // Once per REFUSED_LOG_EVERY: a visitor holding every relay
                            // must not flood the log as well.
                            let due = refused_logged
                                .is_none_or(|(at, _)| now.duration_since(at) >= REFUSED_LOG_EVERY);
                            if due {
                                let since = refused_logged.map_or(n, |(_, before)| n - before);
                                refused_logged = Some((now, n));
                                warn!(client = %r.peer, refused = since, budget = settings.budget, "every relay for host policy \"local\" is in use; connections are reset (see [local] max_connections and the file descriptor limit)");
                            }
                        }
                        (Err(e), _) => {
                            end_wait(&maps, &ev.key);
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            warn!(client = %addr(&ev.key.src, ev.key.family, ev.key.sport), "cannot serve the connection locally, it is reset: {e}");
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Resets home's side of `ev`'s connection through the tunnel it was forwarded to (see
/// [`reset::reset_backend`]).
fn reset_backend(maps: &Maps, ev: &HandoffEvent) -> io::Result<()> {
    let fwd = maps
        .flows()
        .get(&ev.key)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let client = addr(&ev.key.src, ev.key.family, ev.key.sport);
    let backend = addr(&fwd.nat_addr, ev.key.family, fwd.nat_port);
    // Home expects the held-back segment next, and has sent nothing past its SYN-ACK.
    reset::reset_backend(client, backend, ev.seq(), ev.ack(), fwd.ifindex)
}

/// Why a rebuilt connection could not be served.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("connecting to the local server {upstream}: {error}")]
    Connect {
        upstream: SocketAddr,
        error: io::Error,
    },
    #[error("rebuilding the connection: {0}")]
    Rebuild(io::Error),
    #[error("the daemon is stopping")]
    Stopping,
}

/// Rebuilds the connection and relays it to the local server until it ends (see
/// [`relay`]): then both sockets are closed and, unless the daemon is stopping, the flow
/// entries removed after [`LINGER`]. On `cancel` they are left to the kernel's closing
/// handshake (and the flow GC), as when the daemon exits.
async fn serve_connection(
    r: Rebuild,
    key: FlowKey,
    maps: &Maps,
    stats: &HandoffStats,
    limits: RelayLimits,
    cancel: &CancellationToken,
) {
    let upstream = r.local;
    let connecting = async {
        let up = tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(upstream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
            .and_then(|c| c)
            .map_err(|error| ServeError::Connect { upstream, error })?;
        let client = r
            .socket()
            .and_then(TcpStream::from_std)
            .map_err(ServeError::Rebuild)?;
        Ok((up, client))
    };
    let connected = tokio::select! {
        c = connecting => c,
        () = cancel.cancelled() => Err(ServeError::Stopping),
    };
    // Whatever happened, the client's packets may reach the VPS's stack now: the new
    // socket, or nothing (which resets the connection).
    end_wait(maps, &key);
    let (mut up, client) = match connected {
        Ok(c) => c,
        Err(e) => {
            // Left cut: the VPS's stack resets the client's next segment.
            stats.failed.fetch_add(1, Ordering::Relaxed);
            warn!(client = %r.peer, "cannot serve the connection locally, it is reset: {e}");
            return;
        }
    };
    stats.served.fetch_add(1, Ordering::Relaxed);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let _ = (up.set_nodelay(true), client.set_nodelay(true));
    debug!(client = %r.peer, %upstream, replayed = r.payload.len(), "serving a connection locally");
    let ended = match up.write_all(&r.payload).await {
        Ok(()) => relay(client, up, limits, cancel).await,
        Err(e) => Ended::Closed(Err(e)),
    };
    stats.active.fetch_sub(1, Ordering::Relaxed);
    match ended {
        Ended::Closed(Err(e)) => debug!(client = %r.peer, "local connection ended: {e}"),
        Ended::Closed(Ok(_)) => {}
        Ended::Idle => {
            stats.closed_idle.fetch_add(1, Ordering::Relaxed);
            debug!(client = %r.peer, "local connection closed: idle for {:?}", limits.idle);
        }
        Ended::Lifetime => {
            stats.closed_lifetime.fetch_add(1, Ordering::Relaxed);
            debug!(client = %r.peer, "local connection closed: open for {:?}", limits.lifetime);
        }
        Ended::Stopping => {
            debug!(client = %r.peer, "local connection closed: the daemon is stopping");
            return;
        }
    }
    tokio::select! {
        () = tokio::time::sleep(LINGER) => forget_flow(maps, &key),
        () = cancel.cancelled() => {}
    }
}

mod relay;
mod reset;
#[cfg(test)]
mod tests;

pub use relay::{FD_RESERVE, RelayLimits, relay_budget};

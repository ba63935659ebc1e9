//! Relaying a connection served locally to the VPS's server until either side ends it,
//! it idles too long, it has run too long, or the daemon stops; how many relays may run
//! at once; the flow entries around a relay.

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::Duration,
};

use forwarder_common::{FLOW_F_HANDOFF_WAIT, FlowKey};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::dataplane::maps::Maps;

/// File descriptors the daemon keeps for everything but relays: the kernel object's maps,
/// programs and links, ring buffers, the control and metrics sockets and their clients,
/// health probes, the connection log, and relays still connecting.
pub const FD_RESERVE: u64 = 512;

/// How many relays may run at once: `configured`, lowered so that two descriptors per
/// relay plus [`FD_RESERVE`] stay within the file descriptor limit `nofile` (at least 1).
pub fn relay_budget(nofile: u64, configured: u32) -> usize {
    let by_fds = nofile.saturating_sub(FD_RESERVE) / 2;
    by_fds.clamp(1, u64::from(configured.max(1))) as usize
}

/// What bounds one relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// No byte in either direction for this long ends it.
    pub idle: Duration,
    /// It ends this long after it started, whatever it carries.
    pub lifetime: Duration,
}

/// Why a relay ended.
#[derive(Debug)]
pub enum Ended {
    /// Both sides closed (`Ok`, bytes each way), or one failed.
    Closed(io::Result<(u64, u64)>),
    Idle,
    Lifetime,
    Stopping,
}

/// A stream that notes the time of the last byte read from it in `last` (milliseconds
/// since `epoch`), shared by both sides of a relay.
struct Tracked<'a, S> {
    inner: S,
    last: &'a AtomicU64,
    epoch: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = self.epoch.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Returns once no byte was read for `idle` (by `last`, milliseconds since `epoch`).
async fn idle_for(last: &AtomicU64, epoch: Instant, idle: Duration) {
    loop {
        let deadline = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Copies both ways between `a` and `b` until one of the [`Ended`] reasons.
pub async fn relay<A, B>(a: A, b: B, limits: RelayLimits, cancel: &CancellationToken) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let mut a = Tracked {
        inner: a,
        last: &last,
        epoch,
    };
    let mut b = Tracked {
        inner: b,
        last: &last,
        epoch,
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => Ended::Closed(r),
        () = idle_for(&last, epoch, limits.idle) => Ended::Idle,
        () = tokio::time::sleep(limits.lifetime) => Ended::Lifetime,
        () = cancel.cancelled() => Ended::Stopping,
    }
}

/// Lets the client's packets of `key` through to the VPS's stack.
pub(super) fn end_wait(maps: &Maps, key: &FlowKey) {
    let mut flows = maps.flows().lock();
    if let Ok(mut v) = flows.get(key)
        && v.flags & FLOW_F_HANDOFF_WAIT != 0
    {
        v.flags &= !FLOW_F_HANDOFF_WAIT;
        // Counts the kernel added between the read and this write are lost; the flags
        // must be right.
        let _ = flows.insert(key, v);
    }
}

/// Removes both flow entries of a connection the daemon served: the client's address and
/// port may start a new connection, which must go wherever the rules say then.
pub(super) fn forget_flow(maps: &Maps, key: &FlowKey) {
    let mut flows = maps.flows().lock();
    if let Ok(v) = flows.get(key) {
        let _ = flows.remove(&key.reversed(&v));
    }
    let _ = flows.remove(key);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const LIMITS: RelayLimits = RelayLimits {
        idle: Duration::from_secs(5),
        lifetime: Duration::from_secs(60),
    };

    #[test]
    fn the_budget_stays_below_the_descriptor_limit() {
        // systemd's default soft limit: 256 relays, 512 descriptors kept.
        assert_eq!(relay_budget(1024, 4096), 256);
        assert_eq!(relay_budget(16384, 4096), 4096, "the configured bound");
        assert_eq!(relay_budget(16384, 100), 100);
        assert_eq!(relay_budget(4096, 4096), 1792);
        assert_eq!(relay_budget(100, 4096), 1, "never none");
        for nofile in [600u64, 1024, 2048, 65536] {
            let b = relay_budget(nofile, u32::MAX) as u64;
            assert!(2 * b + FD_RESERVE <= nofile.max(FD_RESERVE + 2), "{nofile}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_relay_ends_after_the_idle_timeout_and_traffic_keeps_it_open() {
        let (client, mut client_end) = duplex(1024);
        let (server, mut server_end) = duplex(1024);
        let started = Instant::now();
        let relaying = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            (
                relay(client, server, LIMITS, &cancel).await,
                started.elapsed(),
            )
        });
        // Bytes every 3 s for 12 s, each way in turn: never 5 s without one.
        for i in 0..4u8 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let mut b = [0u8; 1];
            if i % 2 == 0 {
                client_end.write_all(&[i]).await.unwrap();
                server_end.read_exact(&mut b).await.unwrap();
            } else {
                server_end.write_all(&[i]).await.unwrap();
                client_end.read_exact(&mut b).await.unwrap();
            }
            assert_eq!(b, [i]);
        }
        let (ended, after) = relaying.await.unwrap();
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
        // The last byte at 12 s, then 5 s of silence.
        assert_eq!(after, Duration::from_secs(17), "{ended:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_relay_ends_at_its_lifetime() {
        let (client, mut client_end) = duplex(1024);
        let (server, mut server_end) = duplex(1024);
        let started = Instant::now();
        let relaying = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            (
                relay(client, server, LIMITS, &cancel).await,
                started.elapsed(),
            )
        });
        let mut b = [0u8; 1];
        let ended = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if client_end.write_all(b"x").await.is_err()
                || server_end.read_exact(&mut b).await.is_err()
            {
                break relaying.await.unwrap();
            }
            if relaying.is_finished() {
                break relaying.await.unwrap();
            }
        };
        assert!(matches!(ended.0, Ended::Lifetime), "{:?}", ended.0);
        assert_eq!(ended.1, LIMITS.lifetime);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_both_sides_ends_the_relay_with_the_byte_counts() {
        let (client, mut client_end) = duplex(1024);
        let (server, mut server_end) = duplex(1024);
        let relaying = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            relay(client, server, LIMITS, &cancel).await
        });
        client_end.write_all(b"hello").await.unwrap();
        client_end.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_end.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        server_end.write_all(b"bye").await.unwrap();
        server_end.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_end.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"bye");
        match relaying.await.unwrap() {
            Ended::Closed(Ok((5, 3))) => {}
            e => panic!("{e:?}"),
        }
    }
}

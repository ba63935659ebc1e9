//! The daemon's half of QUIC classification: it reads the Initial datagrams the kernel
//! copies into `QUIC_INITIALS`, decrypts them (`forwarder_common::quic`), reassembles the
//! ClientHello across datagrams, matches its SNI against the host table, and writes the
//! verdict into `QUIC_VERDICTS`, where the connection's next client packet takes it.
//!
//! What a flood of made-up Initials can cost is bounded three times over: the kernel's
//! per-CPU rate limit on the copies, the number of connections waiting here
//! (`MAX_PENDING`, oldest evicted first) and how long one may wait (`PENDING_TTL`), and the
//! bytes one connection may reassemble (`quic::MAX_CRYPTO`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use forwarder_common::{
    FlowKey, HOST_OTHER, HostKey, QUIC_V_BAD_NAME, QUIC_V_NAME, QUIC_V_NO_SNI, QUIC_V_UNDECODABLE,
    QuicVerdict,
    host::{NameMatch, match_name},
    quic::{Assembler, InitialError, Progress2},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    api::stats::QuicStatsSnapshot,
    dataplane::{events::QuicMaps, maps::Maps},
};

/// Connections whose ClientHello is still being reassembled, at most.
pub const MAX_PENDING: usize = 4096;
/// How long a connection may wait for the rest of its ClientHello. Past the kernel's own
/// wait (`QUIC_VERDICT_WAIT_NS`) a verdict has no taker.
pub const PENDING_TTL: Duration = Duration::from_secs(4);

/// What the daemon has done with Initials, for `/stats.json` and the metrics.
#[derive(Debug, Default)]
pub struct QuicStats {
    /// Initial datagrams read from the ring buffer.
    pub datagrams: AtomicU64,
    /// Connections classified by their SNI (configured host or `other`).
    pub named: AtomicU64,
    pub no_sni: AtomicU64,
    pub undecodable: AtomicU64,
    /// Connections dropped from the pending set to make room, or after `PENDING_TTL`.
    pub expired: AtomicU64,
    /// Verdicts the kernel's map refused.
    pub verdicts_failed: AtomicU64,
    /// Connections waiting for more of their ClientHello now.
    pub pending: AtomicU64,
}

impl QuicStats {
    pub fn snapshot(&self) -> QuicStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QuicStatsSnapshot {
            datagrams: l(&self.datagrams),
            named: l(&self.named),
            no_sni: l(&self.no_sni),
            undecodable: l(&self.undecodable),
            expired: l(&self.expired),
            verdicts_failed: l(&self.verdicts_failed),
            pending: l(&self.pending),
        }
    }
}

/// The connections being reassembled, oldest first.
#[derive(Default)]
pub struct Pending {
    conns: HashMap<FlowKey, (Instant, Assembler)>,
    order: VecDeque<(Instant, FlowKey)>,
}

/// What one datagram decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Wait for more of the ClientHello.
    Wait,
    /// The connection's verdict (a `QUIC_V_*` code and, for a name, the host).
    Verdict(QuicVerdict),
}

impl Pending {
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Feeds one Initial datagram of `key`'s connection. `host` matches a name against
    /// the host table.
    pub fn feed(
        &mut self,
        key: &FlowKey,
        datagram: &[u8],
        now: Instant,
        stats: &QuicStats,
        host: impl FnMut(&HostKey) -> Option<u32>,
    ) -> Decision {
        self.expire(now, stats);
        if !self.conns.contains_key(key) {
            while self.conns.len() >= MAX_PENDING {
                self.evict_oldest(stats);
            }
            self.conns.insert(*key, (now, Assembler::new()));
            self.order.push_back((now, *key));
        }
        let (_, asm) = self.conns.get_mut(key).expect("inserted above");
        let r = asm.push(datagram);
        let progressed = asm.packets > 0;
        let d = match r {
            Ok(Progress2::NeedMore) => return Decision::Wait,
            Ok(Progress2::Name(name)) => {
                stats.named.fetch_add(1, Ordering::Relaxed);
                let (code, host_id) = match match_name(name.as_bytes(), 0, name.len(), host) {
                    NameMatch::Host(id) => (QUIC_V_NAME, id),
                    NameMatch::Other => (QUIC_V_NAME, HOST_OTHER),
                    NameMatch::Bad => (QUIC_V_BAD_NAME, HOST_OTHER),
                };
                QuicVerdict { code, host_id }
            }
            Ok(Progress2::NoSni) => {
                stats.no_sni.fetch_add(1, Ordering::Relaxed);
                QuicVerdict {
                    code: QUIC_V_NO_SNI,
                    host_id: 0,
                }
            }
            // A datagram that does not decrypt, after others did, may be a stray (another
            // connection's, a corrupted retransmission): the ones that did still count.
            // What decrypted content says (frames, CRYPTO data) is authenticated, and final.
            Err(e)
                if progressed
                    && !matches!(
                        e,
                        InitialError::BadFrame
                            | InitialError::BadCrypto
                            | InitialError::NotClientHello
                    ) =>
            {
                return Decision::Wait;
            }
            Err(e) => {
                debug!(client = ?key.src, "QUIC Initial not decoded: {e}");
                stats.undecodable.fetch_add(1, Ordering::Relaxed);
                QuicVerdict {
                    code: QUIC_V_UNDECODABLE,
                    host_id: 0,
                }
            }
        };
        self.conns.remove(key);
        Decision::Verdict(d)
    }

    fn expire(&mut self, now: Instant, stats: &QuicStats) {
        while let Some(&(t, key)) = self.order.front() {
            if now.duration_since(t) < PENDING_TTL {
                break;
            }
            self.order.pop_front();
            // The entry may be a newer one for the same key (a verdict removed the old).
            if self.conns.get(&key).is_some_and(|(since, _)| *since == t) {
                self.conns.remove(&key);
                stats.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn evict_oldest(&mut self, stats: &QuicStats) {
        while let Some((t, key)) = self.order.pop_front() {
            if self.conns.get(&key).is_some_and(|(since, _)| *since == t) {
                self.conns.remove(&key);
                stats.expired.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Serves the Initial ring buffer until `cancel`; a datagram being decoded is finished
/// and its verdict written.
pub async fn serve(
    qm: QuicMaps,
    maps: Arc<Maps>,
    stats: Arc<QuicStats>,
    cancel: CancellationToken,
) {
    let QuicMaps {
        initials,
        mut verdicts,
    } = qm;
    let mut reader = match initials.reader(None) {
        Ok(r) => r,
        Err(e) => {
            warn!("QUIC connections are not classified: cannot poll the Initial ring buffer: {e}");
            return;
        }
    };
    let mut pending = Pending::default();
    loop {
        let Some(batch) = reader.next_batch_until(&cancel).await else {
            return;
        };
        let now = Instant::now();
        for ev in batch {
            stats.datagrams.fetch_add(1, Ordering::Relaxed);
            let len = (ev.len as usize).min(ev.data.len());
            let hosts = maps.host_ids();
            if let Decision::Verdict(v) =
                pending.feed(&ev.key, &ev.data[..len], now, &stats, |k| hosts.get(k))
                && let Err(e) = verdicts.set(ev.key, v)
            {
                stats.verdicts_failed.fetch_add(1, Ordering::Relaxed);
                debug!("writing a QUIC verdict: {e}");
            }
        }
        stats.pending.store(pending.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use forwarder_common::quic::{VERSION_1, crypto_frame, seal_initial};

    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: [0x0a00_0001, 0, 0, 0],
            dst: [0xc000_0201, 0, 0, 0],
            sport: port.to_be(),
            dport: 443u16.to_be(),
            proto: forwarder_common::PROTO_UDP,
            family: forwarder_common::FAMILY_V4,
            _pad: [0; 2],
        }
    }

    fn hello(name: &str) -> Vec<u8> {
        forwarder_common::samples::browser_hello(name.as_bytes(), 0x1a1a, 1216, 2)[5..].to_vec()
    }

    /// A host table with `app.example.com` as host 2 and `*.example.org` as host 3.
    fn table(k: &HostKey) -> Option<u32> {
        let exact = forwarder_common::host::HostPattern::parse("app.example.com").unwrap();
        let wild = forwarder_common::host::HostPattern::parse("*.example.org").unwrap();
        if *k == exact.key() {
            Some(2)
        } else if *k == wild.key() {
            Some(3)
        } else {
            None
        }
    }

    #[test]
    fn a_two_datagram_client_hello_names_its_host() {
        let stats = QuicStats::default();
        let mut p = Pending::default();
        let ch = hello("App.Example.com");
        let a = seal_initial(VERSION_1, &[1; 8], &[], 0, &crypto_frame(0, &ch[..1000]));
        let b = seal_initial(VERSION_1, &[1; 8], &[], 1, &crypto_frame(1000, &ch[1000..]));
        let now = Instant::now();
        assert_eq!(p.feed(&key(1), &a, now, &stats, table), Decision::Wait);
        assert_eq!(p.len(), 1);
        let v = p.feed(&key(1), &b, now, &stats, table);
        assert_eq!(
            v,
            Decision::Verdict(QuicVerdict {
                code: QUIC_V_NAME,
                host_id: 2
            })
        );
        assert!(p.is_empty());
        let other = seal_initial(
            VERSION_1,
            &[2; 8],
            &[],
            0,
            &crypto_frame(0, &hello("x.example.net")),
        );
        assert_eq!(
            p.feed(&key(2), &other, now, &stats, table),
            Decision::Verdict(QuicVerdict {
                code: QUIC_V_NAME,
                host_id: HOST_OTHER
            })
        );
        let wild = seal_initial(
            VERSION_1,
            &[3; 8],
            &[],
            0,
            &crypto_frame(0, &hello("a.b.example.org")),
        );
        assert_eq!(
            p.feed(&key(3), &wild, now, &stats, table),
            Decision::Verdict(QuicVerdict {
                code: QUIC_V_NAME,
                host_id: 3
            })
        );
        assert_eq!(stats.named.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn garbage_is_undecodable_at_once_but_a_stray_after_progress_is_ignored() {
        let stats = QuicStats::default();
        let mut p = Pending::default();
        let now = Instant::now();
        let mut junk = vec![0xc3, 0, 0, 0, 1, 8];
        junk.resize(1200, 0x42);
        assert_eq!(
            p.feed(&key(1), &junk, now, &stats, table),
            Decision::Verdict(QuicVerdict {
                code: QUIC_V_UNDECODABLE,
                host_id: 0
            })
        );
        let ch = hello("app.example.com");
        let a = seal_initial(VERSION_1, &[1; 8], &[], 0, &crypto_frame(0, &ch[..900]));
        assert_eq!(p.feed(&key(2), &a, now, &stats, table), Decision::Wait);
        assert_eq!(p.feed(&key(2), &junk, now, &stats, table), Decision::Wait);
        let b = seal_initial(VERSION_1, &[1; 8], &[], 1, &crypto_frame(900, &ch[900..]));
        assert!(matches!(
            p.feed(&key(2), &b, now, &stats, table),
            Decision::Verdict(QuicVerdict {
                code: QUIC_V_NAME,
                host_id: 2
            })
        ));
        assert_eq!(stats.undecodable.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_flood_of_half_client_hellos_stays_bounded() {
        let stats = QuicStats::default();
        let mut p = Pending::default();
        let ch = hello("app.example.com");
        let half = seal_initial(VERSION_1, &[1; 8], &[], 0, &crypto_frame(0, &ch[..900]));
        let start = Instant::now();
        for i in 0..(MAX_PENDING as u32 + 500) {
            let mut k = key(1);
            k.src[1] = i;
            assert_eq!(p.feed(&k, &half, start, &stats, table), Decision::Wait);
            assert!(p.len() <= MAX_PENDING);
        }
        assert_eq!(stats.expired.load(Ordering::Relaxed), 500);
        // After the TTL the next datagram clears them all.
        let later = start + PENDING_TTL;
        assert_eq!(p.feed(&key(9), &half, later, &stats, table), Decision::Wait);
        assert_eq!(p.len(), 1);
        assert_eq!(p.order.len(), 1);
    }
}

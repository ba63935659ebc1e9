//! The sources the public interface never opens a flow for, beyond the fixed ranges the
//! kernel checks itself (`forwarder_common::admission::is_bogon_source`): this VPS's own
//! addresses, the tunnel's addresses and the prefixes routed through it, the backends.
//! A packet claiming one of them comes from a spoofer (or a loop): translated, it would
//! plant flow entries that capture the daemon's own traffic to home, or make home answer
//! itself.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use aya::{
    Ebpf,
    maps::{
        MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use forwarder_common::{
    DENY_BACKEND, DENY_LOCAL, DENY_TUNNEL, SOURCE_DENY_ENTRIES, SOURCE_DENY_MAP, addr_words,
    source_deny_key,
};
use tracing::{debug, warn};

use crate::{
    config::Config,
    sys::addrs::{Prefix, local_addresses, routes_via},
};

/// One denied source: an address and prefix length, and why (`DENY_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Denied {
    pub addr: IpAddr,
    pub len: u8,
    pub reason: u32,
}

/// What `cfg` on this machine denies: every local address (alone: a client may share the
/// public interface's subnet), the tunnel interface's prefixes and the routes through it
/// (home's networks), every rule's backend.
pub fn denied_sources(cfg: &Config) -> Vec<Denied> {
    let mut out = Vec::new();
    match local_addresses() {
        Ok(addrs) => {
            for Prefix { iface, addr, len } in addrs {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                out.push(Denied {
                    addr,
                    len: full,
                    reason: DENY_LOCAL,
                });
                if iface == cfg.tunnel_iface {
                    out.push(Denied {
                        addr,
                        len,
                        reason: DENY_TUNNEL,
                    });
                }
            }
        }
        Err(e) => warn!("listing this machine's addresses for the source check: {e}"),
    }
    for p in routes_via(&cfg.tunnel_iface) {
        out.push(Denied {
            addr: p.addr,
            len: p.len,
            reason: DENY_TUNNEL,
        });
    }
    for r in &cfg.rules {
        let full = if r.backend.is_ipv4() { 32 } else { 128 };
        out.push(Denied {
            addr: r.backend,
            len: full,
            reason: DENY_BACKEND,
        });
    }
    normalise(out)
}

/// Each prefix once, its address cut to the prefix (the trie ignores the bits past it,
/// so two spellings of one prefix would be one entry), the first reason kept; at most the
/// map's capacity, longest prefixes last to go.
fn normalise(list: Vec<Denied>) -> Vec<Denied> {
    let mut seen = BTreeMap::new();
    for d in list {
        let addr = mask(d.addr, d.len);
        seen.entry((addr, d.len)).or_insert(d.reason);
    }
    let mut out: Vec<Denied> = seen
        .into_iter()
        .map(|((addr, len), reason)| Denied { addr, len, reason })
        .collect();
    if out.len() > SOURCE_DENY_ENTRIES as usize {
        warn!(
            "{} sources to deny, the map holds {SOURCE_DENY_ENTRIES}: the shortest prefixes are kept",
            out.len()
        );
        out.sort_by_key(|d| d.len);
        out.truncate(SOURCE_DENY_ENTRIES as usize);
        out.sort();
    }
    out
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The kernel's `SOURCE_DENY` trie and what the daemon wrote into it.
pub struct SourceDeny {
    trie: Mutex<LpmTrie<MapData, [u32; 5], u32>>,
    current: Mutex<Vec<Denied>>,
}

#[derive(Debug, thiserror::Error)]
#[error("updating the {SOURCE_DENY_MAP} map ({addr}/{len})")]
pub struct DenyError {
    addr: IpAddr,
    len: u8,
    #[source]
    source: aya::maps::MapError,
}

fn key(d: &Denied) -> Key<[u32; 5]> {
    let (words, family) = addr_words(d.addr);
    Key::new(32 + u32::from(d.len), source_deny_key(family, &words))
}

impl SourceDeny {
    /// The trie of the loaded object; `None` (logged) when the object has none.
    pub fn take(ebpf: &mut Ebpf) -> Option<Self> {
        let Some(map) = ebpf.take_map(SOURCE_DENY_MAP) else {
            warn!(
                "the kernel programs have no {SOURCE_DENY_MAP} map: spoofed local sources are not refused"
            );
            return None;
        };
        match LpmTrie::try_from(map) {
            Ok(trie) => {
                // What an earlier daemon wrote: every key goes unless wanted again.
                let current = trie
                    .keys()
                    .filter_map(Result::ok)
                    .filter_map(|k: Key<[u32; 5]>| from_key(&k))
                    .collect();
                Some(SourceDeny {
                    trie: Mutex::new(trie),
                    current: Mutex::new(current),
                })
            }
            Err(e) => {
                warn!("cannot use the {SOURCE_DENY_MAP} map: {e}");
                None
            }
        }
    }

    /// Makes the trie hold exactly `want`: new entries first, then the stale ones go, so
    /// a source denied before and after is never let through in between.
    pub fn sync(&self, want: &[Denied]) -> Result<(), DenyError> {
        let mut trie = self.trie.lock().unwrap_or_else(PoisonError::into_inner);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        for d in want {
            if !current.contains(d) {
                trie.insert(&key(d), d.reason, 0)
                    .map_err(|source| DenyError {
                        addr: d.addr,
                        len: d.len,
                        source,
                    })?;
            }
        }
        for d in current.iter() {
            if !want.iter().any(|w| w.addr == d.addr && w.len == d.len) {
                // Gone already is fine.
                let _ = trie.remove(&key(d));
            }
        }
        if *current != want {
            debug!(entries = want.len(), "source check updated");
        }
        *current = want.to_vec();
        Ok(())
    }

    /// What the trie holds.
    pub fn entries(&self) -> Vec<Denied> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn from_key(k: &Key<[u32; 5]>) -> Option<Denied> {
    let data = k.data();
    let len = u8::try_from(k.prefix_len().checked_sub(32)?).ok()?;
    let words = [data[1], data[2], data[3], data[4]];
    let addr = forwarder_common::words_to_addr(words, data[0] as u8)?;
    Some(Denied {
        addr,
        len,
        reason: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_kept_once_and_cut_to_their_length() {
        let d = |a: &str, len, reason| Denied {
            addr: a.parse().unwrap(),
            len,
            reason,
        };
        let got = normalise(vec![
            d("10.8.0.1", 24, DENY_TUNNEL),
            d("10.8.0.0", 24, DENY_LOCAL),
            d("10.8.0.1", 32, DENY_LOCAL),
            d("fd00::1", 64, DENY_TUNNEL),
            d("10.8.0.2", 32, DENY_BACKEND),
        ]);
        assert_eq!(
            got,
            vec![
                d("10.8.0.0", 24, DENY_TUNNEL),
                d("10.8.0.1", 32, DENY_LOCAL),
                d("10.8.0.2", 32, DENY_BACKEND),
                d("fd00::", 64, DENY_TUNNEL),
            ]
        );
    }
}

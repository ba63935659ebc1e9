//! The SYN flood guard's per-CPU state and the per-client connection limit.

/// Per-CPU state of the SYN flood guard. While a CPU sees more SYNs of new connections
/// than `DataplaneConfig::syn_flood_threshold` per second, a SYN from an address that has
/// not completed a connection before (`GOOD_SOURCES`) is dropped unless the same address
/// sent a SYN shortly before (`SEEN_SOURCES`): any real client retransmits, a flood from
/// made-up addresses does not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynGuard {
    pub window_start_ns: u64,
    pub syns_in_window: u64,
    /// The guard holds until then (`bpf_ktime_get_ns`).
    pub active_until_ns: u64,
}

pub const SYN_GUARD_MAP: &str = "SYN_GUARD";
pub const GOOD_SOURCES_MAP: &str = "GOOD_SOURCES";
pub const SEEN_SOURCES_MAP: &str = "SEEN_SOURCES";
/// The rate is measured over windows of this length.
pub const SYN_WINDOW_NS: u64 = 100_000_000;
/// How long the guard holds after the rate was last exceeded.
pub const SYN_FLOOD_HOLD_NS: u64 = 10_000_000_000;
/// How long a first SYN from an unknown address lets its retransmission through.
pub const SYN_RETRY_WINDOW_NS: u64 = 10_000_000_000;
/// How soon a retransmission may come at the earliest: TCP stacks wait about one second
/// before they send a SYN again (RFC 6298's initial timeout); a flood tool that sends
/// every SYN twice in a row does not.
pub const SYN_RETRY_MIN_NS: u64 = 500_000_000;

/// Key of `SEEN_SOURCES`: the SYN's source (an IPv6 one cut to its prefix, see
/// `admission::source_key`) and port, so each connection a client opens during a flood
/// gets its own retry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeenKey {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: u8,
    /// Network byte order.
    pub sport: u16,
}
const _: () = assert!(size_of::<SeenKey>() == 20);

/// What the guard remembers of a dropped SYN: when, and its sequence number, which a
/// retransmission repeats.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeenSyn {
    pub first_ns: u64,
    pub seq: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<SeenSyn>() == 16);

/// Whether a SYN with sequence number `seq` at `now` is the retransmission of `seen`.
#[inline(always)]
pub fn is_syn_retry(seen: &SeenSyn, now: u64, seq: u32) -> bool {
    let age = now.wrapping_sub(seen.first_ns);
    seen.seq == seq && (SYN_RETRY_MIN_NS..SYN_RETRY_WINDOW_NS).contains(&age)
}

/// Whether the guard holds at `now` after one more SYN counted into `g`; updates `g`.
#[inline(always)]
pub fn syn_guard_tick(g: &mut SynGuard, now: u64, threshold: u32) -> bool {
    if now.wrapping_sub(g.window_start_ns) >= SYN_WINDOW_NS {
        g.window_start_ns = now;
        g.syns_in_window = 0;
    }
    g.syns_in_window += 1;
    // The threshold per second, scaled to the window.
    if g.syns_in_window * (1_000_000_000 / SYN_WINDOW_NS) > threshold as u64 {
        g.active_until_ns = now + SYN_FLOOD_HOLD_NS;
    }
    now < g.active_until_ns
}

/// Key of the per-client new-connection limiter: the client's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<SourceKey>() == 20);

/// The limiter's state per client address (LRU): the "theoretical arrival time" of the
/// generic cell rate algorithm, in `bpf_ktime_get_ns` nanoseconds.
pub const LIMITER_MAP: &str = "LIMITER";

/// Whether a new connection from a client may start at `now`, given the limiter state
/// `tat` (0 for a client not seen yet): the generic cell rate algorithm, i.e. a token bucket
/// of `burst` connections refilled at `rate` per second. Returns the new state, or `None`
/// to refuse.
#[inline(always)]
pub const fn admit(tat: u64, now: u64, rate: u16, burst: u16) -> Option<u64> {
    if rate == 0 {
        return Some(tat);
    }
    let interval = 1_000_000_000 / rate as u64;
    let burst = if burst == 0 { 1 } else { burst as u64 };
    let tolerance = (burst - 1) * interval;
    let tat = if tat > now { tat } else { now };
    if tat - now > tolerance {
        return None;
    }
    Some(tat + interval)
}

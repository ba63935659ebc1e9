//! Map names, keys and values, declared once for both sides.

mod counters;
mod flow;
mod guard;
mod quic;

use core::mem::size_of;

pub use self::{counters::*, flow::*, guard::*, quic::*};

/// Forwarding rules: `RuleKey` -> `RuleValue`, twice. The programs read the set that
/// `DataplaneConfig::rules_set` selects, so the daemon can write a whole new rule set into
/// the other one and switch with a single update: no packet sees half a rule set.
pub const RULES_MAPS: [&str; 2] = ["RULES_0", "RULES_1"];
/// Flow table (LRU): `FlowKey` -> `FlowValue`, one entry per direction of an established
/// connection (TCP: handshake completed; UDP: the backend answered and the client spoke
/// again).
pub const FLOWS_MAP: &str = "FLOWS";
/// Connections still opening (LRU), same keys and values as `FLOWS_MAP`: entries start
/// here and move to `FLOWS_MAP` once confirmed, so a flood of connections that never
/// complete only churns this table and cannot evict established ones.
pub const NEW_FLOWS_MAP: &str = "NEW_FLOWS";
/// Single-entry array holding the `DataplaneConfig`.
pub const CONFIG_MAP: &str = "CONFIG";
/// Per-CPU array of `u64` counters, indexed by `Counter`.
pub const COUNTERS_MAP: &str = "COUNTERS";

/// Host table: `HostKey` -> `HostValue` (configured names and wildcards).
pub const HOSTS_MAP: &str = "HOSTS";
/// Array of `u32` `POLICY_*` codes, indexed by host id.
pub const HOST_POLICY_MAP: &str = "HOST_POLICY";
/// Per-CPU array of `HostStats`, indexed by host id.
pub const HOST_STATS_MAP: &str = "HOST_STATS";
/// Ring buffer of `ConnEvent`s (connection classified / ended).
pub const EVENTS_MAP: &str = "EVENTS";
/// Classification in progress (LRU): forward `FlowKey` -> `ClassifyState`.
pub const CLASSIFY_MAP: &str = "CLASSIFY";
/// `handoff::Handshake` per forward flow key (LRU), while some host has policy `local`.
pub const HANDSHAKES_MAP: &str = "HANDSHAKES";
/// Ring buffer of `handoff::HandoffEvent`s for the daemon.
pub const HANDOFF_MAP: &str = "HANDOFF";
/// Program arrays holding the name reader, tail-called on a connection's first payload;
/// one per program type, as the kernel ties a program array to the type of its callers.
pub const XDP_READER_MAP: &str = "XDP_READER";
pub const TC_READER_MAP: &str = "TC_READER";

/// Host ids: 0 and 1 are fixed, configured hosts are numbered from 2.
pub const HOST_UNKNOWN: u32 = 0;
pub const HOST_OTHER: u32 = 1;
pub const HOST_FIRST_CONFIGURED: u32 = 2;
/// Host ids: at most `MAX_HOSTS - 2` configured hosts.
pub const MAX_HOSTS: u32 = 1024;
/// The protocols host statistics are kept apart for: TCP (HTTP/1, HTTP/2 over TLS) at
/// `host_stats_index(id, false)`, QUIC (UDP flows) at `host_stats_index(id, true)`.
pub const HOST_PROTOCOLS: [&str; 2] = ["tcp", "quic"];
/// Entries of the host statistics array: one per host id and protocol.
pub const HOST_STATS_ENTRIES: u32 = MAX_HOSTS * HOST_PROTOCOLS.len() as u32;

/// Where host `id`'s statistics for TCP or QUIC (`udp`) connections are.
#[inline(always)]
pub const fn host_stats_index(id: u32, udp: bool) -> u32 {
    if udp { id + MAX_HOSTS } else { id }
}

/// Program names in the object.
pub const XDP_INGRESS_PROG: &str = "fwd_xdp_ingress";
pub const TC_INGRESS_PROG: &str = "fwd_tc_ingress";
pub const TC_TUNNEL_PROG: &str = "fwd_tc_tunnel";
/// The name readers (TLS SNI / HTTP Host), one per program type.
pub const XDP_READER_PROG: &str = "fwd_xdp_reader";
pub const TC_READER_PROG: &str = "fwd_tc_reader";
/// Every program of the object, the attached ones first.
pub const ALL_PROGS: [&str; 5] = [
    XDP_INGRESS_PROG,
    TC_INGRESS_PROG,
    TC_TUNNEL_PROG,
    XDP_READER_PROG,
    TC_READER_PROG,
];

/// Marker the XDP program puts in packet metadata for packets it has already translated;
/// the tc program on the same interface only hands such packets to the tunnel.
pub const META_MAGIC: u32 = 0x4657_4431; // "FWD1"

/// Bytes of IPv4 + TCP headers without options; the tunnel MSS is the MTU minus these.
pub const IPV4_TCP_HEADERS: u16 = 40;
/// Bytes of IPv6 + TCP headers without options.
pub const IPV6_TCP_HEADERS: u16 = 60;

/// The MSS forwarded TCP is clamped to for a tunnel of `mtu` (IPv6 with `v6`).
pub const fn tunnel_mss(mtu: u32, v6: bool) -> u16 {
    let mtu = if mtu > u16::MAX as u32 {
        u16::MAX
    } else {
        mtu as u16
    };
    mtu.saturating_sub(if v6 {
        IPV6_TCP_HEADERS
    } else {
        IPV4_TCP_HEADERS
    })
}

/// Metadata the XDP program leaves in front of a translated packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMeta {
    pub magic: u32,
    /// Interface the tc program redirects the packet to.
    pub ifindex: u32,
    /// The flow's host statistics (`host_stats_index`), for per-host drop counts of the
    /// hand-off.
    pub host_id: u32,
    /// The L4 checksum field's offset from the IP header.
    pub csum_l3_off: u16,
    /// Non-zero when the packet's checksum field held only the pseudo-header sum (a
    /// checksum left to offload): what tc adds to the field if the skb really is
    /// `CHECKSUM_PARTIAL` (XDP's rewrite assumed a complete checksum).
    pub csum_fix: u16,
}
const _: () = assert!(size_of::<XdpMeta>() == 16);

/// A forwarding rule's match: destination address, protocol and port on the public side.
/// Addresses are four raw words in network byte order (IPv4 uses only the first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    pub addr: [u32; 4],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(size_of::<RuleKey>() == 20);

/// Where a rule's traffic goes: a backend reached through the tunnel interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    pub backend_addr: [u32; 4],
    /// Network byte order.
    pub backend_port: u16,
    pub family: u8,
    /// `RULE_F_*` bits.
    pub flags: u8,
    pub tunnel_ifindex: u32,
}

/// The rule's backend is down and the rule falls back to the VPS's own stack: packets of
/// connections that are not already forwarded are left to the kernel untranslated.
pub const RULE_F_FALLBACK_LOCAL: u8 = 1;
/// The rule's `unknown_policy` is `drop`: a connection whose host cannot be read is cut
/// like one of a host with policy `drop` (its flows carry `FLOW_F_UNKNOWN_DROP`).
pub const RULE_F_UNKNOWN_DROP: u8 = 2;
const _: () = assert!(size_of::<RuleValue>() == 24);

/// Key of the host table. `hash` is [`crate::host::name_hash`] of a normalised name (for
/// a wildcard `*.example.com`, of `example.com`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostKey {
    pub hash: u64,
    /// 1 for a wildcard entry (matches names strictly below the suffix), 0 for exact.
    pub wildcard: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<HostKey>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostValue {
    pub id: u32,
    pub _pad: u32,
}

/// Host policies (`HOST_POLICY_MAP`, by host id), decided on a connection's first payload.
pub const POLICY_FORWARD: u32 = 0;
/// The connection is cut: its first payload is dropped, and what the client sends next
/// goes to the VPS's own stack untranslated, which answers with a TCP RST.
pub const POLICY_DROP: u32 = 1;
/// The connection is handed to the VPS's own stack (see `handoff`).
pub const POLICY_LOCAL: u32 = 2;
const _: () = assert!(size_of::<HostValue>() == 8);

/// Per-host drop reasons (index into `HostStats::drops`).
pub const HOST_DROP_REDIRECT_FAILED: usize = 0;
pub const HOST_DROP_FLOW_TABLE_FULL: usize = 1;
pub const HOST_DROP_POLICY: usize = 2;
pub const HOST_DROP_RATE_LIMIT: usize = 3;
pub const HOST_DROP_REASONS: usize = 4;
pub const HOST_DROP_REASON_NAMES: [&str; HOST_DROP_REASONS] =
    ["redirect_failed", "flow_table_full", "policy", "rate_limit"];

/// Per-host counters (one per CPU; the daemon sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Client -> backend.
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    /// Backend -> client.
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    /// Connections attributed to the host (counted when classified).
    pub connections: u64,
    pub drops: [u64; HOST_DROP_REASONS],
}
const _: () = assert!(size_of::<HostStats>() == 72);

/// Event kinds in the ring buffer.
pub const EVENT_CLASSIFIED: u32 = 1;
pub const EVENT_ENDED: u32 = 2;

/// How a connection ended (`ConnEvent::reason` for `EVENT_ENDED`).
pub const END_FIN: u32 = 1;
pub const END_RST: u32 = 2;
/// Reported by the daemon for flows idle past their timeout.
pub const END_IDLE: u32 = 3;

/// Size of the connection event ring buffer.
pub const EVENTS_BYTES: u32 = 512 * 1024;
/// Unread event bytes at which the kernel wakes the daemon up, once, by the event that
/// crosses it. Other events are submitted without a wake-up and the daemon drains the ring
/// every `EVENTS_DRAIN_MS`: a wake-up is a self-IPI, which in a virtual machine (every
/// VPS) exits to the hypervisor and cost several microseconds per event, more than
/// forwarding the whole connection.
pub const EVENTS_WAKE_BYTES: u64 = 64 * 1024;
/// How often the daemon drains the event ring buffer without being woken up.
pub const EVENTS_DRAIN_MS: u64 = 100;

/// A connection event, written by the kernel into the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    pub kind: u32,
    pub host_id: u32,
    /// The client's address (raw words) and port (network order).
    pub client_addr: [u32; 4],
    pub client_port: u16,
    pub family: u8,
    pub proto: u8,
    /// `END_*` for ended events; `CLASSIFY_*` outcome for classified events.
    pub reason: u32,
    pub _pad: u32,
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<ConnEvent>() == 88);
/// Ring buffer space one event takes: its 8-byte record header and the event, rounded up
/// to 8 bytes.
pub const EVENT_RECORD_BYTES: u64 = (size_of::<ConnEvent>() as u64 + 8).div_ceil(8) * 8;

/// Dataplane-wide settings written by the daemon before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// The public interface replies are sent out of.
    pub public_ifindex: u32,
    /// MSS that SYN and SYN-ACK segments are clamped to, per family.
    pub mss_v4: u16,
    pub mss_v6: u16,
    /// 1 once the daemon has finished writing rules; until then nothing is steered.
    pub enabled: u32,
    /// 1 when no XDP program runs in front: the tc program translates by itself.
    pub tc_translate: u32,
    /// Link-layer header length of the tunnel device: 0 for WireGuard and other L3
    /// devices, 14 for Ethernet-like tunnels (GRETAP, VXLAN).
    pub tunnel_l2_len: u32,
    /// New connections per second and burst allowed per client address; 0: no limit.
    pub conn_rate: u16,
    pub conn_burst: u16,
    /// Which of `RULES_MAPS` is in force (0 or 1).
    pub rules_set: u32,
    /// How the daemon attached the public side (`ATTACH_*`), kept for the next daemon
    /// that adopts the pinned data path.
    pub attach_mode: u32,
    /// `CFG_F_*` bits.
    pub flags: u32,
    /// SYNs of new connections per second, on one CPU, above which that CPU treats the
    /// traffic as a SYN flood for `SYN_FLOOD_HOLD_NS` (see `SynGuard`); 0: never.
    pub syn_flood_threshold: u32,
    /// Initial datagrams of new QUIC connections handed to the daemon per second and
    /// burst, on each CPU (`admit`); 0: QUIC connections are not classified.
    pub quic_rate: u16,
    pub quic_burst: u16,
    /// Packets per second, on each CPU, that may re-create the flow of a connection
    /// whose entries are gone (evicted from a full table) while no SYN flood is on; 0: none.
    pub recreate_rate: u16,
    /// IPv6 clients are limited and guarded per prefix of this length (0: the default,
    /// `admission::DEFAULT_V6_SOURCE_PREFIX`).
    pub v6_source_prefix: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<DataplaneConfig>() == 48);

/// Some host has policy `local`: record handshakes and hand over pre-classification
/// payload (see `handoff`).
pub const CFG_F_LOCAL_POLICY: u32 = 1;

pub const ATTACH_XDP_DRIVER: u32 = 1;
pub const ATTACH_XDP_GENERIC: u32 = 2;
pub const ATTACH_TC_ONLY: u32 = 3;

/// Version of the layout of the maps that outlive the daemon (pinned): bump it whenever
/// one of their key or value types, sizes or meanings changes, so that a new daemon never
/// adopts maps it would misread.
pub const PIN_LAYOUT_VERSION: u32 = 5;
/// Per-CPU working memory shared between a forwarding program and the reader it
/// tail-calls (parsed headers, scratch values, the reader's buffer and state).
pub const PKT_INFO_MAP: &str = "PKT_INFO";
pub const SCRATCH_MAP: &str = "SCRATCH";
pub const CLS_BUF_MAP: &str = "CLS_BUF";
pub const CLS_STATE_MAP: &str = "CLS_STATE";

/// Every map of the object, all pinned under the bpffs directory and adopted by the next
/// daemon. Connection state, counters and the configuration must outlive the daemon; the
/// per-CPU working maps too, because while programs are swapped an old forwarding program
/// may tail-call a new reader, and both must see the same packet state.
pub const PINNED_MAPS: [&str; 29] = [
    FLOW_PRESSURE_MAP,
    SOURCE_DENY_MAP,
    RECREATE_RATE_MAP,
    QUIC_INITIALS_MAP,
    QUIC_VERDICTS_MAP,
    QUIC_RATE_MAP,
    SYN_GUARD_MAP,
    GOOD_SOURCES_MAP,
    SEEN_SOURCES_MAP,
    HANDSHAKES_MAP,
    HANDOFF_MAP,
    HOST_POLICY_MAP,
    RULES_MAPS[0],
    RULES_MAPS[1],
    FLOWS_MAP,
    NEW_FLOWS_MAP,
    CONFIG_MAP,
    COUNTERS_MAP,
    HOSTS_MAP,
    HOST_STATS_MAP,
    EVENTS_MAP,
    CLASSIFY_MAP,
    XDP_READER_MAP,
    TC_READER_MAP,
    LIMITER_MAP,
    PKT_INFO_MAP,
    SCRATCH_MAP,
    CLS_BUF_MAP,
    CLS_STATE_MAP,
];

/// LPM trie of sources that the public interface never accepts a new flow from, filled
/// by the daemon: the VPS's own addresses, the tunnel's addresses and prefixes, the
/// backends. Key data: `source_deny_key`; value: a `DENY_*` reason.
pub const SOURCE_DENY_MAP: &str = "SOURCE_DENY";
/// Entries of `SOURCE_DENY_MAP`.
pub const SOURCE_DENY_ENTRIES: u32 = 1024;
/// Per-CPU `admit` state (a `u64`) of the budget for re-creating evicted flows
/// (`DataplaneConfig::recreate_rate`).
pub const RECREATE_RATE_MAP: &str = "RECREATE_RATE";
/// Single-entry array (`u32`) the daemon's flow GC sets to 1 while the established table
/// is nearly full (so that the LRU evicts live connections): only then may a packet in
/// the middle of a connection re-create its flow.
pub const FLOW_PRESSURE_MAP: &str = "FLOW_PRESSURE";
/// Why a source is in `SOURCE_DENY_MAP`.
pub const DENY_LOCAL: u32 = 1;
pub const DENY_TUNNEL: u32 = 2;
pub const DENY_BACKEND: u32 = 3;

/// The data of a `SOURCE_DENY_MAP` key: the family in the first word (its first byte, as
/// the trie compares bytes in order), then the address as parsed. The trie's prefix length
/// is 32 + the address prefix.
#[inline(always)]
pub fn source_deny_key(family: u8, addr: &[u32; 4]) -> [u32; 5] {
    [family as u32, addr[0], addr[1], addr[2], addr[3]]
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `repr(C)`, `Copy`, contain only integers and have no
    // implicit padding (sizes asserted above), so every bit pattern is valid.
    unsafe impl aya::Pod for RuleKey {}
    unsafe impl aya::Pod for RuleValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for DataplaneConfig {}
    unsafe impl aya::Pod for HostKey {}
    unsafe impl aya::Pod for HostValue {}
    unsafe impl aya::Pod for HostStats {}
    unsafe impl aya::Pod for ConnEvent {}
    unsafe impl aya::Pod for SourceKey {}
    unsafe impl aya::Pod for QuicVerdict {}
    unsafe impl aya::Pod for QuicInitialEvent {}
    unsafe impl aya::Pod for SynGuard {}
    unsafe impl aya::Pod for SeenKey {}
    unsafe impl aya::Pod for SeenSyn {}
    unsafe impl aya::Pod for crate::handoff::Handshake {}
    unsafe impl aya::Pod for crate::handoff::HandoffEvent {}
}

#[cfg(all(test, feature = "std"))]
mod key_props;
#[cfg(all(test, feature = "std"))]
mod limiter_tests;
#[cfg(test)]
mod tests;

//! Map names, keys and values, declared once for both sides.

mod counters;
mod guard;

use core::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

pub use self::{counters::*, guard::*};

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

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

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
    pub _pad: u32,
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
const _: () = assert!(size_of::<RuleValue>() == 24);

/// One direction of a translated connection, as seen on the wire before translation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The key of the other direction of the connection whose entry for this key is `v`:
    /// for a forward entry (`DIR_TO_BACKEND`, client -> public) the reply's key (backend
    /// -> client), for a reply entry (`DIR_TO_CLIENT`) the forward key.
    #[inline(always)]
    pub fn reversed(&self, v: &FlowValue) -> FlowKey {
        let mut out = *self;
        self.reverse_into(v, &mut out);
        out
    }

    /// [`FlowKey::reversed`], written into `out`: the kernel builds keys in map memory,
    /// where a returned value would first be assembled on its 512-byte stack.
    #[inline(always)]
    pub fn reverse_into(&self, v: &FlowValue, out: &mut FlowKey) {
        if v.direction == DIR_TO_BACKEND {
            // client -> public; the reply travels backend -> client.
            out.src = v.nat_addr;
            out.sport = v.nat_port;
            out.dst = self.src;
            out.dport = self.sport;
        } else {
            // backend -> client; the client sends client -> public.
            out.src = self.dst;
            out.sport = self.dport;
            out.dst = v.nat_addr;
            out.dport = v.nat_port;
        }
        out.proto = self.proto;
        out.family = self.family;
        out._pad = [0; 2];
    }
}

/// The address held in a map's address words (`FlowKey`, `RuleKey`, `SourceKey`, ...):
/// the packet's bytes in network order, read as native-endian words; IPv4 uses the first
/// word only. `None` for a family other than `FAMILY_V4` / `FAMILY_V6`.
pub fn words_to_addr(words: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))),
        FAMILY_V6 => {
            let mut o = [0u8; 16];
            for (chunk, w) in o.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// The address words and family (`FAMILY_V4` / `FAMILY_V6`) of `addr`, as the kernel
/// writes them into map keys; the inverse of [`words_to_addr`].
pub fn addr_words(addr: IpAddr) -> ([u32; 4], u8) {
    match addr {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// Flow entry: the address and port that replace the destination (client -> backend
/// direction) or the source (backend -> client direction), and the flow's statistics in
/// that direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub nat_addr: [u32; 4],
    /// Network byte order.
    pub nat_port: u16,
    /// `DIR_TO_BACKEND` or `DIR_TO_CLIENT`.
    pub direction: u8,
    /// `CLASS_*`: whether the host of this flow is known yet.
    pub class_state: u8,
    /// Interface to send the translated packet to.
    pub ifindex: u32,
    /// Host id the flow is counted under (`HOST_UNKNOWN` until classified).
    pub host_id: u32,
    /// `FLOW_F_*` bits.
    pub flags: u32,
    /// Backend -> client entry of a TCP connection still opening (in `NEW_FLOWS_MAP`):
    /// the acknowledgment number the client's handshake-completing ACK carries (the
    /// backend's SYN-ACK sequence number + 1); 0 until the SYN-ACK passed. A blind ACK
    /// from a made-up address cannot move a connection into the established table.
    pub ack_expect: u32,
    /// Client -> backend entry of a UDP flow: Initial datagrams of a QUIC connection
    /// copied to the daemon (`QUIC_INITIALS_MAP`), at most `QUIC_MAX_INITIALS`.
    pub quic_initials: u32,
    /// Packets and bytes (IP length) in this entry's direction.
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_ns()` of the first and the latest packet in this direction.
    pub first_ns: u64,
    pub last_ns: u64,
}
const _: () = assert!(size_of::<FlowValue>() == 72);

/// Classification not finished: payload packets are still inspected.
pub const CLASS_PENDING: u8 = 0;
/// Host known (or given up on): later packets are only counted.
pub const CLASS_DONE: u8 = 1;

/// A FIN was seen in this direction.
pub const FLOW_F_FIN: u32 = 1;
/// A RST was seen in this direction.
pub const FLOW_F_RST: u32 = 2;
/// The "ended" event of this connection was emitted.
pub const FLOW_F_END_REPORTED: u32 = 4;
/// The connection's first payload spans segments: its parse state is in `CLASSIFY_MAP`.
pub const FLOW_F_CLS_STATE: u32 = 8;
/// The connection was cut by its host's policy: nothing more of it goes to the backend.
pub const FLOW_F_CUT: u32 = 16;
/// Set with `FLOW_F_CUT` when the cut was a hand-off to the VPS's own stack (host policy
/// `local`): the daemon rebuilds the connection there.
pub const FLOW_F_LOCAL: u32 = 32;
/// Set with `FLOW_F_LOCAL` until the daemon has rebuilt the connection: the client's
/// packets are dropped meanwhile (for at most `HANDOFF_WAIT_NS`), as the VPS's stack would
/// reset them.
pub const FLOW_F_HANDOFF_WAIT: u32 = 64;
/// The flow is a QUIC connection whose Initials went to the daemon: its host comes from
/// the daemon's verdict in `QUIC_VERDICTS_MAP`.
pub const FLOW_F_QUIC: u32 = 128;
/// A UDP flow: counted under its host's QUIC statistics (`host_stats_index`).
pub const FLOW_F_UDP: u32 = 256;
/// Set with `FLOW_F_CUT` when a connection named a `local` host before anything proved
/// its handshake with the backend completed (`handoff::Handshake::proves`): its source
/// may be forged, so the client's packets are dropped from then on instead of reaching
/// the VPS's stack, which would answer that source.
pub const FLOW_F_HANDOFF_REFUSED: u32 = 512;
/// How long a connection waits for the daemon to take it over (`FLOW_F_HANDOFF_WAIT`).
pub const HANDOFF_WAIT_NS: u64 = 2_000_000_000;

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

pub const DIR_TO_BACKEND: u8 = 0;
pub const DIR_TO_CLIENT: u8 = 1;

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
    pub _pad: u32,
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
pub const PINNED_MAPS: [&str; 26] = [
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
    unsafe impl aya::Pod for crate::handoff::Handshake {}
    unsafe impl aya::Pod for crate::handoff::HandoffEvent {}
}

#[cfg(all(test, feature = "std"))]
mod key_props;
#[cfg(all(test, feature = "std"))]
mod limiter_tests;
#[cfg(test)]
mod tests;

/// Ring buffer of `QuicInitialEvent`s: the Initial datagrams of new QUIC connections, for
/// the daemon to read their SNI from.
pub const QUIC_INITIALS_MAP: &str = "QUIC_INITIALS";
/// LRU hash, forward `FlowKey` -> `QuicVerdict`: what the daemon read from a connection's
/// Initials, taken by the kernel at the connection's next client packet.
pub const QUIC_VERDICTS_MAP: &str = "QUIC_VERDICTS";
/// Per-CPU `admit` state (a `u64`) of the Initial hand-off's rate limit.
pub const QUIC_RATE_MAP: &str = "QUIC_RATE";
/// Size of the Initial ring buffer: a few hundred datagrams.
pub const QUIC_INITIALS_BYTES: u32 = 1024 * 1024;
/// Bytes of a datagram copied: its first Initial is all the daemon reads, and a datagram on
/// a 1500-byte path is smaller.
pub const QUIC_COPY_MAX: usize = 2048;
/// Initial datagrams of one connection handed over at most: a post-quantum ClientHello
/// takes two, and one may be retransmitted.
pub const QUIC_MAX_INITIALS: u32 = 4;
/// How long a QUIC connection waits for the daemon's verdict before it is counted as
/// `unknown` for good.
pub const QUIC_VERDICT_WAIT_NS: u64 = 3_000_000_000;
/// Default `DataplaneConfig::quic_rate` and `quic_burst`.
pub const DEFAULT_QUIC_RATE: u16 = 2000;
pub const DEFAULT_QUIC_BURST: u16 = 200;

/// One Initial datagram of a new QUIC connection, copied by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QuicInitialEvent {
    /// The connection's forward key (client -> public address).
    pub key: FlowKey,
    /// Bytes of `data` in use (the UDP payload, up to `QUIC_COPY_MAX`).
    pub len: u32,
    /// The datagram's UDP payload length, which may exceed `len`.
    pub datagram_len: u32,
    pub data: [u8; QUIC_COPY_MAX],
}
const _: () = assert!(size_of::<QuicInitialEvent>() == 40 + 8 + QUIC_COPY_MAX);

/// The daemon's verdict on a QUIC connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuicVerdict {
    /// `QUIC_V_*`.
    pub code: u32,
    /// The host (`HOST_OTHER` for a name that is not configured) for `QUIC_V_NAME`.
    pub host_id: u32,
}
const _: () = assert!(size_of::<QuicVerdict>() == 8);

/// The ClientHello named a host.
pub const QUIC_V_NAME: u32 = 1;
/// The SNI is not a valid host name: counted under `other`.
pub const QUIC_V_BAD_NAME: u32 = 2;
/// A ClientHello without a server_name.
pub const QUIC_V_NO_SNI: u32 = 3;
/// The Initials could not be decoded.
pub const QUIC_V_UNDECODABLE: u32 = 4;

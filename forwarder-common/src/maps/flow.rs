//! The flow table's key and value: one entry per direction of a translated connection,
//! and the address words every map key holds.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// `FlowValue::direction`.
pub const DIR_TO_BACKEND: u8 = 0;
pub const DIR_TO_CLIENT: u8 = 1;

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
    /// TCP: the sequence number just past the furthest segment seen in this direction,
    /// and the highest acknowledgment number this direction sent (valid once
    /// `FLOW_F_ACKED`). A RST or FIN counts only inside that window
    /// (`admission::end_in_window`).
    pub seq_next: u32,
    pub ack_hi: u32,
}
const _: () = assert!(size_of::<FlowValue>() == 80);

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
/// `FlowValue::ack_hi` holds an acknowledgment this direction sent.
pub const FLOW_F_ACKED: u32 = 512;
/// The entries were re-created from a packet in the middle of a connection (its entries
/// were evicted), not from a SYN: confirmed once home answered other than with a RST and
/// the client spoke again; home's RST ends them without reaching the (maybe spoofed)
/// client.
pub const FLOW_F_RECREATED: u32 = 1024;
/// Set with `FLOW_F_CUT` when a connection named a `local` host before anything proved
/// its handshake with the backend completed (`handoff::Handshake::proves`): its source
/// may be forged, so the client's packets are dropped from then on instead of reaching
/// the VPS's stack, which would answer that source.
pub const FLOW_F_HANDOFF_REFUSED: u32 = 4096;
/// Copied from the rule's `RULE_F_UNKNOWN_DROP` when the entries are created: if the
/// connection's host cannot be read, it is cut (`Counter::PolicyUnknownCut`) instead of
/// forwarded as `unknown`.
pub const FLOW_F_UNKNOWN_DROP: u32 = 2048;
/// How long a connection waits for the daemon to take it over (`FLOW_F_HANDOFF_WAIT`).
pub const HANDOFF_WAIT_NS: u64 = 2_000_000_000;

//! Handing a connection to the VPS's own stack after its handshake went home (host policy
//! `local`).
//!
//! The host is only known from the first payload, after the client completed its TCP
//! handshake with the backend. To serve such a connection locally, the daemon rebuilds
//! it as a local socket in TCP repair mode, with the sequence numbers and options the
//! client already agreed with the backend. The kernel programs supply what the daemon
//! cannot see: the options of both SYNs ([`Handshake`]), and the payload that went by
//! before the decision ([`HandoffEvent`]).

use crate::packet::{
    TCPOPT_EOL, TCPOPT_MSS, TCPOPT_NOP, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP, TCPOPT_WSCALE,
};

/// Longest TCP option area (60-byte header minus the fixed 20).
pub const TCP_OPTIONS_MAX: usize = 40;
/// Payload bytes an event carries: a whole segment as the name reader takes it.
pub const HANDOFF_PAYLOAD_MAX: usize = 2048;

/// The option areas of a connection's SYN (client) and SYN-ACK (backend), raw.
/// Recorded only while some host has policy `local`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub syn_opts: [u8; TCP_OPTIONS_MAX],
    pub synack_opts: [u8; TCP_OPTIONS_MAX],
    /// Bytes of each option area in use (0 until that SYN was seen).
    pub syn_len: u8,
    pub synack_len: u8,
    /// 1 once the backend's SYN-ACK was seen (its options may be empty): `synack_seq` is
    /// valid.
    pub synack_seen: u8,
    pub _pad: u8,
    /// The client's initial sequence number, network byte order.
    pub syn_seq: u32,
    /// The backend's initial sequence number (its SYN-ACK's), network byte order. A
    /// client segment acknowledging it plus one proves its sender saw the SYN-ACK, so
    /// that its address is not made up: only such a connection is handed over.
    pub synack_seq: u32,
}
const _: () = assert!(size_of::<Handshake>() == 92);

impl Handshake {
    /// Whether a client segment acknowledging `ack` proves the handshake with the
    /// backend completed: the backend's SYN-ACK was seen and `ack` is its sequence number
    /// plus one. The backend sends nothing before the client's first payload (HTTP and
    /// TLS speak first from the client), so that is what every segment of a real first
    /// payload acknowledges; a sender of made-up addresses never saw the SYN-ACK.
    pub fn proves(&self, ack: u32) -> bool {
        self.synack_seen != 0 && ack == u32::from_be(self.synack_seq).wrapping_add(1)
    }
}

/// A segment of a connection whose host is not known yet; carried bytes follow.
pub const HANDOFF_SEGMENT: u32 = 1;
/// The segment that named a host with policy `local`: the connection is the daemon's now.
pub const HANDOFF_LOCAL: u32 = 2;

/// One client segment handed to the daemon (ring buffer `HANDOFF`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HandoffEvent {
    pub kind: u32,
    pub host_id: u32,
    /// The connection as the client addresses it (the forward flow key).
    pub key: crate::FlowKey,
    /// Bytes 4..16 of the segment's TCP header as they are on the wire (network byte
    /// order): sequence and acknowledgment numbers, data offset and flags, window.
    pub seq: u32,
    pub ack: u32,
    pub offset_flags: u16,
    pub window: u16,
    /// Bytes of `opts` and `payload` in use.
    pub opts_len: u32,
    pub payload_len: u32,
    pub _pad: u32,
    pub opts: [u8; TCP_OPTIONS_MAX],
    pub payload: [u8; HANDOFF_PAYLOAD_MAX],
}
const _: () = assert!(size_of::<HandoffEvent>() == 2160);

impl HandoffEvent {
    /// Sequence number of the first payload byte, host byte order.
    pub fn seq(&self) -> u32 {
        u32::from_be(self.seq)
    }
    pub fn ack(&self) -> u32 {
        u32::from_be(self.ack)
    }
    /// The advertised window, unscaled, host byte order.
    pub fn window(&self) -> u16 {
        u16::from_be(self.window)
    }
    pub fn payload(&self) -> &[u8] {
        &self.payload[..(self.payload_len as usize).min(HANDOFF_PAYLOAD_MAX)]
    }
    pub fn options(&self) -> &[u8] {
        &self.opts[..(self.opts_len as usize).min(TCP_OPTIONS_MAX)]
    }
}

/// The options of a TCP header that matter for rebuilding its connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr)
    pub timestamp: Option<(u32, u32)>,
}

/// Why an option area could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsError {
    /// An option's length runs past the area, or is below 2.
    BadLength { at: usize },
    /// A known option with the wrong length for its kind.
    BadKnown { kind: u8, len: usize },
}

/// Parses a TCP option area (the bytes after the fixed 20-byte header). Unknown options
/// are skipped; the first of a repeated option wins.
pub fn parse_tcp_options(area: &[u8]) -> Result<TcpOptions, OptionsError> {
    let mut o = TcpOptions::default();
    let mut at = 0;
    while at < area.len() {
        let kind = area[at];
        match kind {
            TCPOPT_EOL => break,
            TCPOPT_NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let len = match area.get(at + 1) {
            Some(&l) if l >= 2 && at + l as usize <= area.len() => l as usize,
            _ => return Err(OptionsError::BadLength { at }),
        };
        let body = &area[at + 2..at + len];
        let want = match kind {
            TCPOPT_MSS => Some(2),
            TCPOPT_WSCALE => Some(1),
            TCPOPT_SACK_PERM => Some(0),
            TCPOPT_TIMESTAMP => Some(8),
            _ => None,
        };
        if let Some(w) = want
            && body.len() != w
        {
            return Err(OptionsError::BadKnown { kind, len });
        }
        match kind {
            TCPOPT_MSS if o.mss.is_none() => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            TCPOPT_WSCALE if o.wscale.is_none() => o.wscale = Some(body[0]),
            TCPOPT_SACK_PERM => o.sack_permitted = true,
            TCPOPT_TIMESTAMP if o.timestamp.is_none() => {
                o.timestamp = Some((
                    u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                ))
            }
            _ => {}
        }
        at += len;
    }
    Ok(o)
}

/// What both ends agreed in the handshake, from the two SYNs' options (RFC 7323, RFC
/// 2018: window scaling, SACK and timestamps hold only when both sides offered them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The client's MSS (what the local side may send it); 536 when it gave none.
    pub client_mss: u16,
    /// (client's shift, backend's shift), when window scaling is on.
    pub wscale: Option<(u8, u8)>,
    pub sack: bool,
    pub timestamps: bool,
}

/// Largest window shift RFC 7323 allows; larger values are treated as 14.
const MAX_WSCALE: u8 = 14;

impl Negotiated {
    pub fn from_syns(syn: &TcpOptions, synack: &TcpOptions) -> Self {
        let wscale = match (syn.wscale, synack.wscale) {
            (Some(c), Some(s)) => Some((c.min(MAX_WSCALE), s.min(MAX_WSCALE))),
            _ => None,
        };
        Negotiated {
            client_mss: syn.mss.unwrap_or(536),
            wscale,
            sack: syn.sack_permitted && synack.sack_permitted,
            timestamps: syn.timestamp.is_some() && synack.timestamp.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP, wscale 7.
    const LINUX_SYN: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn linux_syn_options() {
        let o = parse_tcp_options(&LINUX_SYN).unwrap();
        assert_eq!(
            o,
            TcpOptions {
                mss: Some(1460),
                wscale: Some(7),
                sack_permitted: true,
                timestamp: Some((0x1234, 0)),
            }
        );
    }

    #[test]
    fn padding_and_end_of_list() {
        assert_eq!(parse_tcp_options(&[]).unwrap(), TcpOptions::default());
        let o = parse_tcp_options(&[1, 1, 3, 3, 2, 0, 2, 4, 0, 1]).unwrap();
        assert_eq!(o.wscale, Some(2));
        assert_eq!(o.mss, None, "nothing after end-of-list counts");
    }

    #[test]
    fn unknown_options_are_skipped_and_bad_lengths_refused() {
        let o = parse_tcp_options(&[30, 4, 9, 9, 3, 3, 5]).unwrap();
        assert_eq!(o.wscale, Some(5));
        assert_eq!(
            parse_tcp_options(&[3, 3]),
            Err(OptionsError::BadLength { at: 0 })
        );
        assert_eq!(
            parse_tcp_options(&[1, 30, 1]),
            Err(OptionsError::BadLength { at: 1 })
        );
        assert_eq!(
            parse_tcp_options(&[2, 3, 1]),
            Err(OptionsError::BadKnown { kind: 2, len: 3 })
        );
    }

    #[test]
    fn only_the_ack_of_the_backends_syn_ack_proves_the_handshake() {
        let mut h = Handshake {
            syn_opts: [0; TCP_OPTIONS_MAX],
            synack_opts: [0; TCP_OPTIONS_MAX],
            syn_len: 0,
            synack_len: 0,
            synack_seen: 0,
            _pad: 0,
            syn_seq: 0x1000_0000u32.to_be(),
            synack_seq: 0xffff_ffffu32.to_be(),
        };
        // No SYN-ACK seen: nothing proves anything, even an ack of 0 (the unset field + 1
        // would otherwise match a made-up segment's zero ack).
        assert!(!h.proves(0));
        h.synack_seen = 1;
        assert!(h.proves(0), "ISN + 1 wraps");
        assert!(!h.proves(1));
        assert!(!h.proves(0xffff_ffff));
        h.synack_seq = 0x5000_0000u32.to_be();
        assert!(h.proves(0x5000_0001));
        assert!(!h.proves(0x5000_0000));
        assert!(!h.proves(0x5000_0002));
    }

    #[test]
    fn negotiation_needs_both_sides() {
        let syn = parse_tcp_options(&LINUX_SYN).unwrap();
        let bare = TcpOptions::default();
        let n = Negotiated::from_syns(&syn, &syn);
        assert_eq!(n.wscale, Some((7, 7)));
        assert!(n.sack && n.timestamps);
        let n = Negotiated::from_syns(&syn, &bare);
        assert_eq!((n.wscale, n.sack, n.timestamps), (None, false, false));
        assert_eq!(Negotiated::from_syns(&bare, &syn).client_mss, 536);
        let big = TcpOptions {
            wscale: Some(200),
            ..syn
        };
        assert_eq!(Negotiated::from_syns(&big, &big).wscale, Some((14, 14)));
    }
}

#[cfg(all(test, feature = "std"))]
mod props {
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn option() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(std::vec![TCPOPT_NOP]),
            any::<u16>().prop_map(|m| std::vec![2, 4, (m >> 8) as u8, m as u8]),
            any::<u8>().prop_map(|s| std::vec![3, 3, s]),
            Just(std::vec![4, 2]),
            (any::<u32>(), any::<u32>()).prop_map(|(a, b)| {
                let mut v = std::vec![8, 10];
                v.extend_from_slice(&a.to_be_bytes());
                v.extend_from_slice(&b.to_be_bytes());
                v
            }),
            (20u8..=253, proptest::collection::vec(any::<u8>(), 0..6)).prop_map(|(k, b)| {
                let mut v = std::vec![k, b.len() as u8 + 2];
                v.extend(b);
                v
            }),
        ]
    }

    proptest! {
        /// Well-formed option lists parse, and each known option's first value is found.
        #[test]
        fn well_formed_lists_parse(opts in proptest::collection::vec(option(), 0..8)) {
            let area: Vec<u8> = opts.concat();
            let o = parse_tcp_options(&area).unwrap();
            let first = |kind: u8| opts.iter().find(|v| v[0] == kind);
            prop_assert_eq!(o.mss, first(2).map(|v| u16::from_be_bytes([v[2], v[3]])));
            prop_assert_eq!(o.wscale, first(3).map(|v| v[2]));
            prop_assert_eq!(o.sack_permitted, first(4).is_some());
            prop_assert_eq!(o.timestamp.is_some(), first(8).is_some());
        }

        /// Any bytes: an answer, never a panic.
        #[test]
        fn any_bytes_get_an_answer(area in proptest::collection::vec(any::<u8>(), 0..48)) {
            let _ = parse_tcp_options(&area);
        }
    }
}

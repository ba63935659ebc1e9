//! Header parsing shared by the kernel programs and the host-side tests.
//!
//! The parser reads through the [`Bytes`] trait: on the host it is implemented for byte
//! slices, in the kernel for the packet between `data` and `data_end`, where every access is
//! bounds-checked so the verifier accepts it. Loops are bounded by constants.

use crate::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

/// Random access to packet bytes. Multi-byte loads return the bytes as they are in memory
/// (network order), the way the kernel compares and rewrites them.
pub trait Bytes {
    /// Total length of the packet (may exceed what is directly readable, as in a
    /// non-linear skb).
    fn total_len(&self) -> usize;
    fn raw8(&self, off: usize) -> Option<u8>;
    fn raw16(&self, off: usize) -> Option<u16>;
    fn raw32(&self, off: usize) -> Option<u32>;

    #[inline(always)]
    fn be16(&self, off: usize) -> Option<u16> {
        self.raw16(off).map(u16::from_be)
    }

    /// The byte at `off`, 0 past the end. For callers that checked the range already:
    /// a plain value leaves the compiler no undefined `None` payload to fill with whatever
    /// register is at hand (the BPF verifier rejects such code when that is a pointer).
    #[inline(always)]
    fn byte(&self, off: usize) -> u8 {
        self.raw8(off).unwrap_or_default()
    }

    /// `N` bytes from `off`: the bytes up to the end, zeros after; one read in the kernel.
    #[inline(always)]
    fn array<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut v = [0; N];
        let mut i = 0;
        while i < N {
            v[i] = self.byte(off + i);
            i += 1;
        }
        v
    }

    /// Big-endian u16 at `off` from two [`Bytes::byte`] reads, 0-filled past the end.
    #[inline(always)]
    fn be16_at(&self, off: usize) -> u16 {
        ((self.byte(off) as u16) << 8) | self.byte(off + 1) as u16
    }

    /// Offset of the first byte in `[from, to)` that is one of `set`. The kernel
    /// implements this with the `bpf_loop` helper, so the verifier walks the loop body once
    /// instead of once per byte.
    #[inline(always)]
    fn find_any(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        let mut i = from;
        let mut n = 0;
        while n < FIND_MAX {
            if i >= to {
                return None;
            }
            let c = self.raw8(i)?;
            if c == set[0] || c == set[1] || c == set[2] || c == set[3] {
                return Some(i);
            }
            i += 1;
            n += 1;
        }
        None
    }

    /// Offset of the first line start in `[from, to)` whose first byte is one of `set`; a
    /// line start is `from` itself or a position right after a `\n`.
    #[inline(always)]
    fn find_line_start(&self, from: usize, to: usize, set: [u8; 4]) -> Option<usize> {
        let mut at = from;
        let mut n = 0;
        while n < FIND_MAX {
            if at >= to {
                return None;
            }
            if set.contains(&self.raw8(at)?) {
                return Some(at);
            }
            at = self.find(at, to, b'\n')? + 1;
            n += 1;
        }
        None
    }

    /// Offset of the first `byte` in `[from, to)`.
    #[inline(always)]
    fn find(&self, from: usize, to: usize, byte: u8) -> Option<usize> {
        self.find_any(from, to, [byte; 4])
    }

    /// Copies `n` bytes from `from` into `dst` (n at most `dst.len()`); false if they are
    /// not all there. The kernel implements this with `bpf_loop` too.
    #[inline(always)]
    fn copy_out(&self, from: usize, n: usize, dst: &mut [u8; COPY_MAX]) -> bool {
        if n > COPY_MAX {
            return false;
        }
        let mut i = 0;
        while i < COPY_MAX {
            if i >= n {
                break;
            }
            match self.raw8(from + i) {
                Some(v) => dst[i] = v,
                None => return false,
            }
            i += 1;
        }
        true
    }
}

/// Size of the destination of [`Bytes::copy_out`] (the classifier's carry buffer).
pub const COPY_MAX: usize = 320;

/// Bytes [`Bytes::find`] looks at, at most.
pub const FIND_MAX: usize = 2048;

impl Bytes for [u8] {
    fn total_len(&self) -> usize {
        self.len()
    }
    fn raw8(&self, off: usize) -> Option<u8> {
        self.get(off).copied()
    }
    fn raw16(&self, off: usize) -> Option<u16> {
        let b = self.get(off..off.checked_add(2)?)?;
        Some(u16::from_ne_bytes([b[0], b[1]]))
    }
    fn raw32(&self, off: usize) -> Option<u32> {
        let b = self.get(off..off.checked_add(4)?)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
}

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// At most this many stacked VLAN tags are looked through (QinQ).
pub const MAX_VLAN_TAGS: usize = 2;

pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;

/// Offsets of fields the data path rewrites.
pub const IPV4_CSUM_OFF: usize = 10;
pub const IPV4_SRC_OFF: usize = 12;
pub const IPV4_DST_OFF: usize = 16;
pub const IPV6_SRC_OFF: usize = 8;
pub const IPV6_DST_OFF: usize = 24;
pub const TCP_CSUM_OFF: usize = 16;
pub const UDP_CSUM_OFF: usize = 6;
pub const TCP_FLAGS_OFF: usize = 13;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// What the parser found out about a TCP or UDP packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketInfo {
    pub l3_off: u16,
    pub l4_off: u16,
    pub family: u8,
    pub proto: u8,
    pub tcp_flags: u8,
    /// TCP header length including options (0 for UDP).
    pub tcp_hlen: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Ports as raw network-order values.
    pub sport: u16,
    pub dport: u16,
    /// Bytes from the start of the L4 header to the end of the IP datagram.
    pub l4_len: u16,
    /// TCP sequence and acknowledgment numbers, in host order (TCP only; stale for UDP).
    pub tcp_seq: u32,
    pub tcp_ack: u32,
}

impl PacketInfo {
    pub const fn l3(&self) -> usize {
        self.l3_off as usize
    }
    pub const fn l4(&self) -> usize {
        self.l4_off as usize
    }
    pub const fn csum_off(&self) -> usize {
        if self.proto == PROTO_TCP {
            self.l4() + TCP_CSUM_OFF
        } else {
            self.l4() + UDP_CSUM_OFF
        }
    }
    pub const fn src_addr_off(&self) -> usize {
        if self.family == FAMILY_V4 {
            self.l3() + IPV4_SRC_OFF
        } else {
            self.l3() + IPV6_SRC_OFF
        }
    }
    pub const fn dst_addr_off(&self) -> usize {
        if self.family == FAMILY_V4 {
            self.l3() + IPV4_DST_OFF
        } else {
            self.l3() + IPV6_DST_OFF
        }
    }
    /// Bytes of L4 payload (after the TCP or UDP header).
    pub const fn payload_len(&self) -> usize {
        let h = if self.proto == PROTO_TCP {
            self.tcp_hlen as usize
        } else {
            UDP_HLEN
        };
        (self.l4_len as usize).saturating_sub(h)
    }
}

/// Why a packet is not a parsed TCP/UDP packet. Each maps to a defined, counted verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): none of our business.
    NotIp,
    /// IP but neither TCP nor UDP (ICMP, ...): none of our business.
    OtherProto,
    /// An IPv4 fragment or an IPv6 fragment header: ports are not all there.
    Fragment,
    /// IPv4 options or IPv6 extension headers: left to the kernel untranslated.
    IpOptions,
    /// Headers that contradict themselves or the frame (truncated, bad lengths).
    Malformed,
}

/// Parses an Ethernet frame (with up to [`MAX_VLAN_TAGS`] VLAN tags).
pub fn parse_ethernet<B: Bytes + ?Sized>(b: &B) -> Result<PacketInfo, Skip> {
    let mut info = PacketInfo::default();
    parse_ethernet_into(b, &mut info).map(|()| info)
}

/// Parses a packet that starts with its IP header (an L3 device such as WireGuard).
pub fn parse_ip<B: Bytes + ?Sized>(b: &B) -> Result<PacketInfo, Skip> {
    let mut info = PacketInfo::default();
    parse_ip_into(b, 0, &mut info).map(|()| info)
}

/// [`parse_ethernet`] writing into `info`: the kernel keeps `info` in map memory, since
/// copies of it would not fit the 512-byte BPF stack.
#[inline(always)]
pub fn parse_ethernet_into<B: Bytes + ?Sized>(b: &B, info: &mut PacketInfo) -> Result<(), Skip> {
    let mut off = 12;
    let mut ethertype = b.be16(off).ok_or(Skip::Malformed)?;
    let mut i = 0;
    while i < MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        off += VLAN_HLEN;
        ethertype = b.be16(off).ok_or(Skip::Malformed)?;
        i += 1;
    }
    let l3 = off + 2;
    match ethertype {
        ETH_P_IP => parse_ipv4(b, l3, info),
        ETH_P_IPV6 => parse_ipv6(b, l3, info),
        _ => Err(Skip::NotIp),
    }
}

/// [`parse_ip`] writing into `info`, for an IP header at offset `l3`.
#[inline(always)]
pub fn parse_ip_into<B: Bytes + ?Sized>(
    b: &B,
    l3: usize,
    info: &mut PacketInfo,
) -> Result<(), Skip> {
    match b.raw8(l3).ok_or(Skip::Malformed)? >> 4 {
        4 => parse_ipv4(b, l3, info),
        6 => parse_ipv6(b, l3, info),
        _ => Err(Skip::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4<B: Bytes + ?Sized>(b: &B, l3: usize, info: &mut PacketInfo) -> Result<(), Skip> {
    let vihl = b.raw8(l3).ok_or(Skip::Malformed)?;
    if vihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < IPV4_HLEN {
        return Err(Skip::Malformed);
    }
    let tot_len = b.be16(l3 + 2).ok_or(Skip::Malformed)? as usize;
    if tot_len < ihl || l3 + tot_len > b.total_len() {
        return Err(Skip::Malformed);
    }
    let proto = b.raw8(l3 + 9).ok_or(Skip::Malformed)?;
    let src = b.raw32(l3 + IPV4_SRC_OFF).ok_or(Skip::Malformed)?;
    let dst = b.raw32(l3 + IPV4_DST_OFF).ok_or(Skip::Malformed)?;
    let frag = b.be16(l3 + 6).ok_or(Skip::Malformed)?;
    // More-fragments flag or a non-zero offset.
    if frag & 0x3fff != 0 {
        return Err(Skip::Fragment);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Skip::OtherProto);
    }
    if ihl != IPV4_HLEN {
        return Err(Skip::IpOptions);
    }
    info.l3_off = l3 as u16;
    info.l4_off = (l3 + IPV4_HLEN) as u16;
    info.family = FAMILY_V4;
    info.proto = proto;
    info.src = [src, 0, 0, 0];
    info.dst = [dst, 0, 0, 0];
    info.l4_len = (tot_len - IPV4_HLEN) as u16;
    parse_l4(b, info)
}

#[inline(always)]
fn parse_ipv6<B: Bytes + ?Sized>(b: &B, l3: usize, info: &mut PacketInfo) -> Result<(), Skip> {
    let v = b.raw8(l3).ok_or(Skip::Malformed)?;
    if v >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let payload_len = b.be16(l3 + 4).ok_or(Skip::Malformed)? as usize;
    // A zero payload length means a jumbogram (hop-by-hop option), which we never steer.
    if payload_len == 0 || l3 + IPV6_HLEN + payload_len > b.total_len() {
        return Err(Skip::Malformed);
    }
    let next = b.raw8(l3 + 6).ok_or(Skip::Malformed)?;
    match next {
        PROTO_TCP | PROTO_UDP => {}
        44 => return Err(Skip::Fragment),
        // Hop-by-hop, routing, destination options, AH, ESP, mobility, HIP, shim6.
        0 | 43 | 60 | 51 | 50 | 135 | 139 | 140 => return Err(Skip::IpOptions),
        _ => return Err(Skip::OtherProto),
    }
    let mut i = 0;
    while i < 4 {
        info.src[i] = b.raw32(l3 + IPV6_SRC_OFF + i * 4).ok_or(Skip::Malformed)?;
        info.dst[i] = b.raw32(l3 + IPV6_DST_OFF + i * 4).ok_or(Skip::Malformed)?;
        i += 1;
    }
    info.l3_off = l3 as u16;
    info.l4_off = (l3 + IPV6_HLEN) as u16;
    info.family = FAMILY_V6;
    info.proto = next;
    info.l4_len = payload_len as u16;
    parse_l4(b, info)
}

#[inline(always)]
fn parse_l4<B: Bytes + ?Sized>(b: &B, info: &mut PacketInfo) -> Result<(), Skip> {
    let l4 = info.l4();
    let l4_len = info.l4_len as usize;
    info.sport = b.raw16(l4).ok_or(Skip::Malformed)?;
    info.dport = b.raw16(l4 + 2).ok_or(Skip::Malformed)?;
    if info.proto == PROTO_TCP {
        if l4_len < TCP_HLEN {
            return Err(Skip::Malformed);
        }
        let doff = ((b.raw8(l4 + 12).ok_or(Skip::Malformed)? >> 4) as usize) * 4;
        if doff < TCP_HLEN || doff > l4_len {
            return Err(Skip::Malformed);
        }
        info.tcp_hlen = doff as u8;
        info.tcp_flags = b.raw8(l4 + TCP_FLAGS_OFF).ok_or(Skip::Malformed)?;
        info.tcp_seq = u32::from_be(b.raw32(l4 + 4).ok_or(Skip::Malformed)?);
        info.tcp_ack = u32::from_be(b.raw32(l4 + 8).ok_or(Skip::Malformed)?);
        if !tcp_flags_valid(info.tcp_flags) {
            return Err(Skip::Malformed);
        }
        // The checksum must be readable for the rewrite.
        b.raw16(l4 + TCP_CSUM_OFF).ok_or(Skip::Malformed)?;
    } else {
        if l4_len < UDP_HLEN {
            return Err(Skip::Malformed);
        }
        let ulen = b.be16(l4 + 4).ok_or(Skip::Malformed)? as usize;
        if ulen < UDP_HLEN || ulen > l4_len {
            return Err(Skip::Malformed);
        }
        b.raw16(l4 + UDP_CSUM_OFF).ok_or(Skip::Malformed)?;
    }
    Ok(())
}

/// Whether a TCP flag combination can come from a real TCP: a SYN carries neither FIN
/// nor RST, and every other segment carries ACK, or is a RST. What fails (SYN+FIN,
/// SYN+RST, no flags, a lone FIN, the "Xmas" FIN+PSH+URG) only comes from scanners and
/// crafted floods; Linux discards it too, after more work.
#[inline(always)]
pub const fn tcp_flags_valid(flags: u8) -> bool {
    if flags & TCP_SYN != 0 {
        flags & (TCP_FIN | TCP_RST) == 0
    } else {
        flags & (TCP_ACK | TCP_RST) != 0
    }
}

/// TCP option kinds.
pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
pub const TCPOPT_WSCALE: u8 = 3;
pub const TCPOPT_SACK_PERM: u8 = 4;
pub const TCPOPT_TIMESTAMP: u8 = 8;
/// Options looked at before giving up. Every common stack (Linux, Windows, macOS, iOS,
/// Android) sends MSS as the first option of SYN and SYN-ACK; a few more allow for leading
/// NOPs. The bound is kept small because the verifier walks every path through this loop.
pub const MAX_TCP_OPTIONS: usize = 4;

/// Finds the MSS option of the TCP header at `l4_off` (length `tcp_hlen`). Returns the
/// offset of its 16-bit value and the value. Malformed option lists yield `None`: the
/// segment is then forwarded unclamped rather than rewritten on a guess.
#[inline(always)]
pub fn find_mss<B: Bytes + ?Sized>(b: &B, l4_off: usize, tcp_hlen: usize) -> Option<(usize, u16)> {
    let end = l4_off + tcp_hlen;
    let mut off = l4_off + TCP_HLEN;
    let mut i = 0;
    while i < MAX_TCP_OPTIONS {
        if off >= end {
            return None;
        }
        let kind = b.raw8(off)?;
        if kind == TCPOPT_EOL {
            return None;
        }
        if kind == TCPOPT_NOP {
            off += 1;
        } else {
            let len = b.raw8(off + 1)? as usize;
            if len < 2 || off + len > end {
                return None;
            }
            if kind == TCPOPT_MSS {
                if len != 4 {
                    return None;
                }
                return Some((off + 2, b.be16(off + 2)?));
            }
            off += len;
        }
        i += 1;
    }
    None
}

/// The MSS a SYN should carry after clamping to `max`, or `None` if it is already small
/// enough.
#[inline(always)]
pub const fn clamp_mss(current: u16, max: u16) -> Option<u16> {
    if current > max { Some(max) } else { None }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn tcp_syn_v4(opts: &[u8]) -> Vec<u8> {
        let tcp_len = 20 + opts.len();
        let mut p = Vec::new();
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
        p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        let tot = (20 + tcp_len) as u16;
        p[16..18].copy_from_slice(&tot.to_be_bytes());
        p.extend_from_slice(&[203, 0, 113, 2, 203, 0, 113, 1]);
        p.extend_from_slice(&[0xc0, 0x00, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0]);
        p.push(((tcp_len / 4) as u8) << 4);
        p.extend_from_slice(&[TCP_SYN, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(opts);
        p
    }

    #[test]
    fn parses_ipv4_tcp_syn() {
        let p = tcp_syn_v4(&[2, 4, 0x05, 0xb4]);
        let info = parse_ethernet(&p[..]).unwrap();
        assert_eq!(info.family, FAMILY_V4);
        assert_eq!(info.proto, PROTO_TCP);
        assert_eq!(u16::from_be(info.dport), 443);
        assert_eq!(info.tcp_flags, TCP_SYN);
        assert_eq!(info.dst[0].to_ne_bytes(), [203, 0, 113, 1]);
        assert_eq!(
            find_mss(&p[..], info.l4(), info.tcp_hlen as usize),
            Some((14 + 20 + 22, 1460))
        );
    }

    #[test]
    fn mss_after_nops_and_other_options() {
        let p = tcp_syn_v4(&[1, 1, 4, 2, 2, 4, 0x23, 0x28]);
        let info = parse_ethernet(&p[..]).unwrap();
        assert_eq!(
            find_mss(&p[..], info.l4(), info.tcp_hlen as usize).map(|m| m.1),
            Some(9000)
        );
        // Past the scanned options the segment is left alone rather than scanned forever.
        let p = tcp_syn_v4(&[
            1, 1, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 0x23, 0x28, 1, 0,
        ]);
        let info = parse_ethernet(&p[..]).unwrap();
        assert_eq!(find_mss(&p[..], info.l4(), info.tcp_hlen as usize), None);
    }

    #[test]
    fn truncated_and_lying_headers_are_malformed() {
        let p = tcp_syn_v4(&[2, 4, 0x05, 0xb4]);
        for cut in 0..p.len() {
            let r = parse_ethernet(&p[..cut]);
            assert!(r.is_err(), "accepted a frame cut at {cut}");
        }
        let mut bad_ihl = p.clone();
        bad_ihl[14] = 0x44;
        assert_eq!(parse_ethernet(&bad_ihl[..]), Err(Skip::Malformed));
        let mut options = p.clone();
        options[14] = 0x46;
        assert_eq!(parse_ethernet(&options[..]), Err(Skip::IpOptions));
        let mut frag = p.clone();
        frag[20] = 0x20; // more fragments
        assert_eq!(parse_ethernet(&frag[..]), Err(Skip::Fragment));
        let mut doff = p.clone();
        doff[14 + 20 + 12] = 0x40;
        assert_eq!(parse_ethernet(&doff[..]), Err(Skip::Malformed));
        let mut arp = p.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_ethernet(&arp[..]), Err(Skip::NotIp));
    }

    #[test]
    fn malformed_mss_options_are_not_guessed() {
        for opts in [
            &[2u8, 3, 5, 0][..],
            &[2, 0, 0, 0],
            &[8, 40, 0, 0],
            &[0, 2, 4, 5],
        ] {
            let p = tcp_syn_v4(opts);
            let info = parse_ethernet(&p[..]).unwrap();
            assert_eq!(
                find_mss(&p[..], info.l4(), info.tcp_hlen as usize),
                None,
                "{opts:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(info) = parse_ethernet(&data[..]) {
                // Whatever is accepted lies within the frame.
                prop_assert!(info.l4() + info.l4_len as usize <= data.len());
                let _ = find_mss(&data[..], info.l4(), info.tcp_hlen as usize);
            }
            let _ = parse_ip(&data[..]);
        }

        #[test]
        fn mss_found_within_the_scanned_options(nops in 0usize..MAX_TCP_OPTIONS, mss in any::<u16>()) {
            let mut opts: Vec<u8> = std::vec![1; nops];
            opts.extend_from_slice(&[2, 4]);
            opts.extend_from_slice(&mss.to_be_bytes());
            while !opts.len().is_multiple_of(4) { opts.push(0); }
            prop_assume!(opts.len() <= 40);
            let p = tcp_syn_v4(&opts);
            let info = parse_ethernet(&p[..]).unwrap();
            prop_assert_eq!(find_mss(&p[..], info.l4(), info.tcp_hlen as usize).map(|m| m.1), Some(mss));
        }
    }

    #[test]
    fn impossible_tcp_flag_combinations_are_malformed() {
        let with_flags = |f: u8| {
            let mut p = tcp_syn_v4(&[]);
            p[14 + 20 + 13] = f;
            p
        };
        for (name, f, ok) in [
            ("SYN", TCP_SYN, true),
            ("SYN+ACK", TCP_SYN | TCP_ACK, true),
            ("ACK", TCP_ACK, true),
            ("FIN+ACK", TCP_FIN | TCP_ACK, true),
            ("PSH+ACK", 0x08 | TCP_ACK, true),
            ("RST", TCP_RST, true),
            ("RST+ACK", TCP_RST | TCP_ACK, true),
            ("SYN+ECE+CWR", TCP_SYN | 0xc0, true),
            ("SYN+FIN", TCP_SYN | TCP_FIN, false),
            ("SYN+RST", TCP_SYN | TCP_RST, false),
            ("null", 0, false),
            ("FIN", TCP_FIN, false),
            ("Xmas (FIN+PSH+URG)", TCP_FIN | 0x08 | 0x20, false),
            ("all", 0xff, false),
        ] {
            assert_eq!(tcp_flags_valid(f), ok, "{name}");
            let r = parse_ethernet(&with_flags(f)[..]);
            assert_eq!(r.is_ok(), ok, "{name}: {r:?}");
            if !ok {
                assert_eq!(r.unwrap_err(), Skip::Malformed, "{name}");
            }
        }
    }

    proptest! {
        #[test]
        fn a_tcp_segment_parses_exactly_when_its_flags_can_be_real(f in any::<u8>()) {
            let mut p = tcp_syn_v4(&[]);
            p[14 + 20 + 13] = f;
            let real = if f & TCP_SYN != 0 {
                f & (TCP_FIN | TCP_RST) == 0
            } else {
                f & TCP_ACK != 0 || f & TCP_RST != 0
            };
            prop_assert_eq!(parse_ethernet(&p[..]).is_ok(), real);
        }
    }
}

//! Ethernet, VLAN, IPv4/IPv6 and TCP/UDP header parsing into a [`PacketInfo`].

use super::{
    bytes::Bytes,
    headers::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPV4_DST_OFF, IPV4_HLEN, IPV4_SRC_OFF,
        IPV6_DST_OFF, IPV6_HLEN, IPV6_SRC_OFF, MAX_VLAN_TAGS, TCP_ACK, TCP_CSUM_OFF, TCP_FIN,
        TCP_FLAGS_OFF, TCP_HLEN, TCP_RST, TCP_SYN, UDP_CSUM_OFF, UDP_HLEN, VLAN_HLEN,
    },
};
use crate::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

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

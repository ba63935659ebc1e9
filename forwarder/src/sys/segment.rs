//! A TCP segment without payload in its IP packet, checksums computed: the RST that ends
//! the backend's side of a connection served locally, and the doctor's return-path probe.

use std::net::{IpAddr, SocketAddr};

use forwarder_common::{
    PROTO_TCP,
    csum::{fold, sum_be},
    packet::TCP_SYN,
};

/// What goes into the segment.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    /// `TCP_*` flags.
    pub flags: u8,
    pub window: u16,
    /// An MSS option (SYNs only).
    pub mss: Option<u16>,
}

/// One's-complement sum of `parts` in sequence, folded (not inverted). Every part but the
/// last has an even length.
pub fn sum16(parts: &[&[u8]]) -> u16 {
    fold(parts.iter().fold(0, |acc, p| sum_be(p, acc)))
}

fn octets(a: IpAddr, v6: bool) -> Vec<u8> {
    match a {
        IpAddr::V4(a) if !v6 => a.octets().to_vec(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Segment {
    /// The whole IP packet: IPv4 (DF, TTL 64) when both addresses are IPv4, IPv6 (hop
    /// limit 64) otherwise, an IPv4 address then taken as IPv4-mapped.
    pub fn packet(&self) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(24);
        tcp.extend_from_slice(&self.src.port().to_be_bytes());
        tcp.extend_from_slice(&self.dst.port().to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&0u32.to_be_bytes());
        let mss = self.mss.filter(|_| self.flags & TCP_SYN != 0);
        let words: u8 = if mss.is_some() { 6 } else { 5 };
        tcp.push(words << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        if let Some(m) = mss {
            tcp.extend_from_slice(&[2, 4]);
            tcp.extend_from_slice(&m.to_be_bytes());
        }
        let len = tcp.len() as u16;
        let v6 = !(self.src.is_ipv4() && self.dst.is_ipv4());
        let (src, dst) = (octets(self.src.ip(), v6), octets(self.dst.ip(), v6));
        let pseudo_len: Vec<u8> = if v6 {
            [(len as u32).to_be_bytes(), [0, 0, 0, PROTO_TCP]].concat()
        } else {
            [[0, PROTO_TCP], len.to_be_bytes()].concat()
        };
        let c = !sum16(&[&src, &dst, &pseudo_len, &tcp]);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        let mut ip = Vec::with_capacity(40 + tcp.len());
        if v6 {
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&len.to_be_bytes());
            ip.extend_from_slice(&[PROTO_TCP, 64]);
            ip.extend_from_slice(&src);
            ip.extend_from_slice(&dst);
        } else {
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&(20 + len).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, PROTO_TCP, 0, 0]);
            ip.extend_from_slice(&src);
            ip.extend_from_slice(&dst);
            let c = !sum16(&[&ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        ip.extend(tcp);
        ip
    }
}

#[cfg(test)]
mod tests {
    use forwarder_common::{
        csum::checksum_be,
        packet::{find_mss, parse_ip},
        words_to_addr,
    };

    use super::*;

    fn syn(src: &str, dst: &str, mss: u16) -> Vec<u8> {
        Segment {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq: 7,
            flags: TCP_SYN,
            window: 64_240,
            mss: Some(mss),
        }
        .packet()
    }

    #[test]
    fn a_syn_carries_its_mss_and_valid_checksums_in_both_families() {
        let s = syn("198.18.51.82:41000", "10.8.0.2:443", 1380);
        assert_eq!(s.len(), 44);
        assert_eq!(checksum_be(&s[..20]), 0, "IPv4 header checksum");
        let info = parse_ip(&s[..]).unwrap();
        assert_eq!(info.tcp_flags, TCP_SYN);
        assert_eq!(
            find_mss(&s[..], info.l4(), info.tcp_hlen as usize).map(|m| m.1),
            Some(1380)
        );
        assert_eq!(
            sum16(&[&s[12..16], &s[16..20], &[0, PROTO_TCP, 0, 24], &s[20..]]),
            0xffff
        );
        let s6 = syn("[2001:2::5182:1]:41000", "[fd00::2]:443", 1360);
        let info = parse_ip(&s6[..]).unwrap();
        assert_eq!(
            words_to_addr(info.dst, info.family),
            Some("fd00::2".parse().unwrap())
        );
        // TCP checksum over the pseudo-header verifies.
        let tcp = &s6[40..];
        let pseudo = [(tcp.len() as u32).to_be_bytes(), [0, 0, 0, PROTO_TCP]].concat();
        assert_eq!(sum16(&[&s6[8..24], &s6[24..40], &pseudo, tcp]), 0xffff);
    }
}

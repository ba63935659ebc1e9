//! Packet construction: TCP and UDP packets from their fields, IP packets and Ethernet
//! frames, with checksums computed from scratch, so the incremental checksum updates of
//! the kernel programs are checked independently.

use std::net::IpAddr;

use forwarder_common::{PROTO_TCP, PROTO_UDP};

/// The Internet checksum, written here again on purpose: the kernel side uses the
/// incremental arithmetic of forwarder-common, the tests this plain one.
pub fn inet_csum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut i = 0;
        while i + 1 < part.len() {
            sum += u64::from(u16::from_be_bytes([part[i], part[i + 1]]));
            i += 2;
        }
        if i < part.len() {
            sum += u64::from(part[i]) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed address families"),
    }
    p
}

/// One TCP or UDP packet, described by its fields.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgment number (sent when `ACK` is set).
    pub ack: u32,
    pub tcp_options: Vec<u8>,
    pub payload: Vec<u8>,
    /// UDP over IPv4 may carry no checksum.
    pub udp_no_csum: bool,
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

pub fn mss_option(mss: u16) -> Vec<u8> {
    // MSS, SACK permitted, timestamps, NOP, window scale: what Linux sends.
    let mut o = vec![2, 4];
    o.extend_from_slice(&mss.to_be_bytes());
    o.extend_from_slice(&[4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]);
    o
}

impl Pkt {
    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Self {
        Pkt {
            src,
            dst,
            proto: PROTO_TCP,
            sport,
            dport,
            tcp_flags: flags,
            seq: 0x1000_0000,
            ack: 0x2000_0000,
            tcp_options: Vec::new(),
            payload: Vec::new(),
            udp_no_csum: false,
        }
    }
    pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Self {
        Pkt {
            proto: PROTO_UDP,
            payload: payload.to_vec(),
            ..Pkt::tcp(src, sport, dst, dport, 0)
        }
    }
    pub fn options(mut self, o: Vec<u8>) -> Self {
        self.tcp_options = o;
        self
    }
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }
    pub fn ack(mut self, ack: u32) -> Self {
        self.ack = ack;
        self
    }
    pub fn payload(mut self, p: &[u8]) -> Self {
        self.payload = p.to_vec();
        self
    }
    /// The same packet with other addresses and ports (what translation should produce).
    pub fn with(&self, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Self {
        Pkt {
            src: src.0,
            sport: src.1,
            dst: dst.0,
            dport: dst.1,
            ..self.clone()
        }
    }

    /// The L4 header and payload with a correct checksum.
    fn l4(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == PROTO_TCP {
            assert!(
                self.tcp_options.len().is_multiple_of(4),
                "TCP options must be padded"
            );
            l4.extend_from_slice(&self.seq.to_be_bytes());
            l4.extend_from_slice(
                &(if self.tcp_flags & ACK != 0 {
                    self.ack
                } else {
                    0
                })
                .to_be_bytes(),
            );
            l4.push((((20 + self.tcp_options.len()) / 4) as u8) << 4);
            l4.push(self.tcp_flags);
            l4.extend_from_slice(&64240u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            l4.extend_from_slice(&self.tcp_options);
        } else {
            l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(&self.payload);
        if !(self.proto == PROTO_UDP && self.udp_no_csum) {
            let ph = pseudo(self.src, self.dst, self.proto, l4.len());
            let mut c = inet_csum(&[&ph, &l4]);
            if self.proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            let off = if self.proto == PROTO_TCP { 16 } else { 6 };
            l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
        }
        l4
    }

    /// The IP packet (no link-layer header), as it crosses the tunnel.
    pub fn ip(&self) -> Vec<u8> {
        let l4 = self.l4();
        let mut p = Vec::new();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                p.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, self.proto, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                let c = inet_csum(&[&p]);
                p[10..12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                p.extend_from_slice(&[self.proto, 64]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            _ => panic!("mixed address families"),
        }
        p.extend_from_slice(&l4);
        p
    }

    /// The Ethernet frame, as it arrives at the public interface.
    pub fn frame(&self) -> Vec<u8> {
        eth(
            &self.ip(),
            self.src.is_ipv4(),
            [0x02, 0, 0, 0, 0, 1],
            [0x02, 0, 0, 0, 0, 2],
        )
    }
}

pub fn eth(ip: &[u8], v4: bool, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&(if v4 { 0x0800u16 } else { 0x86dd }).to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// Checks the IPv4 header checksum and the TCP/UDP checksum of an IP packet from scratch.
pub fn verify_checksums(ip: &[u8]) -> Result<(), String> {
    let (l4_off, proto, src, dst) = match ip[0] >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0xf) * 4;
            if inet_csum(&[&ip[..ihl]]) != 0 {
                return Err("bad IPv4 header checksum".into());
            }
            let s: [u8; 4] = ip[12..16].try_into().unwrap();
            let d: [u8; 4] = ip[16..20].try_into().unwrap();
            (ihl, ip[9], IpAddr::from(s), IpAddr::from(d))
        }
        6 => {
            let s: [u8; 16] = ip[8..24].try_into().unwrap();
            let d: [u8; 16] = ip[24..40].try_into().unwrap();
            (40, ip[6], IpAddr::from(s), IpAddr::from(d))
        }
        v => return Err(format!("IP version {v}")),
    };
    let l4 = &ip[l4_off..];
    if proto == PROTO_UDP && src.is_ipv4() && l4[6..8] == [0, 0] {
        return Ok(());
    }
    let ph = pseudo(src, dst, proto, l4.len());
    if inet_csum(&[&ph, l4]) != 0 {
        return Err(format!(
            "bad {} checksum",
            if proto == PROTO_TCP { "TCP" } else { "UDP" }
        ));
    }
    Ok(())
}

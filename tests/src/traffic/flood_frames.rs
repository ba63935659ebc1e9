//! Ethernet frames of single IPv4 or IPv6 packets (TCP or UDP) with every checksum right,
//! for the shaped floods (`flood_shapes`): the spoofed packets an attacker writes by hand.

use std::net::IpAddr;

use super::flood::csum;

/// The TTL (IPv4) and hop limit (IPv6) of every spoofed packet. Nothing depends on it: the
/// lab's counters tell spoofed packets by their source, and the VPS's own packets to
/// home (the health probes, sent with the kernel's 64) from a spoofed 10.8.0.1 by it.
pub const SPOOF_TTL: u8 = 47;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// The two ends of the link a frame goes out on.
#[derive(Clone, Copy, Debug)]
pub struct Macs {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

/// A TCP segment's fields (no options but those given, which must be a multiple of 4
/// bytes long).
#[derive(Clone, Copy, Debug)]
pub struct Tcp<'a> {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub options: &'a [u8],
    pub payload: &'a [u8],
}

/// The MSS option a SYN of a real client carries (1460, as on Ethernet).
pub const SYN_OPTIONS: [u8; 4] = [2, 4, 0x05, 0xb4];

/// The frame of a TCP segment from `src` to `dst`.
pub fn tcp_frame(macs: Macs, src: IpAddr, dst: IpAddr, t: &Tcp<'_>) -> Vec<u8> {
    assert!(
        t.options.len().is_multiple_of(4),
        "TCP options pad to 4 bytes"
    );
    let offset_words = (20 + t.options.len()) / 4;
    let mut l4 = Vec::with_capacity(20 + t.options.len() + t.payload.len());
    l4.extend_from_slice(&t.sport.to_be_bytes());
    l4.extend_from_slice(&t.dport.to_be_bytes());
    l4.extend_from_slice(&t.seq.to_be_bytes());
    l4.extend_from_slice(&t.ack.to_be_bytes());
    l4.extend_from_slice(&[(offset_words as u8) << 4, t.flags]);
    l4.extend_from_slice(&64240u16.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0]);
    l4.extend_from_slice(t.options);
    l4.extend_from_slice(t.payload);
    ip_frame(macs, src, dst, PROTO_TCP, l4)
}

/// The frame of a UDP datagram from `src` to `dst`.
pub fn udp_frame(
    macs: Macs,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    ip_frame(macs, src, dst, PROTO_UDP, l4)
}

/// Wraps `l4` (its checksum field zero) in an IP header and an Ethernet header, filling
/// in the IPv4 header checksum and the L4 checksum over the pseudo-header. `src` and
/// `dst` must be of one family.
fn ip_frame(macs: Macs, src: IpAddr, dst: IpAddr, proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let mut pseudo = Vec::with_capacity(40);
    let mut ip = Vec::with_capacity(40);
    let ethertype: u16 = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, SPOOF_TTL, proto, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = csum(&[&ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            0x0800
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            ip.extend_from_slice(&[proto, SPOOF_TTL]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            0x86dd
        }
        _ => panic!("{src} and {dst} are of different families"),
    };
    let mut c = csum(&[&pseudo, &l4]);
    if proto == PROTO_UDP && c == 0 {
        // A computed zero is sent as all ones: zero means "no checksum" (IPv4), which
        // IPv6 does not allow.
        c = 0xffff;
    }
    let off = if proto == PROTO_TCP { 16 } else { 6 };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(14 + ip.len() + l4.len());
    f.extend_from_slice(&macs.dst);
    f.extend_from_slice(&macs.src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend(ip);
    f.extend(l4);
    f
}

/// Whether a frame's checksums are right (IPv4 header, and TCP or UDP over the
/// pseudo-header); for tests of the builders.
pub fn checksums_ok(f: &[u8]) -> bool {
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let ip = &f[14..];
    let (pseudo, proto, l4) = match ethertype {
        0x0800 => {
            if csum(&[&ip[..20]]) != 0 {
                return false;
            }
            let l4 = &ip[20..];
            let mut p = ip[12..20].to_vec();
            p.extend_from_slice(&[0, ip[9]]);
            p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            (p, ip[9], l4)
        }
        0x86dd => {
            let l4 = &ip[40..];
            let mut p = ip[8..40].to_vec();
            p.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, ip[6]]);
            (p, ip[6], l4)
        }
        _ => return false,
    };
    matches!(proto, PROTO_TCP | PROTO_UDP) && csum(&[&pseudo, l4]) == 0
}

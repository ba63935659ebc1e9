//! The shapes of a spoofed flood at the edge: what an attacker sends a forwarded port from
//! made-up sources (SYNs, repeated SYNs, RST then SYN, lone ACK, RST, FIN, data, UDP
//! pairs, one IPv6 /64, sources no internet packet may carry, ACKs aimed at the health
//! probes' connections), one frame or a pair from one source at a time. The sender that
//! paces them is `flood_paced`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    time::Duration,
};

use super::flood_frames::{
    Macs, SYN_OPTIONS, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Tcp, tcp_frame, udp_frame,
};

/// Where a shaped flood goes, and the addresses it claims to come from. Plain values: the
/// caller (the lab) knows them.
#[derive(Clone, Debug)]
pub struct Aim {
    /// The namespace and interface the frames go out of, and the link's two MACs.
    pub ns: String,
    pub iface: String,
    pub macs: Macs,
    /// The VPS's public addresses (the flood's destination; also a spoofed source).
    pub vps_v4: Ipv4Addr,
    pub vps_v6: Ipv6Addr,
    /// The forwarded TCP port and UDP port.
    pub tcp_port: u16,
    pub udp_port: u16,
    /// The tunnel's addresses: the VPS's end (the health probes' source) and home's (the
    /// backend's).
    pub vps_tunnel: Ipv4Addr,
    pub home_tunnel: Ipv4Addr,
    /// The source ports the VPS's own connections to home (health probes) use: its
    /// `net.ipv4.ip_local_port_range`.
    pub probe_ports: RangeInclusive<u16>,
}

/// The made-up sources of the IPv6 shapes: one /64, a new interface identifier per
/// packet (documentation prefix, routed back through the VPS's default route).
pub const SPOOF_PREFIX_V6: [u16; 4] = [0x2001, 0xdb8, 0x5bad, 0x64];

/// Source ports per shape: each shape but the probe ACKs sends from a range of its own
/// (1024 + 1500 × its index, below every local port range), so that what comes back to
/// its sources is told apart from late answers to an earlier shape's (home retransmits a
/// SYN-ACK for a minute).
pub const PORTS_PER_SHAPE: u16 = 1500;

impl Aim {
    /// The source ports `shape` sends from.
    pub fn source_ports(&self, shape: Shape) -> RangeInclusive<u16> {
        if shape == Shape::ProbeAcks {
            return self.probe_ports.clone();
        }
        let lo = 1024 + PORTS_PER_SHAPE * shape.index() as u16;
        lo..=lo + PORTS_PER_SHAPE - 1
    }
}

/// How long after the first packet of a pair its second follows: long enough for home's
/// answer to the first to have come back through the VPS (a millisecond in the lab).
pub const PAIR_GAP: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// SYNs from random sources (every packet a new address).
    Syn,
    /// Every SYN sent twice (a "retransmission" [`PAIR_GAP`] later).
    SynTwice,
    /// A RST, then a SYN from the same address (next source port).
    RstThenSyn,
    /// Lone ACKs from random sources.
    Ack,
    /// Lone RSTs.
    Rst,
    /// Lone FINs (the FIN flag alone).
    Fin,
    /// Data segments: ACK|PSH carrying an HTTP request.
    Data,
    /// To the UDP port: a datagram home answers (a QUIC long header of an unknown version
    /// at the size of an Initial, which a QUIC server answers with Version Negotiation),
    /// then a second datagram from the same source and port.
    UdpPair,
    /// SYNs to the VPS's IPv6 address from random addresses of one /64.
    Syn6Prefix,
    /// ACKs to the VPS's IPv6 address from random addresses of one /64.
    Ack6Prefix,
    /// Spoofed bogon sources, SYNs and ACKs alternately from random ports: the VPS's
    /// tunnel address.
    SrcVpsTunnel,
    /// Home's tunnel address, which is the backend.
    SrcHomeTunnel,
    /// The VPS's own public address.
    SrcVpsPublic,
    /// 127.0.0.1.
    SrcLoopback,
    /// Random multicast addresses (224.0.0.0/4).
    SrcMulticast,
    /// 0.0.0.0.
    SrcUnspecified,
    /// Random link-local addresses (169.254.0.0/16).
    SrcLinkLocal,
    /// ::1 (to the VPS's IPv6 address).
    Src6Loopback,
    /// Random fe80::/64 addresses.
    Src6LinkLocal,
    /// ACKs from the VPS's tunnel address, source ports sweeping the range its own
    /// connections to home use, to the forwarded TCP port: each plants the reverse key
    /// of a health probe to that port.
    ProbeAcks,
}

/// What a shape's packets are, for what the edge must do with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TCP SYNs (possibly among other packets) from routable sources.
    Syn,
    /// TCP without SYN from routable sources.
    NotSyn,
    /// UDP from routable sources.
    Udp,
    /// Sources no packet from the internet may carry.
    Bogon,
}

impl Shape {
    pub const ALL: [Shape; 20] = [
        Shape::Syn,
        Shape::SynTwice,
        Shape::RstThenSyn,
        Shape::Ack,
        Shape::Rst,
        Shape::Fin,
        Shape::Data,
        Shape::UdpPair,
        Shape::Syn6Prefix,
        Shape::Ack6Prefix,
        Shape::SrcVpsTunnel,
        Shape::SrcHomeTunnel,
        Shape::SrcVpsPublic,
        Shape::SrcLoopback,
        Shape::SrcMulticast,
        Shape::SrcUnspecified,
        Shape::SrcLinkLocal,
        Shape::Src6Loopback,
        Shape::Src6LinkLocal,
        Shape::ProbeAcks,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Shape::Syn => "syn",
            Shape::SynTwice => "syn-twice",
            Shape::RstThenSyn => "rst-then-syn",
            Shape::Ack => "ack",
            Shape::Rst => "rst",
            Shape::Fin => "fin",
            Shape::Data => "data",
            Shape::UdpPair => "udp-pair",
            Shape::Syn6Prefix => "syn6-one-64",
            Shape::Ack6Prefix => "ack6-one-64",
            Shape::SrcVpsTunnel => "src-vps-tunnel",
            Shape::SrcHomeTunnel => "src-home-tunnel",
            Shape::SrcVpsPublic => "src-vps-public",
            Shape::SrcLoopback => "src-loopback",
            Shape::SrcMulticast => "src-multicast",
            Shape::SrcUnspecified => "src-unspecified",
            Shape::SrcLinkLocal => "src-link-local",
            Shape::Src6Loopback => "src6-loopback",
            Shape::Src6LinkLocal => "src6-link-local",
            Shape::ProbeAcks => "probe-acks",
        }
    }

    pub fn from_name(name: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.name() == name)
    }

    pub const fn kind(self) -> Kind {
        match self {
            Shape::Syn | Shape::SynTwice | Shape::RstThenSyn | Shape::Syn6Prefix => Kind::Syn,
            Shape::Ack | Shape::Rst | Shape::Fin | Shape::Data | Shape::Ack6Prefix => Kind::NotSyn,
            Shape::UdpPair => Kind::Udp,
            _ => Kind::Bogon,
        }
    }

    /// Its place in [`Shape::ALL`].
    pub fn index(self) -> usize {
        Shape::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// Whether its packets go to the UDP port.
    pub const fn is_udp(self) -> bool {
        matches!(self, Shape::UdpPair)
    }
}

/// The packets of one shape, a unit (one frame, or a pair from one source) at a time.
pub struct Shaper<'a> {
    aim: &'a Aim,
    shape: Shape,
    rng: u64,
    n: u64,
}

/// One frame, or two from the same source, the second due [`PAIR_GAP`] after the first.
pub struct Unit {
    pub first: Vec<u8>,
    pub then: Option<Vec<u8>>,
}

const HTTP_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: app.example.test\r\nAccept: */*\r\n\r\n";

impl<'a> Shaper<'a> {
    pub fn new(aim: &'a Aim, shape: Shape) -> Self {
        // One seed per shape: the same run sends the same packets.
        let rng = 0x9e37_79b9_7f4a_7c15 ^ (shape as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
        Shaper {
            aim,
            shape,
            rng,
            n: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A source port of the shape's range, leaving room for the next port above it.
    fn port(&mut self) -> u16 {
        let r = self.aim.source_ports(self.shape);
        r.start() + (self.next_u64() % u64::from(r.end() - r.start())) as u16
    }

    fn tcp(&mut self, src: IpAddr, sport: u16, flags: u8) -> Vec<u8> {
        let dst = match src {
            IpAddr::V4(_) => IpAddr::V4(self.aim.vps_v4),
            IpAddr::V6(_) => IpAddr::V6(self.aim.vps_v6),
        };
        let r = self.next_u64();
        let syn = flags & TCP_SYN != 0;
        tcp_frame(
            self.aim.macs,
            src,
            dst,
            &Tcp {
                sport,
                dport: self.aim.tcp_port,
                seq: r as u32,
                ack: if flags & TCP_ACK != 0 {
                    (r >> 32) as u32
                } else {
                    0
                },
                flags,
                options: if syn { &SYN_OPTIONS } else { &[] },
                payload: if flags & TCP_PSH != 0 {
                    HTTP_REQUEST
                } else {
                    &[]
                },
            },
        )
    }

    fn random_v4(&mut self) -> IpAddr {
        IpAddr::V4(routable_v4(self.next_u64() as u32))
    }

    fn prefix_v6(&mut self) -> IpAddr {
        let r = self.next_u64();
        let p = SPOOF_PREFIX_V6;
        let w = |i: u32| (r >> (16 * i)) as u16;
        IpAddr::V6(Ipv6Addr::new(
            p[0],
            p[1],
            p[2],
            p[3],
            w(0),
            w(1),
            w(2),
            w(3),
        ))
    }

    /// The next unit of the shape.
    pub fn next_unit(&mut self) -> Unit {
        self.n += 1;
        let one = |first| Unit { first, then: None };
        match self.shape {
            Shape::Syn => {
                let (src, sport) = (self.random_v4(), self.port());
                one(self.tcp(src, sport, TCP_SYN))
            }
            Shape::SynTwice => {
                let (src, sport) = (self.random_v4(), self.port());
                let f = self.tcp(src, sport, TCP_SYN);
                Unit {
                    first: f.clone(),
                    then: Some(f),
                }
            }
            Shape::RstThenSyn => {
                let (src, sport) = (self.random_v4(), self.port());
                let first = self.tcp(src, sport, TCP_RST);
                let then = Some(self.tcp(src, sport + 1, TCP_SYN));
                Unit { first, then }
            }
            Shape::Ack | Shape::Rst | Shape::Fin | Shape::Data => {
                let flags = match self.shape {
                    Shape::Ack => TCP_ACK,
                    Shape::Rst => TCP_RST,
                    Shape::Fin => TCP_FIN,
                    _ => TCP_ACK | TCP_PSH,
                };
                let (src, sport) = (self.random_v4(), self.port());
                one(self.tcp(src, sport, flags))
            }
            Shape::UdpPair => {
                let (src, sport) = (self.random_v4(), self.port());
                let dst = IpAddr::V4(self.aim.vps_v4);
                let hello = unknown_version_long_header(self.next_u64());
                let mut second = vec![0x40u8];
                while second.len() < 64 {
                    second.extend_from_slice(&self.next_u64().to_le_bytes());
                }
                let (m, port) = (self.aim.macs, self.aim.udp_port);
                Unit {
                    first: udp_frame(m, src, dst, sport, port, &hello),
                    then: Some(udp_frame(m, src, dst, sport, port, &second)),
                }
            }
            Shape::Syn6Prefix | Shape::Ack6Prefix => {
                let flags = if self.shape == Shape::Syn6Prefix {
                    TCP_SYN
                } else {
                    TCP_ACK
                };
                let (src, sport) = (self.prefix_v6(), self.port());
                one(self.tcp(src, sport, flags))
            }
            Shape::ProbeAcks => {
                let ports = self.aim.probe_ports.clone();
                let span = u64::from(ports.end() - ports.start()) + 1;
                let sport = ports.start() + ((self.n - 1) % span) as u16;
                one(self.tcp(IpAddr::V4(self.aim.vps_tunnel), sport, TCP_ACK))
            }
            bogon => {
                let src = self.bogon_source(bogon);
                let flags = if self.n.is_multiple_of(2) {
                    TCP_ACK
                } else {
                    TCP_SYN
                };
                let sport = self.port();
                one(self.tcp(src, sport, flags))
            }
        }
    }

    fn bogon_source(&mut self, shape: Shape) -> IpAddr {
        let r = self.next_u64();
        match shape {
            Shape::SrcVpsTunnel => IpAddr::V4(self.aim.vps_tunnel),
            Shape::SrcHomeTunnel => IpAddr::V4(self.aim.home_tunnel),
            Shape::SrcVpsPublic => IpAddr::V4(self.aim.vps_v4),
            Shape::SrcLoopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Shape::SrcMulticast => IpAddr::V4(Ipv4Addr::from(0xe000_0000 | (r as u32 >> 4))),
            Shape::SrcUnspecified => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Shape::SrcLinkLocal => IpAddr::V4(Ipv4Addr::from(0xa9fe_0000 | (r as u32 & 0xffff))),
            Shape::Src6Loopback => IpAddr::V6(Ipv6Addr::LOCALHOST),
            Shape::Src6LinkLocal => IpAddr::V6(Ipv6Addr::from((0xfe80u128 << 112) | u128::from(r))),
            other => unreachable!("{other:?} has no bogon source"),
        }
    }
}

/// A unicast address the internet routes, outside the lab's and special-purpose ranges
/// (a VPS's answer to it leaves by its default route).
pub fn routable_v4(r: u32) -> Ipv4Addr {
    let a = Ipv4Addr::from(r);
    let o = a.octets();
    let special = o[0] == 0
        || o[0] == 10
        || o[0] == 127
        || o[0] >= 224
        || (o[0] == 100 && o[1] & 0xc0 == 64)
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && o[1] & 0xf0 == 16)
        || (o[0] == 192 && o[1] == 168)
        || (o[0] == 192 && o[1] == 0)
        || (o[0] == 198 && o[1] == 51)
        || (o[0] == 203 && o[1] == 0);
    if special {
        Ipv4Addr::new(198, 18 + (o[1] & 1), o[2], o[3])
    } else {
        a
    }
}

/// A 1200-byte QUIC long-header packet of a version nobody speaks (0x1a2a3a4a, of the
/// reserved pattern): a server answers it with Version Negotiation (RFC 9000 §6), which
/// needs no state and no keys.
pub fn unknown_version_long_header(r: u64) -> Vec<u8> {
    let mut p = vec![0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 8];
    p.extend_from_slice(&r.to_be_bytes());
    p.push(8);
    p.extend_from_slice(&r.rotate_left(17).to_be_bytes());
    p.resize(1200, 0);
    p
}

#[cfg(test)]
mod tests;

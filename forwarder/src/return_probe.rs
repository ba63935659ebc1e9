//! The return-path probe of `forwarder doctor`: does home send a client's reply back
//! through the tunnel?
//!
//! A SYN that looks like a client's (source in a range no real client has: RFC 2544's
//! benchmarking networks) is written straight into the tunnel interface toward a backend,
//! and the tunnel interface is watched for the answer (SYN-ACK, or RST when nothing
//! listens: either way home's reply came back). A home whose replies leave by its default
//! route, or whose WireGuard drops packets from addresses outside a narrow `AllowedIPs`,
//! sends nothing back. The probe connection is reset afterwards, so home keeps no
//! half-open connection. The tap sees the reply before the tunnel's tc program; the
//! VPS's stack then drops it (not addressed to the VPS), or, with forwarding on, routes it
//! toward a network that is not routed on the internet.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use forwarder_common::{
    PROTO_TCP,
    csum::{checksum_be, fold, sum_be},
    packet::{TCP_RST, TCP_SYN, find_mss, parse_ip},
};

use crate::dataplane::words_to_addr;

/// Source of the IPv4 probe: 198.18.0.0/15 is for benchmarking (RFC 2544), never a real
/// client on the internet.
pub const PROBE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 51, 82);
/// Source of the IPv6 probe: 2001:2::/48, IPv6's benchmarking prefix (RFC 5180).
pub const PROBE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0x5182, 0x0001);

/// What came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A SYN-ACK, with the MSS home advertised (its side's MTU, minus headers).
    SynAck { mss: Option<u16> },
    /// A RST: the reply came back, but nothing listens there.
    Reset,
    /// Nothing within the time given.
    Nothing,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("opening a {what} socket (needs CAP_NET_RAW): {source}")]
    Socket {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("binding to {iface}: {source}")]
    Bind {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("sending the probe into {iface}: {source}")]
    Send {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("interface {0:?} not found")]
    NoInterface(String),
}

/// Sends a probe SYN from the probe address of `backend`'s family into `iface` toward
/// `backend:port`, advertising `mss`, and waits up to `wait` for home's answer.
pub fn probe(
    iface: &str,
    backend: IpAddr,
    port: u16,
    mss: u16,
    wait: Duration,
) -> Result<Answer, ProbeError> {
    let ifindex = nix::net::if_::if_nametoindex(iface)
        .map_err(|_| ProbeError::NoInterface(iface.to_owned()))?;
    let src = match backend {
        IpAddr::V4(_) => IpAddr::V4(PROBE_V4),
        IpAddr::V6(_) => IpAddr::V6(PROBE_V6),
    };
    // A port of our own per run, so concurrent doctors (or a retry) never take each
    // other's answers.
    let sport = 40_000 + (std::process::id() % 20_000) as u16;
    let isn = nanos_now();
    // The tap first, so the answer cannot come before it listens.
    let tap = tap(ifindex)?;
    let sender = raw_sender(backend, iface)?;
    send(
        &sender,
        &syn(src, backend, sport, port, isn, mss, TCP_SYN),
        backend,
        iface,
    )?;
    let answer = wait_answer(&tap, backend, port, src, sport, isn, wait);
    if matches!(answer, Answer::SynAck { .. }) {
        // Home keeps no half-open connection from the probe.
        let _ = send(
            &sender,
            &syn(src, backend, sport, port, isn.wrapping_add(1), 0, TCP_RST),
            backend,
            iface,
        );
    }
    Ok(answer)
}

fn nanos_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5182_0001, |d| d.subsec_nanos() ^ d.as_secs() as u32)
}

/// An AF_PACKET socket seeing every packet `ifindex` receives (as IP packets: the
/// tunnel has no link-layer header).
fn tap(ifindex: u32) -> Result<OwnedFd, ProbeError> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: a plain socket(2) call; the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto as i32) };
    if fd < 0 {
        return Err(ProbeError::Socket {
            what: "packet",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and its exact size is passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(ProbeError::Bind {
            iface: format!("ifindex {ifindex}"),
            source: io::Error::last_os_error(),
        });
    }
    Ok(fd)
}

/// A raw socket that sends whole IP packets (IPPROTO_RAW: the header is ours), bound to
/// `iface`.
fn raw_sender(backend: IpAddr, iface: &str) -> Result<OwnedFd, ProbeError> {
    let family = if backend.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a plain socket(2) call; the result is checked before it is owned.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(ProbeError::Socket {
            what: "raw IP",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = iface.as_bytes();
    // SAFETY: the option value is the interface name's bytes, with their length.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as u32,
        )
    };
    if r != 0 {
        return Err(ProbeError::Bind {
            iface: iface.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(fd)
}

fn send(fd: &OwnedFd, packet: &[u8], to: IpAddr, iface: &str) -> Result<(), ProbeError> {
    let r = match to {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain data; all-zero is a valid value to fill in.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            send_to(fd, packet, &sa)
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data; all-zero is a valid value to fill in.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as u16;
            sa.sin6_addr.s6_addr = a.octets();
            send_to(fd, packet, &sa)
        }
    };
    if r < 0 {
        return Err(ProbeError::Send {
            iface: iface.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// sendto(2) of `packet` to the socket address `sa` (a `sockaddr_in` or `sockaddr_in6`).
fn send_to<A>(fd: &OwnedFd, packet: &[u8], sa: &A) -> isize {
    // SAFETY: `packet` and `sa` are valid for the lengths passed.
    unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (sa as *const A).cast(),
            size_of::<A>() as u32,
        )
    }
}

/// A TCP segment without payload (`flags` SYN with an MSS option, or RST), in its IP
/// packet, checksums computed.
pub fn syn(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    mss: u16,
    flags: u8,
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(24);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    let with_mss = flags & TCP_SYN != 0;
    let words: u8 = if with_mss { 6 } else { 5 };
    tcp.push(words << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&64_240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    if with_mss {
        tcp.extend_from_slice(&[2, 4]);
        tcp.extend_from_slice(&mss.to_be_bytes());
    }
    let len = tcp.len() as u16;
    let mut pkt = Vec::with_capacity(60);
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pkt.extend_from_slice(&[0x45, 0]);
            pkt.extend_from_slice(&(20 + len).to_be_bytes());
            pkt.extend_from_slice(&[0, 0, 0x40, 0, 64, PROTO_TCP, 0, 0]);
            pkt.extend_from_slice(&s.octets());
            pkt.extend_from_slice(&d.octets());
            let c = checksum_be(&pkt);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
            let mut p = Vec::from(s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, PROTO_TCP]);
            p.extend_from_slice(&len.to_be_bytes());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pkt.extend_from_slice(&[0x60, 0, 0, 0]);
            pkt.extend_from_slice(&len.to_be_bytes());
            pkt.extend_from_slice(&[PROTO_TCP, 64]);
            pkt.extend_from_slice(&s.octets());
            pkt.extend_from_slice(&d.octets());
            let mut p = Vec::from(s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, PROTO_TCP]);
            p
        }
        _ => return Vec::new(),
    };
    let c = !fold(sum_be(&tcp, sum_be(&pseudo, 0)));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    pkt.extend_from_slice(&tcp);
    pkt
}

/// Reads the tap until home's answer to the probe arrives or `wait` has passed.
fn wait_answer(
    tap: &OwnedFd,
    backend: IpAddr,
    port: u16,
    probe: IpAddr,
    sport: u16,
    isn: u32,
    wait: Duration,
) -> Answer {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Answer::Nothing;
        }
        let mut pfd = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, its count, a bounded timeout.
        let n = unsafe { libc::poll(&raw mut pfd, 1, left.as_millis().max(1) as i32) };
        if n <= 0 {
            continue;
        }
        // SAFETY: `buf` is valid for writes of its length.
        let got = unsafe {
            libc::recv(
                tap.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let Ok(got) = usize::try_from(got) else {
            continue;
        };
        if let Some(a) = answer_of(&buf[..got], backend, port, probe, sport, isn) {
            return a;
        }
    }
}

/// Home's answer to the probe, if `pkt` (an IP packet) is one.
pub fn answer_of(
    pkt: &[u8],
    backend: IpAddr,
    port: u16,
    probe: IpAddr,
    sport: u16,
    isn: u32,
) -> Option<Answer> {
    let info = parse_ip(pkt).ok()?;
    if info.proto != PROTO_TCP
        || words_to_addr(info.src, info.family)? != backend
        || words_to_addr(info.dst, info.family)? != probe
        || u16::from_be(info.sport) != port
        || u16::from_be(info.dport) != sport
        || info.tcp_ack != isn.wrapping_add(1)
    {
        return None;
    }
    if info.tcp_flags & TCP_RST != 0 {
        return Some(Answer::Reset);
    }
    if info.tcp_flags & TCP_SYN != 0 {
        let mss = find_mss(pkt, info.l4(), info.tcp_hlen as usize).map(|(_, m)| m);
        return Some(Answer::SynAck { mss });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_valid_syn_and_its_answers_are_recognised() {
        let home: IpAddr = "10.8.0.2".parse().unwrap();
        let probe: IpAddr = PROBE_V4.into();
        let s = syn(probe, home, 41_000, 443, 7, 1380, TCP_SYN);
        assert_eq!(s.len(), 44);
        assert_eq!(checksum_be(&s[..20]), 0, "IPv4 header checksum");
        let info = parse_ip(&s[..]).unwrap();
        assert_eq!(info.tcp_flags, TCP_SYN);
        assert_eq!(
            find_mss(&s[..], info.l4(), info.tcp_hlen as usize).map(|m| m.1),
            Some(1380)
        );
        // Home's SYN-ACK: the probe's SYN with addresses and ports swapped, ACK of ISN+1.
        let mut reply = syn(home, probe, 443, 41_000, 1000, 1240, TCP_SYN);
        reply[20 + 8..20 + 12].copy_from_slice(&8u32.to_be_bytes());
        reply[20 + 13] |= 0x10;
        assert_eq!(
            answer_of(&reply, home, 443, probe, 41_000, 7),
            Some(Answer::SynAck { mss: Some(1240) })
        );
        assert_eq!(answer_of(&reply, home, 443, probe, 41_001, 7), None);
        assert_eq!(answer_of(&reply, home, 443, probe, 41_000, 8), None);
        let v6: IpAddr = "fd00::2".parse().unwrap();
        let s6 = syn(PROBE_V6.into(), v6, 41_000, 443, 7, 1360, TCP_SYN);
        let info = parse_ip(&s6[..]).unwrap();
        assert_eq!(words_to_addr(info.dst, info.family), Some(v6));
        // TCP checksum over the pseudo-header verifies to zero.
        let tcp = &s6[40..];
        let mut pseudo = Vec::from(PROBE_V6.octets());
        pseudo.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, PROTO_TCP]);
        assert_eq!(!fold(sum_be(tcp, sum_be(&pseudo, 0))), 0);
    }
}

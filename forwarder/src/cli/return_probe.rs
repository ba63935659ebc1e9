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
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use forwarder_common::{
    PROTO_TCP,
    packet::{TCP_RST, TCP_SYN, find_mss, parse_ip},
    words_to_addr,
};

use crate::sys::{segment::Segment, socket as sys};

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
    #[error("opening a {what} socket on the tunnel (needs CAP_NET_RAW): {source}")]
    Socket {
        what: &'static str,
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
    let (from, to) = (SocketAddr::new(src, sport), SocketAddr::new(backend, port));
    let segment = |seq, flags, mss| {
        Segment {
            src: from,
            dst: to,
            seq,
            flags,
            window: 64_240,
            mss,
        }
        .packet()
    };
    // The tap first, so the answer cannot come before it listens.
    let tap = sys::packet_tap(ifindex).map_err(|source| ProbeError::Socket {
        what: "packet",
        source,
    })?;
    let sender = sys::raw_sender(backend, ifindex).map_err(|source| ProbeError::Socket {
        what: "raw IP",
        source,
    })?;
    let send = |packet: &[u8]| {
        sys::send_packet(&sender, backend, packet).map_err(|source| ProbeError::Send {
            iface: iface.to_owned(),
            source,
        })
    };
    send(&segment(isn, TCP_SYN, Some(mss)))?;
    let answer = wait_answer(&tap, backend, port, src, sport, isn, wait);
    if matches!(answer, Answer::SynAck { .. }) {
        // Home keeps no half-open connection from the probe.
        let _ = send(&segment(isn.wrapping_add(1), TCP_RST, None));
    }
    Ok(answer)
}

fn nanos_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5182_0001, |d| d.subsec_nanos() ^ d.as_secs() as u32)
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
        let Some(got) = sys::recv_within(tap, &mut buf, left) else {
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

    fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32, mss: u16) -> Vec<u8> {
        Segment {
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
            seq,
            flags: TCP_SYN,
            window: 64_240,
            mss: Some(mss),
        }
        .packet()
    }

    #[test]
    fn home_s_answers_to_the_probe_are_recognised() {
        let home: IpAddr = "10.8.0.2".parse().unwrap();
        let probe: IpAddr = PROBE_V4.into();
        // Home's SYN-ACK: the probe's SYN with addresses and ports swapped, ACK of ISN+1.
        let mut reply = syn(home, probe, 443, 41_000, 1000, 1240);
        reply[20 + 8..20 + 12].copy_from_slice(&8u32.to_be_bytes());
        reply[20 + 13] |= 0x10;
        assert_eq!(
            answer_of(&reply, home, 443, probe, 41_000, 7),
            Some(Answer::SynAck { mss: Some(1240) })
        );
        assert_eq!(answer_of(&reply, home, 443, probe, 41_001, 7), None);
        assert_eq!(answer_of(&reply, home, 443, probe, 41_000, 8), None);
        // A RST in answer counts too: the reply came back.
        reply[20 + 13] = 0x14;
        assert_eq!(
            answer_of(&reply, home, 443, probe, 41_000, 7),
            Some(Answer::Reset)
        );
        // The probe's own SYN, seen on the tap too, is not an answer.
        let own = syn(probe, home, 41_000, 443, 7, 1380);
        assert_eq!(answer_of(&own, home, 443, probe, 41_000, 7), None);
    }
}

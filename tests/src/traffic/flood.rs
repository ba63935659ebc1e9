//! A flood generator for the benchmark: SYNs to a forwarded port and junk UDP to random
//! ports, from spoofed sources, written as raw Ethernet frames (AF_PACKET) out of an
//! interface of a lab namespace as fast as one thread can. Stops when asked, and after a
//! hard deadline in any case.

use std::{
    fs,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Longest a flood runs, whatever the caller does.
const MAX_RUN: Duration = Duration::from_secs(120);
/// Distinct frames cycled through (sources, ports).
const FRAMES: usize = 4096;

pub struct Flood {
    stop: Arc<AtomicBool>,
    started: Instant,
    thread: JoinHandle<anyhow::Result<u64>>,
}

/// Where the flood goes: out of `iface` in namespace `ns`, to `dst_mac` / `target`.
#[derive(Clone, Debug)]
pub struct Target {
    pub ns: String,
    pub iface: String,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub target: Ipv4Addr,
    /// The port SYNs go to (a forwarded one).
    pub syn_port: u16,
}

impl Flood {
    pub fn start(t: Target) -> anyhow::Result<Self> {
        let frames = frames(&t);
        Self::start_frames(t, frames)
    }

    /// Fake QUIC Initials to `port` (see [`quic_initial_frames`]).
    pub fn start_quic(t: Target, port: u16) -> anyhow::Result<Self> {
        let frames = quic_initial_frames(&t, port);
        Self::start_frames(t, frames)
    }

    fn start_frames(t: Target, frames: Vec<Vec<u8>>) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || send_loop(&t, &frames, &stop)
        });
        Ok(Flood {
            stop,
            started: Instant::now(),
            thread,
        })
    }

    /// Stops the flood; returns the frames sent and the rate (frames per second).
    pub fn stop(self) -> anyhow::Result<(u64, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let sent = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        Ok((sent, sent as f64 / secs))
    }
}

fn send_loop(t: &Target, frames: &[Vec<u8>], stop: &AtomicBool) -> anyhow::Result<u64> {
    let socket = PacketSocket::open(&t.ns, &t.iface, t.dst_mac)?;
    let deadline = Instant::now() + MAX_RUN;
    let mut frames = frames.to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut sent = 0u64;
    'run: loop {
        for chunk in frames.chunks_mut(256) {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                break 'run;
            }
            for f in chunk {
                // A new made-up source for every frame, as a spoofing flood has: the
                // same address twice would pass the SYN flood guard as a retry.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                set_source(f, spoofed(x as u32));
                if socket.send(f) {
                    sent += 1;
                }
            }
        }
    }
    Ok(sent)
}

/// An AF_PACKET socket bound to an interface of a lab namespace, sending whole Ethernet
/// frames. Opening it moves the calling thread into the namespace (for good: call it on a
/// thread of its own, which leaves the namespace when it ends).
pub(super) struct PacketSocket(OwnedFd);

impl PacketSocket {
    pub(super) fn open(ns: &str, iface: &str, dst_mac: [u8; 6]) -> anyhow::Result<Self> {
        let f = fs::File::open(format!("/run/netns/{ns}")).context("opening the namespace")?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("entering the namespace")?;
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .with_context(|| format!("no interface {iface} in {ns}"))?;
        // SAFETY: a plain socket call; the descriptor is owned right below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst_mac);
        // SAFETY: `addr` is a valid sockaddr_ll of the length given, `fd` an open socket.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            bail!("binding to {iface}: {}", std::io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    /// Sends one frame; false when the kernel refused it (e.g. a full queue).
    pub(super) fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: `frame` is valid for `frame.len()` bytes; the socket is open.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        n > 0
    }
}

/// A unicast address outside the lab's and the special-purpose ranges that matter here.
pub(super) fn spoofed(r: u32) -> Ipv4Addr {
    let a = Ipv4Addr::from(r);
    let o = a.octets();
    if o[0] == 0 || o[0] == 10 || o[0] == 127 || o[0] >= 224 || (o[0] == 203 && o[1] == 0) {
        Ipv4Addr::new(198, 18, o[2], o[3])
    } else {
        a
    }
}

/// Rewrites a frame's IPv4 source address, with both checksums.
fn set_source(f: &mut [u8], src: Ipv4Addr) {
    const IP: usize = 14;
    f[IP + 12..IP + 16].copy_from_slice(&src.octets());
    f[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
    let c = csum(&[&f[IP..IP + 20]]);
    f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    let proto = f[IP + 9];
    let off = IP + 20 + if proto == 6 { 16 } else { 6 };
    f[off..off + 2].copy_from_slice(&[0, 0]);
    let l4_len = f.len() - IP - 20;
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&f[IP + 12..IP + 20]);
    pseudo[9] = proto;
    pseudo[10..].copy_from_slice(&(l4_len as u16).to_be_bytes());
    let c = csum(&[&pseudo, &f[IP + 20..]]);
    f[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

// Not forwarder_common::csum: the compare binary also builds without the `bpf` feature,
// and so without forwarder-common.
pub(super) fn csum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for p in parts {
        for c in p.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Half SYNs to `syn_port`, half 64-byte UDP datagrams to random ports, from random ports
/// (the sender gives each frame a new source address), checksums right.
fn frames(t: &Target) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..FRAMES)
        .map(|i| {
            let r = next();
            let src = Ipv4Addr::new(198, 18 + (r & 1) as u8, (r >> 8) as u8, (r >> 16) as u8);
            let sport = 1024 + ((r >> 24) as u16 % 60000);
            let l4 = if i % 2 == 0 {
                let mut h = Vec::with_capacity(20);
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&t.syn_port.to_be_bytes());
                h.extend_from_slice(&((r >> 32) as u32).to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02]);
                h.extend_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]);
                h
            } else {
                let dport = 1024 + ((r >> 40) as u16 % 60000);
                let mut h = Vec::with_capacity(72);
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&72u16.to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h.extend(std::iter::repeat_n(0xa5u8, 64));
                h
            };
            let proto = if i % 2 == 0 { 6u8 } else { 17 };
            frame(t, src, proto, l4)
        })
        .collect()
}

/// Datagrams that look like QUIC v1 Initials to the kernel (long header, version 1, type
/// Initial, 1200 bytes) but are random beyond the header: each would cost the daemon an
/// attempt to decrypt it. From random ports (the sender gives each a new source address).
pub fn quic_initial_frames(t: &Target, port: u16) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x6a09_e667_f3bc_c908;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..FRAMES / 4)
        .map(|_| {
            let r = next();
            let src = Ipv4Addr::new(198, 18, (r >> 8) as u8, (r >> 16) as u8);
            let sport = 1024 + ((r >> 24) as u16 % 60000);
            let mut payload = vec![0xc3, 0, 0, 0, 1, 8];
            while payload.len() < 1200 {
                payload.extend_from_slice(&next().to_le_bytes());
            }
            payload.truncate(1200);
            // Token length 0 and a Length that fits the datagram.
            payload[6 + 8] = 0;
            payload[6 + 9] = 0;
            payload[6 + 10..6 + 12].copy_from_slice(&(0x4000u16 | 1100).to_be_bytes());
            let mut l4 = Vec::with_capacity(8 + payload.len());
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&port.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            l4.extend(payload);
            frame(t, src, 17, l4)
        })
        .collect()
}

/// The Ethernet frame of an IPv4 packet from `src` to the target carrying `l4` (a TCP or
/// UDP header and payload, checksum field zero), both checksums filled in.
fn frame(t: &Target, src: Ipv4Addr, proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&t.target.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let c = csum(&[&pseudo, &l4]);
    let off = if proto == 6 { 16 } else { 6 };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&t.target.octets());
    let c = csum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(14 + ip.len() + l4.len());
    f.extend_from_slice(&t.dst_mac);
    f.extend_from_slice(&t.src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend(ip);
    f.extend(l4);
    f
}

/// A MAC address as `ip` prints it.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("not a MAC address: {s:?}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("not a MAC address: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_valid_checksums() {
        let t = Target {
            ns: String::new(),
            iface: String::new(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            target: Ipv4Addr::new(203, 0, 113, 1),
            syn_port: 443,
        };
        let fs = frames(&t);
        assert_eq!(fs.len(), FRAMES);
        for f in &fs {
            let ip = &f[14..];
            assert_eq!(csum(&[&ip[..20]]), 0, "IPv4 header checksum");
            let l4 = &ip[20..];
            let mut pseudo = ip[12..20].to_vec();
            pseudo.extend_from_slice(&[0, ip[9]]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            assert_eq!(csum(&[&pseudo, l4]), 0, "L4 checksum");
        }
        assert!(fs.iter().any(|f| f[14 + 9] == 6 && f[14 + 20 + 13] == 0x02));
        let mut f = fs[0].clone();
        set_source(&mut f, spoofed(0x0a01_0203));
        assert_eq!(&f[26..30], &[198, 18, 2, 3]);
        let ip = &f[14..];
        assert_eq!(csum(&[&ip[..20]]), 0, "IPv4 header checksum after rewrite");
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, ip[9]]);
        pseudo.extend_from_slice(&((ip.len() - 20) as u16).to_be_bytes());
        assert_eq!(csum(&[&pseudo, &ip[20..]]), 0, "L4 checksum after rewrite");
        assert!(fs.iter().any(|f| f[14 + 9] == 17));
        assert_eq!(
            parse_mac("02:ab:00:00:00:01\n").unwrap(),
            [2, 0xab, 0, 0, 0, 1]
        );
        assert!(parse_mac("nope").is_err());
    }
}

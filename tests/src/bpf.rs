//! Runs the real kernel object with BPF_PROG_TEST_RUN: named input packets in, verdict and
//! exact output bytes out. Packets are built here with checksums computed from scratch, so
//! the incremental checksum updates of the kernel programs are checked independently.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use forwarder::dataplane::{EBPF_OBJECT, addr_words};
use forwarder_common::{
    CONFIG_MAP, COUNTERS_MAP, Counter, DataplaneConfig, FLOWS_MAP, FlowKey, FlowValue,
    HOST_FIRST_CONFIGURED, HOSTS_MAP, HostKey, HostValue, NEW_FLOWS_MAP, PROTO_TCP, PROTO_UDP,
    RULES_MAPS, RuleKey, RuleValue, TC_INGRESS_PROG, TC_TUNNEL_PROG, XDP_INGRESS_PROG,
    host::HostPattern,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
pub const PUBLIC4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const BACKEND4: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7);
pub const PUBLIC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const BACKEND6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const UDP_PUBLIC_PORT: u16 = 5353;
pub const UDP_BACKEND_PORT: u16 = 53;
pub const MSS4: u16 = 1380;
pub const MSS6: u16 = 1360;

// ---------------------------------------------------------------------------------------
// Packet construction

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

// ---------------------------------------------------------------------------------------
// The harness

/// Interface numbers the test configuration uses. BPF_PROG_TEST_RUN does not deliver
/// redirects, so these need not exist, except the tunnel's (see `Harness::tunnel`).
pub const PUBLIC_IFINDEX: u32 = 7;

/// The forward flow key of the TCP connection `client` -> `public`.
pub fn flow_key(client: (IpAddr, u16), public: (IpAddr, u16)) -> FlowKey {
    let (src, family) = addr_words(client.0);
    let (dst, _) = addr_words(public.0);
    FlowKey {
        src,
        dst,
        sport: client.1.to_be(),
        dport: public.1.to_be(),
        proto: PROTO_TCP,
        family,
        _pad: [0; 2],
    }
}

/// A TCP connection through the whole handshake: the client's SYN (a frame), the
/// backend's SYN-ACK (an IP packet, as it comes out of the tunnel), the client's ACK of it
/// (a frame), and what the client sends next.
pub struct OpenedConn {
    pub syn: Vec<u8>,
    pub synack: Vec<u8>,
    pub ack: Vec<u8>,
    pub payload: Vec<Vec<u8>>,
    /// The client's next sequence number and the acknowledgment it sends from now on.
    pub client_seq: u32,
    pub client_ack: u32,
}

impl OpenedConn {
    pub fn handshake(client: (IpAddr, u16), public: (IpAddr, u16), backend: (IpAddr, u16)) -> Self {
        let (isn, server_isn) = (0x1000_0000u32, 0x6000_0000u32);
        OpenedConn {
            syn: Pkt::tcp(client.0, client.1, public.0, public.1, SYN)
                .seq(isn)
                .options(mss_option(1460))
                .frame(),
            synack: Pkt::tcp(backend.0, backend.1, client.0, client.1, SYN | ACK)
                .seq(server_isn)
                .ack(isn + 1)
                .options(mss_option(1460))
                .ip(),
            ack: Pkt::tcp(client.0, client.1, public.0, public.1, ACK)
                .seq(isn + 1)
                .ack(server_isn + 1)
                .frame(),
            payload: Vec::new(),
            client_seq: isn + 1,
            client_ack: server_isn + 1,
        }
    }
}

pub struct Harness {
    pub ebpf: Ebpf,
    pub tunnel_ifindex: u32,
    _netns: NetNs,
}

/// A network namespace with a TUN device, entered by the current thread, so the tunnel
/// program can be run on an L3 device as it is on wg0. Removed on drop.
struct NetNs {
    name: String,
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Harness {
    /// Loads the object, configures two TCP rules (IPv4 and IPv6 port 443) and a UDP rule
    /// (5353 -> 53), with `tc_translate` as given.
    pub fn new(tc_translate: bool) -> anyhow::Result<Self> {
        let name = format!(
            "fwd-bpf-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        crate::run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = NetNs { name: name.clone() };
        crate::run(
            Command::new("ip").args(["-n", &name, "tuntap", "add", "mode", "tun", "dev", "tun0"]),
        )?;
        crate::run(Command::new("ip").args(["-n", &name, "link", "set", "tun0", "up"]))?;
        let f = std::fs::File::open(format!("/run/netns/{name}"))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("entering the test namespace")?;
        let tunnel_ifindex = nix::net::if_::if_nametoindex("tun0")?;

        let mut ebpf = Ebpf::load(EBPF_OBJECT).context("loading the object")?;
        for p in [TC_INGRESS_PROG, TC_TUNNEL_PROG] {
            let prog: &mut SchedClassifier = ebpf.program_mut(p).context("program")?.try_into()?;
            prog.load()?;
        }
        let xdp: &mut Xdp = ebpf
            .program_mut(XDP_INGRESS_PROG)
            .context("program")?
            .try_into()?;
        xdp.load()?;
        forwarder::dataplane::load_readers(&mut ebpf)?;
        {
            let mut rules: HashMap<&mut MapData, RuleKey, RuleValue> =
                HashMap::try_from(ebpf.map_mut(RULES_MAPS[0]).context("rules")?)?;
            let mut add = |public: IpAddr, proto: u8, port: u16, backend: IpAddr, bport: u16| {
                let (addr, family) = addr_words(public);
                let (backend_addr, _) = addr_words(backend);
                rules.insert(
                    RuleKey {
                        addr,
                        port: port.to_be(),
                        proto,
                        family,
                    },
                    RuleValue {
                        backend_addr,
                        backend_port: bport.to_be(),
                        family,
                        flags: 0,
                        tunnel_ifindex,
                    },
                    0,
                )
            };
            add(PUBLIC4.into(), PROTO_TCP, 443, BACKEND4.into(), 443)?;
            add(PUBLIC6.into(), PROTO_TCP, 443, BACKEND6.into(), 443)?;
            add(
                PUBLIC4.into(),
                PROTO_UDP,
                UDP_PUBLIC_PORT,
                BACKEND4.into(),
                UDP_BACKEND_PORT,
            )?;
            add(
                PUBLIC6.into(),
                PROTO_UDP,
                UDP_PUBLIC_PORT,
                BACKEND6.into(),
                UDP_BACKEND_PORT,
            )?;
        }
        let mut cfg: Array<&mut MapData, DataplaneConfig> =
            Array::try_from(ebpf.map_mut(CONFIG_MAP).context("config")?)?;
        cfg.set(
            0,
            DataplaneConfig {
                public_ifindex: PUBLIC_IFINDEX,
                mss_v4: MSS4,
                mss_v6: MSS6,
                enabled: 1,
                tc_translate: u32::from(tc_translate),
                tunnel_l2_len: 14,
                conn_rate: 0,
                conn_burst: 0,
                rules_set: 0,
                attach_mode: 0,
                flags: 0,
                syn_flood_threshold: 0,
                quic_rate: 0,
                quic_burst: 0,
                _pad: 0,
            },
            0,
        )?;
        Ok(Harness {
            ebpf,
            tunnel_ifindex,
            _netns: netns,
        })
    }

    /// Runs the XDP program; returns (verdict, metadata, packet).
    pub fn xdp(&self, frame: &[u8]) -> (u32, Vec<u8>, Vec<u8>) {
        let prog: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        // xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx_in = [0u8; 24];
        ctx_in[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        let mut ctx_out = [0u8; 24];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::default()
            })
            .expect("XDP test run");
        out.truncate(r.data_size_out as usize);
        // The output starts at the metadata; ctx_out.data is the packet's offset in it.
        let meta_len = u32::from_ne_bytes(ctx_out[0..4].try_into().unwrap()) as usize;
        let pkt = out.split_off(meta_len);
        (r.return_value, out, pkt)
    }

    /// Runs tc ingress on the public interface (an Ethernet frame); returns (verdict, frame).
    pub fn tc_ingress(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.tc(TC_INGRESS_PROG, frame, 0)
    }

    /// Runs tc ingress on the tunnel (an IP packet, as wg0 delivers it); returns (verdict,
    /// output). On redirect the output is an Ethernet frame ready for the public interface.
    pub fn tunnel(&self, ip: &[u8]) -> (u32, Vec<u8>) {
        // BPF_PROG_TEST_RUN always hands tc programs an Ethernet frame, so the harness
        // configures a tunnel with a 14-byte link-layer header (as a GRETAP or VXLAN tunnel
        // would have); the bare-IP case of wg0 differs only in that offset and is covered
        // by the namespace tests with real WireGuard.
        let frame = eth(ip, ip[0] >> 4 == 4, [0; 6], [0; 6]);
        self.tc(TC_TUNNEL_PROG, &frame, 0)
    }

    fn tc(&self, name: &str, data: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        self.try_tc(name, data, ifindex).expect("tc test run")
    }

    /// A tc test run, or the kernel's refusal to build an skb from `data` (it wants at
    /// least a whole IP header behind an IP ethertype): such a packet never reaches tc.
    pub fn try_tc(
        &self,
        name: &str,
        data: &[u8],
        ifindex: u32,
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let prog: &SchedClassifier = self.ebpf.program(name).unwrap().try_into().unwrap();
        let mut out = vec![0u8; data.len() + 256];
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes()); // __sk_buff.ifindex
        let r = prog.test_run(TestRunOptions {
            data_in: Some(data),
            data_out: Some(&mut out),
            ctx_in: if ifindex > 0 { Some(&ctx) } else { None },
            ..TestRunOptions::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Average per-run duration over `n` single runs of `f` (BPF_PROG_TEST_RUN's own clock).
    pub fn time_xdp(&self, frame: &[u8], n: u32) -> Duration {
        let prog: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        self.timed(n, |out| {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(out),
                ..TestRunOptions::default()
            })
            .expect("XDP test run")
            .duration
        })
    }

    pub fn time_tc(&self, name: &str, data: &[u8], ifindex: u32, n: u32) -> Duration {
        let prog: &SchedClassifier = self.ebpf.program(name).unwrap().try_into().unwrap();
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        self.timed(n, |out| {
            prog.test_run(TestRunOptions {
                data_in: Some(data),
                data_out: Some(out),
                ctx_in: if ifindex > 0 { Some(&ctx) } else { None },
                ..TestRunOptions::default()
            })
            .expect("tc test run")
            .duration
        })
    }

    /// Per-run time with the kernel repeating the run itself (only meaningful for paths
    /// that leave the packet unchanged).
    pub fn time_xdp_repeat(&self, frame: &[u8], repeat: u32) -> Duration {
        let prog: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("XDP test run")
        .duration
    }

    /// Median over one single run per packet in `frames` (e.g. SYNs of distinct flows).
    pub fn time_xdp_each(&self, frames: &[Vec<u8>]) -> Duration {
        let prog: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let mut it = frames.iter();
        self.timed(frames.len() as u32, |out| {
            let f = it.next().expect("one frame per run");
            prog.test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(out),
                ..TestRunOptions::default()
            })
            .expect("XDP test run")
            .duration
        })
    }

    pub fn time_tc_each(&self, name: &str, frames: &[Vec<u8>]) -> Duration {
        let prog: &SchedClassifier = self.ebpf.program(name).unwrap().try_into().unwrap();
        let mut it = frames.iter();
        self.timed(frames.len() as u32, |out| {
            let f = it.next().expect("one frame per run");
            prog.test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(out),
                ..TestRunOptions::default()
            })
            .expect("tc test run")
            .duration
        })
    }

    /// Median per timed packet over connections: each connection's first frame (its SYN)
    /// runs untimed, the rest (its first payload segments) are timed one by one. With
    /// `tc_only`, tc ingress runs instead of XDP.
    /// The backend's SYN-ACK and the client's ACK of `conn`, whose SYN went through
    /// already: the connection moves to the established table.
    pub fn finish_handshake(&self, conn: &OpenedConn, tc_only: bool) {
        let (v, _) = self.tunnel(&conn.synack);
        assert_eq!(v, TC_ACT_REDIRECT, "SYN-ACK not translated");
        let confirmed = self.counter(Counter::FlowsConfirmed);
        if tc_only {
            self.tc_ingress(&conn.ack);
        } else {
            self.xdp(&conn.ack);
        }
        assert_eq!(
            self.counter(Counter::FlowsConfirmed),
            confirmed + 1,
            "the handshake did not establish the connection"
        );
    }

    /// Times the first payload segments of each connection after its handshake (not timed).
    pub fn time_first_payloads(&self, conns: &[OpenedConn], tc_only: bool) -> Duration {
        let xdp: &Xdp = self
            .ebpf
            .program(XDP_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let tc: &SchedClassifier = self
            .ebpf
            .program(TC_INGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; 4096];
        let mut run = |f: &[u8]| {
            let opts = TestRunOptions {
                data_in: Some(f),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            };
            if tc_only {
                tc.test_run(opts).expect("tc test run").duration
            } else {
                xdp.test_run(opts).expect("XDP test run").duration
            }
        };
        let mut v = Vec::new();
        for c in conns {
            let _ = run(&c.syn);
            let _ = self.tunnel(&c.synack);
            let _ = run(&c.ack);
            for f in &c.payload {
                v.push(run(f));
            }
        }
        v.sort();
        v[v.len() / 2]
    }

    fn timed(&self, n: u32, mut f: impl FnMut(&mut [u8]) -> Duration) -> Duration {
        let mut out = vec![0u8; 4096];
        // Each run starts from the original packet: with `repeat`, the kernel would feed the
        // program its own (already translated) output again. The median of single runs
        // is robust against the odd interrupt.
        let mut v: Vec<Duration> = (0..n).map(|_| f(&mut out)).collect();
        v.sort();
        v[v.len() / 2]
    }

    /// Fills the host table as the daemon does: pattern `i` gets id
    /// `HOST_FIRST_CONFIGURED + i`. Returns the host-side view of the table, for
    /// `forwarder_common::host::match_name`.
    pub fn set_hosts(
        &mut self,
        patterns: &[&str],
    ) -> anyhow::Result<std::collections::HashMap<HostKey, u32>> {
        let mut map: HashMap<&mut MapData, HostKey, HostValue> =
            HashMap::try_from(self.ebpf.map_mut(HOSTS_MAP).context("hosts")?)?;
        let mut table = std::collections::HashMap::new();
        for (id, p) in (HOST_FIRST_CONFIGURED..).zip(patterns) {
            let h = HostPattern::parse(p).map_err(|e| anyhow::anyhow!(e))?;
            map.insert(h.key(), HostValue { id, _pad: 0 }, 0)?;
            table.insert(h.key(), id);
        }
        Ok(table)
    }

    /// Sets the `POLICY_*` of host id `id`, as `forwarder hosts set` does.
    pub fn set_host_policy(&mut self, id: u32, policy: u32) -> anyhow::Result<()> {
        let mut map: Array<&mut MapData, u32> = Array::try_from(
            self.ebpf
                .map_mut(forwarder_common::HOST_POLICY_MAP)
                .context("host policies")?,
        )?;
        map.set(id, policy, 0)?;
        Ok(())
    }

    /// Sets the `CFG_F_*` bits, as the daemon does from the configuration.
    pub fn set_config_flags(&mut self, flags: u32) -> anyhow::Result<()> {
        self.update_config(|c| c.flags = flags)
    }

    /// Changes the data path configuration entry as the daemon does.
    fn update_config(&mut self, f: impl FnOnce(&mut DataplaneConfig)) -> anyhow::Result<()> {
        let mut cfg: Array<&mut MapData, DataplaneConfig> =
            Array::try_from(self.ebpf.map_mut(CONFIG_MAP).context("config")?)?;
        let mut c = cfg.get(&0, 0)?;
        f(&mut c);
        cfg.set(0, c, 0)?;
        Ok(())
    }

    /// The hand-off events the kernel has queued since the last call.
    pub fn handoff_events(&mut self) -> Vec<forwarder_common::handoff::HandoffEvent> {
        let mut rb = aya::maps::RingBuf::try_from(
            self.ebpf
                .map_mut(forwarder_common::HANDOFF_MAP)
                .expect("hand-off ring buffer"),
        )
        .expect("hand-off ring buffer");
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            out.push(
                forwarder::dataplane::maps::read_record(&item).expect("a whole hand-off event"),
            );
        }
        out
    }

    /// Turns QUIC classification on with this hand-off rate, as `[quic]` does.
    pub fn set_quic_rate(&mut self, rate: u16, burst: u16) -> anyhow::Result<()> {
        self.update_config(|c| {
            c.quic_rate = rate;
            c.quic_burst = burst;
        })
    }

    /// The QUIC Initial datagrams the kernel has copied since the last call.
    pub fn quic_initials(&mut self) -> Vec<forwarder_common::QuicInitialEvent> {
        let mut rb = aya::maps::RingBuf::try_from(
            self.ebpf
                .map_mut(forwarder_common::QUIC_INITIALS_MAP)
                .expect("QUIC ring buffer"),
        )
        .expect("QUIC ring buffer");
        let mut out = Vec::new();
        while let Some(item) = rb.next() {
            out.push(
                forwarder::dataplane::maps::read_record(&item).expect("a whole Initial event"),
            );
        }
        out
    }

    /// Writes the daemon's verdict on the connection of `key`, as `forwarder::quic` does.
    pub fn set_quic_verdict(
        &mut self,
        key: &FlowKey,
        v: forwarder_common::QuicVerdict,
    ) -> anyhow::Result<()> {
        let mut map: HashMap<&mut MapData, FlowKey, forwarder_common::QuicVerdict> =
            HashMap::try_from(
                self.ebpf
                    .map_mut(forwarder_common::QUIC_VERDICTS_MAP)
                    .context("QUIC verdicts")?,
            )?;
        map.insert(key, v, 0)?;
        Ok(())
    }

    /// Whether a verdict for `key` is still waiting in the kernel's map.
    pub fn quic_verdict_pending(&self, key: &FlowKey) -> bool {
        let map: HashMap<&MapData, FlowKey, forwarder_common::QuicVerdict> = HashMap::try_from(
            self.ebpf
                .map(forwarder_common::QUIC_VERDICTS_MAP)
                .expect("QUIC verdicts"),
        )
        .expect("QUIC verdicts");
        map.get(key, 0).is_ok()
    }

    /// A descriptor of the connection event ring buffer, as the daemon polls it.
    pub fn events_fd(&self) -> std::os::fd::OwnedFd {
        use std::os::fd::AsFd;
        match self.ebpf.map(forwarder_common::EVENTS_MAP) {
            Some(aya::maps::Map::RingBuf(m)) => m.fd().as_fd().try_clone_to_owned().expect("dup"),
            _ => panic!("no event ring buffer"),
        }
    }

    /// The recorded handshake of the connection `client` -> `public`.
    pub fn handshake(
        &self,
        client: (IpAddr, u16),
        public: (IpAddr, u16),
    ) -> Option<forwarder_common::handoff::Handshake> {
        let map: HashMap<&MapData, FlowKey, forwarder_common::handoff::Handshake> =
            HashMap::try_from(self.ebpf.map(forwarder_common::HANDSHAKES_MAP)?).ok()?;
        map.get(&flow_key(client, public), 0).ok()
    }

    /// Sets the SYN flood guard's threshold, as `[limits] syn_flood_threshold` does.
    pub fn set_syn_flood_threshold(&mut self, threshold: u32) -> anyhow::Result<()> {
        self.update_config(|c| c.syn_flood_threshold = threshold)
    }

    /// Sets the per-client new-connection limit, as `[limits]` does.
    pub fn set_conn_limit(&mut self, rate: u16, burst: u16) -> anyhow::Result<()> {
        self.update_config(|c| {
            c.conn_rate = rate;
            c.conn_burst = burst;
        })
    }

    /// Sets the `RULE_F_*` flags of the TCP rule for `public`:`port`, as the daemon does
    /// when a backend goes down or comes back.
    pub fn set_rule_flags(&mut self, public: IpAddr, port: u16, flags: u8) -> anyhow::Result<()> {
        let mut rules: HashMap<&mut MapData, RuleKey, RuleValue> =
            HashMap::try_from(self.ebpf.map_mut(RULES_MAPS[0]).context("rules")?)?;
        let (addr, family) = addr_words(public);
        let key = RuleKey {
            addr,
            port: port.to_be(),
            proto: PROTO_TCP,
            family,
        };
        let mut v = rules.get(&key, 0)?;
        v.flags = flags;
        rules.insert(key, v, 0)?;
        Ok(())
    }

    /// The flow entry of the connection `client` -> `public` (as the client sent it), in
    /// whichever table holds it.
    pub fn forward_flow(&self, client: (IpAddr, u16), public: (IpAddr, u16)) -> Option<FlowValue> {
        let key = flow_key(client, public);
        self.flow_in(FLOWS_MAP, &key)
            .or_else(|| self.flow_in(NEW_FLOWS_MAP, &key))
    }

    /// The flow entry of `key` in the table `map` (`FLOWS_MAP`: established,
    /// `NEW_FLOWS_MAP`: still opening).
    pub fn flow_in(&self, map: &str, key: &FlowKey) -> Option<FlowValue> {
        let map: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(map)?).ok()?;
        map.get(key, 0).ok()
    }

    /// Entries in the flow table `map`.
    pub fn flow_entries(&self, map: &str) -> usize {
        let map: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(map).unwrap()).unwrap();
        map.keys().filter(Result::is_ok).count()
    }

    /// Host id `id`'s statistics of TCP connections, summed over CPUs.
    pub fn host_stats(&self, id: u32) -> forwarder_common::HostStats {
        self.host_stats_at(forwarder_common::host_stats_index(id, false))
    }

    /// Host id `id`'s statistics of QUIC (UDP) connections, summed over CPUs.
    pub fn quic_host_stats(&self, id: u32) -> forwarder_common::HostStats {
        self.host_stats_at(forwarder_common::host_stats_index(id, true))
    }

    fn host_stats_at(&self, index: u32) -> forwarder_common::HostStats {
        let map: PerCpuArray<&MapData, forwarder_common::HostStats> =
            PerCpuArray::try_from(self.ebpf.map(forwarder_common::HOST_STATS_MAP).unwrap())
                .unwrap();
        let mut sum = forwarder_common::HostStats::default();
        for s in map.get(&index, 0).unwrap().iter() {
            forwarder::dataplane::maps::add_host_stats(&mut sum, s);
        }
        sum
    }

    pub fn counter(&self, c: Counter) -> u64 {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(COUNTERS_MAP).unwrap()).unwrap();
        map.get(&(c as u32), 0).unwrap().iter().sum()
    }
}

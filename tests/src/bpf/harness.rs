//! The harness: the real kernel object loaded in a namespace of its own, configured with
//! two TCP rules and a UDP rule, and its programs run with BPF_PROG_TEST_RUN.

use std::{net::IpAddr, process::Command};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use forwarder_common::{
    CONFIG_MAP, DataplaneConfig, PROTO_TCP, PROTO_UDP, RULES_MAPS, RuleKey, RuleValue,
    TC_INGRESS_PROG, TC_TUNNEL_PROG, XDP_INGRESS_PROG, addr_words,
};

use super::{
    constants::{
        BACKEND4, BACKEND6, MSS4, MSS6, PUBLIC_IFINDEX, PUBLIC4, PUBLIC6, UDP_BACKEND_PORT,
        UDP_PUBLIC_PORT,
    },
    packet::eth,
};
use crate::{
    forwarder_code::{EBPF_OBJECT, load_readers},
    support::run,
};

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
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = NetNs { name: name.clone() };
        run(Command::new("ip").args(["-n", &name, "tuntap", "add", "mode", "tun", "dev", "tun0"]))?;
        run(Command::new("ip").args(["-n", &name, "link", "set", "tun0", "up"]))?;
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
        load_readers(&mut ebpf)?;
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
                recreate_rate: 0,
                v6_source_prefix: 0,
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
}

//! The tc hook: packets are rewritten with the skb helpers (which keep checksums right for
//! every `ip_summed` state), and translated packets are redirected into the tunnel.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_skb_load_bytes},
    maps::ProgramArray,
    programs::TcContext,
};
use forwarder_common::{
    Counter, DataplaneConfig, FAMILY_V4, FlowValue, HOST_DROP_REDIRECT_FAILED, PROTO_UDP,
    packet::{self, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, MAX_VLAN_TAGS, PacketInfo, VLAN_HLEN},
};

use super::{Ingress, LoadBytes, Outcomes, mss_target};
use crate::{
    counters::{count, host_drop_at, stats_index},
    maps::TC_READER,
    pkt::Pkt,
};

const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
/// Enough linear bytes for Ethernet, two VLAN tags, IPv6 and a TCP header with options.
const HEADERS_MAX: u32 = (ETH_HLEN + 8 + 40 + 60) as u32;

impl LoadBytes for TcContext {
    #[inline(always)]
    fn load(&self, off: usize, dst: *mut u8, len: u32) -> bool {
        // SAFETY: `self.skb.skb` is the program's context; the helper checks `off` and
        // `len` against the packet, and callers pass `dst` pointing to at least `len` bytes
        // of map memory.
        unsafe {
            bpf_skb_load_bytes(
                self.skb.skb as *const c_void,
                off as u32,
                dst as *mut c_void,
                len,
            ) == 0
        }
    }
}

impl Ingress for TcContext {
    type Verdict = i32;
    type Mark = ();
    const PASS: i32 = TC_ACT_OK;
    const DROP: i32 = TC_ACT_SHOT;
    const OUTCOMES: Outcomes = Outcomes {
        malformed: None,
        not_ip: Counter::TcPass,
        no_rule: Counter::TcPass,
        fragment: Counter::TcPass,
        ip_options: Counter::TcPass,
        fallback: Counter::TcPassFallback,
        rate_limited: Counter::TcDropRateLimit,
        cut: Counter::TcPassCut,
        forwarded: Counter::TcTranslated,
    };

    #[inline(always)]
    fn readers() -> &'static ProgramArray {
        &TC_READER
    }

    #[inline(always)]
    fn headers(&self) -> Pkt {
        linear_pkt(self)
    }

    #[inline(always)]
    fn reserve(&self, _cfg: &DataplaneConfig) -> Result<(), Counter> {
        Ok(())
    }

    #[inline(always)]
    fn translate(
        &self,
        _mark: (),
        cfg: &DataplaneConfig,
        pkt: &Pkt,
        info: &PacketInfo,
        nat: &FlowValue,
    ) -> Result<(), ()> {
        // Read before any helper call invalidates packet pointers.
        let mss = mss_target(pkt, info, cfg.mss_v4, cfg.mss_v6);
        rewrite(
            self,
            info,
            info.dst_addr_off(),
            &info.dst,
            info.l4() + 2,
            info.dport,
            nat,
        )?;
        apply_mss(self, info, mss);
        Ok(())
    }

    #[inline(always)]
    fn forwarded(&self, nat: &FlowValue) -> i32 {
        redirect_to_tunnel(nat.ifindex, stats_index(nat))
    }
}

/// Redirects the packet into the tunnel interface `ifindex`. `stats` is where the flow's
/// host statistics are (`host_stats_index`).
#[inline(always)]
pub fn redirect_to_tunnel(ifindex: u32, stats: u32) -> i32 {
    // SAFETY: the helper takes plain numbers; it only records where the packet goes.
    let r = unsafe { bpf_redirect(ifindex, 0) } as i32;
    if r == TC_ACT_REDIRECT {
        count(Counter::TcToTunnel);
    } else {
        count(Counter::TcRedirectFailed);
        host_drop_at(stats, HOST_DROP_REDIRECT_FAILED);
    }
    r
}

/// Repairs the checksum of a packet XDP translated whose checksum field looked partial
/// (`XdpMeta::csum_fix` non-zero): if the skb is `CHECKSUM_PARTIAL`, adds `fix` to the
/// field; a complete checksum is left as it was.
///
/// `__sk_buff` does not show `ip_summed`, but `bpf_l4_csum_replace` acts on it
/// (`inet_proto_csum_replace*`): without `BPF_F_PSEUDO_HDR` it leaves a partial checksum
/// alone and moves a complete one. The first call tells the two apart; a complete checksum
/// is moved back, a partial one gets `fix` with `BPF_F_PSEUDO_HDR` (field += to - from).
/// `skb->csum` of a `CHECKSUM_COMPLETE` skb is never touched.
#[inline(always)]
pub fn finish_partial_csum(ctx: &TcContext, csum_l3_off: u16, fix: u16) {
    let Some(off) = l3_offset(ctx).map(|l3| l3 + csum_l3_off as usize) else {
        return;
    };
    let Ok(before) = ctx.load::<u16>(off) else {
        return;
    };
    // Complete: field += fix - 0. Partial: unchanged.
    if ctx.l4_csum_replace(off, fix as u64, 0, 2).is_err() {
        return;
    }
    match ctx.load::<u16>(off) {
        Ok(now) if now == before => {
            if ctx
                .l4_csum_replace(off, 0, fix as u64, 2 | BPF_F_PSEUDO_HDR)
                .is_ok()
            {
                count(Counter::TcCsumPartialFixed);
            }
        }
        // Complete after all (a checksum that matched the pseudo-header sum by chance):
        // field += 0 - fix, as it was.
        _ => {
            let _ = ctx.l4_csum_replace(off, 0, fix as u64, 2);
        }
    }
}

/// Where the IP header starts in the skb at tc. The stack has taken the outer VLAN tag
/// out of the data by then (`skb_vlan_untag`), so this can differ from what XDP saw.
#[inline(always)]
fn l3_offset(ctx: &TcContext) -> Option<usize> {
    let mut off = ETH_HLEN;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS {
        let proto = u16::from_be(ctx.load::<u16>(off - 2).ok()?);
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        off += VLAN_HLEN;
        tags += 1;
    }
    Some(off)
}

/// The packet, with its headers pulled into the linear part of the skb.
#[inline(always)]
pub fn linear_pkt(ctx: &TcContext) -> Pkt {
    let len = ctx.len();
    let want = if len < HEADERS_MAX { len } else { HEADERS_MAX };
    if ctx.data() + want as usize > ctx.data_end() {
        // GRO can hand us large non-linear skbs; the headers must be directly readable.
        let _ = ctx.pull_data(want);
    }
    Pkt::new(ctx.data(), ctx.data_end(), len as usize)
}

/// Rewrites the MSS option `mss_target` found (offset, old and new value), and the TCP
/// checksum with it.
#[inline(always)]
pub fn apply_mss(ctx: &TcContext, info: &PacketInfo, target: Option<(usize, u16, u16)>) {
    let Some((off, cur, new)) = target else {
        return;
    };
    let (old_raw, new_raw) = (cur.to_be(), new.to_be());
    if ctx.store(off, &new_raw, 0).is_ok()
        && ctx
            .l4_csum_replace(info.csum_off(), old_raw as u64, new_raw as u64, 2)
            .is_ok()
    {
        count(Counter::MssClamped);
    }
}

/// Rewrites one address and one port (source or destination, as the offsets say) to the
/// flow's translation, keeping IPv4 and L4 checksums right for every `ip_summed` state.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    info: &PacketInfo,
    addr_off: usize,
    old_addr: &[u32; 4],
    port_off: usize,
    old_port: u16,
    nat: &FlowValue,
) -> Result<(), ()> {
    let csum_off = info.csum_off();
    let l4_flags = if info.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    };
    if info.family == FAMILY_V4 {
        let (old, new) = (old_addr[0], nat.nat_addr[0]);
        ctx.l3_csum_replace(info.l3() + packet::IPV4_CSUM_OFF, old as u64, new as u64, 4)
            .map_err(|_| ())?;
        ctx.l4_csum_replace(
            csum_off,
            old as u64,
            new as u64,
            4 | BPF_F_PSEUDO_HDR | l4_flags,
        )
        .map_err(|_| ())?;
        ctx.store(addr_off, &new, 0).map_err(|_| ())?;
    } else {
        let mut i = 0;
        while i < 4 {
            let (old, new) = (old_addr[i], nat.nat_addr[i]);
            ctx.l4_csum_replace(
                csum_off,
                old as u64,
                new as u64,
                4 | BPF_F_PSEUDO_HDR | l4_flags,
            )
            .map_err(|_| ())?;
            ctx.store(addr_off + i * 4, &new, 0).map_err(|_| ())?;
            i += 1;
        }
    }
    ctx.l4_csum_replace(csum_off, old_port as u64, nat.nat_port as u64, 2 | l4_flags)
        .map_err(|_| ())?;
    ctx.store(port_off, &nat.nat_port, 0).map_err(|_| ())?;
    Ok(())
}

//! The XDP hook: packets are read and rewritten in place, through `data`/`data_end`; a
//! translated packet is passed to the stack with its verdict in the packet metadata
//! (`XdpMeta`), where the tc program on the same interface picks it up and hands it to
//! the tunnel (XDP cannot transmit into an L3 device).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_meta, bpf_xdp_load_bytes},
    maps::ProgramArray,
    programs::XdpContext,
};
use forwarder_common::{
    Counter, DataplaneConfig, FAMILY_V4, FlowValue, META_MAGIC, PROTO_UDP, XdpMeta, csum,
    packet::{self, Bytes, PacketInfo},
};

use super::{Ingress, LoadBytes, Outcomes, mss_target};
use crate::{
    counters::{count, stats_index},
    maps::XDP_READER,
    pkt::Pkt,
};

impl LoadBytes for XdpContext {
    #[inline(always)]
    fn load(&self, off: usize, dst: *mut u8, len: u32) -> bool {
        // SAFETY: `self.ctx` is the program's context; the helper checks `off` and `len`
        // against the packet, and callers pass `dst` pointing to at least `len` bytes of
        // map memory.
        unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, dst as *mut c_void, len) == 0 }
    }
}

/// The metadata reserved in front of the packet, and the packet's bounds after the
/// reservation moved them.
pub struct Mark {
    meta: usize,
    data: usize,
    data_end: usize,
    mss_v4: u16,
    mss_v6: u16,
}

impl Ingress for XdpContext {
    type Verdict = u32;
    type Mark = Mark;
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;
    const OUTCOMES: Outcomes = Outcomes {
        malformed: Some(Counter::XdpDropMalformed),
        not_ip: Counter::XdpPassNotIp,
        no_rule: Counter::XdpPassNoRule,
        fragment: Counter::XdpPassFragment,
        ip_options: Counter::XdpPassIpOptions,
        fallback: Counter::XdpPassFallback,
        rate_limited: Counter::XdpDropRateLimit,
        cut: Counter::XdpPassCut,
        forwarded: Counter::XdpToTunnel,
    };

    #[inline(always)]
    fn readers() -> &'static ProgramArray {
        &XDP_READER
    }

    #[inline(always)]
    fn headers(&self) -> Pkt {
        let (data, data_end) = (self.data(), self.data_end());
        Pkt::new(data, data_end, data_end - data)
    }

    /// Reserves the metadata before the packet is touched: a packet is only rewritten if
    /// the tc program can recognise it and hand it to the tunnel.
    #[inline(always)]
    fn reserve(&self, cfg: &DataplaneConfig) -> Result<Mark, Counter> {
        let (mss_v4, mss_v6) = (cfg.mss_v4, cfg.mss_v6);
        // SAFETY: `self.ctx` is the program's context, as the helper requires.
        if unsafe { bpf_xdp_adjust_meta(self.ctx, -(size_of::<XdpMeta>() as i32)) } != 0 {
            return Err(Counter::XdpPassNoMeta);
        }
        let (meta, data, data_end) = (self.metadata(), self.data(), self.data_end());
        if meta + size_of::<XdpMeta>() > data {
            return Err(Counter::XdpPassNoMeta);
        }
        // Until it is written by `translate`, the metadata must not look like ours
        // (whatever an earlier packet left there): a packet may still pass untranslated.
        // SAFETY: the check above keeps `meta..meta + size_of::<XdpMeta>()` between
        // `data_meta` and `data`.
        unsafe { (meta as *mut u32).write_unaligned(0) };
        Ok(Mark {
            meta,
            data,
            data_end,
            mss_v4,
            mss_v6,
        })
    }

    #[inline(always)]
    fn translate(
        &self,
        m: Mark,
        _cfg: &DataplaneConfig,
        _pkt: &Pkt,
        info: &PacketInfo,
        nat: &FlowValue,
    ) -> Result<(), ()> {
        let pkt = Pkt::new(m.data, m.data_end, m.data_end - m.data);
        let csum_off = info.csum_off();
        let before = pkt.raw16(csum_off).ok_or(())?;
        translate_dst(&pkt, info, nat).ok_or(())?;
        if let Some((off, cur, new)) = mss_target(&pkt, info, m.mss_v4, m.mss_v6) {
            clamp_mss(&pkt, info, off, cur, new);
        }
        let csum_fix = partial_fix(&pkt, info, nat, before).ok_or(())?;
        // SAFETY: `reserve` checked that the metadata lies between `data_meta` and `data`;
        // no helper has moved them since.
        unsafe {
            (m.meta as *mut XdpMeta).write_unaligned(XdpMeta {
                magic: META_MAGIC,
                ifindex: nat.ifindex,
                host_id: stats_index(nat),
                csum_l3_off: (csum_off - info.l3()) as u16,
                csum_fix,
            })
        };
        Ok(())
    }

    #[inline(always)]
    fn forwarded(&self, _nat: &FlowValue) -> u32 {
        xdp_action::XDP_PASS
    }
}

/// Destination NAT with incremental checksum updates (IPv4 header, L4 pseudo-header and
/// port).
#[inline(always)]
fn translate_dst(pkt: &Pkt, info: &PacketInfo, nat: &FlowValue) -> Option<()> {
    let csum_off = info.csum_off();
    let mut l4 = pkt.raw16(csum_off)?;
    // A zero UDP checksum over IPv4 means "none" and stays so.
    let l4_csum = !(info.proto == PROTO_UDP && info.family == FAMILY_V4 && l4 == 0);
    let dst_off = info.dst_addr_off();
    if info.family == FAMILY_V4 {
        let ip_csum_off = info.l3() + packet::IPV4_CSUM_OFF;
        let ip = pkt.raw16(ip_csum_off)?;
        pkt.write16(
            ip_csum_off,
            csum::replace4(ip, info.dst[0], nat.nat_addr[0]),
        )?;
        pkt.write32(dst_off, nat.nat_addr[0])?;
        l4 = csum::replace4(l4, info.dst[0], nat.nat_addr[0]);
    } else {
        let mut i = 0;
        while i < 4 {
            pkt.write32(dst_off + i * 4, nat.nat_addr[i])?;
            i += 1;
        }
        l4 = csum::replace16(l4, &info.dst, &nat.nat_addr);
    }
    pkt.write16(info.l4() + 2, nat.nat_port)?;
    l4 = csum::replace2(l4, info.dport, nat.nat_port);
    if l4_csum {
        if info.proto == PROTO_UDP && l4 == 0 {
            l4 = 0xffff;
        }
        pkt.write16(csum_off, l4)?;
    }
    Some(())
}

/// XDP cannot see whether the frame's checksum was left to offload (`CHECKSUM_PARTIAL`:
/// the field holds only the pseudo-header sum, completed at transmit), and its rewrite
/// assumed a complete one. When the field `before` the rewrite looked partial, returns
/// what the tc hand-off must add to the field if the skb is indeed partial: the difference
/// between the partial value the new pseudo header needs and what the rewrite left. 0 for
/// a complete checksum (or nothing to add).
#[inline(always)]
fn partial_fix(pkt: &Pkt, info: &PacketInfo, nat: &FlowValue, before: u16) -> Option<u16> {
    let v4 = info.family == FAMILY_V4;
    // A zero UDP checksum over IPv4 is "none", never a partial one.
    if info.proto == PROTO_UDP && v4 && before == 0 {
        return Some(0);
    }
    let pseudo = csum::pseudo_sum(&info.src, &info.dst, v4, info.proto, info.l4_len);
    if !csum::looks_partial(before, pseudo) {
        return Some(0);
    }
    let want = if v4 {
        csum::partial_replace4(before, info.dst[0], nat.nat_addr[0])
    } else {
        csum::partial_replace16(before, &info.dst, &nat.nat_addr)
    };
    Some(csum::correction(want, pkt.raw16(info.csum_off())?))
}

/// Rewrites the MSS option at `off` from `cur` to `new`, and the TCP checksum with it.
#[inline(always)]
fn clamp_mss(pkt: &Pkt, info: &PacketInfo, off: usize, cur: u16, new: u16) {
    let csum_off = info.csum_off();
    let Some(l4) = pkt.raw16(csum_off) else {
        return;
    };
    let (old_raw, new_raw) = (cur.to_be(), new.to_be());
    if pkt.write16(off, new_raw).is_some()
        && pkt
            .write16(csum_off, csum::replace2(l4, old_raw, new_raw))
            .is_some()
    {
        count(Counter::MssClamped);
    }
}

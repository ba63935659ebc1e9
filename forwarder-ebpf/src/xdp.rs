//! XDP on the public interface: parse, classify, translate toward the backend.

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_meta, macros::xdp, programs::XdpContext,
};
use forwarder_common::{
    Counter, FAMILY_V4, FLOW_F_CUT, FlowValue, HOST_DROP_RATE_LIMIT, HOST_UNKNOWN, META_MAGIC,
    PROTO_TCP, PROTO_UDP, RuleKey, XdpMeta, csum,
    packet::{self, PacketInfo, Skip, TCP_SYN},
};

use crate::{
    flow, handoff,
    maps::{XDP_READER, config, count, packet_info, rule},
    pkt::Pkt,
    visibility,
};

#[xdp]
pub fn fwd_xdp_ingress(ctx: XdpContext) -> u32 {
    count(Counter::XdpRx);
    match try_ingress(&ctx) {
        Ok(action) => action,
        // Only reachable if a packet changed under us between parse and rewrite.
        Err(()) => {
            count(Counter::XdpDropMalformed);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn pass(c: Counter) -> Result<u32, ()> {
    count(c);
    Ok(xdp_action::XDP_PASS)
}

#[inline(always)]
fn try_ingress(ctx: &XdpContext) -> Result<u32, ()> {
    let Some(cfg) = config() else {
        return pass(Counter::XdpPassDisabled);
    };
    if cfg.enabled == 0 {
        return pass(Counter::XdpPassDisabled);
    }
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let pkt = Pkt::new(data, data_end, data_end - data);
    let info = packet_info().ok_or(())?;
    match packet::parse_ethernet_into(&pkt, info) {
        Ok(()) => {}
        Err(Skip::NotIp) => return pass(Counter::XdpPassNotIp),
        Err(Skip::OtherProto) => return pass(Counter::XdpPassNoRule),
        Err(Skip::Fragment) => return pass(Counter::XdpPassFragment),
        Err(Skip::IpOptions) => return pass(Counter::XdpPassIpOptions),
        Err(Skip::Malformed) => {
            count(Counter::XdpDropMalformed);
            return Ok(xdp_action::XDP_DROP);
        }
    }
    let key = RuleKey {
        addr: info.dst,
        port: info.dport,
        proto: info.proto,
        family: info.family,
    };
    let Some(rule) = rule(cfg, &key) else {
        return pass(Counter::XdpPassNoRule);
    };
    let (mss_v4, mss_v6) = (cfg.mss_v4, cfg.mss_v6);
    // Reserve the metadata before touching the packet: a packet is only rewritten if the tc
    // program can recognise it and hand it to the tunnel.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(size_of::<XdpMeta>() as i32)) } != 0 {
        return pass(Counter::XdpPassNoMeta);
    }
    let (meta, data, data_end) = (ctx.metadata(), ctx.data(), ctx.data_end());
    if meta + size_of::<XdpMeta>() > data {
        return pass(Counter::XdpPassNoMeta);
    }
    // Until it is written below, the metadata must not look like ours (whatever an earlier
    // packet left there): a packet may still pass untranslated.
    unsafe { (meta as *mut u32).write_unaligned(0) };
    let Some(nat) = flow::to_backend(ctx, cfg, info, rule) else {
        return match flow::last_miss() {
            flow::Miss::Fallback => pass(Counter::XdpPassFallback),
            flow::Miss::RateLimit => {
                count(Counter::XdpDropRateLimit);
                visibility::host_drop(HOST_UNKNOWN, info.proto == PROTO_UDP, HOST_DROP_RATE_LIMIT);
                Ok(xdp_action::XDP_DROP)
            }
            // Counted by the guard (`syn_flood_drop`) and the flow table
            // (`flow_create_failed`).
            flow::Miss::SynFlood | flow::Miss::Failed => Ok(xdp_action::XDP_DROP),
        };
    };
    if nat.flags & FLOW_F_CUT != 0 {
        // The host's policy cut this connection: the VPS's own stack answers with a RST,
        // or, for a connection handed over by policy `local`, the daemon's socket takes
        // it.
        if !visibility::on_cut_packet(info, nat) {
            return Ok(xdp_action::XDP_DROP);
        }
        return pass(Counter::XdpPassCut);
    }
    let key = flow::last_forward_key().ok_or(())?;
    handoff::record_syn(ctx, info, key);
    unsafe {
        (meta as *mut XdpMeta).write_unaligned(XdpMeta {
            magic: META_MAGIC,
            ifindex: nat.ifindex,
            host_id: visibility::stats_index(nat),
            _pad: 0,
        })
    };
    let pkt = Pkt::new(data, data_end, data_end - data);
    translate_dst(&pkt, info, nat).ok_or(())?;
    if info.proto == PROTO_TCP && info.tcp_flags & TCP_SYN != 0 {
        let mss = if info.family == FAMILY_V4 {
            mss_v4
        } else {
            mss_v6
        };
        clamp_mss(&pkt, info, mss);
    }
    let read = visibility::on_packet(info, key, nat);
    count(Counter::XdpToTunnel);
    if read {
        // Classification last: the reader ends the program with the same verdict.
        visibility::to_reader(ctx, &XDP_READER, key, nat);
    }
    Ok(xdp_action::XDP_PASS)
}

/// Destination NAT with incremental checksum updates (IPv4 header, L4 pseudo-header and
/// port).
#[inline(always)]
fn translate_dst(pkt: &Pkt, info: &PacketInfo, nat: &FlowValue) -> Option<()> {
    use forwarder_common::packet::Bytes;
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

#[inline(always)]
fn clamp_mss(pkt: &Pkt, info: &PacketInfo, max: u16) {
    use forwarder_common::packet::Bytes;
    let Some((off, cur)) = packet::find_mss(pkt, info.l4(), info.tcp_hlen as usize) else {
        return;
    };
    let Some(new) = packet::clamp_mss(cur, max) else {
        return;
    };
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

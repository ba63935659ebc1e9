//! tc programs: the hand-off into the tunnel and the return path out of it.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_skb_change_head},
    macros::classifier,
    programs::TcContext,
};
use forwarder_common::{
    Counter, FAMILY_V4, FLOW_F_CUT, FlowValue, HOST_DROP_RATE_LIMIT, HOST_DROP_REDIRECT_FAILED,
    HOST_UNKNOWN, META_MAGIC, PROTO_TCP, PROTO_UDP, RuleKey, XdpMeta,
    packet::{self, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, PacketInfo, TCP_ACK, TCP_SYN},
};

use crate::{
    flow, handoff,
    maps::{TC_READER, config, count, packet_info, rule},
    pkt::Pkt,
    visibility,
};

const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
/// Enough linear bytes for Ethernet, two VLAN tags, IPv6 and a TCP header with options.
const HEADERS_MAX: u32 = (ETH_HLEN + 8 + 40 + 60) as u32;

/// tc ingress on the public interface.
#[classifier]
pub fn fwd_tc_ingress(ctx: TcContext) -> i32 {
    // Fast path: XDP already translated the packet and said where it goes.
    let skb = ctx.skb.skb;
    let (meta, data) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
    if meta + size_of::<XdpMeta>() <= data {
        let m = unsafe { (meta as *const XdpMeta).read_unaligned() };
        if m.magic == META_MAGIC {
            return redirect_to_tunnel(m.ifindex, m.host_id);
        }
    }
    match config() {
        Some(cfg) if cfg.enabled != 0 && cfg.tc_translate != 0 => {}
        _ => return TC_ACT_OK,
    }
    match translate_ingress(&ctx) {
        Ok(action) => action,
        Err(()) => {
            count(Counter::TcDropMalformed);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
/// `stats` is where the flow's host statistics are (`host_stats_index`).
pub(crate) fn redirect_to_tunnel(ifindex: u32, stats: u32) -> i32 {
    let r = unsafe { bpf_redirect(ifindex, 0) } as i32;
    if r == TC_ACT_REDIRECT {
        count(Counter::TcToTunnel);
    } else {
        count(Counter::TcRedirectFailed);
        visibility::host_drop_at(stats, HOST_DROP_REDIRECT_FAILED);
    }
    r
}

#[inline(always)]
fn linear_pkt(ctx: &TcContext) -> Pkt {
    let len = ctx.len();
    let want = if len < HEADERS_MAX { len } else { HEADERS_MAX };
    if ctx.data() + want as usize > ctx.data_end() {
        // GRO can hand us large non-linear skbs; the headers must be directly readable.
        let _ = ctx.pull_data(want);
    }
    Pkt::new(ctx.data(), ctx.data_end(), len as usize)
}

/// tc-only mode (no XDP in front): the same translation XDP does, with the skb helpers.
#[inline(always)]
fn translate_ingress(ctx: &TcContext) -> Result<i32, ()> {
    let cfg = config().ok_or(())?;
    let pkt = linear_pkt(ctx);
    let info = packet_info().ok_or(())?;
    match packet::parse_ethernet_into(&pkt, info) {
        Ok(()) => {}
        Err(packet::Skip::Malformed) => return Err(()),
        Err(_) => {
            count(Counter::TcPass);
            return Ok(TC_ACT_OK);
        }
    }
    let key = RuleKey {
        addr: info.dst,
        port: info.dport,
        proto: info.proto,
        family: info.family,
    };
    let Some(rule) = rule(cfg, &key) else {
        count(Counter::TcPass);
        return Ok(TC_ACT_OK);
    };
    let Some(nat) = flow::to_backend(ctx, cfg, info, rule) else {
        return match flow::last_miss() {
            flow::Miss::Fallback => {
                count(Counter::TcPassFallback);
                Ok(TC_ACT_OK)
            }
            flow::Miss::RateLimit => {
                count(Counter::TcDropRateLimit);
                visibility::host_drop(HOST_UNKNOWN, info.proto == PROTO_UDP, HOST_DROP_RATE_LIMIT);
                Ok(TC_ACT_SHOT)
            }
            // Counted by the guard (`syn_flood_drop`) and the flow table
            // (`flow_create_failed`).
            flow::Miss::SynFlood | flow::Miss::Failed => Ok(TC_ACT_SHOT),
        };
    };
    if nat.flags & FLOW_F_CUT != 0 {
        // Cut by its host's policy: the VPS's own stack answers with a RST (or, policy
        // `local`, the daemon's socket takes it).
        if !visibility::on_cut_packet(info, nat) {
            return Ok(TC_ACT_SHOT);
        }
        count(Counter::TcPassCut);
        return Ok(TC_ACT_OK);
    }
    let key = flow::last_forward_key().ok_or(())?;
    handoff::record_syn(ctx, info, key);
    let mss = mss_target(&pkt, info, cfg.mss_v4, cfg.mss_v6);
    rewrite(
        ctx,
        info,
        info.dst_addr_off(),
        &info.dst,
        info.l4() + 2,
        info.dport,
        nat,
    )?;
    apply_mss(ctx, info, mss);
    let read = visibility::on_packet(info, key, nat);
    count(Counter::TcTranslated);
    if read {
        // The reader redirects the packet to the tunnel when it is done.
        visibility::to_reader(ctx, &TC_READER, key, nat);
    }
    Ok(redirect_to_tunnel(
        nat.ifindex,
        visibility::stats_index(nat),
    ))
}

/// tc ingress on the tunnel interface: replies of translated flows go back to the client.
#[classifier]
pub fn fwd_tc_tunnel(ctx: TcContext) -> i32 {
    match translate_reply(&ctx) {
        Ok(action) => action,
        Err(()) => {
            count(Counter::TunnelDropMalformed);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn translate_reply(ctx: &TcContext) -> Result<i32, ()> {
    let Some(cfg) = config() else {
        return Ok(TC_ACT_OK);
    };
    if cfg.enabled == 0 {
        return Ok(TC_ACT_OK);
    }
    let (mss_v4, mss_v6) = (cfg.mss_v4, cfg.mss_v6);
    let l2_len = if cfg.tunnel_l2_len == 0 { 0 } else { ETH_HLEN };
    let pkt = linear_pkt(ctx);
    // Anything we cannot parse is not one of our flows: the tunnel's own traffic to the
    // VPS (pings, health checks) keeps working.
    let info = packet_info().ok_or(())?;
    if packet::parse_ip_into(&pkt, l2_len, info).is_err() {
        count(Counter::TunnelPass);
        return Ok(TC_ACT_OK);
    }
    let key = flow::forward_key(info);
    let Some(nat) = flow::lookup(&key) else {
        count(Counter::TunnelPass);
        return Ok(TC_ACT_OK);
    };
    if nat.flags & FLOW_F_CUT != 0 {
        // The client's side of this connection is gone, or served by the VPS itself.
        count(Counter::TunnelDropCut);
        return Ok(TC_ACT_SHOT);
    }
    if info.proto == PROTO_TCP && info.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
        // What the client's ACK must acknowledge for the connection to count as
        // established (see `flow::confirm`).
        nat.ack_expect = info.tcp_seq.wrapping_add(1);
    }
    handoff::record_synack(ctx, info, &key, nat);
    let mss = mss_target(&pkt, info, mss_v4, mss_v6);
    rewrite(
        ctx,
        info,
        info.src_addr_off(),
        &info.src,
        info.l4(),
        info.sport,
        nat,
    )?;
    apply_mss(ctx, info, mss);
    // Replies never start a classification (only the client's first payload does).
    let _ = visibility::on_packet(info, &key, nat);
    // The public interface has a MAC header; redirect_neigh fills in both addresses.
    if l2_len == 0 {
        if unsafe { bpf_skb_change_head(ctx.skb.skb, ETH_HLEN as u32, 0) } != 0 {
            return Err(());
        }
        let proto: u16 = if info.family == FAMILY_V4 {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        ctx.store(12, &proto.to_be(), 0).map_err(|_| ())?;
    }
    let r = unsafe { bpf_redirect_neigh(nat.ifindex, core::ptr::null_mut(), 0, 0) } as i32;
    if r == TC_ACT_REDIRECT {
        count(Counter::TunnelToClient);
    } else {
        count(Counter::TunnelRedirectFailed);
        visibility::host_drop_at(visibility::stats_index(nat), HOST_DROP_REDIRECT_FAILED);
    }
    Ok(r)
}

/// The MSS option to rewrite, read before any helper call invalidates packet pointers.
#[inline(always)]
fn mss_target(pkt: &Pkt, info: &PacketInfo, mss_v4: u16, mss_v6: u16) -> Option<(usize, u16, u16)> {
    if info.proto != PROTO_TCP || info.tcp_flags & TCP_SYN == 0 {
        return None;
    }
    let max = if info.family == FAMILY_V4 {
        mss_v4
    } else {
        mss_v6
    };
    let (off, cur) = packet::find_mss(pkt, info.l4(), info.tcp_hlen as usize)?;
    let new = packet::clamp_mss(cur, max)?;
    Some((off, cur, new))
}

#[inline(always)]
fn apply_mss(ctx: &TcContext, info: &PacketInfo, target: Option<(usize, u16, u16)>) {
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
fn rewrite(
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

//! The return path, at tc ingress on the tunnel interface: a backend's reply of a
//! translated flow gets the public address and port back as its source, a MAC header if
//! the tunnel is an L3 device, and goes out of the public interface toward the client.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{bpf_redirect_neigh, bpf_skb_change_head},
    programs::TcContext,
};
use forwarder_common::{
    Counter, DIR_TO_CLIENT, FAMILY_V4, FLOW_F_CUT, FLOW_F_RECREATED, HOST_DROP_REDIRECT_FAILED,
    PROTO_TCP,
    packet::{self, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, TCP_ACK, TCP_RST, TCP_SYN},
};

use super::track::on_packet;
use crate::{
    counters::{count, host_drop_at, stats_index},
    flow, handoff,
    hook::{
        mss_target,
        tc::{apply_mss, linear_pkt, rewrite},
    },
    maps::{config, packet_info},
};

/// A packet from the tunnel: translated back and sent to the client if it is a reply of
/// one of our flows, left to the stack otherwise. `Err`: malformed, dropped by the caller.
#[inline(always)]
pub fn reply(ctx: &TcContext) -> Result<i32, ()> {
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
    if nat.direction != DIR_TO_CLIENT {
        // A client's key seen from the tunnel: not a reply of ours (the VPS's own traffic
        // to home on the ports of a client's connection, or a hairpin).
        count(Counter::TunnelPass);
        return Ok(TC_ACT_OK);
    }
    if nat.flags & FLOW_F_RECREATED != 0 && info.tcp_flags & TCP_RST != 0 {
        // Home does not have the connection a mid-stream packet claimed: whoever sent it
        // gets nothing back, and the entries go.
        flow::forget(&key, nat);
        count(Counter::TunnelDropRecreatedRst);
        return Ok(TC_ACT_SHOT);
    }
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
    let _ = on_packet(info, &key, nat);
    // The public interface has a MAC header; redirect_neigh fills in both addresses.
    if l2_len == 0 {
        // SAFETY: `ctx.skb.skb` is the program's context; the helper only grows the head.
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
    // SAFETY: null neighbour parameters (length 0) ask the kernel to resolve the next hop
    // itself; the other arguments are plain numbers.
    let r = unsafe { bpf_redirect_neigh(nat.ifindex, core::ptr::null_mut(), 0, 0) } as i32;
    if r == TC_ACT_REDIRECT {
        count(Counter::TunnelToClient);
    } else {
        count(Counter::TunnelRedirectFailed);
        host_drop_at(stats_index(nat), HOST_DROP_REDIRECT_FAILED);
    }
    Ok(r)
}

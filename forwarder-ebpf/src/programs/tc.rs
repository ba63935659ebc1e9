//! tc programs: the hand-off into the tunnel (and, with no XDP in front, the whole ingress
//! path) on the public interface, and the return path on the tunnel interface.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use forwarder_common::{Counter, META_MAGIC, XdpMeta};

use crate::{
    counters::count,
    forward,
    hook::tc::{finish_partial_csum, redirect_to_tunnel},
    maps::config,
};

/// tc ingress on the public interface.
#[classifier]
pub fn fwd_tc_ingress(ctx: TcContext) -> i32 {
    // Fast path: XDP already translated the packet and said where it goes.
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's context, a valid `__sk_buff` for the program run.
    let (meta, data) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
    if meta + size_of::<XdpMeta>() <= data {
        // SAFETY: the check above keeps the read between `data_meta` and `data`.
        let m = unsafe { (meta as *const XdpMeta).read_unaligned() };
        if m.magic == META_MAGIC {
            if m.csum_fix != 0 {
                finish_partial_csum(&ctx, m.csum_l3_off, m.csum_fix);
            }
            return redirect_to_tunnel(m.ifindex, m.host_id);
        }
    }
    // tc-only mode (no XDP in front): the same translation XDP does, with the skb helpers.
    let cfg = match config() {
        Some(cfg) if cfg.enabled != 0 && cfg.tc_translate != 0 => cfg,
        _ => return TC_ACT_OK,
    };
    match forward::ingress(&ctx, cfg) {
        Ok(action) => action,
        Err(()) => {
            count(Counter::TcDropMalformed);
            TC_ACT_SHOT
        }
    }
}

/// tc ingress on the tunnel interface: replies of translated flows go back to the client.
#[classifier]
pub fn fwd_tc_tunnel(ctx: TcContext) -> i32 {
    match forward::reply(&ctx) {
        Ok(action) => action,
        Err(()) => {
            count(Counter::TunnelDropMalformed);
            TC_ACT_SHOT
        }
    }
}

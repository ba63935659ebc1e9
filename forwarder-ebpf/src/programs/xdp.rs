//! XDP on the public interface: parse, classify, translate toward the backend.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use forwarder_common::Counter;

use crate::{counters::count, forward, maps::config};

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
fn try_ingress(ctx: &XdpContext) -> Result<u32, ()> {
    let Some(cfg) = config() else {
        count(Counter::XdpPassDisabled);
        return Ok(xdp_action::XDP_PASS);
    };
    if cfg.enabled == 0 {
        count(Counter::XdpPassDisabled);
        return Ok(xdp_action::XDP_PASS);
    }
    forward::ingress(ctx, cfg)
}

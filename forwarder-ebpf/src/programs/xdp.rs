//! XDP on the public interface: parse, classify, translate toward the backend.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use forwarder_common::Counter;

use crate::{counters::count, forward, maps::config};

#[xdp]
pub fn fwd_xdp_ingress(ctx: XdpContext) -> u32 {
    count(Counter::XdpRx);
    let cfg = match config() {
        Some(cfg) if cfg.enabled != 0 => cfg,
        _ => {
            count(Counter::XdpPassDisabled);
            return xdp_action::XDP_PASS;
        }
    };
    match forward::ingress(&ctx, cfg) {
        Ok(action) => action,
        // A malformed packet, or one that changed under us between parse and rewrite.
        Err(()) => {
            count(Counter::XdpDropMalformed);
            xdp_action::XDP_DROP
        }
    }
}

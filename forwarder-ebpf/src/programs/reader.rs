//! The name readers: programs of their own, reached by tail call from the forwarding
//! programs on a connection's first payload. Split off so the verifier checks the parser
//! once, on its own, instead of once per path through the forwarding program.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{classify::read_name, hook::tc::redirect_to_tunnel};

/// XDP: the packet is already translated and marked for the tc hand-off; dropped if its
/// host's policy cut the connection.
#[xdp]
pub fn fwd_xdp_reader(ctx: XdpContext) -> u32 {
    match read_name(&ctx) {
        (0, _) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// tc-only mode: the packet is already translated; it goes to the tunnel from here.
#[classifier]
pub fn fwd_tc_reader(ctx: TcContext) -> i32 {
    match read_name(&ctx) {
        (0, _) => TC_ACT_SHOT,
        (ifindex, host) => redirect_to_tunnel(ifindex, host),
    }
}

//! Kernel programs of the edge forwarder.
//!
//! * `fwd_xdp_ingress` (XDP, public interface): parses every frame, translates packets that
//!   match a forwarding rule toward their backend and marks them in packet metadata.
//! * `fwd_tc_ingress` (tc ingress, public interface): hands marked packets to the tunnel
//!   (XDP cannot transmit into an L3 device such as WireGuard); in tc-only mode it also does
//!   the translation itself.
//! * `fwd_tc_tunnel` (tc ingress, tunnel interface): translates replies back to the public
//!   address and sends them out of the public interface.
//! * `fwd_xdp_reader` / `fwd_tc_reader`: read the host name (TLS SNI / HTTP Host) of a
//!   connection's first payload; tail-called from the programs above. For QUIC they hand
//!   the Initial datagrams to the daemon, which decrypts them and returns the host.
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
// Map keys are passed by reference on purpose: by value they would be copied to the
// 512-byte stack once more.
#![allow(clippy::needless_borrows_for_generic_args)]

mod flow;
mod handoff;
mod maps;
mod pkt;
mod quic;
mod reader;
mod tc;
mod visibility;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

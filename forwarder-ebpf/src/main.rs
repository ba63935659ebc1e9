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
//!
//! Layers, top to bottom; a module imports only from layers below its own:
//!
//! 1. `programs`: the entry points above, thin: each runs its path and maps the result to
//!    a verdict.
//! 2. `forward`: the paths: `ingress` (written once, generic over the hook), `reply` (the
//!    tunnel's return path), `track` (what every forwarded packet gets).
//! 3. `classify`: the name readers' work: SWAR scanner, parser stepping, host match, the
//!    TCP segment driver, reader dispatch.
//! 4. `quic` (the QUIC Initial hand-off to the daemon), `handoff` (what the daemon needs
//!    to take over a `local` connection).
//! 5. `flow` (the flow table; admission, attribution of a connection to its host, its
//!    end), `hook` (what differs between XDP and tc: loads, rewrites, verdicts).
//! 6. `events`: connection events.
//! 7. `counters`: global counters and per-host statistics.
//! 8. `maps`, `pkt`: the maps, and bounds-checked packet access.
//!
//! `cargo xtask lint` lints this crate on its own target (feature unification would pull
//! `std` into it with the workspace): `cargo +nightly clippy -p forwarder-ebpf --target
//! bpfel-unknown-none -Z build-std=core -- -D warnings`.
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
// Map keys are passed by reference on purpose: by value they would be copied to the
// 512-byte stack once more.
#![allow(clippy::needless_borrows_for_generic_args)]
// Every `unsafe` block says which check makes it sound.
#![deny(clippy::undocumented_unsafe_blocks)]

mod classify;
mod counters;
mod events;
mod flow;
mod forward;
mod handoff;
mod hook;
mod maps;
mod pkt;
mod programs;
mod quic;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

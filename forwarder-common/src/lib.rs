//! Types and parsers shared by the forwarder's kernel programs and its daemon.
//!
//! Everything here is plain `no_std` Rust so that the very code the kernel runs is unit-,
//! property- and fuzz-tested on the host. Map keys and values are `#[repr(C)]` with explicit
//! padding so both sides agree on their layout byte for byte.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

pub mod admission;
pub mod classify;
pub mod csum;
pub mod handoff;
pub mod host;
pub mod maps;
pub mod packet;
pub mod quic;
#[cfg(feature = "std")]
pub mod samples;
pub mod swar;

pub use maps::*;

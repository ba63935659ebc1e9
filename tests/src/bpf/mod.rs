//! Runs the real kernel object with BPF_PROG_TEST_RUN: named input packets in, verdict and
//! exact output bytes out. Packets are built here with checksums computed from scratch, so
//! the incremental checksum updates of the kernel programs are checked independently.
//!
//! From the bottom: `constants` and `packet` (plain values and bytes), `conn` (a
//! connection's packets), `harness` (loading and running the programs), `maps` and `timing`
//! (a harness's maps as the daemon sees them, its programs' cost), `handshake` on top.

mod conn;
mod constants;
mod handshake;
mod harness;
mod maps;
mod packet;
mod timing;

pub use conn::*;
pub use constants::*;
pub use handshake::{OPEN_ISN, OPEN_SERVER_ISN};
pub use harness::Harness;
pub use packet::*;

//! The lab library of the integration tests: network-namespace labs with a real WireGuard
//! tunnel and real servers around the forwarder (`lab`), the BPF_PROG_TEST_RUN harness of
//! the kernel programs (`bpf`), and what is measured or run for long with them.
//!
//! A folder is a layer; a module uses only modules of the rows below its own:
//!
//! ```text
//!  compare/  soak   bench/           the comparison, the soak, per-packet costs
//!  lab/             bpf/             the namespace lab; the BPF_PROG_TEST_RUN harness
//!  traffic/         forwarder_code   flood and QUIC peers; the forwarder crate's code
//!  support/                          commands, polling, certificate, CPU accounting
//! ```
//!
//! `bpf`, `bench` and `forwarder_code` need the `bpf` feature (the forwarder crate, and so
//! the eBPF toolchain); everything else builds without it, as xtask uses it. The root
//! re-exports the lab's items and the `flood`, `quic_peer` and `profile` modules:
//! `integration_tests::Lab`, `::flood::Flood`, `::profile::Class`.

#[cfg(feature = "bpf")]
pub mod bench;
#[cfg(feature = "bpf")]
pub mod bpf;
pub mod compare;
#[cfg(feature = "bpf")]
mod forwarder_code;
pub mod lab;
pub mod soak;
pub mod support;
pub mod traffic;

#[cfg(feature = "bpf")]
pub use bench::profile;
pub use lab::*;
pub use support::{process_cpu_seconds, run, self_signed, wait_for};
pub use traffic::{flood, quic_peer};

//! Per-packet cost of the kernel programs, from BPF_PROG_TEST_RUN's own clock, the daemon's
//! cost per QUIC connection, and where a packet's time goes (`profile`).
//!
//! From the bottom: `fixtures` (the host table and connections every measurement uses),
//! `quic` (the QUIC rows and the daemon's decoder), `packet_costs` (every row), `profile`.

mod fixtures;
mod packet_costs;
pub mod profile;
mod quic;

pub use packet_costs::{Costs, Row, packet_costs, print};
pub use quic::{QuicDaemonCosts, print_quic_daemon, quic_daemon_costs};

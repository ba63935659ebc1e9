//! The operating system below the daemon: interfaces, sockets, raw TCP segments, the
//! file descriptor limit.

pub mod addrs;
pub mod netif;
pub mod rlimit;
pub mod segment;
pub mod socket;

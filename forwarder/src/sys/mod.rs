//! The operating system below the daemon: interfaces, sockets, raw TCP segments.

pub mod addrs;
pub mod netif;
pub mod segment;
pub mod socket;

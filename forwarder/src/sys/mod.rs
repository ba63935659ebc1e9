//! The operating system below the daemon: interfaces, sockets, raw TCP segments.

pub mod netif;
pub mod segment;
pub mod socket;

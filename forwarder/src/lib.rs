//! The forwarder daemon and CLI, as a library so the tests drive the same code.

pub mod config;
pub mod dataplane;
pub mod home;
pub mod netif;

//! What the daemon shows: statistics snapshots, their Prometheus encoding, and the HTTP
//! endpoint serving both.

pub mod http;
pub mod metrics;
pub mod snapshot;

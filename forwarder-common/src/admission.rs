//! What a packet from the internet must show before it may create state or end a
//! connection: a source address a client can have (`source`), a sequence number inside
//! what its connection carried (`seq`), and per-source keys coarse enough that one IPv6
//! /64 counts as one client.

pub mod seq;
pub mod source;

#[cfg(test)]
mod tests;

pub use seq::{SEQ_SLACK, end_in_window, seq_end};
pub use source::{DEFAULT_V6_SOURCE_PREFIX, is_bogon_source, source_key};

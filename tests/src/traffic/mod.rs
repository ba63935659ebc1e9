//! Traffic the lab sends that curl cannot: the raw-frame flood generator and the QUIC
//! endpoints (quinn). They run in whatever namespace their caller is in and know nothing
//! of the lab.

pub mod flood;
pub mod quic_peer;

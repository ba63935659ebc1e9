//! Traffic the lab sends that curl cannot: the raw-frame flood generators and the QUIC
//! endpoints (quinn). They run in whatever namespace their caller is in and know nothing
//! of the lab.
//!
//! `flood` is the benchmark's flood (as fast as one thread can) and owns the raw socket;
//! `flood_frames` builds single packets, `flood_shapes` the attacks made of them, and
//! `flood_paced` sends one at a fixed rate.

pub mod flood;
pub mod flood_frames;
pub mod flood_paced;
pub mod flood_shapes;
pub mod quic_peer;

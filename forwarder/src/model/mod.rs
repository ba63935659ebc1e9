//! Pure values the daemon's parts share: no aya, no tokio, no I/O.

pub mod clock;
pub mod flow;
pub mod labels;

//! What the daemon and the CLI exchange: serde types, shared by both sides so the compiler
//! keeps them in step.

pub mod control;
pub mod stats;

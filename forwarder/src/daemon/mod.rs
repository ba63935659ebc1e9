//! `forwarder run`: the daemon's tasks and their wiring.
//!
//! [`run`] loads the data path and starts the tasks: [`flowgc`] (expires connections),
//! [`connlog`] (the connection log), [`quic`] (QUIC Initial decoding), [`handoff`]
//! (connections served on the VPS), [`health`] (backend probes), the control socket
//! ([`control`], answered by [`handler`]) and the metrics endpoint. [`runtime`] applies
//! rule and host changes; [`stats`] gathers the statistics they all keep.

pub mod connlog;
pub mod control;
pub mod flowgc;
pub mod handler;
pub mod handoff;
pub mod health;
pub mod quic;
pub mod run;
pub mod runtime;
pub mod stats;

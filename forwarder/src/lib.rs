//! The forwarder daemon and CLI, as a library so the tests drive the same code.

pub mod config;
pub mod config_edit;
pub mod connlog;
pub mod control;
pub mod dataplane;
pub mod doctor;
pub mod flowgc;
pub mod handoff;
pub mod health;
pub mod home;
pub mod http;
pub mod maps;
pub mod metrics;
pub mod netif;
pub mod pin;
pub mod quic;
pub mod return_probe;
pub mod runtime;
pub mod segment;
pub mod snapshot;
pub mod stats_cli;
pub mod sys;

//! The forwarder crate's own code that the BPF harness and the benchmarks reuse: the
//! embedded kernel object, the daemon's map helpers and its QUIC decoder. Every
//! `forwarder::` path of the lab library is here and nowhere else (only with the `bpf`
//! feature: the lab itself builds without the forwarder crate).

pub use forwarder::{
    daemon::quic::{Decision, Pending, QuicStats},
    dataplane::{
        EBPF_OBJECT, load_readers,
        maps::{add_host_stats, read_record},
    },
};

//! Reading a connection's host from its first payload (TLS SNI / HTTP Host), in the name
//! reader programs: the SWAR scanner (`scan`) and the buffer views it serves (`buf`), the
//! parser's stepping (`step`), host matching (`host`), the TCP segment driver (`segment`)
//! and the dispatch between forwarding programs and readers (`reader`).
//!
//! `scan`, `step` and `host` sit behind global BPF functions (`fwd_scan_any`,
//! `fwd_scan_line`, `fwd_cls_feed`, `fwd_match_host`): the verifier checks each once, on
//! its own, whatever state its caller reaches it with.

mod buf;
mod host;
mod reader;
mod scan;
mod segment;
mod step;

pub use reader::{read_name, to_reader};

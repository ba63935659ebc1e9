//! The forwarder daemon and CLI, as a library so the tests drive the same code.
//!
//! Layers, bottom to top; a module uses only the layers below it:
//!
//! * [`api`]: what the daemon and the CLI exchange (control requests and replies, the
//!   statistics document). Serde types only.
//! * [`model`]: host labels, clocks, ended connections. Pure: no aya, no tokio.
//! * [`sys`]: the operating system's interfaces, sockets and raw packets.
//! * [`config`]: the configuration file, its resolution against the machine, its edits,
//!   and the home side's recipe.
//! * [`dataplane`]: the kernel programs and their maps; the only user of aya.
//! * [`observe`]: statistics snapshots, Prometheus encoding, the metrics endpoint.
//! * [`daemon`]: `forwarder run`'s tasks and their wiring.
//! * [`cli`]: one file per subcommand.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod model;
pub mod observe;
pub mod sys;

//! The bottom layer: running commands and polling, the lab's certificate, process CPU
//! accounting. Nothing here knows the lab.

mod cert;
mod command;
mod cpu;

pub use cert::self_signed;
pub(crate) use command::which;
pub use command::{run, wait_for};
pub use cpu::process_cpu_seconds;

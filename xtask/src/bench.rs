//! `cargo xtask bench`: per-packet cost of the kernel programs.

use crate::{cargo, status};

pub fn run(quick: bool) -> anyhow::Result<()> {
    let runs = if quick { "2000" } else { "20000" };
    status(
        cargo()
            .args([
                "run",
                "--release",
                "-q",
                "-p",
                "integration-tests",
                "--bin",
                "packet-costs",
            ])
            .args(crate::locked())
            .arg("--")
            .arg(runs),
    )
}

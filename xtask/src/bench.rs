//! `cargo xtask bench`: per-packet cost of the kernel programs, then the forwarder side by
//! side with the alternatives in the lab (see `integration_tests::compare`).

use std::process::Command;

use crate::{cargo, status};

/// `cargo run --release` of a benchmark binary of the integration-tests crate.
fn bench_bin(name: &str) -> Command {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "-q",
        "-p",
        "integration-tests",
        "--bin",
        name,
    ])
    .args(crate::locked());
    c
}

pub fn run(quick: bool, profile_only: bool) -> anyhow::Result<()> {
    let runs = if quick { "2000" } else { "20000" };
    status(bench_bin("packet-costs").arg("--").arg(runs))?;
    if !quick {
        // Where each packet class's time goes: perf call chains, 5 s per class.
        status(bench_bin("packet-costs").args(["--", "--profile", "5"]))?;
    }
    if profile_only {
        return Ok(());
    }
    // The daemon as users run it: a release build.
    status(
        cargo()
            .args(["build", "--release", "-q", "-p", "forwarder"])
            .args(crate::locked()),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::root().join("target"), std::path::PathBuf::from);
    let json = target.join(if quick {
        "bench-compare-quick.json"
    } else {
        "bench-compare.json"
    });
    let mut c = bench_bin("compare");
    c.env("FORWARDER_BIN", target.join("release").join("forwarder"))
        .arg("--")
        .arg("--json")
        .arg(&json);
    if quick {
        c.arg("--quick");
    }
    status(&mut c)
}

/// `cargo xtask soak`: the lab under mixed traffic for `minutes` (debug daemon, as the
/// integration tests run it).
pub fn soak(minutes: f64) -> anyhow::Result<()> {
    status(
        bench_bin("soak")
            .arg("--")
            .arg("--minutes")
            .arg(minutes.to_string()),
    )
}

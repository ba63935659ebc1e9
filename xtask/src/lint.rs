//! `cargo xtask lint`: formatting, clippy on the host crates and on the kernel programs
//! (for the bpf target, where `clippy::undocumented_unsafe_blocks` keeps a `SAFETY:` line
//! on every `unsafe` block), and the layout check. `cargo xtask test` runs it first.

use std::process::Command;

use crate::{cargo, layout, locked, root, status};

pub fn run() -> anyhow::Result<()> {
    // rustfmt.toml's import grouping needs nightly rustfmt.
    status(nightly().args(["fmt", "--all", "--check"]))?;
    status(
        cargo()
            .args(["clippy", "--all-targets"])
            .args(locked())
            .args(["--", "-D", "warnings"]),
    )?;
    // The kernel crate on its own: feature unification with the host crates would pull
    // `std` into it.
    status(
        nightly()
            .args([
                "clippy",
                "-p",
                "forwarder-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .args(locked())
            .args(["--", "-D", "warnings"]),
    )?;
    layout::run(&root(), false)
}

/// `cargo +nightly` at the workspace root. The rustup proxy is called rather than
/// `$CARGO`, which names the stable toolchain's cargo and would not understand `+nightly`.
fn nightly() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .current_dir(root())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    c
}

//! Builds the kernel programs with aya-build and leaves the object in OUT_DIR, from where
//! the daemon embeds it. `FORWARDER_SKIP_EBPF=1` writes an empty stub instead (for
//! `cargo clippy` on a machine without bpf-linker); such a binary refuses to load.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=FORWARDER_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    if env::var_os("FORWARDER_SKIP_EBPF").is_some_and(|v| v == "1") {
        fs::write(out_dir.join("forwarder-ebpf"), []).context("writing stub object")?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "forwarder-ebpf")
        .ok_or_else(|| anyhow!("forwarder-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("forwarder-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

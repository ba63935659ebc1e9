//! `cargo xtask bench`: per-packet cost of the kernel programs.

pub fn run(_quick: bool) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

pub fn fuzz_smoke() -> anyhow::Result<()> {
    Ok(())
}

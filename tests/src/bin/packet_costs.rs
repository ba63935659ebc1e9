//! Prints the per-packet cost of the kernel programs (run by `cargo xtask bench`).

fn main() -> anyhow::Result<()> {
    let runs: u32 = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| anyhow::anyhow!("runs {n:?}: {e}"))?,
        None => 20_000,
    };
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("BPF_PROG_TEST_RUN needs root");
    }
    let costs = integration_tests::bench::packet_costs(runs)?;
    println!("Per-packet cost of the kernel programs, {runs} runs per packet class:\n");
    integration_tests::bench::print(&costs);
    Ok(())
}

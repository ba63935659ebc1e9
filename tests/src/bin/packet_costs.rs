//! Prints the per-packet cost of the kernel programs (run by `cargo xtask bench`).
//!
//! `packet-costs [RUNS]`: median cost per packet class.
//! `packet-costs --profile [SECONDS]`: where that time goes, per class, from `perf`.

use integration_tests::profile::{self, Class};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("BPF_PROG_TEST_RUN needs root");
    }
    match args.first().map(String::as_str) {
        // The process `--profile` records.
        Some("--spin") => {
            let class = args
                .get(1)
                .and_then(|c| Class::parse(c))
                .ok_or_else(|| anyhow::anyhow!("--spin syn|data|tls|http SECONDS"))?;
            let secs: u64 = args.get(2).map_or(Ok(5), |s| s.parse())?;
            let runs = profile::spin(class, std::time::Duration::from_secs(secs))?;
            println!("{runs}");
        }
        Some("--profile") => {
            let secs: u32 = args.get(1).map_or(Ok(5), |s| s.parse())?;
            let exe = std::env::current_exe()?;
            let dir = std::env::temp_dir();
            let profiles = Class::ALL
                .into_iter()
                .map(|c| profile::profile(&exe, c, secs, &dir))
                .collect::<anyhow::Result<Vec<_>>>()?;
            profile::print(&profiles);
        }
        Some("--help" | "-h") => {
            println!("usage: packet-costs [RUNS] | --profile [SECONDS]");
        }
        arg => {
            let runs: u32 = match arg {
                Some(n) => n.parse().map_err(|e| anyhow::anyhow!("runs {n:?}: {e}"))?,
                None => 20_000,
            };
            let costs = integration_tests::bench::packet_costs(runs)?;
            println!("Per-packet cost of the kernel programs, {runs} runs per packet class:\n");
            integration_tests::bench::print(&costs);
            let quic = integration_tests::bench::quic_daemon_costs(runs.min(5000))?;
            integration_tests::bench::print_quic_daemon(&quic);
        }
    }
    Ok(())
}

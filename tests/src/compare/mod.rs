//! The forwarder side by side with what self-hosters run today, in one lab and one run:
//! the same client, tunnel and home server, the configurations on the VPS interleaved
//! (A B A B ...), so that drift of the machine hits every configuration alike.
//!
//! Configurations kept in the repository (`deploy/bench/`): hand-written nftables DNAT
//! with conntrack and MSS clamping (the baseline every figure is a ratio to), HAProxy
//! passing TLS through by SNI, and Caddy terminating TLS and proxying home.
//!
//! `flood_shapes` measures the forwarder alone under each shape of spoofed flood.

mod cpu;
pub mod flood_shapes;
mod measure;
mod model;
mod report;
mod setups;
mod wrk;

use std::fs;

pub use measure::measure;
pub use model::{Options, Sample, Setup, Workload};
pub use report::{chart, cost_table, table};
pub use setups::{CADDYFILE, HAPROXY_CONFIG, NFTABLES_RULES};
use wrk::{FIXED_CONNECTIONS, FIXED_DELAY_MS};
pub use wrk::{Wrk, parse_wrk};

/// Runs the comparison and prints the table; the samples go to `json` if given, and a
/// chart next to it (`.svg`).
pub fn compare(o: &Options, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    let samples = std::thread::spawn({
        let o = *o;
        move || measure(&o)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("comparison thread panicked"))??;
    println!(
        "\nSide by side in the lab ({} repetitions of {} s per configuration and workload, {} connections, interleaved):\n",
        o.repetitions, o.seconds, o.connections
    );
    print!("{}", table(&samples));
    println!(
        "\nCost at a fixed load ({FIXED_CONNECTIONS} connections, {FIXED_DELAY_MS} ms between requests), bulk download ({} MB), and the fixed load under a SYN + junk-UDP flood:\n",
        o.bulk_bytes >> 20
    );
    print!("{}", cost_table(&samples));
    if let Some(path) = json {
        fs::write(path, serde_json::to_string_pretty(&samples)?)?;
        let svg = path.with_extension("svg");
        chart(&samples, &svg)?;
        println!("\nsamples: {}\nchart: {}", path.display(), svg.display());
    }
    Ok(())
}

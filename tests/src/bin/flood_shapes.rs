//! `flood-shapes`: every shape of spoofed flood (`traffic::flood_shapes`) against the
//! forwarder in the lab, one after the other, at a fixed rate, while real clients run;
//! prints a table row per shape (see `compare::flood_shapes`).
//!
//! `flood-shapes [--rate PPS] [--seconds S] [--shapes a,b,...]` (defaults: 5000 pps, 4 s
//! per shape, every shape). Needs root and the lab's tools; the forwarder binary is
//! `FORWARDER_BIN` or the workspace's debug build, `quic-peer` the one next to this binary.

use std::time::Instant;

use anyhow::{Context as _, bail};
use integration_tests::{
    compare::flood_shapes::{FloodLab, FloodOptions, row_line, table},
    traffic::flood_shapes::Shape,
};

fn main() -> anyhow::Result<()> {
    let mut o = FloodOptions::default();
    let mut shapes: Vec<Shape> = Shape::ALL.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rate" => o.rate = value()?.parse().context("--rate: packets per second")?,
            "--seconds" => o.seconds = value()?.parse().context("--seconds: a number")?,
            "--shapes" => {
                shapes = value()?
                    .split(',')
                    .map(|n| {
                        Shape::from_name(n).with_context(|| {
                            let all: Vec<_> = Shape::ALL.iter().map(|s| s.name()).collect();
                            format!("unknown shape {n:?} (known: {})", all.join(", "))
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => {
                bail!("unknown argument {other:?} (expected --rate PPS, --seconds S, --shapes a,b)")
            }
        }
    }
    if o.rate == 0 || !(o.seconds > 0.0 && o.seconds <= 60.0) {
        bail!("--rate must be above 0 and --seconds within (0, 60]");
    }
    if let Some(why) = integration_tests::missing_prerequisites() {
        bail!("cannot build the lab: {why}");
    }
    let peer = std::env::current_exe()?
        .parent()
        .context("this binary's directory")?
        .join("quic-peer");
    if !peer.is_file() {
        bail!(
            "{} not found: build it (cargo build -p integration-tests --bin quic-peer)",
            peer.display()
        );
    }
    let started = Instant::now();
    let mut lab = FloodLab::new(&peer)?;
    println!(
        "flood shapes at {} packets/s, {} s each (probe-acks: one sweep of the VPS's local port range), a new HTTPS connection every {} ms and one download during each:\n",
        o.rate,
        o.seconds,
        o.client_interval.as_millis()
    );
    let baseline = lab.baseline(&o)?.clone();
    eprintln!("{}", row_line(&baseline));
    let mut rows = Vec::new();
    for shape in shapes {
        let row = lab
            .measure(shape, &o)
            .with_context(|| format!("measuring {}", shape.name()))?;
        eprintln!("{}", row_line(&row));
        if let Some(f) = row.clients.failures.first() {
            eprintln!(
                "  {} real requests failed, e.g. {f}",
                row.clients.failures.len()
            );
        }
        rows.push(row);
    }
    print!("{}", table(Some(&baseline), &rows));
    println!(
        "\nreached home: packets from spoofed sources at home's tunnel interface; flows / confirmed (flood): connections the data path created / confirmed beyond the real clients' ({}+1 per shape); to spoofed: packets the VPS sent to the shape's spoofed sources (told apart by source port). Load average at the end: {}. {:.0} s in all.",
        rows.first().map_or(0, |r| r.clients.requests),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

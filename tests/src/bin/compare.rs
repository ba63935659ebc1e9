//! The lab comparison of `cargo xtask bench`: the forwarder against the alternatives, side by
//! side in one run. `--quick` for CI; `--json FILE` writes every sample.

use integration_tests::compare::{Options, compare};

fn main() -> anyhow::Result<()> {
    let mut quick = false;
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--chart-from" => {
                // Redraws the chart of an earlier run's samples (FILE.json -> FILE.svg).
                let path = std::path::PathBuf::from(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--chart-from needs a file"))?,
                );
                let samples: Vec<integration_tests::compare::Sample> =
                    serde_json::from_str(&std::fs::read_to_string(&path)?)?;
                let svg = path.with_extension("svg");
                integration_tests::compare::chart(&samples, &svg)?;
                println!("chart: {}", svg.display());
                return Ok(());
            }
            "--json" => {
                json = Some(std::path::PathBuf::from(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--json needs a file"))?,
                ))
            }
            other => anyhow::bail!(
                "unknown argument {other:?} (expected --quick, --json FILE, --chart-from FILE)"
            ),
        }
    }
    if let Some(why) = integration_tests::missing_prerequisites() {
        anyhow::bail!("cannot build the lab: {why}");
    }
    let o = if quick { Options::QUICK } else { Options::FULL };
    compare(&o, json.as_deref())
}

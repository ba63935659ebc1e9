//! `cargo xtask soak --minutes N` (see `integration_tests::soak`).

fn main() -> anyhow::Result<()> {
    let mut minutes = 3.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--minutes" => {
                let v = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--minutes needs a value"))?;
                minutes = v
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--minutes {v:?}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("usage: soak [--minutes N]   (default 3; needs root)");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("the soak builds network namespaces: run it as root");
    }
    if let Some(why) = integration_tests::missing_prerequisites() {
        anyhow::bail!("cannot build the lab: {why}");
    }
    let report = integration_tests::soak::run(minutes)?;
    report.print();
    report.check()
}

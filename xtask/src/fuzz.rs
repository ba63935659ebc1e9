//! Fuzz smoke runs of the parsers in `forwarder-common` (the cargo-fuzz project in
//! `forwarder-common/fuzz`) and of the daemon's decoders of hostile control input (config
//! file, control socket requests: `forwarder/fuzz`): saved crash inputs are replayed, then
//! every target runs for a few seconds from its seed corpus.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::status;

/// The cargo-fuzz projects (relative to the repository) and their targets.
pub const PROJECTS: &[(&str, &[&str])] = &[
    (
        "forwarder-common/fuzz",
        &[
            "parse_ethernet",
            "parse_ip",
            "csum_incremental",
            "classify",
            "host_match",
            "tcp_options",
            "quic_initial",
        ],
    ),
    ("forwarder/fuzz", &["config", "control_request"]),
];

/// Runs every fuzz target for `seconds_per_target` seconds, after replaying the crash inputs
/// saved under `fuzz/regressions/<target>/`.
pub fn smoke(seconds_per_target: u64) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    for (project, targets) in PROJECTS {
        smoke_project(&fuzz_dir(project), targets, seconds_per_target)?;
    }
    Ok(())
}

fn smoke_project(dir: &Path, targets: &[&str], seconds_per_target: u64) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    // One build for all targets; the runs below then only check it is up to date.
    status(cargo_fuzz(&dir).arg("build")).context("building the fuzz targets")?;
    // Known crashes first: they take a moment and say more than a new one would.
    for target in targets {
        replay_regressions(&dir, target)?;
    }
    for target in targets {
        let corpus = dir.join("corpus").join(target).join("smoke");
        // A fresh corpus each time, so a smoke run costs the same however often it ran before.
        if corpus.exists() {
            std::fs::remove_dir_all(&corpus)
                .with_context(|| format!("removing {}", corpus.display()))?;
        }
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = dir.join("seeds").join(target);
        eprintln!("fuzzing {target} for {seconds_per_target}s");
        let start = Instant::now();
        let started = SystemTime::now();
        let run = status(
            cargo_fuzz(&dir)
                .args(["run", target])
                .arg(&corpus)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={seconds_per_target}"))
                .arg("-rss_limit_mb=2048"),
        );
        if run.is_err() {
            let found = new_artifacts(&artifacts(&dir, target), started);
            let found = if found.is_empty() {
                "no new input saved".to_owned()
            } else {
                found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            bail!(
                "fuzz target {target} found a crash (see above); artifacts dir {}: {found}\n\
                 reproduce with `cd {} && cargo +nightly fuzz run {target} <input>`, and once \
                 fixed keep the input under {} so that every smoke run replays it",
                artifacts(&dir, target).display(),
                dir.display(),
                regressions(&dir, target).display(),
            );
        }
        eprintln!(
            "fuzz target {target}: no crash in {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Files libFuzzer wrote to `dir` since `since` (crash-, leak-, timeout-, oom- inputs).
fn new_artifacts(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn fuzz_dir(project: &str) -> PathBuf {
    let dir = crate::root().join(project);
    dir.canonicalize().unwrap_or(dir)
}

fn artifacts(dir: &Path, target: &str) -> PathBuf {
    dir.join("artifacts").join(target)
}

fn regressions(dir: &Path, target: &str) -> PathBuf {
    dir.join("regressions").join(target)
}

/// `cargo +nightly fuzz` in the fuzz project. The rustup proxy is called rather than
/// `$CARGO`, which names the stable toolchain's cargo and would not understand `+nightly`.
fn cargo_fuzz(dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    // The fuzz project is its own workspace with its own target dir (fuzz/target).
    c.args(["+nightly", "fuzz"])
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        // The daemon's decoders need no kernel object (and the eBPF build would not take
        // the sanitizer flags).
        .env("FORWARDER_SKIP_EBPF", "1");
    c
}

/// Replays the crash inputs found earlier (files in `fuzz/regressions/<target>/`): libFuzzer
/// runs each file given on its command line once and fails if any of them crashes.
fn replay_regressions(dir: &Path, target: &str) -> anyhow::Result<()> {
    let saved = regressions(dir, target);
    let mut inputs: Vec<PathBuf> = match std::fs::read_dir(&saved) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading {}", saved.display()))?
            .into_iter()
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", saved.display())),
    };
    if inputs.is_empty() {
        return Ok(());
    }
    inputs.sort();
    eprintln!(
        "fuzz target {target}: replaying {} saved crash input(s) from {}",
        inputs.len(),
        saved.display()
    );
    status(cargo_fuzz(dir).args(["run", target]).args(&inputs).args([
        "--",
        "-runs=1",
        "-rss_limit_mb=2048",
    ]))
    .with_context(|| {
        format!(
            "fuzz target {target} crashes again on an input saved in {}",
            saved.display()
        )
    })
}

/// Installs cargo-fuzz unless `cargo fuzz` already works.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let works = || {
        Command::new("cargo")
            .args(["fuzz", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works() {
        return Ok(());
    }
    eprintln!(
        "cargo-fuzz is not installed: installing it with `cargo install cargo-fuzz --locked` (once, takes a minute or two)"
    );
    status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz")?;
    if !works() {
        bail!(
            "cargo-fuzz was installed but `cargo fuzz --version` still fails: is ~/.cargo/bin on PATH?"
        );
    }
    Ok(())
}

/// The smoke run `cargo xtask test` does: `FUZZ_SECONDS` per target (default 20).
pub fn smoke_from_env() -> anyhow::Result<()> {
    let seconds = match std::env::var("FUZZ_SECONDS") {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("FUZZ_SECONDS={s:?}: {e}"))?,
        Err(_) => 20,
    };
    smoke(seconds)
}

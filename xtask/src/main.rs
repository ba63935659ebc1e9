//! Project automation: `cargo xtask setup | build | test | demo | soak | bench | vmtest |
//! lint | layout`.

mod bench;
mod demo;
mod fuzz;
mod layout;
mod lint;
mod setup;
mod vmtest;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test and demonstrate the forwarder")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the lab need (Debian packages, nightly rust-src,
    /// bpf-linker). Idempotent; quick when everything is present.
    Setup {
        /// Only the Rust toolchain parts (no Debian packages).
        #[arg(long)]
        rust_only: bool,
        /// Also what `cargo xtask vmtest --all` needs: QEMU, virtme-ng and Debian's 6.1
        /// and 6.12 kernels.
        #[arg(long, conflicts_with = "rust_only")]
        vmtest: bool,
    },
    /// Build the forwarder binary (with its kernel programs embedded).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run every test: unit, property, fuzz smoke runs, BPF packet tests and the
    /// network-namespace integration tests (needs root).
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Bring up the lab (client, VPS, home with WireGuard and nginx), forward traffic
    /// through it and show what happened.
    Demo {
        /// Leave the lab running afterwards and print how to reach it.
        #[arg(long)]
        keep: bool,
    },
    /// Mixed traffic through the lab for a while, with rule changes and a daemon restart:
    /// no failed request, counters equal to what client and nginx counted, flat memory.
    Soak {
        /// How long the traffic runs.
        #[arg(long, default_value_t = 3.0)]
        minutes: f64,
    },
    /// The kernel programs and the lab's tests on the kernels VPSs run: each kernel boots
    /// in a QEMU VM (software emulation), the tunnel is kernel WireGuard, and the VPS's
    /// public interface is tested on veth and on a virtio-net NIC. Installs QEMU,
    /// virtme-ng and Debian's kernels first. Prints the verifier's verdict per program and
    /// kernel.
    Vmtest {
        /// A kernel image to boot (repeatable); default: Debian 12's 6.1.
        #[arg(long = "kernel", value_name = "PATH")]
        kernels: Vec<PathBuf>,
        /// Debian 12's 6.1, the 6.12 of bookworm-backports, and this machine's kernel
        /// (no VM, with whatever WireGuard it has).
        #[arg(long, conflicts_with = "kernels")]
        all: bool,
        /// Only the BPF packet tests, forwarding end to end and the fault drills (what
        /// `cargo xtask test` runs on 6.1).
        #[arg(long, conflicts_with = "suites")]
        quick: bool,
        /// Only this suite (repeatable; a file name in tests/tests without `.rs`, e.g.
        /// `http3`), to look into one failure.
        #[arg(long = "suite", value_name = "NAME")]
        suites: Vec<String>,
    },
    /// Formatting (nightly rustfmt), clippy with warnings as errors on the host crates and
    /// on the kernel programs, and the layout check. Run first by `test`.
    Lint,
    /// Check the source tree's shape: no import cycle between the modules of a crate, no
    /// file over 600 lines except the named test tables.
    Layout {
        /// Also print each module's imports of the other modules of its crate.
        #[arg(long)]
        graph: bool,
    },
    /// Per-packet cost of the kernel programs (BPF_PROG_TEST_RUN), where it goes (perf),
    /// then the forwarder side by side with nftables, HAProxy and Caddy in the lab.
    Bench {
        /// Fewer repetitions and no profile, for CI.
        #[arg(long)]
        quick: bool,
        /// Only the per-packet costs and their profile, not the lab comparison.
        #[arg(long, conflicts_with = "quick")]
        profile: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup { rust_only, vmtest } => {
            if vmtest {
                setup::vmtest(true).map(|_| ())
            } else {
                setup::run(!rust_only)
            }
        }
        Cmd::Build { release } => {
            setup::run(false)?;
            build(release).map(|_| ())
        }
        Cmd::Test { filter } => {
            setup::run(true)?;
            test(filter.as_deref())
        }
        Cmd::Demo { keep } => {
            setup::run(true)?;
            let bin = build(false)?;
            status(
                cargo()
                    .args(["build", "-p", "integration-tests", "--bin", "quic-peer"])
                    .args(locked()),
            )?;
            let peer = bin.with_file_name("quic-peer");
            demo::run(&bin, &peer, keep)
        }
        Cmd::Soak { minutes } => {
            setup::run(true)?;
            build(false)?;
            bench::soak(minutes)
        }
        Cmd::Vmtest {
            kernels,
            all,
            quick,
            suites,
        } => {
            let (passed, failed) = vmtest::run(&vmtest::Options {
                kernels,
                all,
                quick,
                suites,
            })?;
            println!("\nvmtest: {passed} passed, {failed} failed");
            if failed > 0 {
                bail!("{failed} test(s) failed");
            }
            Ok(())
        }
        Cmd::Lint => {
            setup::run(false)?;
            lint::run()
        }
        Cmd::Layout { graph } => layout::run(&root(), graph),
        Cmd::Bench { quick, profile } => {
            setup::run(true)?;
            build(false)?;
            bench::run(quick, profile)
        }
    }
}

/// The soak's length within `cargo xtask test`.
const SOAK_MINUTES_IN_TEST: f64 = 2.0;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

pub fn locked() -> &'static [&'static str] {
    // CI builds exactly what Cargo.lock says.
    if std::env::var_os("CI").is_some() {
        &["--locked"]
    } else {
        &[]
    }
}

/// Builds the forwarder and returns the path of its binary.
fn build(release: bool) -> anyhow::Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "forwarder"]).args(locked());
    if release {
        c.arg("--release");
    }
    // The kernel programs' own build (forwarder/build.rs) shows only its problems; its
    // progress goes to forwarder-ebpf-build.log in the build script's OUT_DIR.
    eprintln!("Building the forwarder and its kernel programs (forwarder-ebpf)…");
    status(&mut c)?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("forwarder"))
}

fn test(filter: Option<&str>) -> anyhow::Result<()> {
    // A minute or two, and it names what to fix: before anything slow.
    lint::run()?;
    let bin = build(false)?;
    if !nix_is_root() {
        bail!("the BPF and network-namespace tests need root: run `sudo -E cargo xtask test`");
    }
    // Fuzz smoke runs and the quick benchmark first, so the last lines are the summary.
    fuzz::smoke_from_env()?;
    // The benchmark runs too (briefly), so it never rots.
    bench::run(true, false)?;
    // A short soak, so it never rots; longer ones by hand (`cargo xtask soak`).
    bench::soak(SOAK_MINUTES_IN_TEST)?;
    let mut c = cargo();
    // Every suite runs even when one fails, so the summary counts them all.
    c.args(["test", "--no-fail-fast"])
        .args(locked())
        .env("FORWARDER_BIN", &bin);
    if let Some(f) = filter {
        c.arg(f);
    }
    let (mut passed, mut failed) = run_tests(&mut c)?;
    // The same programs on Debian 12's kernel (6.1, what most VPSs run) with kernel
    // WireGuard, in a VM; `cargo xtask vmtest --all` runs the whole matrix.
    if filter.is_none() && std::env::var_os("FORWARDER_SKIP_VMTEST").is_none() {
        let (p, f) = vmtest::run(&vmtest::Options {
            kernels: Vec::new(),
            all: false,
            quick: true,
            suites: Vec::new(),
        })?;
        passed += p;
        failed += f;
    }
    println!("\nxtask: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} test(s) failed");
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output, and adds up its "test result" lines.
fn run_tests(cmd: &mut Command) -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead as _;
    eprintln!("+ {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawning cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .split_whitespace()
                            .last()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            passed += num(" passed");
            failed += num(" failed");
        }
    }
    let st = child.wait()?;
    if !st.success() && failed == 0 {
        bail!("cargo test failed: {st}");
    }
    Ok((passed, failed))
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

//! Builds the kernel programs and leaves the object in OUT_DIR, from where the daemon
//! embeds it. `FORWARDER_SKIP_EBPF=1` writes an empty stub instead (for `cargo clippy` on a
//! machine without bpf-linker); such a binary refuses to load.
//!
//! The inner build is the one `aya_build::build_ebpf` (0.2) runs, with its flags, target,
//! toolchain, target directory and rerun rules, written out here for one difference:
//! aya-build hands every line the inner cargo prints to cargo as a warning, so each build
//! showed `warning: forwarder@…: Compiling …` for every crate of the eBPF build. Here
//! cargo's own progress lines go to a log in OUT_DIR (`forwarder-ebpf-build.log`, named
//! when the build fails), and only what is a problem is shown as a warning: the compiler's
//! warnings and errors from the eBPF crate, and cargo's own warnings and errors.
use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::{Artifact, CompilerMessage, Message, Target};
use rustc_version::Channel;

/// The toolchain of the inner build (aya-build's default): `rustup run nightly`.
const TOOLCHAIN: &str = "nightly";
/// The inner build's log, in OUT_DIR.
const LOG: &str = "forwarder-ebpf-build.log";

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
    build_ebpf(ebpf.name.as_str(), root_dir.as_str(), &out_dir)
}

/// `aya_build::build_ebpf` for one package with default features, on the nightly
/// toolchain, its output sorted into problems (cargo warnings) and progress (the log).
fn build_ebpf(name: &str, root_dir: &str, out_dir: &Path) -> anyhow::Result<()> {
    const AYA_BUILD_SKIP: &str = "AYA_BUILD_SKIP";
    println!("cargo:rerun-if-env-changed={AYA_BUILD_SKIP}");
    if let Some(skip) = env::var_os(AYA_BUILD_SKIP)
        && (skip.eq("1") || skip.eq_ignore_ascii_case("true"))
    {
        println!(
            "cargo:warning={AYA_BUILD_SKIP}={}; skipping eBPF build",
            skip.display()
        );
        return Ok(());
    }

    let endian = env::var_os("CARGO_CFG_TARGET_ENDIAN")
        .ok_or_else(|| anyhow!("CARGO_CFG_TARGET_ENDIAN not set"))?;
    let target = if endian == "big" {
        "bpfeb"
    } else if endian == "little" {
        "bpfel"
    } else {
        bail!("unsupported endian={}", endian.display());
    };
    let target = format!("{target}-unknown-none");
    let bpf_target_arch =
        env::var("CARGO_CFG_TARGET_ARCH").map_err(|e| anyhow!("CARGO_CFG_TARGET_ARCH: {e}"))?;
    let bpf_target_arch = if bpf_target_arch.starts_with("riscv64") {
        "riscv64".to_owned()
    } else {
        bpf_target_arch
    };

    let rustup = which::which("rustup");
    let prefix: Vec<&OsStr> = match rustup.as_ref() {
        Ok(rustup) => vec![rustup.as_os_str(), OsStr::new("run"), OsStr::new(TOOLCHAIN)],
        Err(err) => {
            println!("cargo:warning=which(rustup)={err}; proceeding with current toolchain");
            Vec::new()
        }
    };
    let cmd = |program: &str| match prefix.as_slice() {
        [] => Command::new(program),
        [wrapper, args @ ..] => {
            let mut cmd = Command::new(wrapper);
            cmd.args(args).arg(program);
            cmd
        }
    };
    let channel = rustc_version::VersionMeta::for_command(cmd("rustc"))
        .context("failed to get rustc version meta")?
        .channel;
    // RUSTC_BOOTSTRAP decides whether -Z flags are available, as aya-build reads it.
    let use_build_std = match env::var_os("RUSTC_BOOTSTRAP") {
        Some(b) if b == "1" || b == name => true,
        Some(b) if b == "-1" => false,
        _ => channel == Channel::Nightly,
    };

    // The build-dependency on the package rebuilds us when its library or a dependency
    // (forwarder-common) changes; this covers its binary.
    println!("cargo:rerun-if-changed={root_dir}");

    let mut cmd = cmd("cargo");
    cmd.args([
        "build",
        "--package",
        name,
        "--bins",
        "--message-format=json",
        "--release",
        "--target",
        &target,
    ]);
    if use_build_std {
        cmd.args(["-Z", "build-std=core"]);
    }
    cmd.args(["--features", ""]);
    let mut rustflags = OsString::new();
    for s in [
        "--cfg=bpf_target_arch=\"",
        &bpf_target_arch,
        "\"",
        "\x1f",
        "-Cdebuginfo=2",
        "\x1f",
        "-Clink-arg=--btf",
    ] {
        rustflags.push(s);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The toolchain must be the one `rustup run` picked, not the outer build's.
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(key);
    }
    // A target directory of its own: cargo would wait for its own lock otherwise.
    let target_dir = out_dir.join("aya-build").join("target").join(name);
    cmd.arg("--target-dir").arg(&target_dir);

    let log_path = out_dir.join(LOG);
    let log = Arc::new(Mutex::new(
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?,
    ));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to spawn {cmd:?}"))?;

    // cargo's stderr: progress to the log, its own warnings and errors also to cargo.
    let stderr = child.stderr.take().context("stderr")?;
    let stderr_log = Arc::clone(&log);
    let stderr = std::thread::spawn(move || -> Vec<String> {
        let mut problems = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(lock(&stderr_log), "{line}");
            if !is_progress(&line) {
                println!("cargo:warning={line}");
                problems.push(line);
            }
        }
        problems
    });

    let stdout = child.stdout.take().context("stdout")?;
    let mut executables = Vec::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        match message.context("cargo stdout stream contains invalid JSON")? {
            Message::CompilerArtifact(Artifact {
                executable: Some(executable),
                target: Target { name, .. },
                ..
            }) => executables.push((name, executable.into_std_path_buf())),
            Message::CompilerMessage(CompilerMessage { message, .. }) => {
                let rendered = message.rendered.unwrap_or_default();
                let _ = write!(lock(&log), "{rendered}");
                for line in rendered.trim_end().split('\n') {
                    println!("cargo:warning={line}");
                }
            }
            Message::TextLine(line) => {
                let _ = writeln!(lock(&log), "{line}");
            }
            _ => {}
        }
    }

    let status = child
        .wait()
        .with_context(|| format!("failed to wait for {cmd:?}"))?;
    let problems = stderr
        .join()
        .map_err(|_| anyhow!("reading the eBPF build's stderr failed"))?;
    if !status.success() {
        bail!(
            "building the kernel programs failed ({status}): {}\nthe whole log: {}\n{cmd:?}",
            problems.join("\n"),
            log_path.display()
        );
    }

    for (name, binary) in executables {
        let dst = out_dir.join(name);
        let _: u64 = fs::copy(&binary, &dst)
            .with_context(|| format!("failed to copy {} to {}", binary.display(), dst.display()))?;
    }
    Ok(())
}

/// A line of cargo's progress ("   Compiling x", "    Finished …", "    Blocking …"): a
/// capitalised verb after the padding cargo right-aligns its status words with.
fn is_progress(line: &str) -> bool {
    let word = line.trim_start().split(' ').next().unwrap_or_default();
    line.starts_with(' ')
        && word.len() > 1
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word[1..].chars().all(|c| c.is_ascii_lowercase())
}

fn lock(log: &Mutex<fs::File>) -> std::sync::MutexGuard<'_, fs::File> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

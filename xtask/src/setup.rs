//! Installs what the build and the lab need, idempotently.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::status;

/// Debian packages of the lab: the tunnel (wireguard-go runs where the kernel has no
/// WireGuard module), the home web server, clients and plumbing.
pub const PACKAGES: &[&str] = &[
    "wireguard-go",
    "wireguard-tools",
    "nginx-light",
    "curl",
    "openssl",
    "iproute2",
    "iputils-ping",
    "ethtool",
    "socat",
    "bpftool",
    "ca-certificates",
    "prometheus",
    // The benchmark: the load generator and the hand-written alternative.
    "wrk",
    "nftables",
    // Flushes the connection tracking table between benchmark runs.
    "conntrack",
    // chattr: the fault test of a config directory that cannot be written.
    "e2fsprogs",
    // `cargo xtask bench`'s profile of the kernel programs (perf record / perf script).
    "linux-perf",
    "haproxy",
    "caddy",
];

pub fn run(with_packages: bool) -> anyhow::Result<()> {
    if with_packages {
        debian_packages()?;
    }
    nightly_rust_src()?;
    bpf_linker()?;
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        bail!(
            "these packages are missing and this is not a Debian-like system: {}",
            missing.join(" ")
        );
    }
    if !crate::nix_is_root() {
        bail!(
            "these Debian packages are missing: {}; run as root or `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    // Servers among them (nginx, HAProxy, Caddy) run only inside the lab's namespaces:
    // their packages must not start them on the machine itself.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask setup: no service starts while it installs\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = status(Command::new("apt-get").args(["-q", "update"])).and_then(|()| {
        status(
            Command::new("apt-get")
                .args(["-q", "install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result.context("installing Debian packages")
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: the eBPF programs need one (`rustup toolchain install nightly --component rust-src`)\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("adding rust-src to the nightly toolchain")
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// The LLVM major version of the nightly toolchain, which bpf-linker must match.
fn nightly_llvm() -> anyhow::Result<(u32, PathBuf)> {
    let out = Command::new("rustc")
        .args(["+nightly", "-vV"])
        .output()
        .context("running rustc +nightly")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ver = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV printed no LLVM version")?;
    let major: u32 = ver
        .split('.')
        .next()
        .unwrap_or_default()
        .parse()
        .context("parsing the LLVM version")?;
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()?;
    let sysroot = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    Ok((major, sysroot))
}

fn bpf_linker() -> anyhow::Result<()> {
    let (major, sysroot) = nightly_llvm()?;
    let bin = cargo_home().join("bin").join("bpf-linker");
    // It loads the nightly's libLLVM, which only rustup's environment puts on the loader
    // path: without it here the check failed and the linker was rebuilt every time.
    if let Ok(out) = Command::new(&bin)
        .arg("--version")
        .env("LD_LIBRARY_PATH", sysroot.join("lib"))
        .output()
        && out.status.success()
    {
        // Rebuilt only when the nightly's LLVM changed major version.
        let stamp = std::fs::read_to_string(stamp_path()).unwrap_or_default();
        if stamp.trim() == major.to_string() || stamp.is_empty() {
            return Ok(());
        }
    }
    // bpf-linker links the nightly's own libLLVM, so its output matches what rustc emits.
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the nightly sysroot")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .context("the nightly toolchain ships no libLLVM shared library")?;
    let prefix = cache_dir().join(format!("llvm-{major}"));
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib").join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    eprintln!(
        "building bpf-linker against {} (takes a few minutes, once)",
        lib.display()
    );
    status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            .env(format!("LLVM_SYS_{major}1_PREFIX"), &prefix),
    )
    .context("installing bpf-linker")?;
    std::fs::write(stamp_path(), major.to_string())?;
    Ok(())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(
            || PathBuf::from("/root/.cache"),
            |h| Path::new(&h).join(".cache"),
        )
        .join("forwarder")
}

fn stamp_path() -> PathBuf {
    cache_dir().join("bpf-linker-llvm-major")
}

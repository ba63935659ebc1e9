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
    stable_clippy()?;
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
    apt_install(PACKAGES, &[])
}

/// Installs `pkgs` (those not installed yet) with `apt-get install`, plus `extra` arguments.
fn apt_install(pkgs: &[&str], extra: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
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
                .args(extra)
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result.context("installing Debian packages")
}

/// What `cargo xtask vmtest` needs: QEMU, virtme-ng (from PyPI, in a venv of its own) and
/// Debian's kernels: bookworm's 6.1, and with `all` the 6.12 of bookworm-backports (whose
/// source is added) and the newest Debian ships ([`newest_debian_kernel`]). Returns the
/// Debian kernel images in /boot.
pub fn vmtest(all: bool) -> anyhow::Result<Vec<PathBuf>> {
    run(true)?;
    apt_install(&["qemu-system-x86", "busybox-static", "python3-venv"], &[])?;
    let mut releases = vec!["bookworm"];
    if all {
        backports_source()?;
        releases.push("bookworm-backports");
    }
    let mut kernels = Vec::new();
    for release in releases {
        let k = debian_kernel(release, &[])?;
        apt_install(&[k.as_str()], &["-t", release])?;
        kernels.push(k);
    }
    vng()?;
    let mut images: Vec<PathBuf> = kernels
        .iter()
        .map(|k| {
            PathBuf::from(format!(
                "/boot/vmlinuz-{}",
                k.strip_prefix("linux-image-").unwrap_or(k)
            ))
        })
        .collect();
    images.retain(|p| p.exists());
    if images.len() != kernels.len() {
        bail!("a kernel package installed no image in /boot: {kernels:?}");
    }
    if all {
        images.push(newest_debian_kernel()?);
    }
    Ok(images)
}

/// Where the newest kernel's package lists and downloads are kept (a private apt
/// configuration: this machine's own sources are not changed).
const NEWEST_APT: &str = "/opt/forwarder-vmtest/apt-newest";
/// The archive the newest Debian kernel comes from: the next release's backports, built
/// from the newest upstream series (7.3 on 2026-12-03).
const NEWEST_SUITE: &str = "trixie-backports";

/// The newest kernel Debian ships for amd64, from `NEWEST_SUITE`: the verifier changes from
/// one series to the next (and between builds of one), and the matrix should see it before
/// users do. Installing that release's kernel packages on bookworm would pull in its
/// packaging tools, so the kernel and its modules are downloaded and unpacked instead
/// (`/usr/lib/modules/<release>`, `depmod`, the image copied to /boot): all a VM booted by
/// vng needs. Idempotent: nothing is fetched once that kernel is in place.
fn newest_debian_kernel() -> anyhow::Result<PathBuf> {
    let root = Path::new(NEWEST_APT);
    let lists = root.join("lists");
    std::fs::create_dir_all(lists.join("partial"))?;
    std::fs::create_dir_all(root.join("cache").join("archives").join("partial"))?;
    let sources = root.join("sources.list");
    std::fs::write(
        &sources,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {NEWEST_SUITE} main\n"
        ),
    )?;
    let opts: Vec<String> = [
        format!("Dir::Etc::sourcelist={}", sources.display()),
        "Dir::Etc::sourceparts=-".to_owned(),
        format!("Dir::State::Lists={}", lists.display()),
        format!("Dir::Cache={}", root.join("cache").display()),
        "APT::Get::List-Cleanup=0".to_owned(),
        // Downloads land in a directory of root's.
        "APT::Sandbox::User=root".to_owned(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_owned(), o])
    .collect();
    let pkg = debian_kernel(NEWEST_SUITE, &opts)?;
    let release = pkg.strip_prefix("linux-image-").unwrap_or(&pkg).to_owned();
    let image = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    let modules = Path::new("/usr/lib/modules").join(&release);
    if image.exists() && modules.join("modules.dep").exists() {
        return Ok(image);
    }
    eprintln!("fetching Debian's newest kernel, {release}, from {NEWEST_SUITE}");
    let debs = root.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs)?;
    // The image and its modules: one package in older layouts, split in newer ones.
    let wanted: Vec<String> = ["image", "binary", "modules"]
        .iter()
        .map(|part| format!("linux-{part}-{release}"))
        .filter(|p| {
            Command::new("apt-cache")
                .args(&opts)
                .args(["show", p])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    status(
        Command::new("apt-get")
            .args(&opts)
            .args(["-q", "download"])
            .args(&wanted)
            .current_dir(&debs),
    )?;
    let unpacked = root.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    for deb in std::fs::read_dir(&debs)? {
        let deb = deb?.path();
        status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    let from = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| unpacked.join(d).join(&release))
        .find(|d| d.is_dir())
        .with_context(|| format!("the packages {wanted:?} hold no modules of {release}"))?;
    // Moved into place whole, so an interrupted setup leaves no half-copied tree behind.
    let staging = Path::new("/usr/lib/modules").join(format!(".{release}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    status(Command::new("cp").arg("-a").arg(&from).arg(&staging))?;
    let _ = std::fs::remove_dir_all(&modules);
    std::fs::rename(&staging, &modules)?;
    status(Command::new("depmod").arg(&release))?;
    let vmlinuz = [
        modules.join("vmlinuz"),
        unpacked.join("boot").join(format!("vmlinuz-{release}")),
    ]
    .into_iter()
    .find(|p| p.exists())
    .with_context(|| format!("the packages {wanted:?} hold no kernel image of {release}"))?;
    std::fs::copy(&vmlinuz, &image)?;
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_dir_all(&debs);
    Ok(image)
}

/// The kernel package the newest `linux-image-amd64` of `release` stands for (e.g.
/// `linux-image-6.1.0-56-amd64`): the newest kernel that release ships (its security
/// updates included; backports versions carry `bpo`).
/// `apt_opts` are given to apt (a private configuration, for [`newest_debian_kernel`]).
fn debian_kernel(release: &str, apt_opts: &[String]) -> anyhow::Result<String> {
    let query = || {
        Command::new("apt-cache")
            .args(apt_opts)
            .args(["show", "linux-image-amd64"])
            .output()
    };
    let mut out = query().context("running apt-cache")?;
    if !out.status.success() || out.stdout.is_empty() {
        // Package lists not fetched yet on a fresh machine.
        status(
            Command::new("apt-get")
                .args(apt_opts)
                .args(["-q", "update"]),
        )?;
        out = query()?;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let backports = release.ends_with("-backports");
    let mut best: Option<(String, String)> = None;
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let (Some(version), Some(depends)) = (field("Version:"), field("Depends:")) else {
            continue;
        };
        if version.contains("bpo") != backports {
            continue;
        }
        let Some(pkg) = depends
            .split(',')
            .filter_map(|p| p.split_whitespace().next())
            .find(|p| p.starts_with("linux-image-") && *p != "linux-image-amd64")
        else {
            continue;
        };
        let newer = best.as_ref().is_none_or(|(v, _)| {
            Command::new("dpkg")
                .args(["--compare-versions", version, "gt", v])
                .status()
                .is_ok_and(|s| s.success())
        });
        if newer {
            best = Some((version.to_owned(), pkg.to_owned()));
        }
    }
    best.map(|(_, p)| p)
        .with_context(|| format!("apt knows no linux-image-amd64 of {release}"))
}

/// Debian's backports archive for bookworm, where the 6.12 kernel comes from.
fn backports_source() -> anyhow::Result<()> {
    let path = Path::new("/etc/apt/sources.list.d/forwarder-vmtest-backports.sources");
    if path.exists() {
        return Ok(());
    }
    let codename = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(str::to_owned))
        .unwrap_or_default();
    if codename != "bookworm" {
        bail!("the 6.12 kernel comes from bookworm-backports; this system is {codename:?}");
    }
    eprintln!("adding bookworm-backports to apt's sources (for the 6.12 kernel)");
    std::fs::write(
        path,
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )?;
    status(Command::new("apt-get").args(["-q", "update"]))
}

/// The venv virtme-ng lives in, and the version installed there.
const VNG_VENV: &str = "/opt/forwarder-vmtest/venv";
const VIRTME_NG: &str = "virtme-ng==1.42";

/// virtme-ng's `vng`, installed into its venv if missing.
pub fn vng() -> anyhow::Result<PathBuf> {
    let venv = Path::new(VNG_VENV);
    let vng = venv.join("bin").join("vng");
    if vng.exists() {
        return Ok(vng);
    }
    status(Command::new("python3").args(["-m", "venv"]).arg(venv))
        .context("creating the venv for virtme-ng")?;
    status(Command::new(venv.join("bin").join("pip")).args(["install", "-q", VIRTME_NG]))
        .context("installing virtme-ng from PyPI")?;
    Ok(vng)
}

/// Clippy for the toolchain that builds the host crates (`cargo xtask lint`).
fn stable_clippy() -> anyhow::Result<()> {
    let have = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["clippy", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    status(Command::new("rustup").args(["component", "add", "clippy"]))
        .context("adding clippy to the toolchain that builds the host crates")
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
    // rust-src builds core for the bpf target; clippy and rustfmt are `cargo xtask lint`'s.
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = ["rust-src", "clippy", "rustfmt"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    status(
        Command::new("rustup")
            .args(["component", "add", "--toolchain", "nightly"])
            .args(&missing),
    )
    .with_context(|| format!("adding {} to the nightly toolchain", missing.join(", ")))
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

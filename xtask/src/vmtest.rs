//! `cargo xtask vmtest`: the kernel programs and the lab on the kernels VPSs run. Each
//! kernel boots in a QEMU VM (software emulation, no user-mode networking) whose root is
//! this machine's (read-only, with writable overlays); inside, the lab's tunnel is kernel
//! WireGuard, and the VM's two virtio-net NICs, wired to each other by QEMU, serve as a
//! real NIC for the VPS's public interface. The verifier's verdict per program and the
//! test results come back through a writable directory.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cargo, locked, root, setup, status};

/// The test suites run on each kernel, BPF packet tests first. Not here:
/// `classify_differential` (pure parser comparisons, the same on every kernel and slow
/// under emulation) and `flow_table_flood` (a CPU-bound flood that emulation cannot
/// generate at a rate that means anything).
const SUITES: &[&str] = &[
    "bpf_packets",
    "hostile_packets",
    "forwarding",
    "checksum_offload",
    "virtio_nic",
    "visibility",
    "faults",
    "restart",
    "rules_cli",
    "fallback",
    "health",
    "local_policy",
    "prometheus",
    "attach",
    "control",
    "security",
    "service",
    "quic_packets",
    "http3",
    "home_recipes",
    "doctor",
];

/// The suites of the quick run (in `cargo xtask test`): the BPF packet tests (QUIC's
/// included), forwarding end to end (on veth and on the virtio NIC), restarts and the fault
/// drills.
const QUICK_SUITES: &[&str] = &[
    "bpf_packets",
    "hostile_packets",
    "forwarding",
    "virtio_nic",
    "restart",
    "faults",
    "quic_packets",
];

/// How long one suite may take under emulation before it counts as failed.
const SUITE_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// A kernel to test on: a VM booted with `image`, or this machine itself.
struct Target {
    label: String,
    image: Option<PathBuf>,
}

pub struct Options {
    pub kernels: Vec<PathBuf>,
    pub all: bool,
    pub quick: bool,
    /// Only these suites (default: `SUITES`, or `QUICK_SUITES` with `quick`).
    pub suites: Vec<String>,
}

/// Runs the suites on each kernel and prints the table. Returns the tests passed and
/// failed; a kernel on which a program was refused, or whose VM failed, counts as one
/// failure more if none of its tests did.
pub fn run(opts: &Options) -> anyhow::Result<(u64, u64)> {
    if !crate::nix_is_root() {
        bail!("vmtest boots VMs and builds labs inside them: run it as root");
    }
    let debian = setup::vmtest(opts.all)?;
    let mut targets: Vec<Target> = opts
        .kernels
        .iter()
        .map(|p| Target {
            label: kernel_version(p),
            image: Some(p.clone()),
        })
        .collect();
    if targets.is_empty() {
        // Debian 12's 6.1 (what most VPSs run); with --all also bookworm-backports' 6.12
        // and the newest kernel Debian ships, as setup returns them.
        let images: Vec<&PathBuf> = if opts.all {
            debian.iter().collect()
        } else {
            let image = debian
                .iter()
                .find(|k| kernel_version(k).starts_with("6.1."))
                .context("no Debian 6.1 kernel in /boot after setup")?;
            vec![image]
        };
        for image in images {
            targets.push(Target {
                label: kernel_version(image),
                image: Some(image.clone()),
            });
        }
        if opts.all {
            targets.push(Target {
                label: format!("{} (this machine)", host_kernel()),
                image: None,
            });
        }
    }
    let chosen: Vec<&str> = opts.suites.iter().map(String::as_str).collect();
    if let Some(bad) = chosen.iter().find(|s| !SUITES.contains(s)) {
        bail!(
            "unknown suite {bad:?}; the suites are: {}",
            SUITES.join(", ")
        );
    }
    let suites: &[&str] = if !chosen.is_empty() {
        &chosen
    } else if opts.quick {
        QUICK_SUITES
    } else {
        SUITES
    };
    let bins = build(suites)?;
    let out_root = target_dir().join("vmtest");
    let mut reports = Vec::new();
    for t in &targets {
        // The NIC suite needs the VM's NIC pair: this machine's own interfaces are never
        // lent to a lab.
        let suites: Vec<&str> = suites
            .iter()
            .copied()
            .filter(|s| t.image.is_some() || *s != "virtio_nic")
            .collect();
        if suites.is_empty() {
            eprintln!("\n=== {}: no suite to run here ===", t.label);
            continue;
        }
        let dir = out_root.join(t.label.split_whitespace().next().unwrap_or("host"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        eprintln!("\n=== {}: {} suites ===", t.label, suites.len());
        let started = Instant::now();
        write_script(&dir, &bins, &suites, t.image.is_some())?;
        let ran = match &t.image {
            Some(image) => boot(image, &dir, suites.len()),
            None => status(Command::new("bash").arg(dir.join("run.sh"))),
        };
        let report = Report::read(&t.label, &dir, started.elapsed(), ran.err())?;
        eprint!("{}", report.suite_lines());
        reports.push(report);
    }
    println!("{}", table(&reports));
    let (passed, failed) = reports.iter().fold((0, 0), |(p, f), r| {
        let (rp, rf) = r.totals();
        (p + rp, f + rf.max(u64::from(!r.ok())))
    });
    let bad: Vec<&str> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.label.as_str())
        .collect();
    if !bad.is_empty() {
        println!("vmtest failed on: {}", bad.join(", "));
    }
    Ok((passed, failed))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// `6.1.0-56-amd64` from `/boot/vmlinuz-6.1.0-56-amd64`.
fn kernel_version(image: &Path) -> String {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_prefix("vmlinuz-").unwrap_or(&name).to_owned()
}

fn host_kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

/// What the VM runs: the forwarder, the verifier report and the test executables.
struct Binaries {
    forwarder: PathBuf,
    verifier_report: PathBuf,
    suites: BTreeMap<String, PathBuf>,
}

fn build(suites: &[&str]) -> anyhow::Result<Binaries> {
    let forwarder = crate::build(false)?;
    status(
        cargo()
            .args([
                "build",
                "-p",
                "integration-tests",
                "--bin",
                "verifier-report",
            ])
            .args(locked()),
    )?;
    let mut c = cargo();
    c.args([
        "test",
        "-p",
        "integration-tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .args(locked());
    for s in suites {
        c.args(["--test", s]);
    }
    eprintln!("+ {c:?}");
    let out = c.output().context("building the test executables")?;
    if !out.status.success() {
        bail!(
            "building the test executables failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str())
        else {
            continue;
        };
        if suites.contains(&name) {
            found.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    for s in suites {
        if !found.contains_key(*s) {
            bail!("cargo built no test executable for suite {s}");
        }
    }
    Ok(Binaries {
        forwarder,
        verifier_report: target_dir().join("debug").join("verifier-report"),
        suites: found,
    })
}

/// The script run inside the VM (or on this machine, `in_vm` false): results go to `dir`.
fn write_script(dir: &Path, bins: &Binaries, suites: &[&str], in_vm: bool) -> anyhow::Result<()> {
    let q = |p: &Path| format!("'{}'", p.display());
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"#!/bin/bash
# Written by `cargo xtask vmtest`; runs inside the VM.
out={out}
cd {root}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root RUST_BACKTRACE=1 FORWARDER_BIN={forwarder}
uname -r > "$out/kernel"
# TUN: the BPF tests' stand-in for the tunnel (and wireguard-go's, where it runs).
modprobe tun 2>> "$out/setup.log"
[ -e /dev/net/tun ] || {{ mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }}
# The lab takes kernel WireGuard when the module loads (tests/src/lab/wireguard.rs).
modprobe wireguard 2>> "$out/setup.log"
if [ -e /sys/module/wireguard ]; then echo kernel > "$out/wireguard"; else echo go > "$out/wireguard"; fi
{nics}{verifier} > "$out/verifier.txt" 2> "$out/verifier.err"
: > "$out/suites"
"#,
        out = q(dir),
        root = q(&root()),
        forwarder = q(&bins.forwarder),
        verifier = q(&bins.verifier_report),
        // Only inside the VM: on this machine the NIC test would take the machine's own
        // interfaces into its namespaces.
        nics = if in_vm {
            r#"# The VM's two virtio-net NICs, wired to each other by QEMU's hub.
nics=""
for d in /sys/class/net/*; do
  [ "$(basename "$(readlink -f "$d/device/driver" 2>/dev/null)" 2>/dev/null)" = virtio_net ] && nics="$nics,$(basename "$d")"
done
export FORWARDER_LAB_NICS="${nics#,}"
echo "$FORWARDER_LAB_NICS" > "$out/nics"
"#
        } else {
            "unset FORWARDER_LAB_NICS\n"
        },
    );
    for name in suites {
        let exe = &bins.suites[*name];
        // The NIC's suite is `#[ignore]`d unless asked for, which only a VM (whose NIC pair
        // the script found) does; it prints the attach mode it tested.
        let extra = if *name == "virtio_nic" {
            r#"${FORWARDER_LAB_NICS:+ --include-ignored --nocapture}"#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"start=$(date +%s)
timeout {secs} {exe} --test-threads=1{extra} > "$out/{name}.log" 2>&1
echo "{name} $? $(( $(date +%s) - start ))" >> "$out/suites""#,
            secs = SUITE_TIMEOUT.as_secs(),
            exe = q(exe),
        );
    }
    let path = dir.join("run.sh");
    fs::write(&path, s)?;
    Ok(())
}

/// Boots `image` and runs the script in `dir`.
fn boot(image: &Path, dir: &Path, suites: usize) -> anyhow::Result<()> {
    let vng = setup::vng()?;
    // Two NICs on one QEMU hub: whatever one sends, the other receives.
    let nics = "-netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0 \
                -netdev hubport,id=n1,hubid=0 -device virtio-net-pci,netdev=n1";
    let limit = SUITE_TIMEOUT.as_secs() * suites as u64 + 300;
    // vng runs virtme-run and friends from its own venv.
    let path = format!(
        "{}:{}",
        vng.parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("timeout");
    c.arg(limit.to_string())
        .env("PATH", path)
        .arg(&vng)
        .args(["--disable-kvm", "-m", "4G", "--cpus", "2"])
        .arg(format!("--rwdir={}", dir.display()))
        .arg(format!("--qemu-opts={nics}"))
        .arg("--run")
        .arg(image)
        .arg("--exec")
        .arg(format!("bash {}/run.sh", dir.display()))
        .stdin(std::process::Stdio::null());
    // The VM's console goes to a file of its own: given the caller's output file, the
    // VM (virtme-ng and QEMU) overwrote it from its start, wiping the log of the whole
    // `cargo xtask test` run.
    let console = dir.join("console.log");
    let f = fs::File::create(&console)?;
    c.stdout(f.try_clone()?).stderr(f);
    eprintln!("+ {c:?} > {}", console.display());
    let st = c.status().context("starting the VM")?;
    if !st.success() {
        bail!("the VM failed ({st}); its console: {}", console.display());
    }
    Ok(())
}

struct Suite {
    name: String,
    exit: i32,
    secs: u64,
    passed: u64,
    failed: u64,
    /// Lines of note the tests printed (the NIC test's attach mode).
    notes: Vec<String>,
}

struct Report {
    label: String,
    wireguard: String,
    /// (program, verdict, instructions or reason)
    verifier: Vec<(String, String, String)>,
    suites: Vec<Suite>,
    elapsed: Duration,
    vm_error: Option<String>,
}

impl Report {
    fn read(
        label: &str,
        dir: &Path,
        elapsed: Duration,
        vm_error: Option<anyhow::Error>,
    ) -> anyhow::Result<Self> {
        let text = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
        let verifier = text("verifier.txt")
            .lines()
            .filter_map(|l| {
                let mut p = l.splitn(3, '\t');
                Some((
                    p.next()?.to_owned(),
                    p.next()?.to_owned(),
                    p.next().unwrap_or("").to_owned(),
                ))
            })
            .collect();
        let mut suites = Vec::new();
        for line in text("suites").lines() {
            let mut p = line.split_whitespace();
            let (Some(name), Some(exit), Some(secs)) = (p.next(), p.next(), p.next()) else {
                continue;
            };
            let log = text(&format!("{name}.log"));
            let (mut passed, mut failed) = (0, 0);
            for l in log.lines() {
                if let Some(rest) = l.strip_prefix("test result: ") {
                    for part in rest.split(';') {
                        let part = part.trim();
                        let n = |w: &str| {
                            part.strip_suffix(w)
                                .and_then(|n| n.split_whitespace().last()?.parse::<u64>().ok())
                        };
                        if let Some(n) = n(" passed") {
                            passed += n;
                        }
                        if let Some(n) = n(" failed") {
                            failed += n;
                        }
                    }
                }
            }
            let notes = log
                .lines()
                .filter(|l| l.starts_with("virtio-net: "))
                .map(str::to_owned)
                .collect();
            suites.push(Suite {
                name: name.to_owned(),
                exit: exit.parse().unwrap_or(-1),
                secs: secs.parse().unwrap_or(0),
                passed,
                failed,
                notes,
            });
        }
        Ok(Report {
            label: label.to_owned(),
            wireguard: match text("wireguard").trim() {
                "kernel" => "kernel WireGuard".into(),
                "go" => "wireguard-go".into(),
                _ => "?".into(),
            },
            verifier,
            suites,
            elapsed,
            vm_error: vm_error.map(|e| format!("{e:#}")),
        })
    }

    fn totals(&self) -> (u64, u64) {
        self.suites
            .iter()
            .fold((0, 0), |(p, f), s| (p + s.passed, f + s.failed))
    }

    /// Every program loaded, every suite ran and passed, the VM ended normally.
    fn ok(&self) -> bool {
        self.vm_error.is_none()
            && !self.verifier.is_empty()
            && self.verifier.iter().all(|v| v.1 == "ok")
            && !self.suites.is_empty()
            && self
                .suites
                .iter()
                .all(|s| s.exit == 0 && s.failed == 0 && s.passed > 0)
    }

    fn suite_lines(&self) -> String {
        let mut s = String::new();
        for x in &self.suites {
            let _ = writeln!(
                s,
                "  {:<18} {:>3} passed {:>2} failed  {:>5} s{}",
                x.name,
                x.passed,
                x.failed,
                x.secs,
                if x.exit == 0 {
                    String::new()
                } else {
                    format!("  (exit {})", x.exit)
                }
            );
            for n in &x.notes {
                let _ = writeln!(s, "    {n}");
            }
        }
        if let Some(e) = &self.vm_error {
            let _ = writeln!(s, "  the VM: {e}");
        }
        s
    }
}

/// The per-kernel table: verifier verdicts and instruction counts, test totals, time.
fn table(reports: &[Report]) -> String {
    let mut s = String::from("\nPer kernel (verifier: instructions processed per program)\n\n");
    let programs: Vec<String> = reports
        .iter()
        .flat_map(|r| r.verifier.iter().map(|v| v.0.clone()))
        .fold(Vec::new(), |mut acc, p| {
            if !acc.contains(&p) {
                acc.push(p);
            }
            acc
        });
    let _ = write!(s, "| kernel | WireGuard |");
    for p in &programs {
        let _ = write!(s, " {p} |");
    }
    let _ = writeln!(s, " tests passed / failed | time |");
    let _ = write!(s, "|---|---|");
    for _ in &programs {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "---|---:|");
    for r in reports {
        let _ = write!(s, "| {} | {} |", r.label, r.wireguard);
        for p in &programs {
            let cell = match r.verifier.iter().find(|v| &v.0 == p) {
                Some((_, v, n)) if v == "ok" => n.clone(),
                Some((_, v, _)) => v.to_uppercase(),
                None => "-".into(),
            };
            let _ = write!(s, " {cell} |");
        }
        let (p, f) = r.totals();
        let _ = writeln!(
            s,
            " {p} / {f}{} | {} min |",
            if r.ok() { "" } else { " (FAILED)" },
            (r.elapsed.as_secs() + 30) / 60
        );
    }
    for r in reports {
        for (p, v, why) in &r.verifier {
            if v != "ok" {
                let _ = writeln!(s, "\n{}: {p} refused: {why}", r.label);
            }
        }
    }
    s
}

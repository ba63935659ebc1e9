//! Where the time of one packet goes: `perf record` (software clock, all CPUs) while one
//! packet class runs through BPF_PROG_TEST_RUN in a loop, then the samples taken inside
//! the test run, grouped by what the kernel was doing. `packet-costs --profile` prints it.
//!
//! This machine kind exposes no hardware PMU to guests, so `bpftool prog profile`
//! (cycles, instructions) does not work here; a timer-driven sample with call chains is
//! what remains, and it is enough to tell the program's own code from the map and helper
//! calls it makes and the return thunks every call pays.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use forwarder_common::samples::{browser_hello, http_request};

use crate::bpf::*;

/// The packet classes the issue sets targets for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A SYN of a new connection (flow created, MSS clamped), XDP.
    Syn,
    /// A 1200-byte data packet of an established flow, XDP.
    Data,
    /// A TLS ClientHello read by the name reader (samples inside the reader only).
    Tls,
    /// An HTTP request read by the name reader (samples inside the reader only).
    Http,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Syn, Class::Data, Class::Tls, Class::Http];

    pub fn name(self) -> &'static str {
        match self {
            Class::Syn => "syn",
            Class::Data => "data",
            Class::Tls => "tls",
            Class::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == s)
    }

    fn describe(self) -> &'static str {
        match self {
            Class::Syn => "xdp: SYN of a new connection",
            Class::Data => "xdp: data, established flow",
            Class::Tls => "reader: TLS ClientHello",
            Class::Http => "reader: HTTP request",
        }
    }

    /// Samples of a first-payload packet are kept only inside the reader, which is what the
    /// classification target is about; the forwarding part is the `Data` class.
    fn only_frames_with(self) -> Option<&'static str> {
        match self {
            Class::Tls | Class::Http => Some("_reader"),
            _ => None,
        }
    }
}

/// Runs `class` through the real object until `dur` has passed (the profiled process).
pub fn spin(class: Class, dur: Duration) -> anyhow::Result<u64> {
    std::thread::spawn(move || spin_inner(class, dur))
        .join()
        .map_err(|_| anyhow::anyhow!("profile thread panicked"))?
}

fn spin_inner(class: Class, dur: Duration) -> anyhow::Result<u64> {
    let mut h = Harness::new(false)?;
    h.set_hosts(super::fixtures::BENCH_HOSTS)?;
    h.set_syn_flood_threshold(0)?;
    let p4: IpAddr = PUBLIC4.into();
    let deadline = Instant::now() + dur;
    let mut n = 0u64;
    match class {
        Class::Syn => {
            // A new client address every 50 000 ports, so every SYN opens a new flow.
            while Instant::now() < deadline {
                for _ in 0..1000 {
                    let addr = std::net::Ipv4Addr::from(0xc612_0000 | (n / 50_000) as u32 & 0xffff);
                    let syn = Pkt::tcp(addr.into(), 10000 + (n % 50_000) as u16, p4, 443, SYN)
                        .options(mss_option(1460))
                        .frame();
                    h.time_xdp(&syn, 1);
                    n += 1;
                }
            }
        }
        Class::Data => {
            let c4: IpAddr = CLIENT4.into();
            let conn = OpenedConn::handshake((c4, 10000), (p4, 443), (BACKEND4.into(), 443));
            h.xdp(&conn.syn);
            h.finish_handshake(&conn, false);
            let data = Pkt::tcp(c4, 10000, p4, 443, ACK | PSH)
                .ack(conn.client_ack)
                .payload(&[0x17; 1200])
                .frame();
            while Instant::now() < deadline {
                h.time_xdp(&data, 1000);
                n += 1000;
            }
        }
        Class::Tls | Class::Http => {
            let payload = if class == Class::Tls {
                browser_hello(b"app.example.test", 0x3a3a, 32, 5)
            } else {
                http_request("app.example.test", 4)
            };
            let mut client = 10u8;
            while Instant::now() < deadline {
                let conns = super::fixtures::first_payload_conns(5000, &payload, 1, client);
                h.time_first_payloads(&conns, false);
                n += conns.len() as u64;
                // 5000 ports per address: a new address per batch keeps every flow new.
                // After 246 addresses the oldest flows are long evicted from the LRU table.
                client = client.wrapping_add(1).max(10);
            }
        }
    }
    Ok(n)
}

/// What the kernel was doing in one sample, from the function the sample landed in.
fn category(sym: &str) -> &'static str {
    if sym.starts_with("bpf_prog_") {
        "program's own code"
    } else if sym.contains("return_thunk") || sym.starts_with("srso_") || sym.contains("retbleed") {
        "return thunk (SRSO mitigation)"
    } else if sym.starts_with("htab_")
        || sym.starts_with("__htab")
        || sym.starts_with("bpf_lru")
        || sym.starts_with("__bpf_lru")
        || sym.contains("lookup_nulls")
        || sym.contains("lookup_elem")
        || sym.contains("update_elem")
        || sym.contains("delete_elem")
        || sym.starts_with("jhash")
        || sym.starts_with("pcpu_")
        || sym.starts_with("array_map")
        || sym.starts_with("percpu_array")
        || sym.starts_with("_raw_spin")
        || sym.starts_with("queued_spin")
        || sym.starts_with("native_queued_spin")
    {
        "map operations"
    } else if sym.starts_with("bpf_test")
        || sym.starts_with("ktime_")
        || sym.contains("read_tsc")
        || sym.starts_with("__rcu")
        || sym.starts_with("rcu_")
        || sym.starts_with("migrate_")
        || sym.starts_with("bpf_dispatcher")
        || sym.starts_with("xdp_")
        || sym.starts_with("bpf_prog_run")
    {
        "test-run loop and clock"
    } else if sym.starts_with("bpf_") || sym.starts_with("__bpf_") || sym.contains("csum") {
        "helpers"
    } else {
        "other kernel"
    }
}

pub struct Profile {
    pub class: Class,
    pub runs: u64,
    pub samples: u64,
    /// (category, share of samples), largest first.
    pub categories: Vec<(&'static str, f64)>,
    /// (function, share of samples), largest first, the first few.
    pub top: Vec<(String, f64)>,
}

/// Records `self_exe --spin CLASS SECONDS` with `perf record -a -g` and sorts the samples
/// taken inside BPF_PROG_TEST_RUN.
pub fn profile(self_exe: &Path, class: Class, seconds: u32, dir: &Path) -> anyhow::Result<Profile> {
    let data = dir.join(format!("profile-{}.data", class.name()));
    let out = Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "20000",
            "-a",
            "-g",
            "-o",
        ])
        .arg(&data)
        .arg("--")
        .arg(self_exe)
        .args(["--spin", class.name(), &seconds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| {
            anyhow::anyhow!("perf record (linux-perf, installed by `cargo xtask setup`): {e}")
        })?;
    anyhow::ensure!(out.status.success(), "perf record failed: {}", out.status);
    let runs: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("spin output: {e}"))?;
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()?;
    anyhow::ensure!(script.status.success(), "perf script failed");
    let _ = std::fs::remove_file(&data);
    Ok(summarise(
        class,
        runs,
        &String::from_utf8_lossy(&script.stdout),
    ))
}

/// Groups `perf script` call chains (blank-line separated, leaf first) that pass through
/// `bpf_test_run` by the function they landed in.
fn summarise(class: Class, runs: u64, script: &str) -> Profile {
    let mut by_sym: HashMap<String, u64> = HashMap::new();
    let mut samples = 0u64;
    for chain in script.split("\n\n") {
        let frames: Vec<&str> = chain
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        if !frames.iter().any(|f| f.starts_with("bpf_test_run")) {
            continue;
        }
        if let Some(want) = class.only_frames_with()
            && !frames
                .iter()
                .any(|f| f.starts_with("bpf_prog_") && f.contains(want))
        {
            continue;
        }
        let Some(leaf) = frames.first() else { continue };
        samples += 1;
        *by_sym.entry(short(leaf)).or_default() += 1;
    }
    let total = samples.max(1) as f64;
    let mut cats: HashMap<&'static str, u64> = HashMap::new();
    for (s, n) in &by_sym {
        *cats.entry(category(s)).or_default() += n;
    }
    let mut categories: Vec<_> = cats
        .into_iter()
        .map(|(c, n)| (c, n as f64 / total))
        .collect();
    categories.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut top: Vec<_> = by_sym
        .into_iter()
        .map(|(s, n)| (s, n as f64 / total))
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(8);
    Profile {
        class,
        runs,
        samples,
        categories,
        top,
    }
}

/// JIT-ed programs are named `bpf_prog_<tag>_<function>`; the tag changes with every
/// build, the function name is what a reader wants.
fn short(sym: &str) -> String {
    let s = sym.split('+').next().unwrap_or(sym);
    match s.strip_prefix("bpf_prog_") {
        Some(rest) => {
            let func = rest.split_once('_').map_or(rest, |(_, f)| f);
            let func = func.split("_3C_").next().unwrap_or(func);
            format!("bpf_prog_{func}")
        }
        None => s.to_string(),
    }
}

pub fn print(profiles: &[Profile]) {
    println!(
        "Where the time of a packet goes (perf, software clock, samples inside BPF_PROG_TEST_RUN):"
    );
    for p in profiles {
        println!(
            "\n{} ({} runs, {} samples)",
            p.class.describe(),
            p.runs,
            p.samples
        );
        for (c, share) in &p.categories {
            println!("  {:<34} {:>5.1} %", c, share * 100.0);
        }
        println!("  top functions:");
        for (s, share) in &p.top {
            println!("    {:<60} {:>5.1} %", s, share * 100.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_outside_the_test_run_or_the_reader_are_left_out() {
        let script = "\
\tffff1 htab_lru_map_update_elem+0x10\n\tffff2 bpf_prog_0123abcd_to_backend_3C_aya_3E_+0x5\n\tffff3 bpf_test_run+0x40\n\n\
\tffff1 srso_alias_return_thunk+0x0\n\tffff3 bpf_test_run+0x40\n\n\
\tffff1 pv_native_safe_halt+0x0\n\tffff2 default_idle+0x1\n";
        let p = summarise(Class::Syn, 2, script);
        assert_eq!(p.samples, 2);
        assert_eq!(p.categories.len(), 2);
        assert!(p.top.iter().any(|(s, _)| s == "htab_lru_map_update_elem"));
        let p = summarise(Class::Tls, 2, script);
        assert_eq!(p.samples, 0, "no sample passed through the reader");
    }

    #[test]
    fn program_names_lose_the_build_tag() {
        assert_eq!(
            short("bpf_prog_c3d4d90f1389edf9_to_backend_3C_aya_ebpf_3A__3A_XdpContext_3E_+0x1c"),
            "bpf_prog_to_backend"
        );
        assert_eq!(short("htab_map_hash+0x3"), "htab_map_hash");
    }
}

//! CPU accounting during a run: the whole machine's, the load generators', and the
//! forwarder's kernel programs' (the kernel's own statistics).

use std::fs;

use anyhow::Context as _;

/// Busy CPU time of the whole machine so far, in seconds (/proc/stat: everything but idle
/// and iowait).
pub(super) fn cpu_busy_seconds() -> anyhow::Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(v.len() >= 8, "short cpu line: {line}");
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(busy as f64 / hz)
}

/// CPU seconds this process's finished children used so far (the load generators).
pub(super) fn children_cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    u.map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// Total run time (s) and runs of the forwarder's kernel programs (named `fwd_*`),
/// as the kernel accounts them while its statistics are on. Tail-called programs (the
/// name readers) are part of their caller's time.
pub(super) fn forwarder_programs_run() -> (f64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("fwd_")))
        .fold((0.0, 0), |(t, n), p| {
            (t + p.run_time().as_secs_f64(), n + p.run_count())
        })
}

/// Whether the forwarder's programs ran (and were accounted) between two snapshots.
pub(super) fn stats_counted(before: (f64, u64), after: (f64, u64)) -> bool {
    after.1 > before.1
}

//! CPU time of a process and its children, from /proc.

use std::fs;

/// CPU seconds (user + system, all threads) that process `pid` and its direct children
/// have used so far; 0 for a process that is gone.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    // Fields after the command (which may contain spaces): state is field 3, ppid 4,
    // utime 14, stime 15.
    let read = |p: &str| -> Option<(u32, u64)> {
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let t = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some((ppid, t))
    };
    let mut ticks = read(&pid.to_string()).map_or(0, |(_, t)| t);
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(n) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((ppid, t)) = read(n)
                && ppid == pid
            {
                ticks += t;
            }
        }
    }
    ticks as f64 / hz
}

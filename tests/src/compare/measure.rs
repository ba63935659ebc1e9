//! The measurement: the lab built once, every setup and workload interleaved over the
//! repetitions.

use anyhow::{Context as _, bail};

use super::{
    cpu::{children_cpu_seconds, cpu_busy_seconds, forwarder_programs_run, stats_counted},
    model::{Options, Sample, Setup, Workload},
    setups::{NetnsHosts, setup_on, teardown},
    wrk::{Wrk, wrk},
};
use crate::{
    lab::{CLIENT_V4, Lab, LabOptions, SUBDOMAINS, VPS_V4},
    support::process_cpu_seconds,
    traffic::flood,
};

/// The workloads of one setup, in order.
fn run_workloads(
    lab: &Lab,
    setup: Setup,
    repetition: u32,
    o: &Options,
    samples: &mut Vec<Sample>,
) -> anyhow::Result<()> {
    for workload in Workload::ALL {
        let mut s = Sample::new(setup, workload, repetition);
        match workload {
            Workload::NewConnectionHttps | Workload::KeepAliveHttps => {
                let w = wrk(lab, workload, o, false)?;
                s.fill(&w);
            }
            Workload::FixedRateHttps => {
                let of = |what: &str| -> f64 {
                    lab.pids(what).into_iter().map(process_cpu_seconds).sum()
                };
                // On for every setup alike: it adds two clock reads to each program run.
                let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
                let bpf0 = forwarder_programs_run();
                let (cpu0, client0) = (cpu_busy_seconds()?, children_cpu_seconds());
                let (tunnel0, home0) = (of("wireguard-go"), of("nginx"));
                let w = wrk(lab, workload, o, true)?;
                let (cpu, client) = (cpu_busy_seconds()? - cpu0, children_cpu_seconds() - client0);
                let (tunnel, home) = (of("wireguard-go") - tunnel0, of("nginx") - home0);
                let bpf = forwarder_programs_run();
                drop(stats);
                s.fill(&w);
                if w.requests > 0 {
                    if stats_counted(bpf0, bpf) {
                        let n = w.requests as f64;
                        s.bpf_us_per_request = Some((bpf.0 - bpf0.0) * 1e6 / n);
                        s.bpf_runs_per_request = Some((bpf.1 - bpf0.1) as f64 / n);
                    }
                    let per = 10_000.0 / w.requests as f64;
                    s.cpu_s_per_10k = Some(cpu * per);
                    s.cpu_s_per_10k_without_client = Some((cpu - client).max(0.0) * per);
                    s.tunnel_cpu_s_per_10k = Some(tunnel * per);
                    s.home_cpu_s_per_10k = Some(home * per);
                }
            }
            Workload::Bulk => {
                let url = format!("https://{}/big", SUBDOMAINS[0]);
                let cert = lab.cert().display().to_string();
                let cpu0 = cpu_busy_seconds()?;
                let out = lab.exec(
                    &lab.client,
                    &[
                        "curl",
                        "-sS",
                        "--max-time",
                        "120",
                        "--cacert",
                        &cert,
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{size_download} %{time_total}",
                        &url,
                    ],
                )?;
                let cpu = cpu_busy_seconds()? - cpu0;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (size, secs) = text
                    .trim()
                    .split_once(' ')
                    .with_context(|| format!("curl's output: {text}"))?;
                let (size, secs): (f64, f64) = (size.parse()?, secs.parse()?);
                if !out.status.success() || size as usize != o.bulk_bytes {
                    bail!(
                        "bulk download: {size} of {} bytes: {}",
                        o.bulk_bytes,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                s.mb_per_s = Some(size / secs / 1e6);
                s.cpu_s_per_gb = Some(cpu / (size / 1e9));
            }
            Workload::Flood => {
                let flood = flood::Flood::start(lab.flood_target()?)?;
                let w = wrk(lab, workload, o, true);
                let (_, pps) = flood.stop()?;
                s.fill(&w?);
                s.flood_pps = Some(pps);
            }
        }
        samples.push(s);
    }
    Ok(())
}

impl Sample {
    fn fill(&mut self, w: &Wrk) {
        self.requests_per_second = w.rps;
        self.p50_ms = w.p50_ms;
        self.p99_ms = w.p99_ms;
        self.errors = w.errors;
        self.requests = w.requests;
    }
}

/// Builds the lab and measures every setup and workload `o.repetitions` times, interleaved.
pub fn measure(o: &Options) -> anyhow::Result<Vec<Sample>> {
    let mut lab = Lab::new(&LabOptions {
        extra_config: "[[rule]]\nport = 443\n".into(),
        big_file_bytes: o.bulk_bytes,
        ..LabOptions::default()
    })?;
    // Replies to the flood's made-up sources leave through the client's side, as through
    // a VPS's default gateway (the client does not forward them).
    let vps = lab.vps.clone();
    lab.exec(&vps, &["ip", "route", "add", "default", "via", CLIENT_V4])?;
    let _hosts = NetnsHosts::new(&lab.client)?;
    let mut samples = Vec::new();
    for repetition in 0..o.repetitions {
        for setup in Setup::ALL {
            let proxy = setup_on(&mut lab, setup)?;
            let result = (|| -> anyhow::Result<()> {
                // A first request makes sure the path works before it is timed.
                let (code, _) = lab.curl("https", SUBDOMAINS[0], "/", VPS_V4, &[])?;
                if code != 200 {
                    bail!("{}: HTTP {code}", setup.name());
                }
                run_workloads(&lab, setup, repetition, o, &mut samples)
            })();
            teardown(&mut lab, setup, proxy)?;
            result.with_context(|| format!("measuring {}", setup.name()))?;
        }
    }
    Ok(samples)
}

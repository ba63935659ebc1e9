//! What the comparison is about: the setups on the VPS, the workloads, one measured
//! sample, and how long and how often to measure.

use serde::{Deserialize, Serialize};

/// What runs on the VPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setup {
    Forwarder,
    /// The forwarder without XDP (`--xdp-mode off`): tc translates. Shows what XDP costs
    /// or saves on the lab's veth interface, whose native XDP differs from a real NIC's.
    #[serde(rename = "forwarder-tc-only")]
    ForwarderTcOnly,
    Nftables,
    /// HAProxy in TCP mode routing by SNI (`deploy/bench/haproxy.cfg`).
    Haproxy,
    /// Caddy terminating TLS and proxying home (`deploy/bench/Caddyfile`).
    Caddy,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::Forwarder,
        Setup::ForwarderTcOnly,
        Setup::Nftables,
        Setup::Haproxy,
        Setup::Caddy,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Setup::Forwarder => "forwarder",
            Setup::ForwarderTcOnly => "forwarder (tc only)",
            Setup::Nftables => "nftables",
            Setup::Haproxy => "HAProxy (SNI passthrough)",
            Setup::Caddy => "Caddy (TLS terminated)",
        }
    }
}

/// A load pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Every request on a new TCP + TLS connection (`Connection: close`), as fast as wrk
    /// goes.
    NewConnectionHttps,
    /// Requests on kept-alive TLS connections, as fast as wrk goes.
    KeepAliveHttps,
    /// New-connection HTTPS at a fixed offered load far below what any setup saturates
    /// at, for the CPU it costs per request.
    FixedRateHttps,
    /// One large HTTPS download: throughput and CPU per GB.
    Bulk,
    /// `FixedRateHttps` while a SYN flood and a junk-UDP flood hit the VPS.
    Flood,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::NewConnectionHttps,
        Workload::KeepAliveHttps,
        Workload::FixedRateHttps,
        Workload::Bulk,
        Workload::Flood,
    ];
    /// The workloads compared by requests per second (table and chart).
    pub const THROUGHPUT: [Workload; 2] = [Workload::NewConnectionHttps, Workload::KeepAliveHttps];

    pub const fn name(self) -> &'static str {
        match self {
            Workload::NewConnectionHttps => "new-connection HTTPS",
            Workload::KeepAliveHttps => "keep-alive HTTPS",
            Workload::FixedRateHttps => "new-connection HTTPS, fixed load",
            Workload::Bulk => "bulk HTTPS download",
            Workload::Flood => "fixed load under SYN + UDP flood",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub setup: Setup,
    pub workload: Workload,
    pub repetition: u32,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests wrk counted as failed (socket errors and non-2xx answers).
    pub errors: u64,
    /// Requests completed.
    #[serde(default)]
    pub requests: u64,
    /// Busy CPU time of the whole machine (/proc/stat) per 10k requests, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_10k: Option<f64>,
    /// The same without the client's load generator (its own CPU time, from rusage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_10k_without_client: Option<f64>,
    /// Of that: both wireguard-go processes, and home's nginx (master and workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_cpu_s_per_10k: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_cpu_s_per_10k: Option<f64>,
    /// Fixed load, forwarder setups: CPU time the forwarder's kernel programs took per
    /// request (µs) and how many times they ran per request, from the kernel's own
    /// accounting (`kernel.bpf_stats_enabled`), summed over its programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_us_per_request: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_runs_per_request: Option<f64>,
    /// Bulk: download throughput in MB/s and busy CPU seconds per GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_gb: Option<f64>,
    /// Flood: frames per second the flood generator sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood_pps: Option<f64>,
}

impl Sample {
    pub(super) fn new(setup: Setup, workload: Workload, repetition: u32) -> Self {
        Sample {
            setup,
            workload,
            repetition,
            requests_per_second: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            errors: 0,
            requests: 0,
            cpu_s_per_10k: None,
            cpu_s_per_10k_without_client: None,
            tunnel_cpu_s_per_10k: None,
            home_cpu_s_per_10k: None,
            bpf_us_per_request: None,
            bpf_runs_per_request: None,
            mb_per_s: None,
            cpu_s_per_gb: None,
            flood_pps: None,
        }
    }

    /// Share of the requests that succeeded.
    pub fn success_rate(&self) -> f64 {
        let all = self.requests + self.errors;
        if all == 0 {
            0.0
        } else {
            self.requests as f64 / all as f64
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub repetitions: u32,
    pub seconds: u32,
    pub connections: u32,
    /// Size of the bulk download.
    pub bulk_bytes: usize,
}

impl Options {
    pub const QUICK: Options = Options {
        repetitions: 2,
        seconds: 2,
        connections: 16,
        bulk_bytes: 16 << 20,
    };
    pub const FULL: Options = Options {
        repetitions: 5,
        seconds: 10,
        connections: 32,
        bulk_bytes: 256 << 20,
    };
}

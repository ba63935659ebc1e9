//! The flood shapes measured in the lab (`traffic::flood_shapes`): each shape sent at a
//! fixed rate to the forwarder in its default configuration (plus HTTP/3, so UDP 443 is
//! forwarded to a QUIC server at home), while real clients open a new HTTPS connection
//! every 100 ms and one download runs. Per shape: the packets from spoofed sources that
//! reached home's tunnel interface, the connections the flood made the data path create
//! and confirm, the packets the VPS sent to spoofed sources, the real requests' success
//! and latency against an idle baseline of the same lab, the download byte for byte, and
//! the backend's health as the daemon saw it.

mod clients;
mod table;
mod taps;

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
pub use clients::{ClientStats, RealClients};
pub use table::{row_line, table};
pub use taps::TapCounts;

use crate::{
    lab::{
        CLIENT_V4, CLIENT_V6, HOME_WG_V4, Lab, LabOptions, SUBDOMAINS, VPS_V4, VPS_V6, VPS_WG_V4,
        subdomain_hosts,
    },
    traffic::{
        flood_frames::Macs,
        flood_paced::{Pace, Sent, send_paced},
        flood_shapes::{Aim, Shape},
    },
};

/// The file home serves for the download that runs through each flood.
const DOWNLOAD_BYTES: usize = 6 << 20;
/// The forwarded port the TCP shapes and the real clients use.
const PORT: u16 = 443;
/// How long the backend's health is watched after the probe-ACK flood: the daemon's
/// default `interval_ms × down_after + timeout_ms` (2 s × 3 + 1 s), and a second.
const PROBE_HOLD: Duration = Duration::from_secs(8);

/// How a shape is sent and the clients run.
#[derive(Clone, Copy, Debug)]
pub struct FloodOptions {
    /// Packets per second.
    pub rate: u32,
    /// Seconds of flood per shape (the probe-ACK shape sweeps the whole port range once
    /// at the rate, however long that takes).
    pub seconds: f64,
    /// Time between two real clients' new connections.
    pub client_interval: Duration,
}

impl Default for FloodOptions {
    fn default() -> Self {
        FloodOptions {
            rate: 5000,
            seconds: 4.0,
            client_interval: Duration::from_millis(100),
        }
    }
}

/// One shape's figures.
#[derive(Clone, Debug)]
pub struct ShapeRow {
    /// `None`: the idle baseline.
    pub shape: Option<Shape>,
    pub sent: Sent,
    /// Packets from spoofed sources at home's tunnel interface.
    pub reached_home: u64,
    /// Packets the VPS sent to the shape's spoofed sources (the baseline: to any address
    /// but the real client's), and to any spoofed source during the shape.
    pub reflected: u64,
    pub reflected_all: u64,
    /// `flows_created`, `flows_confirmed` during the shape (real clients' included).
    pub flows_created: u64,
    pub flows_confirmed: u64,
    /// Connections the real clients opened (requests and the download).
    pub real_connections: u64,
    pub clients: ClientStats,
    /// The download's outcome (an error says what was wrong with it).
    pub download: Result<(), String>,
    /// The lowest `forwarder_backend_up` of home's port 443 seen during the shape.
    pub backend_up_min: Option<f64>,
}

impl ShapeRow {
    /// Connections the data path created beyond the real clients' (the flood's).
    pub fn spoofed_flows_created(&self) -> u64 {
        self.flows_created.saturating_sub(self.real_connections)
    }

    /// Connections confirmed (moved to the established table) beyond the real clients'.
    pub fn spoofed_flows_confirmed(&self) -> u64 {
        self.flows_confirmed.saturating_sub(self.real_connections)
    }
}

/// The lab a flood measurement runs in, its flood aim, and the idle baseline.
pub struct FloodLab {
    pub lab: Lab,
    aim: Aim,
    pub baseline: Option<ShapeRow>,
}

impl FloodLab {
    /// Builds the lab: the forwarder in its default configuration with HTTP/3 (UDP 443
    /// forwarded) and the lab's hosts, home's QUIC server (`quic-peer` at `quic_peer`),
    /// a default route from the VPS through the client's side (where a VPS's replies to
    /// made-up sources go), and the counters.
    pub fn new(quic_peer: &Path) -> anyhow::Result<Self> {
        let mut lab = Lab::new(&LabOptions {
            extra_config: format!("http3 = true\n{}", subdomain_hosts()),
            big_file_bytes: DOWNLOAD_BYTES,
            ..LabOptions::default()
        })?;
        lab.start_quic_server(quic_peer)?;
        lab.start_forwarder(&[])?;
        let vps = lab.vps.clone();
        for (family, via) in [("-4", CLIENT_V4), ("-6", CLIENT_V6)] {
            let out = lab.exec(&vps, &["ip", family, "route", "add", "default", "via", via])?;
            anyhow::ensure!(out.status.success(), "default route via {via} on the VPS");
        }
        let t = lab.flood_target()?;
        let out = lab.exec(&vps, &["sysctl", "-n", "net.ipv4.ip_local_port_range"])?;
        let range = String::from_utf8_lossy(&out.stdout);
        let mut it = range.split_whitespace().map(str::parse::<u16>);
        let (Some(Ok(lo)), Some(Ok(hi))) = (it.next(), it.next()) else {
            bail!("the VPS's ip_local_port_range: {range:?}");
        };
        let aim = Aim {
            ns: t.ns,
            iface: t.iface,
            macs: Macs {
                src: t.src_mac,
                dst: t.dst_mac,
            },
            vps_v4: VPS_V4.parse()?,
            vps_v6: VPS_V6.parse()?,
            tcp_port: PORT,
            udp_port: PORT,
            vps_tunnel: VPS_WG_V4.parse()?,
            home_tunnel: HOME_WG_V4.parse()?,
            probe_ports: lo..=hi,
        };
        taps::install(&lab, &aim)?;
        let (code, _) = lab.curl("https", SUBDOMAINS[0], "/", VPS_V4, &[])?;
        anyhow::ensure!(
            code == 200,
            "a first request through the forwarder: HTTP {code}"
        );
        Ok(FloodLab {
            lab,
            aim,
            baseline: None,
        })
    }

    /// The idle baseline (the same clients and download, no flood), measured once.
    pub fn baseline(&mut self, o: &FloodOptions) -> anyhow::Result<&ShapeRow> {
        if self.baseline.is_none() {
            let row = self.run(None, o)?;
            self.baseline = Some(row);
        }
        self.baseline.as_ref().context("the baseline")
    }

    /// Sends `shape` and measures it (see the module's documentation).
    pub fn measure(&self, shape: Shape, o: &FloodOptions) -> anyhow::Result<ShapeRow> {
        self.run(Some(shape), o)
    }

    fn run(&self, shape: Option<Shape>, o: &FloodOptions) -> anyhow::Result<ShapeRow> {
        let lab = &self.lab;
        let pace = match shape {
            Some(Shape::ProbeAcks) => {
                let span = u64::from(self.aim.probe_ports.end() - self.aim.probe_ports.start());
                let mut p = Pace::for_seconds(o.rate, (span + 1) as f64 / f64::from(o.rate));
                p.packets = span + 1;
                p
            }
            _ => Pace::for_seconds(o.rate, o.seconds),
        };
        let flood_secs = pace.packets as f64 / f64::from(o.rate);
        let hold = if shape == Some(Shape::ProbeAcks) {
            PROBE_HOLD
        } else {
            Duration::ZERO
        };
        let (page0, taps0) = (metrics(lab)?, taps::read(lab)?);
        // Lasting the flood and a second and a half more, after its first MiB.
        let rate = ((DOWNLOAD_BYTES - (1 << 20)) as f64 / (flood_secs + 1.5)) as u64;
        let download = lab.start_download(SUBDOMAINS[1], &rate.to_string())?;
        let done = AtomicBool::new(false);
        let (sent, clients, backend_up_min) = std::thread::scope(|s| {
            let watch = s.spawn(|| {
                let mut min: Option<f64> = None;
                while !done.load(Ordering::Relaxed) {
                    if let Some(v) = lab.backend_up(PORT) {
                        min = Some(min.map_or(v, |m| m.min(v)));
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                min
            });
            let clients = RealClients::start(lab, o.client_interval);
            let sent = match shape {
                Some(shape) => send_paced(&self.aim, shape, pace),
                None => idle(flood_secs),
            };
            let clients = clients.stop();
            // The health probes' verdict comes seconds after the flood: watched for as
            // long as the daemon takes to call a backend down.
            let until = Instant::now() + hold;
            while Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
            }
            done.store(true, Ordering::Relaxed);
            (sent, clients, watch.join().ok().flatten())
        });
        let sent = sent?;
        let download = download.finish_intact(lab).map_err(|e| format!("{e:#}"));
        let taps = settled_taps(lab, shape)?.since(&taps0);
        let page1 = metrics(lab)?;
        let delta = |name: &str| -> anyhow::Result<u64> {
            let (a, b) = (counter(&page0, name), counter(&page1, name));
            match (a, b) {
                (Some(a), Some(b)) => Ok((b - a).max(0.0) as u64),
                _ => bail!(
                    "the daemon's metrics have no forwarder_datapath_packets_total{{event=\"{name}\"}}"
                ),
            }
        };
        Ok(ShapeRow {
            shape,
            sent,
            reached_home: taps.home_spoofed,
            reflected: shape.map_or(taps.reflected, |s| taps.reflected_to(s)),
            reflected_all: taps.reflected,
            flows_created: delta("flows_created")?,
            flows_confirmed: delta("flows_confirmed")?,
            real_connections: u64::from(clients.requests) + 1,
            clients,
            download,
            backend_up_min,
        })
    }
}

/// The baseline's "flood": nothing for as long.
fn idle(seconds: f64) -> anyhow::Result<Sent> {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    Ok(Sent {
        seconds,
        ..Sent::default()
    })
}

/// The taps once the shape's own counters stopped moving (packets still in the tunnel,
/// the answers to pairs): unchanged over half a second, or as they are after three (home
/// retransmits its SYN-ACKs to a SYN flood's sources for a minute).
fn settled_taps(lab: &Lab, shape: Option<Shape>) -> anyhow::Result<TapCounts> {
    let own = |t: &TapCounts| {
        let reflected = shape.map_or(t.portless, |s| t.reflected_to(s));
        (t.home_spoofed, reflected)
    };
    let mut last = taps::read(lab)?;
    let (mut since, deadline) = (Instant::now(), Instant::now() + Duration::from_secs(3));
    while Instant::now() < deadline && since.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(100));
        let now = taps::read(lab)?;
        if own(&now) != own(&last) {
            since = Instant::now();
        }
        last = now;
    }
    Ok(last)
}

fn metrics(lab: &Lab) -> anyhow::Result<String> {
    lab.metrics_page()
        .context("the daemon's metrics page does not answer")
}

/// A data-path counter from the metrics page.
fn counter(page: &str, event: &str) -> Option<f64> {
    let want = format!("forwarder_datapath_packets_total{{event=\"{event}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

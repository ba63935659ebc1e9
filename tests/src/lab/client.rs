//! The client's side: curl and the QUIC client through the forwarder, the flood's source,
//! and the client kernel's counters.

use std::{path::Path, process::Output};

use anyhow::{Context as _, bail};

use super::{addresses::VPS_V4, instance::Lab};
use crate::traffic::flood;

impl Lab {
    /// curl from the client namespace to `scheme://host/path`, with `host` resolved to
    /// `addr` (so the right SNI and Host header are sent); returns (HTTP status, body).
    pub fn curl(
        &self,
        scheme: &str,
        host: &str,
        path: &str,
        addr: &str,
        extra: &[&str],
    ) -> anyhow::Result<(u16, String)> {
        let port = if scheme == "https" { 443 } else { 80 };
        let addr = if addr.contains(':') {
            format!("[{addr}]")
        } else {
            addr.to_owned()
        };
        let resolve = format!("{host}:{port}:{addr}");
        let url = format!("{scheme}://{host}{path}");
        let cert = self.cert().display().to_string();
        let mut args = vec![
            "curl",
            "-sS",
            "--max-time",
            "30",
            "--resolve",
            &resolve,
            "--cacert",
            &cert,
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = self.exec(&self.client, &args)?;
        if !out.status.success() {
            bail!(
                "curl {url} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text
            .rsplit_once('\n')
            .context("curl output without status")?;
        Ok((code.trim().parse()?, body.to_owned()))
    }

    /// Runs `quic-peer client` in the client namespace: `count` connections to `host` at
    /// the VPS's IPv4 address, UDP 443, each asking for `bytes`; `big_hello` pads the
    /// ClientHello past one Initial. Its output has a JSON line per connection.
    ///
    /// The client sends its datagrams one by one (`--no-gso`), as they arrive from a wire:
    /// with UDP GSO a veth hands the VPS several datagrams in one buffer, which on 6.1
    /// never reaches the XDP program (the client's first flight of two Initials vanished
    /// there, and the retransmission went through).
    pub fn quic_client(
        &self,
        peer: &Path,
        host: &str,
        bytes: u64,
        count: u32,
        big_hello: bool,
    ) -> anyhow::Result<Output> {
        let (peer, cert) = (
            peer.display().to_string(),
            self.cert().display().to_string(),
        );
        let (connect, bytes, count) = (
            format!("{VPS_V4}:443"),
            bytes.to_string(),
            count.to_string(),
        );
        let mut args = vec![
            peer.as_str(),
            "client",
            "--connect",
            &connect,
            "--name",
            host,
            "--ca",
            &cert,
            "--bytes",
            &bytes,
            "--count",
            &count,
            "--no-gso",
        ];
        if big_hello {
            args.push("--big-hello");
        }
        self.exec(&self.client, &args)
    }

    /// Where the flood generator (`flood.rs`) sends from and to: the client's side of the
    /// link to the VPS's public IPv4 address, SYNs to port 443.
    pub fn flood_target(&self) -> anyhow::Result<flood::Target> {
        let mac = |ns: &str| -> anyhow::Result<[u8; 6]> {
            let out = self.exec(ns, &["cat", "/sys/class/net/eth0/address"])?;
            flood::parse_mac(&String::from_utf8_lossy(&out.stdout))
        };
        Ok(flood::Target {
            ns: self.client.clone(),
            iface: "eth0".into(),
            src_mac: mac(&self.client)?,
            dst_mac: mac(&self.vps)?,
            target: VPS_V4.parse()?,
            syn_port: 443,
        })
    }
}

/// The client namespace's IPv4 counters: every IPv4 packet the client's kernel sent or
/// received, and their bytes (IP total length, as the forwarder counts them).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IpCounters {
    pub out_pkts: u64,
    pub out_bytes: u64,
    pub in_pkts: u64,
    pub in_bytes: u64,
}

/// The client namespace's kernel counters (`/proc/net/snmp`, `/proc/net/netstat`) by
/// `Group.Name`, e.g. `Tcp.RetransSegs`.
pub fn client_snmp(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    let out = lab
        .exec(&lab.client, &["cat", "/proc/net/snmp", "/proc/net/netstat"])
        .expect("reading the client's kernel counters");
    let text = String::from_utf8_lossy(&out.stdout);
    // Each group is a line of names followed by a line of values, both "Group: ...".
    let mut values = std::collections::BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, nums] = pair else { continue };
        let (group, names) = names.split_once(": ").unwrap_or_default();
        let nums = nums.split_once(": ").unwrap_or_default().1;
        for (n, v) in names.split_whitespace().zip(nums.split_whitespace()) {
            values.insert(format!("{group}.{n}"), v.parse::<u64>().unwrap_or(0));
        }
    }
    values
}

impl IpCounters {
    pub fn read(lab: &Lab) -> Self {
        let values = client_snmp(lab);
        let get = |k: &str| {
            *values
                .get(k)
                .unwrap_or_else(|| panic!("no {k} in {values:?}"))
        };
        IpCounters {
            out_pkts: get("Ip.OutRequests"),
            out_bytes: get("IpExt.OutOctets"),
            in_pkts: get("Ip.InReceives"),
            in_bytes: get("IpExt.InOctets"),
        }
    }

    pub fn since(self, before: Self) -> Self {
        IpCounters {
            out_pkts: self.out_pkts - before.out_pkts,
            out_bytes: self.out_bytes - before.out_bytes,
            in_pkts: self.in_pkts - before.in_pkts,
            in_bytes: self.in_bytes - before.in_bytes,
        }
    }

    pub fn add(&mut self, o: Self) {
        self.out_pkts += o.out_pkts;
        self.out_bytes += o.out_bytes;
        self.in_pkts += o.in_pkts;
        self.in_bytes += o.in_bytes;
    }
}

//! Where a flood's effects are counted, by nftables counters on the `netdev` ingress hook
//! (before routing, so also packets the kernel then drops as martians):
//!
//! * home's tunnel interface: packets whose source is not the real client's. The VPS's
//!   own packets to home (the daemon's health probes, from its tunnel address with the
//!   kernel's TTL of 64) are left out by source and TTL, so a flood spoofing that same
//!   address is still counted;
//! * the client's side of the public link, standing for the internet behind the VPS's
//!   default route: packets to any address but the client's own (neighbour discovery and
//!   multicast left out), i.e. what the VPS sent the spoofed sources: all of it, and per
//!   shape by destination port (each shape sends from ports of its own,
//!   `Aim::source_ports`), the packets without ports (ICMP) counted apart.

use std::{collections::HashMap, fs};

use anyhow::Context as _;

use crate::{
    lab::{CLIENT_V4, CLIENT_V6, Lab, VPS_WG_V4, VPS_WG_V6},
    traffic::flood_shapes::{Aim, Shape},
};

const TABLE: &str = "flood_shapes";

/// The counters' values at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapCounts {
    /// Packets from spoofed sources that reached home's tunnel interface.
    pub home_spoofed: u64,
    /// Packets that left the VPS toward addresses other than the real client's.
    pub reflected: u64,
    /// Of those, the packets without ports (ICMP, ...).
    pub portless: u64,
    /// Of those, the packets to each shape's source ports (index of `Shape::ALL`).
    pub by_shape: Vec<u64>,
}

impl TapCounts {
    pub fn since(&self, before: &Self) -> Self {
        TapCounts {
            home_spoofed: self.home_spoofed - before.home_spoofed,
            reflected: self.reflected - before.reflected,
            portless: self.portless - before.portless,
            by_shape: self
                .by_shape
                .iter()
                .zip(&before.by_shape)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }

    /// What the VPS sent `shape`'s sources: to its ports, and any packet without ports.
    pub fn reflected_to(&self, shape: Shape) -> u64 {
        self.by_shape.get(shape.index()).copied().unwrap_or(0) + self.portless
    }
}

/// Installs both taps (replacing earlier ones).
pub fn install(lab: &Lab, aim: &Aim) -> anyhow::Result<()> {
    let home = format!(
        "table netdev {TABLE} {{
  counter spoofed {{ }}
  chain tunnel_in {{
    type filter hook ingress device \"{wg}\" priority -500; policy accept;
    ip saddr {VPS_WG_V4} ip ttl 64 return
    ip saddr != {CLIENT_V4} counter name \"spoofed\"
    ip6 daddr ff00::/8 return
    ip6 saddr {VPS_WG_V6} ip6 hoplimit 64 return
    ip6 saddr != {CLIENT_V6} counter name \"spoofed\"
  }}
}}
",
        wg = lab.wg_home
    );
    let (mut per_shape, mut rules) = (String::new(), String::new());
    for shape in Shape::ALL {
        let (i, ports) = (shape.index(), aim.source_ports(shape));
        per_shape += &format!("  counter s{i} {{ }}\n");
        rules += &format!(
            "    meta l4proto {{ tcp, udp }} th dport {}-{} counter name \"s{i}\" return\n",
            ports.start(),
            ports.end()
        );
    }
    let client = format!(
        "table netdev {TABLE} {{
  counter reflected {{ }}
  counter portless {{ }}
{per_shape}  chain wire_in {{
    type filter hook ingress device \"eth0\" priority -500; policy accept;
    meta protocol != {{ ip, ip6 }} return
    ip protocol igmp return
    ip daddr {CLIENT_V4} return
    ip6 daddr ff00::/8 return
    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, nd-redirect }} return
    ip6 daddr {CLIENT_V6} return
    counter name \"reflected\"
    meta l4proto != {{ tcp, udp }} counter name \"portless\" return
{rules}  }}
}}
"
    );
    for (ns, rules) in [(&lab.home, home), (&lab.client, client)] {
        let path = lab.dir.join(format!("nft-{TABLE}-{ns}.conf"));
        fs::write(&path, rules)?;
        let _ = lab.exec(ns, &["nft", "delete", "table", "netdev", TABLE]);
        let out = lab.exec(ns, &["nft", "-f", &path.display().to_string()])?;
        anyhow::ensure!(
            out.status.success(),
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Reads both taps.
pub fn read(lab: &Lab) -> anyhow::Result<TapCounts> {
    let home = counters(lab, &lab.home)?;
    let client = counters(lab, &lab.client)?;
    let get = |m: &HashMap<String, u64>, name: &str| {
        m.get(name)
            .copied()
            .with_context(|| format!("no nft counter {name}"))
    };
    Ok(TapCounts {
        home_spoofed: get(&home, "spoofed")?,
        reflected: get(&client, "reflected")?,
        portless: get(&client, "portless")?,
        by_shape: Shape::ALL
            .iter()
            .map(|s| get(&client, &format!("s{}", s.index())))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// The packets of every counter of the table in `ns`, by name.
fn counters(lab: &Lab, ns: &str) -> anyhow::Result<HashMap<String, u64>> {
    let out = lab.exec(
        ns,
        &["nft", "-j", "list", "counters", "table", "netdev", TABLE],
    )?;
    anyhow::ensure!(
        out.status.success(),
        "reading the nft counters in {ns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let c = &o["counter"];
            Some((c["name"].as_str()?.to_owned(), c["packets"].as_u64()?))
        })
        .collect())
}

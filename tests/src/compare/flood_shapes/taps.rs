//! Where a flood's effects are counted, by nftables counters on the `netdev` ingress hook
//! (before routing, so also packets the kernel then drops as martians):
//!
//! * home's tunnel interface: packets whose source is not the real client's. The VPS's
//!   own packets to home (the daemon's health probes, from its tunnel address with the
//!   kernel's TTL of 64) are left out by source and TTL, so a flood spoofing that same
//!   address is still counted;
//! * the client's side of the public link, standing for the internet behind the VPS's
//!   default route: packets to any address but the client's own (neighbour discovery and
//!   multicast left out), i.e. what the VPS sent the spoofed sources.

use std::fs;

use anyhow::Context as _;

use crate::lab::{CLIENT_V4, CLIENT_V6, Lab, VPS_WG_V4, VPS_WG_V6};

const TABLE: &str = "flood_shapes";

/// The counters' values at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapCounts {
    /// Packets from spoofed sources that reached home's tunnel interface.
    pub home_spoofed: u64,
    /// Packets that left the VPS toward addresses other than the real client's.
    pub reflected: u64,
}

impl TapCounts {
    pub fn since(self, before: Self) -> Self {
        TapCounts {
            home_spoofed: self.home_spoofed - before.home_spoofed,
            reflected: self.reflected - before.reflected,
        }
    }
}

/// Installs both taps (replacing earlier ones).
pub fn install(lab: &Lab) -> anyhow::Result<()> {
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
    let client = format!(
        "table netdev {TABLE} {{
  counter reflected {{ }}
  chain wire_in {{
    type filter hook ingress device \"eth0\" priority -500; policy accept;
    ip protocol igmp return
    ip daddr != {CLIENT_V4} counter name \"reflected\"
    ip6 daddr ff00::/8 return
    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, nd-redirect }} return
    ip6 daddr != {CLIENT_V6} counter name \"reflected\"
  }}
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
    Ok(TapCounts {
        home_spoofed: counter(lab, &lab.home, "spoofed")?,
        reflected: counter(lab, &lab.client, "reflected")?,
    })
}

fn counter(lab: &Lab, ns: &str, name: &str) -> anyhow::Result<u64> {
    let out = lab.exec(ns, &["nft", "-j", "list", "counter", "netdev", TABLE, name])?;
    anyhow::ensure!(
        out.status.success(),
        "reading nft counter {name} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
        .with_context(|| format!("no packets in nft's answer for {name}: {v}"))
}

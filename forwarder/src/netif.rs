//! Facts about local network interfaces.

use std::net::IpAddr;

use anyhow::{Context as _, bail};

pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(name)
        .with_context(|| format!("interface {name:?} not found (check `ip link`)"))
}

/// Unicast addresses of `name` that clients can reach (no IPv6 link-local addresses).
pub fn addresses(name: &str) -> Result<Vec<IpAddr>, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("listing addresses: {e}"))?;
    let mut out = Vec::new();
    let mut found = false;
    for a in addrs {
        if a.interface_name != name {
            continue;
        }
        found = true;
        let Some(sa) = a.address else { continue };
        if let Some(v4) = sa.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            let ip = v6.ip();
            if !ip.is_unicast_link_local() {
                out.push(IpAddr::V6(ip));
            }
        }
    }
    if !found {
        return Err(format!("interface {name:?} not found (check `ip link`)"));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub fn mtu(name: &str) -> anyhow::Result<u32> {
    let path = format!("/sys/class/net/{name}/mtu");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mtu: u32 = text
        .trim()
        .parse()
        .with_context(|| format!("parsing {path}"))?;
    if mtu < 1280 {
        bail!("{name} has MTU {mtu}, below the IPv6 minimum of 1280");
    }
    Ok(mtu)
}

/// Length of the link-layer header of `name`: 14 for Ethernet-like devices, 0 for L3
/// devices such as WireGuard and TUN.
pub fn link_header_len(name: &str) -> anyhow::Result<u32> {
    const ARPHRD_ETHER: u32 = 1;
    let path = format!("/sys/class/net/{name}/type");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ty: u32 = text
        .trim()
        .parse()
        .with_context(|| format!("parsing {path}"))?;
    Ok(if ty == ARPHRD_ETHER { 14 } else { 0 })
}

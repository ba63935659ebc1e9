//! The addresses of this machine and the prefixes routed through an interface: what the
//! data path must never take for a client's source.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::netif::NetifError;

/// An address or prefix, with the interface it belongs to or is routed through.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Prefix {
    pub iface: String,
    pub addr: IpAddr,
    pub len: u8,
}

/// Every address of every interface, with its prefix length (from the netmask).
pub fn local_addresses() -> Result<Vec<Prefix>, NetifError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(NetifError::ListAddresses)?;
    let mut out = Vec::new();
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let mask = a.netmask;
        if let Some(v4) = sa.as_sockaddr_in() {
            let len = mask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(32, |m| u32::from(m.ip()).count_ones() as u8);
            out.push(Prefix {
                iface: a.interface_name,
                addr: IpAddr::V4(v4.ip()),
                len,
            });
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            let len = mask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map_or(128, |m| u128::from(m.ip()).count_ones() as u8);
            out.push(Prefix {
                iface: a.interface_name,
                addr: IpAddr::V6(v6.ip()),
                len,
            });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Prefixes routed through `iface` in the main routing table (this network namespace's
/// `/proc/net/route` and `/proc/net/ipv6_route`), without default routes. Unreadable
/// files give no routes: the interface's own prefixes still come from its addresses.
pub fn routes_via(iface: &str) -> Vec<Prefix> {
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string("/proc/net/route") {
        out.extend(parse_route_v4(&text, iface));
    }
    if let Ok(text) = fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_route_v6(&text, iface));
    }
    out.retain(|p| p.len > 0);
    out.sort();
    out.dedup();
    out
}

/// `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, the
/// addresses as hexadecimal numbers in host byte order.
fn parse_route_v4(text: &str, iface: &str) -> Vec<Prefix> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f[0] != iface {
                return None;
            }
            let dst = u32::from_str_radix(f[1], 16).ok()?;
            let mask = u32::from_str_radix(f[7], 16).ok()?;
            Some(Prefix {
                iface: iface.to_owned(),
                addr: IpAddr::V4(Ipv4Addr::from(dst.to_le_bytes())),
                len: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// `/proc/net/ipv6_route`: destination (32 hex digits), its prefix length (hex), source,
/// its length, next hop, metric, refcount, use, flags, device.
fn parse_route_v6(text: &str, iface: &str) -> Vec<Prefix> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[9] != iface {
                return None;
            }
            let dst = u128::from_str_radix(f[0], 16).ok()?;
            let len = u8::from_str_radix(f[1], 16).ok()?;
            Some(Prefix {
                iface: iface.to_owned(),
                addr: IpAddr::V6(Ipv6Addr::from(dst)),
                len,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_through_an_interface_are_read_from_procfs() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  wg0\t0000080A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  wg0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let got = parse_route_v4(v4, "wg0");
        assert_eq!(
            got.iter().map(|p| (p.addr, p.len)).collect::<Vec<_>>(),
            [
                ("10.8.0.0".parse().unwrap(), 24),
                ("192.168.1.0".parse().unwrap(), 24)
            ]
        );
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001      wg0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00200200       lo\n";
        let got = parse_route_v6(v6, "wg0");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].addr, "fd00::".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].len, 64);
        assert!(parse_route_v4("garbage", "wg0").is_empty());
    }
}

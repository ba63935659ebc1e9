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

/// Seconds since the most recent WireGuard handshake of any peer on `iface`, from
/// `wg show <iface> latest-handshakes` (kernel WireGuard and wireguard-go alike). `None`
/// when that cannot be asked (no `wg`, not a WireGuard interface) or no handshake happened
/// yet.
pub fn wireguard_handshake_age(iface: &str) -> Option<u64> {
    let out = std::process::Command::new("wg")
        .args(["show", iface, "latest-handshakes"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    latest_handshake(&String::from_utf8_lossy(&out.stdout)).map(|t| now.saturating_sub(t))
}

/// The newest handshake time in `wg show latest-handshakes` output (`<peer>\t<unix time>`
/// per line, 0 for never).
fn latest_handshake(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .filter(|&t| t > 0)
        .max()
}

/// Whether `name` is up: its operational state is `up`, or `unknown` (TUN devices such as
/// wireguard-go's never report more) with the administrative `IFF_UP` flag set. False when
/// the interface does not exist.
pub fn is_up(name: &str) -> bool {
    let read = |what: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{what}"));
    let (Ok(operstate), flags) = (read("operstate"), read("flags")) else {
        return false;
    };
    operstate_is_up(&operstate, flags.ok().as_deref())
}

fn operstate_is_up(operstate: &str, flags: Option<&str>) -> bool {
    const IFF_UP: u32 = 0x1;
    match operstate.trim() {
        "up" => true,
        "unknown" => flags
            .and_then(|f| {
                let f = f.trim();
                u32::from_str_radix(f.strip_prefix("0x").unwrap_or(f), 16).ok()
            })
            .is_some_and(|f| f & IFF_UP != 0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tun_devices_report_unknown_and_count_as_up_with_iff_up() {
        assert_eq!(
            latest_handshake("a=\t1700000000\nb=\t1700000100\nc=\t0\n"),
            Some(1_700_000_100)
        );
        assert_eq!(latest_handshake("a=\t0\n"), None);
        assert_eq!(latest_handshake(""), None);
        assert!(operstate_is_up("up\n", None));
        assert!(operstate_is_up("unknown\n", Some("0x1091\n")));
        assert!(!operstate_is_up("unknown\n", Some("0x1090\n")));
        assert!(!operstate_is_up("unknown\n", None));
        assert!(!operstate_is_up("down\n", Some("0x1003\n")));
        assert!(!operstate_is_up("lowerlayerdown\n", Some("0x1003\n")));
        assert!(!is_up("no-such-interface-here"));
    }
}

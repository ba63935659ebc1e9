//! Facts about local network interfaces.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use netlink_packet_core::{
    Emitable, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload, ParseableParametrized,
};
use netlink_packet_generic::{
    GenlFamily, GenlHeader, GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_packet_wireguard::{
    WireguardAttribute, WireguardCmd, WireguardMessage, WireguardPeerAttribute,
};
use netlink_sys::{Socket, protocols::NETLINK_GENERIC};
use nix::{
    errno::Errno,
    sys::{socket::sockopt::ReceiveTimeout, time::TimeVal},
};

#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("listing addresses: {0}")]
    ListAddresses(Errno),
    #[error("interface {0:?} not found (check `ip link`)")]
    NotFound(String),
}

pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(name)
        .with_context(|| format!("interface {name:?} not found (check `ip link`)"))
}

/// Unicast addresses of `name` that clients can reach (no IPv6 link-local addresses).
pub fn addresses(name: &str) -> Result<Vec<IpAddr>, NetifError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(NetifError::ListAddresses)?;
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
        return Err(NetifError::NotFound(name.to_owned()));
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

/// Where userspace WireGuard (wireguard-go, boringtun) listens for its UAPI, as `wg` looks.
const UAPI_DIR: &str = "/var/run/wireguard";
/// For one question to the kernel or to a userspace WireGuard.
const WIREGUARD_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest UAPI answer read (a few hundred bytes per peer).
const MAX_UAPI_ANSWER: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireguardError {
    #[error(
        "{iface} is not a WireGuard interface (no UAPI socket in {UAPI_DIR}, not the kernel's)"
    )]
    NotWireguard { iface: String },
    #[error("asking the kernel's WireGuard over netlink")]
    Netlink(#[source] std::io::Error),
    #[error("decoding the kernel's WireGuard answer")]
    Decode(#[source] netlink_packet_core::DecodeError),
    #[error("asking {}", path.display())]
    Uapi {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} answered errno={errno}", path.display())]
    UapiErrno { path: PathBuf, errno: i64 },
}

/// Seconds since the most recent WireGuard handshake of any peer on `iface` (kernel
/// WireGuard and userspace implementations alike). `None` when that cannot be asked (not
/// a WireGuard interface) or no handshake happened yet.
pub fn wireguard_handshake_age(iface: &str) -> Option<u64> {
    seconds_since(wireguard_latest_handshake(iface).ok()??)
}

/// Seconds from the Unix time `t` to now (0 for a time in the future).
pub fn seconds_since(t: u64) -> Option<u64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(now.saturating_sub(t))
}

/// The Unix time of the most recent handshake of any peer on `iface`, `None` before the
/// first. Asks like `wg show` does: a userspace WireGuard's UAPI socket if there is one,
/// else the kernel over generic netlink. Blocking (at most about a second per question).
pub fn wireguard_latest_handshake(iface: &str) -> Result<Option<u64>, WireguardError> {
    // An interface name has no '/': anything else is not a socket of UAPI_DIR.
    if !iface.is_empty() && !iface.contains('/') {
        let path = Path::new(UAPI_DIR).join(format!("{iface}.sock"));
        if path.exists() {
            return uapi_latest_handshake(&path);
        }
    }
    kernel_latest_handshake(iface)?.ok_or_else(|| WireguardError::NotWireguard {
        iface: iface.to_owned(),
    })
}

/// The UAPI's `get=1` (see wireguard.com/xplatform): `key=value` lines, one
/// `last_handshake_time_sec` per peer, ended by `errno=N` and an empty line.
fn uapi_latest_handshake(path: &Path) -> Result<Option<u64>, WireguardError> {
    let err = |source| WireguardError::Uapi {
        path: path.to_owned(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(err)?;
    s.set_read_timeout(Some(WIREGUARD_TIMEOUT)).map_err(err)?;
    s.set_write_timeout(Some(WIREGUARD_TIMEOUT)).map_err(err)?;
    s.write_all(b"get=1\n\n").map_err(err)?;
    let mut answer = String::new();
    BufReader::new(s.take(MAX_UAPI_ANSWER))
        .lines()
        .map_while(|l| l.map(|l| (!l.is_empty()).then_some(l)).transpose())
        .try_for_each(|l| {
            answer.push_str(&l?);
            answer.push('\n');
            Ok(())
        })
        .map_err(err)?;
    parse_uapi(&answer).map_err(|errno| WireguardError::UapiErrno {
        path: path.to_owned(),
        errno,
    })
}

/// The newest `last_handshake_time_sec` (0 is never) of a UAPI answer, or its nonzero
/// errno.
fn parse_uapi(answer: &str) -> Result<Option<u64>, i64> {
    let mut latest = None;
    for (key, value) in answer.lines().filter_map(|l| l.split_once('=')) {
        match key {
            "errno" => match value.parse::<i64>() {
                Ok(0) => {}
                Ok(errno) => return Err(errno),
                Err(_) => return Err(-1),
            },
            "last_handshake_time_sec" => {
                if let Ok(t @ 1..) = value.parse::<u64>() {
                    latest = latest.max(Some(t));
                }
            }
            _ => {}
        }
    }
    Ok(latest)
}

/// `WG_CMD_GET_DEVICE` for `iface`. `Ok(None)` when it is not the kernel's WireGuard (no
/// such family, no such device, another kind of device).
fn kernel_latest_handshake(iface: &str) -> Result<Option<Option<u64>>, WireguardError> {
    let socket = genetlink_socket().map_err(WireguardError::Netlink)?;
    let mut family = None;
    let get_family = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(
            WireguardMessage::family_name().to_owned(),
        )],
    });
    let found = netlink_request(
        &socket,
        get_family,
        NLM_F_REQUEST,
        |m: GenlMessage<GenlCtrl>| {
            family = m.payload.nlas.iter().find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            });
        },
    )?;
    let (Some(()), Some(family)) = (found, family) else {
        return Ok(None);
    };
    let mut get_device = GenlMessage::from_payload(WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(iface.to_owned())],
    });
    get_device.set_resolved_family_id(family);
    let mut latest = None;
    let found = netlink_request(
        &socket,
        get_device,
        NLM_F_REQUEST | NLM_F_DUMP,
        |m: GenlMessage<WireguardMessage>| {
            let peers = m.payload.attributes.iter().filter_map(|a| match a {
                WireguardAttribute::Peers(p) => Some(p),
                _ => None,
            });
            for attr in peers.flatten().flat_map(|p| &p.0) {
                if let WireguardPeerAttribute::LastHandshake(t) = attr
                    && let Ok(t @ 1..) = u64::try_from(t.seconds)
                {
                    latest = latest.max(Some(t));
                }
            }
        },
    )?;
    Ok(found.map(|()| latest))
}

fn genetlink_socket() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_GENERIC)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    // The kernel answers at once; the timeout only guards against never hearing back.
    let timeout = TimeVal::new(WIREGUARD_TIMEOUT.as_secs() as _, 0);
    nix::sys::socket::setsockopt(&socket, ReceiveTimeout, &timeout)?;
    Ok(socket)
}

/// Sends `msg` and hands each answer to `each`, until the dump's end (or, for a plain
/// request, the answer). `Ok(None)` when the kernel says the thing asked for is not
/// there: no such family (`ENOENT`), no such device (`ENODEV`), not WireGuard
/// (`EOPNOTSUPP`).
fn netlink_request<T>(
    socket: &Socket,
    msg: GenlMessage<T>,
    flags: u16,
    mut each: impl FnMut(GenlMessage<T>),
) -> Result<Option<()>, WireguardError>
where
    T: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    let mut msg = NetlinkMessage::from(msg);
    msg.header.flags = flags;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0).map_err(WireguardError::Netlink)?;
    let dump = flags & NLM_F_DUMP != 0;
    loop {
        let (datagram, _) = socket.recv_from_full().map_err(WireguardError::Netlink)?;
        let mut rest = &datagram[..];
        while !rest.is_empty() {
            let reply = NetlinkMessage::<GenlMessage<T>>::deserialize(rest)
                .map_err(WireguardError::Decode)?;
            let len = (reply.header.length as usize).next_multiple_of(4);
            rest = rest.get(len.max(1)..).unwrap_or_default();
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(Some(())),
                NetlinkPayload::Error(e) => {
                    let Some(code) = e.code else {
                        return Ok(Some(()));
                    };
                    return match Errno::from_raw(-code.get()) {
                        Errno::ENOENT | Errno::ENODEV | Errno::EOPNOTSUPP => Ok(None),
                        _ => Err(WireguardError::Netlink(e.to_io())),
                    };
                }
                NetlinkPayload::InnerMessage(m) => {
                    each(m);
                    if !dump {
                        return Ok(Some(()));
                    }
                }
                _ => {}
            }
        }
    }
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

    /// What wireguard-go answers to `get=1`, one peer that shook hands and one that never
    /// did (`wg show latest-handshakes` prints the same two numbers).
    const UAPI_ANSWER: &str = "private_key=00\nlisten_port=51820\n\
        public_key=aa\nendpoint=192.0.2.1:51820\nlast_handshake_time_sec=1700000000\n\
        last_handshake_time_nsec=5\nrx_bytes=1\n\
        public_key=bb\nlast_handshake_time_sec=1700000100\n\
        public_key=cc\nlast_handshake_time_sec=0\nprotocol_version=1\nerrno=0\n";

    #[test]
    fn the_latest_handshake_of_any_peer_counts() {
        assert_eq!(parse_uapi(UAPI_ANSWER), Ok(Some(1_700_000_100)));
        assert_eq!(
            parse_uapi("public_key=aa\nlast_handshake_time_sec=0\nerrno=0\n"),
            Ok(None)
        );
        assert_eq!(parse_uapi(""), Ok(None));
        assert_eq!(parse_uapi("errno=19\n"), Err(19));
        assert_eq!(seconds_since(u64::MAX), Some(0));
    }

    /// The UAPI exchange against a stand-in for wireguard-go's socket.
    #[test]
    fn userspace_wireguard_is_asked_over_its_socket() {
        let dir = std::env::temp_dir().join(format!("forwarder-uapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wg-test.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut asked = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            while r.read_line(&mut asked).unwrap() > 1 {}
            (&s).write_all(UAPI_ANSWER.as_bytes()).unwrap();
            (&s).write_all(b"\n").unwrap();
            asked
        });
        let got = uapi_latest_handshake(&path);
        assert_eq!(server.join().unwrap(), "get=1\n\n");
        assert_eq!(got.unwrap(), Some(1_700_000_100));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn other_interfaces_are_not_wireguard() {
        // No UAPI socket, and the kernel's WireGuard (if any) knows no such device; a
        // process without CAP_NET_ADMIN is refused instead. Either way: no handshake.
        assert!(wireguard_latest_handshake("no-such-iface0").is_err());
        assert_eq!(wireguard_handshake_age("no-such-iface0"), None);
        assert_eq!(wireguard_handshake_age("../x"), None);
    }

    #[test]
    fn tun_devices_report_unknown_and_count_as_up_with_iff_up() {
        assert!(operstate_is_up("up\n", None));
        assert!(operstate_is_up("unknown\n", Some("0x1091\n")));
        assert!(!operstate_is_up("unknown\n", Some("0x1090\n")));
        assert!(!operstate_is_up("unknown\n", None));
        assert!(!operstate_is_up("down\n", Some("0x1003\n")));
        assert!(!operstate_is_up("lowerlayerdown\n", Some("0x1003\n")));
        assert!(!is_up("no-such-interface-here"));
    }
}

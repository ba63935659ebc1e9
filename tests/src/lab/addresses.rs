//! The lab's addresses, ports and names: the public link, the tunnel, the underlay, the
//! home shapes' LANs and uplink. Only addresses inside the lab's namespaces are used.

pub const CLIENT_V4: &str = "203.0.113.2";
pub const VPS_V4: &str = "203.0.113.1";
pub const CLIENT_V6: &str = "2001:db8:1::2";
pub const VPS_V6: &str = "2001:db8:1::1";
pub const HOME_WG_V4: &str = "10.8.0.2";
pub const VPS_WG_V4: &str = "10.8.0.1";
pub const HOME_WG_V6: &str = "fd00::2";
pub const VPS_WG_V6: &str = "fd00::1";
pub const UNDERLAY_VPS: &str = "198.51.100.1";
pub const UNDERLAY_HOME: &str = "198.51.100.2";
pub const WG_PORT: u16 = 51820;
/// The UDP echo service at home, forwarded by a UDP rule.
pub const UDP_ECHO_PORT: u16 = 7777;
/// A VPS-local TCP service standing in for SSH (not forwarded).
pub const VPS_LOCAL_PORT: u16 = 22;
/// Subdomains nginx serves at home.
pub const SUBDOMAINS: [&str; 3] = [
    "app.example.test",
    "blog.example.test",
    "media.example.test",
];

/// The LAN shape's addresses: the WireGuard machine's, the proxy machine's, the router's.
pub const LAN_WG_V4: &str = "192.168.1.5";
pub const LAN_WG_V6: &str = "fd10::5";
pub const LAN_PROXY_V4: &str = "192.168.1.20";
pub const LAN_PROXY_V6: &str = "fd10::20";
pub const LAN_ROUTER_V4: &str = "192.168.1.1";
pub const LAN_ROUTER_V6: &str = "fd10::1";

/// The container's address and its gateway at home (Docker's default bridge network).
pub const CONTAINER_V4: &str = "172.17.0.2";
pub const CONTAINER_GW_V4: &str = "172.17.0.1";
/// Home's own uplink toward its "ISP router", which never answers: a reply that takes
/// home's default route is lost, as on a real home machine whose router has no route back
/// to a client it never saw.
pub const HOME_ISP_V4: &str = "192.0.2.2";
pub const HOME_ISP_GW_V4: &str = "192.0.2.1";
pub const HOME_ISP_V6: &str = "2001:db8:ff::2";
pub const HOME_ISP_GW_V6: &str = "2001:db8:ff::1";

//! The test lab: `client`, `vps` and `home` network namespaces, a real WireGuard tunnel
//! between VPS and home (the kernel's module where the kernel has it, as on a VPS;
//! wireguard-go over TUN otherwise, see [`wireguard_kind`]), nginx at home serving several
//! subdomains over HTTP and HTTPS, and the forwarder on the VPS.
//!
//! ```text
//!  client ns                 vps ns                                   home ns
//!  eth0 203.0.113.2 ---veth--- eth0 203.0.113.1  (XDP + tc: forwarder)
//!       2001:db8:1::2             2001:db8:1::1
//!                              up0 198.51.100.1 ---veth--- eth0 198.51.100.2 (underlay)
//!                              wgv 10.8.0.1   ==WireGuard==  wgh 10.8.0.2, fd00::2
//!                                  fd00::1                   nginx, UDP echo
//! ```
//!
//! Every name is unique per lab (namespaces, WireGuard interfaces, whose UAPI sockets are
//! global), and everything is torn down on drop, also when a test panics. Only addresses
//! inside these namespaces are ever used.
//!
//! Files, from the bottom: `addresses` and `options` (plain values); `instance` (the
//! `Lab` value, commands in its namespaces, its paths); one file per part of the lab
//! (`links`, `home_shapes`, `wireguard`, `daemon` for the forwarder process, `nginx`,
//! `servers`, `client`, `download`), each using only `instance` and the plain values,
//! except `home_recipe`, which runs the forwarder binary of `daemon`; `build` (bringing
//! the parts up in order) and `teardown`; `prerequisites` and `presets` on top.

mod addresses;
mod build;
mod client;
mod daemon;
mod download;
mod home_recipe;
mod home_shapes;
mod instance;
mod links;
mod nginx;
mod options;
mod prerequisites;
mod presets;
mod servers;
mod teardown;
mod wireguard;

pub use addresses::*;
pub use client::{IpCounters, client_snmp};
pub use daemon::forwarder_bin;
pub use download::Download;
pub use home_recipe::{HomeRecipe, rule_after_main_recipe};
pub use instance::Lab;
pub use options::{HomeProxy, LabOptions};
pub use prerequisites::missing_prerequisites;
pub use presets::{lab_with_forwarder, lab_with_subdomain_hosts, subdomain_hosts};
pub use servers::{LOCAL_PAGE_BYTES, LocalWebServer};
pub use wireguard::{WireguardKind, wireguard_kind};

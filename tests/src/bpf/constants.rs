//! The programs' verdicts and the harness's fixed configuration: addresses, ports, MSS,
//! interface number.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 7);
pub const PUBLIC4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const BACKEND4: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7);
pub const PUBLIC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const BACKEND6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const UDP_PUBLIC_PORT: u16 = 5353;
pub const UDP_BACKEND_PORT: u16 = 53;
pub const MSS4: u16 = 1380;
pub const MSS6: u16 = 1360;

/// Interface numbers the test configuration uses. BPF_PROG_TEST_RUN does not deliver
/// redirects, so these need not exist, except the tunnel's (see `Harness::tunnel`).
pub const PUBLIC_IFINDEX: u32 = 7;

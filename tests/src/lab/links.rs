//! The lab's namespaces and links: the public link (a veth pair or two lent NICs), the
//! underlay toward home, their addresses, and the VPS's sysctls.

use std::process::Command;

use super::{addresses::VPS_V4, instance::Lab, options::LabOptions};
use crate::support::run;

impl Lab {
    /// Creates the client, VPS and home namespaces and the links between them, with their
    /// addresses, routes and sysctls.
    pub(super) fn links(&mut self, opts: &LabOptions) -> anyhow::Result<()> {
        for ns in [self.client.clone(), self.vps.clone(), self.home.clone()] {
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            self.namespaces.push(ns.clone());
            self.ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        let (c, v, h) = (self.client.clone(), self.vps.clone(), self.home.clone());
        // The "internet" link, created directly inside the namespaces (or the machine's
        // NICs moved there).
        if let Some((cn, vn)) = &opts.public_nics {
            for (nic, ns) in [(cn, &c), (vn, &v)] {
                run(Command::new("ip").args(["link", "set", "dev", nic, "netns", ns]))?;
                self.nics.push((ns.clone(), nic.clone()));
                self.ns(ns, &["ip", "link", "set", "dev", nic, "name", "eth0"])?;
            }
        } else {
            run(Command::new("ip").args([
                "-n", &c, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
                &v,
            ]))?;
        }
        // The home uplink carrying the encrypted tunnel.
        run(Command::new("ip").args([
            "-n", &v, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &h,
        ]))?;
        for ns in [&c, &v, &h] {
            // Keep IPv6 addresses usable at once (no duplicate address detection delay).
            self.ns(
                ns,
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )?;
        }
        self.ns(&c, &["ip", "addr", "add", "203.0.113.2/24", "dev", "eth0"])?;
        self.ns(
            &c,
            &[
                "ip",
                "addr",
                "add",
                "2001:db8:1::2/64",
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        self.ns(&c, &["ip", "link", "set", "eth0", "up"])?;
        self.ns(&c, &["ip", "route", "add", "default", "via", VPS_V4])?;
        // Real NICs deliver complete checksums; a veth would otherwise hand XDP packets whose
        // TCP checksum the client's kernel has left for offload (unless a test asks for
        // exactly that).
        if !opts.client_tx_offload {
            self.ns(&c, &["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        self.ns(&v, &["ip", "addr", "add", "203.0.113.1/24", "dev", "eth0"])?;
        self.ns(
            &v,
            &[
                "ip",
                "addr",
                "add",
                "2001:db8:1::1/64",
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        self.ns(&v, &["ip", "link", "set", "eth0", "up"])?;
        self.ns(&v, &["ip", "addr", "add", "198.51.100.1/24", "dev", "up0"])?;
        self.ns(&v, &["ip", "link", "set", "up0", "up"])?;
        // The VPS forwards nothing itself: everything it forwards, our programs forward.
        self.ns(
            &v,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=0",
                "net.ipv6.conf.all.forwarding=0",
            ],
        )?;
        self.ns(&h, &["ip", "addr", "add", "198.51.100.2/24", "dev", "eth0"])?;
        self.ns(&h, &["ip", "link", "set", "eth0", "up"])?;
        Ok(())
    }
}

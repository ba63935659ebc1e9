//! Home's network shapes: its own default route toward a router that never answers, the
//! Docker container with published ports, the proxy machine on the home LAN.

use std::{fs, process::Command};

use anyhow::Context as _;

use super::{
    addresses::{
        CONTAINER_GW_V4, CONTAINER_V4, HOME_ISP_GW_V4, HOME_ISP_GW_V6, HOME_ISP_V4, HOME_ISP_V6,
        LAN_PROXY_V4, LAN_PROXY_V6, LAN_ROUTER_V4, LAN_ROUTER_V6, LAN_WG_V4, LAN_WG_V6,
    },
    instance::Lab,
};
use crate::support::run;

impl Lab {
    /// Home's own default route, as every real home machine has (toward its router): a
    /// link whose far end never answers ARP or neighbour discovery, so whatever takes the
    /// route is lost rather than rescued by the lab.
    pub(super) fn home_default_route(&self) -> anyhow::Result<()> {
        let h = self.home.clone();
        self.ns(
            &h,
            &[
                "ip", "link", "add", "isp0", "type", "veth", "peer", "name", "isp0r",
            ],
        )?;
        self.ns(
            &h,
            &[
                "ip",
                "addr",
                "add",
                &format!("{HOME_ISP_V4}/24"),
                "dev",
                "isp0",
            ],
        )?;
        self.ns(
            &h,
            &[
                "ip",
                "addr",
                "add",
                &format!("{HOME_ISP_V6}/64"),
                "dev",
                "isp0",
                "nodad",
            ],
        )?;
        for dev in ["isp0", "isp0r"] {
            self.ns(&h, &["ip", "link", "set", dev, "up"])?;
        }
        self.ns(
            &h,
            &["ip", "route", "add", "default", "via", HOME_ISP_GW_V4],
        )?;
        self.ns(
            &h,
            &["ip", "-6", "route", "add", "default", "via", HOME_ISP_GW_V6],
        )?;
        Ok(())
    }

    /// The container home's web server runs in with `HomeProxy::Docker`, and the rules
    /// Docker writes for `-p 80:80 -p 443:443` (as nftables; Docker's iptables-nft rules
    /// do the same).
    pub(super) fn docker_container(&mut self) -> anyhow::Result<()> {
        let (h, c) = (self.home.clone(), self.proxy.clone());
        run(Command::new("ip").args(["netns", "add", &c]))?;
        self.namespaces.push(c.clone());
        self.ns(&c, &["ip", "link", "set", "lo", "up"])?;
        run(Command::new("ip").args([
            "-n", &h, "link", "add", "docker0", "type", "veth", "peer", "name", "eth0", "netns", &c,
        ]))?;
        self.ns(
            &h,
            &[
                "ip",
                "addr",
                "add",
                &format!("{CONTAINER_GW_V4}/16"),
                "dev",
                "docker0",
            ],
        )?;
        self.ns(&h, &["ip", "link", "set", "docker0", "up"])?;
        self.ns(
            &c,
            &[
                "ip",
                "addr",
                "add",
                &format!("{CONTAINER_V4}/16"),
                "dev",
                "eth0",
            ],
        )?;
        self.ns(&c, &["ip", "link", "set", "eth0", "up"])?;
        self.ns(
            &c,
            &["ip", "route", "add", "default", "via", CONTAINER_GW_V4],
        )?;
        self.ns(&h, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let rules = format!(
            r#"table ip lab_docker {{
    chain prerouting {{
        type nat hook prerouting priority dstnat;
        fib daddr type local tcp dport {{ 80, 443 }} dnat to {CONTAINER_V4}
        fib daddr type local udp dport 443 dnat to {CONTAINER_V4}
    }}
    chain output {{
        type nat hook output priority -100;
        fib daddr type local tcp dport {{ 80, 443 }} dnat to {CONTAINER_V4}
        fib daddr type local udp dport 443 dnat to {CONTAINER_V4}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat;
        ip saddr 172.17.0.0/16 oifname != "docker0" masquerade
    }}
}}
"#
        );
        let file = self.dir.join("docker.nft");
        fs::write(&file, rules)?;
        self.ns(&h, &["nft", "-f", file.to_str().context("path")?])?;
        Ok(())
    }

    /// The proxy machine of `HomeProxy::Lan`, on home's LAN (a veth from home's `lan0`).
    pub(super) fn lan_machine(&mut self) -> anyhow::Result<()> {
        let (h, m) = (self.home.clone(), self.proxy.clone());
        run(Command::new("ip").args(["netns", "add", &m]))?;
        self.namespaces.push(m.clone());
        self.ns(&m, &["ip", "link", "set", "lo", "up"])?;
        self.ns(
            &m,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        run(Command::new("ip").args([
            "-n", &h, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", &m,
        ]))?;
        for (ns, dev, v4, v6) in [
            (&h, "lan0", LAN_WG_V4, LAN_WG_V6),
            (&m, "eth0", LAN_PROXY_V4, LAN_PROXY_V6),
        ] {
            self.ns(ns, &["ip", "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            self.ns(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            )?;
            self.ns(ns, &["ip", "link", "set", dev, "up"])?;
        }
        // The proxy machine's own default route goes to the home router, not to the
        // WireGuard machine.
        self.ns(&m, &["ip", "route", "add", "default", "via", LAN_ROUTER_V4])?;
        self.ns(
            &m,
            &["ip", "-6", "route", "add", "default", "via", LAN_ROUTER_V6],
        )?;
        Ok(())
    }
}

//! The home side of client IP preservation: the recipe `forwarder home-config` prints.
//!
//! Forwarded packets reach home with the client's own source address. Home must send the
//! replies back through the tunnel instead of its default route (every real home machine
//! has one, toward its router), but only the replies of forwarded connections: its own
//! traffic keeps using the router. How home tells those replies apart depends on where the
//! proxy runs ([`Shape`]).
//!
//! The recipe is wg-quick `PostUp`/`PreDown` lines: wg-quick runs them each time the tunnel
//! comes up and goes down, so the routing exists exactly while the tunnel does, and they
//! live in the one file the user already edits. Each `PostUp` line can run again without
//! adding anything twice, and the `PreDown` lines remove exactly what `PostUp` added.

use std::{fmt::Write as _, net::IpAddr};

/// Routing table of the tunnel's replies; 51820 is WireGuard's port and what wg-quick uses
/// too, so it is easy to recognise in `ip rule` and `ip route show table all`.
pub const TABLE: u32 = 51820;
/// Priority of the recipe's `ip rule`s. It must come before `from all lookup main`
/// (32766): a rule after it is never reached on a machine with a default route. Below
/// wg-quick's own rules (32764, 32765), above what other tools commonly use (Tailscale's
/// 5210–5270).
pub const PRIORITY: u32 = 32000;
/// Connection and packet mark of forwarded connections (shapes that mark them).
pub const MARK: u32 = 0x51820;
/// The nftables table the marking recipes own (removed whole by `PreDown`).
pub const NFT_TABLE: &str = "forwarder_home";

/// Where the reverse proxy runs, seen from the machine that ends the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// On the WireGuard machine itself, listening on the tunnel address: its replies leave
    /// from the backend address, and a rule on that source address is enough.
    Tunnel,
    /// Behind a DNAT on the WireGuard machine, e.g. a Docker container with published
    /// ports (Nginx Proxy Manager): replies leave the container with its own address and
    /// the DNAT is undone only after routing, so the connections that came through the
    /// tunnel are marked (conntrack) and their replies routed by mark.
    Dnat,
}

/// What the recipe needs to know.
#[derive(Clone, Debug)]
pub struct Home {
    /// Addresses the forwarder sends connections to (one per address family at most).
    pub backends: Vec<IpAddr>,
    /// The WireGuard interface at home.
    pub tunnel_iface: String,
    pub shape: Shape,
}

/// The recipe's commands, as lists of lines (shell syntax, as wg-quick runs them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipe {
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
}

fn families(backends: &[IpAddr]) -> Vec<(&'static str, &'static str)> {
    let mut f = Vec::new();
    if backends.iter().any(IpAddr::is_ipv4) {
        f.push(("-4", "0.0.0.0/0"));
    }
    if backends.iter().any(IpAddr::is_ipv6) {
        f.push(("-6", "::/0"));
    }
    f
}

/// `ip rule add SELECTOR`, made idempotent: any earlier copy is deleted first.
fn rule_up(fam: &str, selector: &str) -> String {
    format!(
        "ip {fam} rule del {selector} lookup {TABLE} priority {PRIORITY} 2>/dev/null || true; \
         ip {fam} rule add {selector} lookup {TABLE} priority {PRIORITY}"
    )
}

fn rule_down(fam: &str, selector: &str) -> String {
    format!("ip {fam} rule del {selector} lookup {TABLE} priority {PRIORITY}")
}

impl Home {
    pub fn recipe(&self) -> Recipe {
        let wg = &self.tunnel_iface;
        let mut r = Recipe::default();
        match self.shape {
            Shape::Tunnel => {
                for b in &self.backends {
                    let (fam, def) = if b.is_ipv4() {
                        ("-4", "0.0.0.0/0")
                    } else {
                        ("-6", "::/0")
                    };
                    r.post_up.push(format!(
                        "ip {fam} route replace {def} dev {wg} table {TABLE}"
                    ));
                    r.post_up.push(rule_up(fam, &format!("from {b}")));
                    r.pre_down.push(rule_down(fam, &format!("from {b}")));
                }
            }
            Shape::Dnat => {
                // prerouting at mangle priority runs before Docker's nat DNAT; the output
                // chain (type route: rerouted when the mark changes) covers a proxy that
                // also listens on the tunnel address itself.
                r.post_up.push(format!(
                    "nft 'add table inet {NFT_TABLE}; flush table inet {NFT_TABLE}; \
                     add chain inet {NFT_TABLE} pre {{ type filter hook prerouting priority mangle; }}; \
                     add chain inet {NFT_TABLE} out {{ type route hook output priority mangle; }}; \
                     add rule inet {NFT_TABLE} pre iifname \"{wg}\" ct state new ct mark set {MARK:#x}; \
                     add rule inet {NFT_TABLE} pre iifname != \"{wg}\" ct mark {MARK:#x} meta mark set {MARK:#x}; \
                     add rule inet {NFT_TABLE} out ct mark {MARK:#x} meta mark set {MARK:#x}'"
                ));
                for (fam, def) in families(&self.backends) {
                    r.post_up.push(format!(
                        "ip {fam} route replace {def} dev {wg} table {TABLE}"
                    ));
                    r.post_up.push(rule_up(fam, &format!("fwmark {MARK:#x}")));
                    r.pre_down
                        .push(rule_down(fam, &format!("fwmark {MARK:#x}")));
                }
                r.pre_down.push(format!(
                    "nft delete table inet {NFT_TABLE} 2>/dev/null || true"
                ));
            }
        }
        r
    }

    /// The whole text: the WireGuard settings, the recipe, and what it assumes.
    pub fn render(&self) -> String {
        let wg = &self.tunnel_iface;
        let addrs = self
            .backends
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Home-side configuration for client IP preservation, printed by\n\
             # `forwarder home-config` for the backends {addrs}, {}.\n#",
            match self.shape {
                Shape::Tunnel => "the proxy listening on them on this machine (--proxy tunnel)",
                Shape::Dnat =>
                    "the proxy behind a DNAT on this machine, e.g. Docker (--proxy dnat)",
            }
        );
        let _ = writeln!(
            s,
            "# 1. In the home WireGuard config ({wg}.conf): the VPS peer must accept packets from\n\
             #    any client address, and wg-quick must not install a default route for it.\n\n\
             [Interface]\n# ... your PrivateKey / Address / ListenPort ...\nTable = off\n"
        );
        let r = self.recipe();
        let _ = writeln!(
            s,
            "# 2. Replies of forwarded connections go back through the tunnel, before the main\n\
             #    table's default route (rule priority {PRIORITY} < 32766). wg-quick runs these\n\
             #    lines when {wg} comes up and goes down; each PostUp can run twice safely."
        );
        if self.shape == Shape::Dnat {
            let _ = writeln!(
                s,
                "#    Connections arriving through {wg} are marked (conntrack mark {MARK:#x}, nftables\n\
                 #    table inet {NFT_TABLE}); packets of those connections that do not come from\n\
                 #    {wg} carry the mark and are routed back into it. Needs nftables (the `nft`\n\
                 #    command) and coexists with Docker's iptables rules."
            );
        }
        let _ = writeln!(s);
        for l in &r.post_up {
            let _ = writeln!(s, "PostUp = {l}");
        }
        for l in &r.pre_down {
            let _ = writeln!(s, "PreDown = {l}");
        }
        let _ = writeln!(
            s,
            "\n[Peer]\n# the VPS\n# PublicKey = ...\n# Endpoint = <vps-public-ip>:51820\n\
             AllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n"
        );
        let _ = match self.shape {
            Shape::Tunnel => writeln!(
                s,
                "# 3. Your proxy must listen on {addrs}: the forwarded connections arrive addressed\n\
                 #    to it, from the real client address. If it runs in Docker or behind any other\n\
                 #    DNAT, use --proxy dnat instead: these rules would not see its replies."
            ),
            Shape::Dnat => writeln!(
                s,
                "# 3. Publish the proxy's ports on {addrs} (or on all addresses), e.g.\n\
                 #    `docker run -p 80:80 -p 443:443 ...`: the forwarded connections arrive addressed\n\
                 #    to {addrs}, from the real client address, and Docker's DNAT passes them on."
            ),
        };
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(shape: Shape) -> Home {
        Home {
            backends: vec!["10.8.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            tunnel_iface: "wg0".into(),
            shape,
        }
    }

    #[test]
    fn same_box_routes_the_service_addresses_before_main() {
        let out = home(Shape::Tunnel).render();
        assert!(out.contains("AllowedIPs = 0.0.0.0/0, ::/0"));
        assert!(out.contains("Table = off"));
        assert!(out.contains("ip -4 rule add from 10.8.0.2 lookup 51820 priority 32000"));
        assert!(out.contains("ip -6 rule add from fd00::2 lookup 51820 priority 32000"));
        assert!(out.contains("PostUp = ip -4 route replace 0.0.0.0/0 dev wg0 table 51820"));
        assert!(out.contains("PreDown = ip -4 rule del from 10.8.0.2 lookup 51820 priority 32000"));
        assert!(
            PRIORITY < 32766,
            "the rules must come before the main table"
        );
    }

    #[test]
    fn every_rule_added_is_deleted_first_and_on_the_way_down() {
        for shape in [Shape::Tunnel, Shape::Dnat] {
            let r = home(shape).recipe();
            let adds: Vec<&str> = r
                .post_up
                .iter()
                .flat_map(|l| l.split("; "))
                .filter(|c| c.contains(" rule add "))
                .collect();
            assert!(!adds.is_empty());
            for add in adds {
                let del = add.replace(" rule add ", " rule del ");
                assert!(
                    r.post_up.iter().any(|l| l.starts_with(&del)),
                    "{add}: not deleted before it is added"
                );
                assert!(r.pre_down.contains(&del), "{add}: not removed by PreDown");
            }
        }
    }

    #[test]
    fn dnat_marks_connections_from_the_tunnel() {
        let r = home(Shape::Dnat).recipe();
        let nft = &r.post_up[0];
        assert!(nft.starts_with("nft 'add table inet forwarder_home; flush table"));
        assert!(nft.contains(r#"iifname "wg0" ct state new ct mark set 0x51820"#));
        assert!(nft.contains(r#"iifname != "wg0" ct mark 0x51820 meta mark set 0x51820"#));
        assert!(
            r.post_up
                .iter()
                .any(|l| l.contains("ip -4 rule add fwmark 0x51820"))
        );
        assert!(
            r.post_up
                .iter()
                .any(|l| l.contains("ip -6 rule add fwmark 0x51820"))
        );
        assert!(
            r.pre_down
                .iter()
                .any(|l| l.starts_with("nft delete table inet forwarder_home"))
        );
    }

    #[test]
    fn one_family_only_when_one_backend() {
        let h = Home {
            backends: vec!["10.8.0.2".parse().unwrap()],
            tunnel_iface: "wg1".into(),
            shape: Shape::Dnat,
        };
        let r = h.recipe();
        assert!(r.post_up.iter().all(|l| !l.contains("ip -6")));
        assert!(r.post_up.iter().any(|l| l.contains("dev wg1 table 51820")));
    }
}

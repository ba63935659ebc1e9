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
const _: () = assert!(
    PRIORITY < 32766,
    "the rules must come before the main table"
);
/// Connection and packet mark of forwarded connections (shapes that mark them).
pub const MARK: u32 = 0x51820;
/// The nftables table the marking recipes own (removed whole by `PreDown`).
pub const NFT_TABLE: &str = "forwarder_home";
/// The lines around the proxy machine's script in the LAN shape's recipe.
pub const PROXY_SCRIPT_BEGIN: &str = "# >>> proxy machine script";
pub const PROXY_SCRIPT_END: &str = "# <<< proxy machine script";

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
    /// On another machine of the home LAN (a Proxmox VM, say), WireGuard on a machine of
    /// its own (a VM, an LXC, the Proxmox host): the WireGuard machine DNATs the forwarded
    /// ports to the proxy machine and routes the marked replies back into the tunnel; the
    /// proxy machine must send the replies of connections that came from the WireGuard
    /// machine back to it rather than to the home router, which it can only tell by the
    /// WireGuard machine's MAC address. Both machines get a part of the recipe.
    Lan,
}

/// The LAN shape's machines.
#[derive(Clone, Debug)]
pub struct Lan {
    /// The proxy machine's LAN addresses (one per address family at most).
    pub proxy_addrs: Vec<IpAddr>,
    /// The WireGuard machine's LAN addresses (the proxy machine's route back).
    pub wg_addrs: Vec<IpAddr>,
    /// The MAC address of the WireGuard machine's LAN interface.
    pub wg_mac: String,
    /// The proxy machine's LAN interface.
    pub proxy_iface: String,
}

/// The proxy machine's part of the LAN shape: commands for a script of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyMachine {
    pub up: Vec<String>,
    pub down: Vec<String>,
}

/// A bad combination of `home-config` options, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error(
        "--proxy lan needs {0}: the proxy machine's LAN address (--proxy-addr), the WireGuard \
         machine's LAN address (--wg-lan-addr) and the MAC address of its LAN interface \
         (--wg-mac; `ip -br link` on the WireGuard machine shows it)"
    )]
    LanIncomplete(&'static str),
    #[error("--wg-mac {0:?} is not a MAC address (six hex pairs separated by colons)")]
    BadMac(String),
    #[error("{0} is only used with --proxy lan")]
    NotLan(&'static str),
    #[error(
        "no {family} {what} given for the {family} backend {backend}: give one, or leave \
         that backend out"
    )]
    FamilyMissing {
        family: &'static str,
        what: &'static str,
        backend: IpAddr,
    },
}

/// What the recipe needs to know.
#[derive(Clone, Debug)]
pub struct Home {
    /// Addresses the forwarder sends connections to (one per address family at most).
    pub backends: Vec<IpAddr>,
    /// The WireGuard interface at home.
    pub tunnel_iface: String,
    pub shape: Shape,
    /// Forwarded ports as home sees them (`tcp`/`udp`, port): what the LAN shape DNATs.
    pub ports: Vec<(&'static str, u16)>,
    /// The LAN shape's machines (`Some` exactly with `Shape::Lan`).
    pub lan: Option<Lan>,
}

/// The recipe's commands, as lists of lines (shell syntax, as wg-quick runs them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipe {
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
}

/// An address family as the recipe's commands name it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Family {
    /// `ip`'s family flag.
    flag: &'static str,
    /// The default route.
    default: &'static str,
    /// nftables' network-layer keyword.
    nft: &'static str,
}

const V4: Family = Family {
    flag: "-4",
    default: "0.0.0.0/0",
    nft: "ip",
};
const V6: Family = Family {
    flag: "-6",
    default: "::/0",
    nft: "ip6",
};

fn family_of(a: &IpAddr) -> Family {
    if a.is_ipv4() { V4 } else { V6 }
}

/// The families of `addrs`, IPv4 first, each once.
fn families(addrs: &[IpAddr]) -> Vec<Family> {
    [V4, V6]
        .into_iter()
        .filter(|f| addrs.iter().any(|a| family_of(a) == *f))
        .collect()
}

/// The `ip rule` selector of marked packets.
fn by_mark() -> String {
    format!("fwmark {MARK:#x}")
}

/// `ip rule add SELECTOR`, made idempotent: any earlier copy is deleted first.
fn rule_up(fam: Family, selector: &str) -> String {
    let f = fam.flag;
    format!(
        "ip {f} rule del {selector} lookup {TABLE} priority {PRIORITY} 2>/dev/null || true; \
         ip {f} rule add {selector} lookup {TABLE} priority {PRIORITY}"
    )
}

fn rule_down(fam: Family, selector: &str) -> String {
    format!(
        "ip {} rule del {selector} lookup {TABLE} priority {PRIORITY}",
        fam.flag
    )
}

/// Packets `selector` picks take table `TABLE`, whose default route is `via` (`dev
/// IFACE`, or `via ADDR dev IFACE`): the lines up, and the line down.
fn route_back(
    fam: Family,
    via: &str,
    selector: &str,
    up: &mut Vec<String>,
    down: &mut Vec<String>,
) {
    up.push(format!(
        "ip {} route replace {} {via} table {TABLE}",
        fam.flag, fam.default
    ));
    up.push(rule_up(fam, selector));
    down.push(rule_down(fam, selector));
}

/// Removes the marking recipes' nftables table (whatever is in it).
fn nft_delete() -> String {
    format!("nft delete table inet {NFT_TABLE} 2>/dev/null || true")
}

/// The nftables command that creates (or empties and refills) the recipe's table: chains
/// at mangle priority (before any nat DNAT) that mark the connections `new_conn` selects
/// and give the connection mark to the packets of those connections that do not arrive
/// the way they came (`restore_unless`), locally sent ones included; `extra` adds more
/// (chain definitions and rules, `;`-separated).
fn nft_marking(new_conn: &str, restore_unless: &str, extra: &[String]) -> String {
    let t = format!("inet {NFT_TABLE}");
    let mut cmds = vec![
        format!("add table {t}"),
        format!("flush table {t}"),
        format!("add chain {t} pre {{ type filter hook prerouting priority mangle; }}"),
        format!("add chain {t} out {{ type route hook output priority mangle; }}"),
        format!("add rule {t} pre {new_conn} ct state new ct mark set {MARK:#x}"),
        format!("add rule {t} pre {restore_unless} ct mark {MARK:#x} meta mark set {MARK:#x}"),
        format!("add rule {t} out ct mark {MARK:#x} meta mark set {MARK:#x}"),
    ];
    cmds.extend(extra.iter().cloned());
    format!("nft '{}'", cmds.join("; "))
}

impl Home {
    /// Checks that the options describe a home the recipe can serve.
    pub fn validate(&self) -> Result<(), HomeError> {
        let Some(lan) = &self.lan else {
            return Ok(());
        };
        if lan.proxy_addrs.is_empty() {
            return Err(HomeError::LanIncomplete("--proxy-addr"));
        }
        if lan.wg_addrs.is_empty() {
            return Err(HomeError::LanIncomplete("--wg-lan-addr"));
        }
        let hex_pairs = lan.wg_mac.split(':').collect::<Vec<_>>();
        if hex_pairs.len() != 6
            || !hex_pairs
                .iter()
                .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(HomeError::BadMac(lan.wg_mac.clone()));
        }
        for b in &self.backends {
            let family = if b.is_ipv4() { "IPv4" } else { "IPv6" };
            let same = |a: &&IpAddr| a.is_ipv4() == b.is_ipv4();
            if !lan.proxy_addrs.iter().any(|a| same(&a)) {
                return Err(HomeError::FamilyMissing {
                    family,
                    what: "--proxy-addr",
                    backend: *b,
                });
            }
            if !lan.wg_addrs.iter().any(|a| same(&a)) {
                return Err(HomeError::FamilyMissing {
                    family,
                    what: "--wg-lan-addr",
                    backend: *b,
                });
            }
        }
        Ok(())
    }

    /// The proxy machine's part of the LAN shape (`None` for the other shapes).
    pub fn proxy_machine(&self) -> Option<ProxyMachine> {
        let lan = self.lan.as_ref()?;
        let ifc = &lan.proxy_iface;
        let mut m = ProxyMachine::default();
        m.up.push(nft_marking(
            &format!(
                "iifname \"{ifc}\" ether saddr {}",
                lan.wg_mac.to_ascii_lowercase()
            ),
            &format!("iifname != \"{ifc}\""),
            &[],
        ));
        for gw in &lan.wg_addrs {
            let fam = family_of(gw);
            route_back(
                fam,
                &format!("via {gw} dev {ifc}"),
                &by_mark(),
                &mut m.up,
                &mut m.down,
            );
            m.down
                .push(format!("ip {} route flush table {TABLE}", fam.flag));
        }
        m.down.push(nft_delete());
        Some(m)
    }

    pub fn recipe(&self) -> Recipe {
        let wg = &self.tunnel_iface;
        let mut r = Recipe::default();
        match self.shape {
            Shape::Tunnel => {
                for b in &self.backends {
                    route_back(
                        family_of(b),
                        &format!("dev {wg}"),
                        &format!("from {b}"),
                        &mut r.post_up,
                        &mut r.pre_down,
                    );
                }
            }
            Shape::Dnat | Shape::Lan => {
                // Prerouting at mangle priority runs before Docker's nat DNAT; the output
                // chain (type route: rerouted when the mark changes) covers a proxy that
                // also listens on the tunnel address itself.
                let mut extra = Vec::new();
                if let Some(lan) = &self.lan {
                    extra.push(format!(
                        "add chain inet {NFT_TABLE} to_proxy {{ type nat hook prerouting priority dstnat; }}"
                    ));
                    for b in &self.backends {
                        let Some(to) = lan.proxy_addrs.iter().find(|a| a.is_ipv4() == b.is_ipv4())
                        else {
                            continue;
                        };
                        let l3 = family_of(b).nft;
                        for proto in ["tcp", "udp"] {
                            let ports: Vec<String> = self
                                .ports
                                .iter()
                                .filter(|(p, _)| *p == proto)
                                .map(|(_, n)| n.to_string())
                                .collect();
                            if ports.is_empty() {
                                continue;
                            }
                            extra.push(format!(
                                "add rule inet {NFT_TABLE} to_proxy iifname \"{wg}\" {l3} daddr {b} {proto} dport {{ {} }} dnat {l3} to {to}",
                                ports.join(", ")
                            ));
                        }
                    }
                    // The WireGuard machine routes between the tunnel and the LAN.
                    for fam in families(&self.backends) {
                        r.post_up.push(if fam == V4 {
                            "sysctl -qw net.ipv4.ip_forward=1".to_owned()
                        } else {
                            "sysctl -qw net.ipv6.conf.all.forwarding=1".to_owned()
                        });
                    }
                }
                r.post_up.push(nft_marking(
                    &format!("iifname \"{wg}\""),
                    &format!("iifname != \"{wg}\""),
                    &extra,
                ));
                for fam in families(&self.backends) {
                    route_back(
                        fam,
                        &format!("dev {wg}"),
                        &by_mark(),
                        &mut r.post_up,
                        &mut r.pre_down,
                    );
                }
                r.pre_down.push(nft_delete());
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
                Shape::Lan => "the proxy on another machine of the home LAN (--proxy lan)",
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
        if self.shape != Shape::Tunnel {
            let _ = writeln!(
                s,
                "#    Connections arriving through {wg} are marked (conntrack mark {MARK:#x}, nftables\n\
                 #    table inet {NFT_TABLE}); packets of those connections that do not come from\n\
                 #    {wg} carry the mark and are routed back into it. Needs nftables (the `nft`\n\
                 #    command) and coexists with Docker's iptables rules."
            );
        }
        if let Some(lan) = &self.lan {
            let to = lan
                .proxy_addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" and ");
            let _ = writeln!(
                s,
                "#    The forwarded ports are DNATed to the proxy machine ({to}), without\n\
                 #    masquerading: it sees the client's own address. Forwarding is switched on\n\
                 #    (and left on by PreDown). A firewall on this machine must let the tunnel's\n\
                 #    connections through to the proxy machine (Docker's FORWARD policy is DROP)."
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
            Shape::Lan => writeln!(
                s,
                "# 3. The proxy machine must send the replies of these connections back to this\n\
                 #    machine, not to the home router: the script below, run on the proxy machine,\n\
                 #    marks the connections that arrive from this machine's MAC address and routes\n\
                 #    their replies back to it. If the proxy machine cannot be changed (an\n\
                 #    appliance), the client's address cannot reach it this way: masquerade on this\n\
                 #    machine instead (the proxy then sees this machine's address), or have the\n\
                 #    proxy accept the PROXY protocol once the forwarder can send it."
            ),
        };
        if let Some(m) = self.proxy_machine() {
            let _ = writeln!(
                s,
                "\n# 4. On the proxy machine: save the lines between the markers as a script (e.g.\n\
                 #    /usr/local/sbin/forwarder-return-path), run it once the network is up at every\n\
                 #    boot (a oneshot systemd unit, or /etc/network/if-up.d), and with `down` to remove\n\
                 #    what it added. It can run twice safely. Needs nftables.\n\
                 {PROXY_SCRIPT_BEGIN}\n#!/bin/sh\nif [ \"$1\" = down ]; then"
            );
            for l in &m.down {
                let _ = writeln!(s, "  {l}");
            }
            let _ = writeln!(s, "  exit 0\nfi\nset -e");
            for l in &m.up {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "{PROXY_SCRIPT_END}");
        }
        s
    }
}

#[cfg(test)]
mod tests;

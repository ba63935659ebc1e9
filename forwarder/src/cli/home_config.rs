//! `forwarder home-config`: the home side's WireGuard and routing lines.

use std::net::IpAddr;

use crate::{
    cli::args::Target,
    config::{
        self,
        home::{self, HomeError},
    },
};

#[derive(clap::Args)]
pub struct HomeConfigArgs {
    #[command(flatten)]
    pub target: Target,
    /// Name of the WireGuard interface at home.
    #[arg(long, default_value = "wg0", value_name = "IFACE")]
    pub home_tunnel: String,
    /// Where the reverse proxy runs: `tunnel` = on the WireGuard machine, listening on
    /// the backend address; `dnat` = in Docker (published ports) or behind any other
    /// DNAT on the WireGuard machine, e.g. Nginx Proxy Manager.
    /// `lan` = on another machine of the home LAN (a Proxmox VM), WireGuard on a machine
    /// of its own: prints a part for each machine (needs --proxy-addr, --wg-lan-addr,
    /// --wg-mac).
    #[arg(long, value_enum, default_value = "tunnel", value_name = "SHAPE")]
    pub proxy: home::Shape,
    /// With --proxy lan: the proxy machine's LAN address (once per address family).
    #[arg(long, value_name = "ADDR")]
    pub proxy_addr: Vec<IpAddr>,
    /// With --proxy lan: the WireGuard machine's LAN address (once per address family),
    /// where the proxy machine sends the replies.
    #[arg(long, value_name = "ADDR")]
    pub wg_lan_addr: Vec<IpAddr>,
    /// With --proxy lan: the MAC address of the WireGuard machine's LAN interface
    /// (`ip -br link` on it), by which the proxy machine tells its connections apart.
    #[arg(long, value_name = "MAC")]
    pub wg_mac: Option<String>,
    /// With --proxy lan: the proxy machine's LAN interface.
    #[arg(long, default_value = "eth0", value_name = "IFACE")]
    pub proxy_iface: String,
}

pub fn run(args: HomeConfigArgs) -> anyhow::Result<()> {
    let HomeConfigArgs {
        target,
        home_tunnel,
        proxy,
        proxy_addr,
        wg_lan_addr,
        wg_mac,
        proxy_iface,
    } = args;
    let file = target.file()?;
    let mut backends = if target.backend.is_empty() {
        file.backends.clone()
    } else {
        target.backend.clone()
    };
    backends.extend(file.rules.iter().filter_map(|r| r.backend));
    backends.sort();
    backends.dedup();
    if backends.is_empty() {
        anyhow::bail!("no backend known: pass --backend ADDR or --config FILE");
    }
    let lan = if proxy == home::Shape::Lan {
        Some(home::Lan {
            proxy_addrs: proxy_addr,
            wg_addrs: wg_lan_addr,
            wg_mac: wg_mac.unwrap_or_default(),
            proxy_iface,
        })
    } else if !proxy_addr.is_empty() {
        return Err(HomeError::NotLan("--proxy-addr").into());
    } else if !wg_lan_addr.is_empty() {
        return Err(HomeError::NotLan("--wg-lan-addr").into());
    } else if wg_mac.is_some() {
        return Err(HomeError::NotLan("--wg-mac").into());
    } else {
        None
    };
    let rules = if file.rules.is_empty() {
        config::default_rules(file.http3)
    } else {
        file.rules.clone()
    };
    let mut ports: Vec<(&'static str, u16)> = rules
        .iter()
        .map(|r| (<&str>::from(r.proto), r.backend_port.unwrap_or(r.port)))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let home = home::Home {
        backends,
        tunnel_iface: home_tunnel,
        shape: proxy,
        ports,
        lan,
    };
    home.validate()?;
    print!("{}", home.render());
    Ok(())
}

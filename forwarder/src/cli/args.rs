//! Flags several subcommands share.

use std::{net::IpAddr, path::PathBuf};

use crate::{
    api::control,
    config::{Config, FileConfig},
    sys::netif,
};

#[derive(clap::Args)]
pub struct Target {
    /// TOML configuration file (see docs/configuration.md). Flags override its values.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface facing the internet, e.g. eth0.
    #[arg(long, value_name = "IFACE")]
    pub public_iface: Option<String>,
    /// WireGuard interface toward home, e.g. wg0.
    #[arg(long = "tunnel", value_name = "IFACE")]
    pub tunnel_iface: Option<String>,
    /// Home server address behind the tunnel; once per address family
    /// (e.g. --backend 10.8.0.2 --backend fd00::2). Without rules in the config file,
    /// TCP 80 and 443 of the public interface's addresses are forwarded to it.
    #[arg(long, value_name = "ADDR")]
    pub backend: Vec<IpAddr>,
}

impl Target {
    pub fn file(&self) -> anyhow::Result<FileConfig> {
        Ok(match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        })
    }

    /// The configuration file and flags, resolved against this machine's interfaces.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        Ok(Config::resolve(
            self.file()?,
            self.public_iface.clone(),
            self.tunnel_iface.clone(),
            self.backend.clone(),
            |i| netif::addresses(i).map_err(|e| e.to_string()),
        )?)
    }
}

/// How the CLI reaches the daemon.
#[derive(clap::Args, Clone)]
pub struct ControlArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    pub control: PathBuf,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

//! Home's routing for client IP preservation: what `forwarder home-config` prints for the
//! lab, applied as wg-quick applies it, and the broken recipes the tests compare against.

use std::{fs, process::Command};

use anyhow::Context as _;

use super::{
    addresses::{HOME_WG_V4, HOME_WG_V6, LAN_PROXY_V4, LAN_PROXY_V6, LAN_WG_V4, LAN_WG_V6},
    daemon::forwarder_bin,
    instance::Lab,
    options::{HomeProxy, LabOptions},
};
use crate::support::run;

/// What `forwarder home-config` printed for a lab: the WireGuard machine's PostUp and
/// PreDown lines, and the proxy machine's script (LAN shape).
#[derive(Clone, Debug)]
pub struct HomeRecipe {
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub proxy_script: Option<String>,
}

/// The home recipe of earlier releases: the right rule, at a priority (51820) after
/// `from all lookup main` (32766), where a home with a default route never reaches it.
pub fn rule_after_main_recipe() -> Vec<String> {
    vec![
        "ip -4 route replace 0.0.0.0/0 dev %i table 51820".to_owned(),
        format!("ip -4 rule add from {HOME_WG_V4} lookup 51820 priority 51820"),
    ]
}

impl Lab {
    /// Home's routing for client IP preservation: the PostUp lines `forwarder home-config`
    /// prints for the lab's shape, run verbatim as wg-quick runs them (one shell each), and
    /// in the LAN shape the proxy machine's script, run there.
    pub(super) fn apply_home_recipe(&self, opts: &LabOptions) -> anyhow::Result<()> {
        let lines = match &opts.home_recipe {
            Some(lines) => lines.clone(),
            None => {
                let r = self.home_config(opts.recipe_for.unwrap_or(opts.home_proxy))?;
                if let Some(script) = &r.proxy_script {
                    self.run_proxy_script(script, &[])?;
                }
                r.post_up
            }
        };
        self.run_at_home(&lines)
    }

    /// Runs shell `lines` at home as wg-quick runs a recipe's (each in a shell of its own,
    /// `%i` replaced by the interface), failing at the first that fails.
    pub fn run_at_home(&self, lines: &[String]) -> anyhow::Result<()> {
        for line in lines {
            let line = line.replace("%i", &self.wg_home);
            self.ns(&self.home, &["bash", "-c", &line])
                .with_context(|| format!("home recipe line {line:?}"))?;
        }
        Ok(())
    }

    /// The PostUp lines of `forwarder home-config` for this lab.
    pub fn home_config_post_up(&self, proxy: HomeProxy) -> anyhow::Result<Vec<String>> {
        Ok(self.home_config(proxy)?.post_up)
    }

    /// Runs the LAN shape's proxy machine script (as printed) on the proxy machine, with
    /// `args` (`["down"]` removes what it added).
    pub fn run_proxy_script(&self, script: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.dir.join("proxy-machine.sh");
        fs::write(&path, script)?;
        let path = path.to_str().context("path")?.to_owned();
        let mut cmd = vec!["sh", path.as_str()];
        cmd.extend_from_slice(args);
        self.ns(&self.proxy, &cmd)
            .context("the proxy machine's script")?;
        Ok(())
    }

    /// What `forwarder home-config` prints for this lab's backends, home tunnel interface
    /// and shape.
    pub fn home_config(&self, proxy: HomeProxy) -> anyhow::Result<HomeRecipe> {
        let config = self.config_path().display().to_string();
        let mut args: Vec<String> = [
            "home-config",
            "--config",
            &config,
            "--backend",
            HOME_WG_V4,
            "--backend",
            HOME_WG_V6,
            "--home-tunnel",
            &self.wg_home,
            "--proxy",
            match proxy {
                HomeProxy::OnTunnelMachine => "tunnel",
                HomeProxy::Docker => "dnat",
                HomeProxy::Lan => "lan",
            },
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if proxy == HomeProxy::Lan {
            let mac = self.exec(&self.home, &["cat", "/sys/class/net/lan0/address"])?;
            let mac = String::from_utf8(mac.stdout)?.trim().to_owned();
            for a in [
                "--proxy-addr",
                LAN_PROXY_V4,
                "--proxy-addr",
                LAN_PROXY_V6,
                "--wg-lan-addr",
                LAN_WG_V4,
                "--wg-lan-addr",
                LAN_WG_V6,
                "--proxy-iface",
                "eth0",
                "--wg-mac",
                &mac,
            ] {
                args.push(a.to_owned());
            }
        }
        let out = run(Command::new(forwarder_bin()).args(&args))?;
        let text = String::from_utf8(out.stdout)?;
        let lines = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(key).map(str::to_owned))
                .collect()
        };
        // `forwarder::config::home::PROXY_SCRIPT_BEGIN`/`_END`, written out: the lab builds without
        // the forwarder crate (xtask's setup); the LAN suite fails if they drift apart.
        let proxy_script = text
            .split_once("# >>> proxy machine script\n")
            .and_then(|(_, rest)| rest.split_once("# <<< proxy machine script"))
            .map(|(script, _)| script.to_owned());
        Ok(HomeRecipe {
            post_up: lines("PostUp = "),
            pre_down: lines("PreDown = "),
            proxy_script,
        })
    }
}

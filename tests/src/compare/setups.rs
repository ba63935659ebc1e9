//! Bringing each setup up on the lab's VPS and taking it down again: the forwarder, the
//! nftables DNAT baseline, HAProxy and Caddy (their configurations in `deploy/bench/`).

use std::{
    fmt::Write as _,
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::model::Setup;
use crate::{
    lab::{HOME_WG_V4, Lab, SUBDOMAINS, VPS_V4},
    support::{run, wait_for},
};

/// The nftables configuration a careful user writes by hand: DNAT of the forwarded ports
/// into the tunnel (conntrack translates the replies back) and the same MSS clamping the
/// forwarder does. `{public}` and `{backend}` are filled in.
pub const NFTABLES_RULES: &str = include_str!("../../../deploy/bench/nftables.conf");
pub const HAPROXY_CONFIG: &str = include_str!("../../../deploy/bench/haproxy.cfg");
pub const CADDYFILE: &str = include_str!("../../../deploy/bench/Caddyfile");

/// A proxy of a setup, ended by PID when the setup is torn down.
pub(super) struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fill(template: &str, lab: &Lab) -> String {
    template
        .replace("{public}", VPS_V4)
        .replace("{backend}", HOME_WG_V4)
        .replace("{cert}", &lab.cert().display().to_string())
        .replace("{key}", &lab.dir.join("key.pem").display().to_string())
}

/// Starts `args` in the VPS namespace and waits until something listens on 443 there.
fn start_proxy(
    lab: &Lab,
    name: &str,
    args: &[&str],
    env: &[(&str, PathBuf)],
) -> anyhow::Result<Proxy> {
    let log = fs::File::create(lab.dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.vps])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proxy = Proxy(cmd.spawn().with_context(|| format!("starting {name}"))?);
    let listening = wait_for(
        &format!("{name} listening"),
        std::time::Duration::from_secs(15),
        || {
            if let Ok(Some(status)) = proxy.0.try_wait() {
                return Some(Err(status));
            }
            let out = lab
                .exec(&lab.vps, &["ss", "-Hltn", "sport", "=", ":443"])
                .ok()?;
            (!out.stdout.is_empty()).then_some(Ok(()))
        },
    );
    match listening {
        Ok(Ok(())) => Ok(proxy),
        Ok(Err(status)) => bail!(
            "{name} exited with {status}: {}",
            fs::read_to_string(lab.dir.join(format!("{name}.log"))).unwrap_or_default()
        ),
        Err(e) => {
            let _ = proxy.0.kill();
            Err(e)
        }
    }
}

/// Makes `/etc/hosts` inside `ns` (what `ip netns exec` mounts over the real one) resolve
/// the lab's subdomains to the VPS, for tools that take a URL and no address.
pub(super) struct NetnsHosts {
    dir: PathBuf,
}

impl NetnsHosts {
    pub(super) fn new(ns: &str) -> anyhow::Result<Self> {
        let dir = PathBuf::from("/etc/netns").join(ns);
        fs::create_dir_all(&dir)?;
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for s in SUBDOMAINS {
            let _ = writeln!(hosts, "{VPS_V4} {s}");
        }
        fs::write(dir.join("hosts"), hosts)?;
        Ok(Self { dir })
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn setup_on(lab: &mut Lab, setup: Setup) -> anyhow::Result<Option<Proxy>> {
    match setup {
        // Not pinned: stopping it must leave the VPS as it found it.
        Setup::Forwarder => lab
            .start_forwarder(&["--no-pin", "--metrics-addr", "off"])
            .map(|()| None),
        Setup::ForwarderTcOnly => lab
            .start_forwarder(&["--no-pin", "--metrics-addr", "off", "--xdp-mode", "off"])
            .map(|()| None),
        Setup::Haproxy => {
            let path = lab.dir.join("haproxy.cfg");
            fs::write(&path, fill(HAPROXY_CONFIG, lab))?;
            let path = path.display().to_string();
            start_proxy(lab, "haproxy", &["haproxy", "-db", "-f", &path], &[]).map(Some)
        }
        Setup::Caddy => {
            let path = lab.dir.join("Caddyfile");
            fs::write(&path, fill(CADDYFILE, lab))?;
            let path = path.display().to_string();
            let home = lab.dir.join("caddy");
            fs::create_dir_all(&home)?;
            start_proxy(
                lab,
                "caddy",
                &["caddy", "run", "--adapter", "caddyfile", "--config", &path],
                &[
                    ("HOME", home.clone()),
                    ("XDG_DATA_HOME", home.join("data")),
                    ("XDG_CONFIG_HOME", home.join("config")),
                ],
            )
            .map(Some)
        }
        Setup::Nftables => {
            let path = lab.dir.join("nftables.conf");
            fs::write(&path, fill(NFTABLES_RULES, lab))?;
            ip_forwarding(lab, true)?;
            run(Command::new("ip")
                .args(["netns", "exec", &lab.vps, "nft", "-f"])
                .arg(&path))?;
            Ok(None)
        }
    }
}

/// The VPS's IPv4 forwarding, which only the nftables setup uses.
fn ip_forwarding(lab: &Lab, on: bool) -> anyhow::Result<()> {
    let setting = format!("net.ipv4.ip_forward={}", u8::from(on));
    run(Command::new("ip").args(["netns", "exec", &lab.vps, "sysctl", "-qw", &setting]))?;
    Ok(())
}

pub(super) fn teardown(lab: &mut Lab, setup: Setup, proxy: Option<Proxy>) -> anyhow::Result<()> {
    drop(proxy);
    match setup {
        Setup::Haproxy | Setup::Caddy => Ok(()),
        Setup::Forwarder | Setup::ForwarderTcOnly => lab.stop_forwarder().map(|_| ()),
        Setup::Nftables => {
            run(Command::new("ip").args([
                "netns", "exec", &lab.vps, "nft", "delete", "table", "ip", "fwdbench",
            ]))?;
            // The flood's half-open connections would otherwise still fill the table when
            // the next repetition measures nftables.
            run(Command::new("ip").args(["netns", "exec", &lab.vps, "conntrack", "-F"]))?;
            ip_forwarding(lab, false)?;
            Ok(())
        }
    }
}

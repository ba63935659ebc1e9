//! The tunnel between VPS and home: kernel WireGuard or wireguard-go, keys, peers,
//! addresses, the handshake, restarting the VPS's end, and its transfer counters.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use super::{
    addresses::{HOME_WG_V4, HOME_WG_V6, UNDERLAY_VPS, VPS_WG_V4, VPS_WG_V6, WG_PORT},
    instance::Lab,
};
use crate::support::{run, wait_for};

/// Which WireGuard the lab's tunnel runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireguardKind {
    /// The kernel's module (`ip link add ... type wireguard`): what VPSs run.
    Kernel,
    /// wireguard-go on a TUN device, for kernels without the module.
    Go,
}

impl WireguardKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            WireguardKind::Kernel => "kernel WireGuard",
            WireguardKind::Go => "wireguard-go",
        }
    }
}

/// The kernel's WireGuard where the kernel offers it (loaded, or loadable with
/// `modprobe`), wireguard-go otherwise; `FORWARDER_LAB_WIREGUARD=kernel|go` picks one.
/// Decided once per process.
pub fn wireguard_kind() -> WireguardKind {
    static KIND: std::sync::OnceLock<WireguardKind> = std::sync::OnceLock::new();
    *KIND.get_or_init(|| {
        match std::env::var("FORWARDER_LAB_WIREGUARD").as_deref() {
            Ok("kernel") => return WireguardKind::Kernel,
            Ok("go") => return WireguardKind::Go,
            _ => {}
        }
        let loaded = || Path::new("/sys/module/wireguard").exists();
        if loaded()
            || Command::new("modprobe")
                .arg("wireguard")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                && loaded()
        {
            WireguardKind::Kernel
        } else {
            WireguardKind::Go
        }
    })
}

impl Lab {
    /// Creates the WireGuard interface `wg` in `ns`: a kernel one, or wireguard-go's (then
    /// waits for its control socket).
    fn start_wireguard(&mut self, ns: &str, wg: &str) -> anyhow::Result<()> {
        if wireguard_kind() == WireguardKind::Kernel {
            self.ns(ns, &["ip", "link", "add", wg, "type", "wireguard"])?;
            return Ok(());
        }
        let log = self.dir.join(format!("{wg}.log"));
        self.spawn("wireguard-go", ns, &["wireguard-go", "-f", wg], &log)?;
        let sock = PathBuf::from(format!("/var/run/wireguard/{wg}.sock"));
        wait_for(
            &format!("wireguard-go socket {}", sock.display()),
            Duration::from_secs(10),
            || sock.exists().then_some(()),
        )?;
        Ok(())
    }

    /// The VPS's end of the tunnel: wireguard-go, its key and peer, addresses and link.
    fn configure_vps_tunnel(&mut self, home_pub: &str) -> anyhow::Result<()> {
        let (v, wv) = (self.vps.clone(), self.wg_vps.clone());
        self.start_wireguard(&v, &wv)?;
        let vkey = self.dir.join("vps.key");
        self.ns(
            &v,
            &[
                "wg",
                "set",
                &wv,
                "private-key",
                vkey.to_str().context("path")?,
                "listen-port",
                &WG_PORT.to_string(),
                "peer",
                home_pub,
                "allowed-ips",
                &format!("{HOME_WG_V4}/32,{HOME_WG_V6}/128"),
            ],
        )?;
        self.tunnel_addresses(&v, &wv, VPS_WG_V4, VPS_WG_V6)
    }

    fn tunnel_addresses(&self, ns: &str, wg: &str, a4: &str, a6: &str) -> anyhow::Result<()> {
        self.ns(ns, &["ip", "addr", "add", &format!("{a4}/24"), "dev", wg])?;
        self.ns(
            ns,
            &["ip", "addr", "add", &format!("{a6}/64"), "dev", wg, "nodad"],
        )?;
        self.ns(ns, &["ip", "link", "set", wg, "mtu", "1420", "up"])?;
        Ok(())
    }

    /// Takes the VPS's tunnel interface down and creates it again with the same
    /// configuration, as `systemctl restart wg-quick@...` does: a new interface of the same
    /// name (wireguard-go is stopped and started; a kernel interface deleted and added).
    /// Returns the old and new ifindex.
    pub fn restart_vps_tunnel(&mut self) -> anyhow::Result<(u32, u32)> {
        let (v, wv) = (self.vps.clone(), self.wg_vps.clone());
        let ifindex = |lab: &Lab| -> Option<u32> {
            let out = lab
                .exec(&v, &["cat", &format!("/sys/class/net/{wv}/ifindex")])
                .ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        let old = ifindex(self).context("the VPS tunnel interface is missing")?;
        if wireguard_kind() == WireguardKind::Kernel {
            self.ns(&v, &["ip", "link", "del", &wv])?;
        } else {
            self.stop_vps_wireguard_go()?;
        }
        wait_for(
            "the tunnel interface to go",
            Duration::from_secs(10),
            || ifindex(self).is_none().then_some(()),
        )?;
        let home_pub = fs::read_to_string(self.dir.join("home.pub"))?;
        self.configure_vps_tunnel(home_pub.trim())?;
        let new = ifindex(self).context("the tunnel interface did not come back")?;
        Ok((old, new))
    }

    fn stop_vps_wireguard_go(&mut self) -> anyhow::Result<()> {
        use nix::{
            sys::signal::{Signal, kill},
            unistd::Pid,
        };
        let v = self.vps.clone();
        let at = self
            .children
            .iter()
            .position(|(w, c)| {
                w == "wireguard-go"
                    && Command::new("ip")
                        .args(["netns", "identify", &c.id().to_string()])
                        .output()
                        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == v)
            })
            .context("no wireguard-go in the VPS namespace")?;
        let (_, mut child) = self.children.remove(at);
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let _ = child.wait();
        Ok(())
    }

    pub(super) fn wireguard(&mut self) -> anyhow::Result<()> {
        let key = |name: &str| -> anyhow::Result<String> {
            let out = run(Command::new("wg").arg("genkey"))?;
            let private = String::from_utf8(out.stdout)?.trim().to_owned();
            fs::write(self.dir.join(format!("{name}.key")), format!("{private}\n"))?;
            let mut child = Command::new("wg")
                .arg("pubkey")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            use std::io::Write as _;
            child
                .stdin
                .take()
                .context("wg pubkey stdin")?
                .write_all(private.as_bytes())?;
            let out = child.wait_with_output()?;
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        };
        let vps_pub = key("vps")?;
        let home_pub = key("home")?;
        let (h, wh) = (self.home.clone(), self.wg_home.clone());
        self.start_wireguard(&h, &wh)?;
        self.configure_vps_tunnel(&home_pub)?;
        let hkey = self.dir.join("home.key");
        self.ns(
            &h,
            &[
                "wg",
                "set",
                &wh,
                "private-key",
                hkey.to_str().context("path")?,
                "peer",
                &vps_pub,
                "endpoint",
                &format!("{UNDERLAY_VPS}:{WG_PORT}"),
                "allowed-ips",
                "0.0.0.0/0,::/0",
                "persistent-keepalive",
                "5",
            ],
        )?;
        self.tunnel_addresses(&h, &wh, HOME_WG_V4, HOME_WG_V6)?;
        fs::write(self.dir.join("home.pub"), &home_pub)?;
        wait_for("the WireGuard handshake", Duration::from_secs(20), || {
            self.exec(&h, &["ping", "-c1", "-W1", VPS_WG_V4])
                .ok()
                .filter(|o| o.status.success())
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Bytes received by the VPS's WireGuard interface from home, and sent to it.
    pub fn tunnel_transfer(&self) -> anyhow::Result<(u64, u64)> {
        let out = self.ns(&self.vps, &["wg", "show", &self.wg_vps, "transfer"])?;
        let text = String::from_utf8(out.stdout)?;
        let mut it = text.split_whitespace().skip(1);
        let rx = it.next().context("wg transfer rx")?.parse()?;
        let tx = it.next().context("wg transfer tx")?.parse()?;
        Ok((rx, tx))
    }
}

//! The test lab: `client`, `vps` and `home` network namespaces, a real WireGuard tunnel
//! between VPS and home (the kernel's module where the kernel has it, as on a VPS;
//! wireguard-go over TUN otherwise, see [`wireguard_kind`]), nginx at home serving several
//! subdomains over HTTP and HTTPS, and the forwarder on the VPS.
//!
//! ```text
//!  client ns                 vps ns                                   home ns
//!  eth0 203.0.113.2 ---veth--- eth0 203.0.113.1  (XDP + tc: forwarder)
//!       2001:db8:1::2             2001:db8:1::1
//!                              up0 198.51.100.1 ---veth--- eth0 198.51.100.2 (underlay)
//!                              wgv 10.8.0.1   ==WireGuard==  wgh 10.8.0.2, fd00::2
//!                                  fd00::1                   nginx, UDP echo
//! ```
//!
//! Every name is unique per lab (namespaces, WireGuard interfaces, whose UAPI sockets are
//! global), and everything is torn down on drop, also when a test panics. Only addresses
//! inside these namespaces are ever used.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

#[cfg(feature = "bpf")]
pub mod bench;
#[cfg(feature = "bpf")]
pub mod bpf;
pub mod compare;
pub mod flood;
#[cfg(feature = "bpf")]
pub mod profile;
pub mod quic_peer;
pub mod soak;

pub const CLIENT_V4: &str = "203.0.113.2";
pub const VPS_V4: &str = "203.0.113.1";
pub const CLIENT_V6: &str = "2001:db8:1::2";
pub const VPS_V6: &str = "2001:db8:1::1";
pub const HOME_WG_V4: &str = "10.8.0.2";
pub const VPS_WG_V4: &str = "10.8.0.1";
pub const HOME_WG_V6: &str = "fd00::2";
pub const VPS_WG_V6: &str = "fd00::1";
pub const UNDERLAY_VPS: &str = "198.51.100.1";
pub const UNDERLAY_HOME: &str = "198.51.100.2";
pub const WG_PORT: u16 = 51820;
/// The UDP echo service at home, forwarded by a UDP rule.
pub const UDP_ECHO_PORT: u16 = 7777;
/// A VPS-local TCP service standing in for SSH (not forwarded).
pub const VPS_LOCAL_PORT: u16 = 22;
/// Subdomains nginx serves at home.
pub const SUBDOMAINS: [&str; 3] = [
    "app.example.test",
    "blog.example.test",
    "media.example.test",
];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `cmd`, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// Polls `f` until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

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

/// Which checks a machine can run the lab at all; a missing piece is reported, not faked.
pub fn missing_prerequisites() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("the lab needs root (network namespaces, BPF)".into());
    }
    if wireguard_kind() == WireguardKind::Go && which("wireguard-go").is_none() {
        return Some(
            "the kernel has no WireGuard and wireguard-go is not installed (run `cargo xtask setup`)"
                .into(),
        );
    }
    for tool in ["ip", "wg", "nginx", "curl", "openssl", "socat", "ethtool"] {
        if which(tool).is_none() {
            return Some(format!("{tool} is not installed (run `cargo xtask setup`)"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing (no TUN support)".into());
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Path of the forwarder binary under test: `FORWARDER_BIN`, or the workspace's debug build.
pub fn forwarder_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FORWARDER_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("debug").join("forwarder")
}

/// A lab whose forwarder counts the three subdomains as hosts; panics with the reason when
/// the machine cannot build one.
pub fn lab_with_subdomain_hosts() -> Lab {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    Lab::new(&LabOptions {
        extra_config: subdomain_hosts(),
        ..LabOptions::default()
    })
    .expect("building the lab")
}

/// `[[host]]` sections for the lab's three subdomains.
pub fn subdomain_hosts() -> String {
    SUBDOMAINS
        .iter()
        .map(|h| format!("[[host]]\nname = \"{h}\"\n"))
        .collect()
}

#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    /// Extra TOML appended to the forwarder's config file (e.g. `[[rule]]` sections).
    pub extra_config: String,
    /// Extra arguments for `forwarder run`.
    pub forwarder_args: Vec<String>,
    /// Size of the file nginx serves at `/big` (0: none).
    pub big_file_bytes: usize,
    /// Start the UDP echo service at home.
    pub udp_echo: bool,
    /// Two network interfaces of this machine wired to each other (two NICs of a VM on
    /// one emulated hub) to use as the client <-> VPS link instead of a veth pair: the
    /// first becomes the client's `eth0`, the second the VPS's. They go back to the
    /// machine, with their names, when the lab is dropped.
    pub public_nics: Option<(String, String)>,
    /// Where home's web server runs, and so which `forwarder home-config --proxy` recipe
    /// home applies.
    pub home_proxy: HomeProxy,
    /// Home's routing for client IP preservation: `forwarder home-config`'s PostUp lines
    /// (the default), or these shell lines instead (the broken recipes of the doctor's
    /// and the recipe tests).
    pub home_recipe: Option<Vec<String>>,
    /// Apply the recipe `home-config` prints for this shape rather than for `home_proxy`
    /// (a recipe for the wrong shape, as users apply it).
    pub recipe_for: Option<HomeProxy>,
}

/// The home recipe of earlier releases: the right rule, at a priority (51820) after
/// `from all lookup main` (32766), where a home with a default route never reaches it.
pub fn rule_after_main_recipe() -> Vec<String> {
    vec![
        "ip -4 route replace 0.0.0.0/0 dev %i table 51820".to_owned(),
        format!("ip -4 rule add from {HOME_WG_V4} lookup 51820 priority 51820"),
    ]
}

/// A lab with the forwarder running, or a panic that says why not (CI must be able to).
pub fn lab_with_forwarder(opts: &LabOptions) -> Lab {
    if let Some(why) = missing_prerequisites() {
        panic!("cannot build the lab: {why}");
    }
    let mut lab = Lab::new(opts).expect("building the lab");
    lab.start_forwarder(&[]).expect("starting the forwarder");
    lab
}

/// Where home's web server (nginx) runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HomeProxy {
    /// On the machine that ends the tunnel, listening on the tunnel addresses.
    #[default]
    OnTunnelMachine,
    /// In a container of that machine (a namespace of its own behind a bridge-like veth),
    /// its ports published the way Docker does it: DNAT of local addresses' 80 and 443 (and
    /// UDP 443, as `-p 443:443/udp` publishes it) to
    /// the container, masquerade of the container subnet going out elsewhere. IPv4 only,
    /// as Docker's default.
    Docker,
    /// On another machine of the home LAN (`lan` namespace, `LAN_PROXY_*`), the tunnel's
    /// machine on the same LAN (`LAN_WG_*`); both have default routes toward a home router
    /// that never answers.
    Lan,
}

/// The LAN shape's addresses: the WireGuard machine's, the proxy machine's, the router's.
pub const LAN_WG_V4: &str = "192.168.1.5";
pub const LAN_WG_V6: &str = "fd10::5";
pub const LAN_PROXY_V4: &str = "192.168.1.20";
pub const LAN_PROXY_V6: &str = "fd10::20";
pub const LAN_ROUTER_V4: &str = "192.168.1.1";
pub const LAN_ROUTER_V6: &str = "fd10::1";

/// What `forwarder home-config` printed for a lab: the WireGuard machine's PostUp and
/// PreDown lines, and the proxy machine's script (LAN shape).
#[derive(Clone, Debug)]
pub struct HomeRecipe {
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub proxy_script: Option<String>,
}

/// The container's address and its gateway at home (Docker's default bridge network).
pub const CONTAINER_V4: &str = "172.17.0.2";
pub const CONTAINER_GW_V4: &str = "172.17.0.1";
/// Home's own uplink toward its "ISP router", which never answers: a reply that takes
/// home's default route is lost, as on a real home machine whose router has no route back
/// to a client it never saw.
pub const HOME_ISP_V4: &str = "192.0.2.2";
pub const HOME_ISP_GW_V4: &str = "192.0.2.1";
pub const HOME_ISP_V6: &str = "2001:db8:ff::2";
pub const HOME_ISP_GW_V6: &str = "2001:db8:ff::1";

pub struct Lab {
    pub id: String,
    pub client: String,
    pub vps: String,
    pub home: String,
    pub wg_vps: String,
    pub wg_home: String,
    /// The namespace home's web server runs in: `home`, or the container's.
    pub proxy: String,
    pub dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    forwarder: Option<Child>,
    pub forwarder_log: PathBuf,
    /// NICs lent by the machine: the namespace each is in, and its own name.
    nics: Vec<(String, String)>,
}

impl Lab {
    /// Brings up namespaces, the tunnel and the home services. The forwarder is not started.
    pub fn new(opts: &LabOptions) -> anyhow::Result<Self> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}", std::process::id() % 100_000, n);
        let dir = std::env::temp_dir().join(format!("fwd-lab-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        // nginx workers run as nobody and must read the served files.
        let _ = run(Command::new("chmod").arg("0755").arg(&dir));
        let mut lab = Lab {
            client: format!("fwd-{id}-client"),
            vps: format!("fwd-{id}-vps"),
            home: format!("fwd-{id}-home"),
            proxy: match opts.home_proxy {
                HomeProxy::OnTunnelMachine => format!("fwd-{id}-home"),
                HomeProxy::Docker => format!("fwd-{id}-ctr"),
                HomeProxy::Lan => format!("fwd-{id}-lan"),
            },
            wg_vps: format!("wgv{id}"),
            wg_home: format!("wgh{id}"),
            id,
            forwarder_log: dir.join("forwarder.log"),
            dir,
            namespaces: Vec::new(),
            children: Vec::new(),
            forwarder: None,
            nics: Vec::new(),
        };
        // A bpffs instance of the lab's own, so pins never meet the host's or another lab's.
        fs::create_dir_all(lab.bpffs())?;
        run(Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(lab.bpffs()))?;
        lab.build(opts)?;
        Ok(lab)
    }

    fn ns(&self, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args))
    }

    /// Runs a command in `ns`, returning its output whatever its exit status.
    pub fn exec(&self, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {args:?} in {ns}"))
    }

    /// PIDs of the lab's own processes started as `what` (e.g. "wireguard-go", "nginx").
    pub fn pids(&self, what: &str) -> Vec<u32> {
        self.children
            .iter()
            .filter(|(w, _)| w == what)
            .map(|(_, c)| c.id())
            .collect()
    }

    /// Starts `args` in the namespace `ns`, its output going to `log`; the lab ends it when
    /// dropped. `what` names it in errors and for [`Lab::pids`].
    pub fn spawn(&mut self, what: &str, ns: &str, args: &[&str], log: &Path) -> anyhow::Result<()> {
        let f = fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        self.children.push((what.to_owned(), child));
        Ok(())
    }

    fn build(&mut self, opts: &LabOptions) -> anyhow::Result<()> {
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
        // TCP checksum the client's kernel has left for offload.
        self.ns(&c, &["ethtool", "-K", "eth0", "tx", "off"])?;
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
        self.home_default_route()?;
        match opts.home_proxy {
            HomeProxy::OnTunnelMachine => {}
            HomeProxy::Docker => self.docker_container()?,
            HomeProxy::Lan => self.lan_machine()?,
        }

        // Docker's default networks have no IPv6: such a home serves IPv4 only.
        let backends: &[&str] = if opts.home_proxy == HomeProxy::Docker {
            &[HOME_WG_V4]
        } else {
            &[HOME_WG_V4, HOME_WG_V6]
        };
        // Written first: home's recipe is made from it too (the ports the LAN shape DNATs).
        self.write_config(backends, &opts.extra_config)?;
        self.wireguard()?;
        self.apply_home_recipe(opts)?;
        self.certificates()?;
        self.nginx(opts.big_file_bytes)?;
        if opts.udp_echo {
            let log = self.dir.join("udp-echo.log");
            let listen4 = format!("UDP4-RECVFROM:{UDP_ECHO_PORT},bind={HOME_WG_V4},fork");
            self.spawn(
                "udp echo v4",
                &h.clone(),
                &["socat", "-T", "5", &listen4, "SYSTEM:cat"],
                &log,
            )?;
            let log = self.dir.join("udp-echo6.log");
            let listen6 = format!("UDP6-RECVFROM:{UDP_ECHO_PORT},bind=[{HOME_WG_V6}],fork");
            self.spawn(
                "udp echo v6",
                &h.clone(),
                &["socat", "-T", "5", &listen6, "SYSTEM:cat"],
                &log,
            )?;
        }
        // A VPS-local service that must keep answering locally.
        let log = self.dir.join("vps-local.log");
        let listen = format!("TCP-LISTEN:{VPS_LOCAL_PORT},reuseaddr,fork");
        self.spawn(
            "vps local service",
            &v.clone(),
            &["socat", &listen, "SYSTEM:echo vps-local-service"],
            &log,
        )?;
        self.wait_listening(&v, VPS_LOCAL_PORT)?;
        Ok(())
    }

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

    fn wireguard(&mut self) -> anyhow::Result<()> {
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

    /// Home's own default route, as every real home machine has (toward its router): a
    /// link whose far end never answers ARP or neighbour discovery, so whatever takes the
    /// route is lost rather than rescued by the lab.
    fn home_default_route(&self) -> anyhow::Result<()> {
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
    fn docker_container(&mut self) -> anyhow::Result<()> {
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
    fn lan_machine(&mut self) -> anyhow::Result<()> {
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

    /// Home's routing for client IP preservation: the PostUp lines `forwarder home-config`
    /// prints for the lab's shape, run verbatim as wg-quick runs them (one shell each), and
    /// in the LAN shape the proxy machine's script, run there.
    fn apply_home_recipe(&self, opts: &LabOptions) -> anyhow::Result<()> {
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

    fn certificates(&self) -> anyhow::Result<()> {
        self_signed(&self.dir, &SUBDOMAINS)?;
        Ok(())
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn nginx(&mut self, big: usize) -> anyhow::Result<()> {
        let d = self.dir.display().to_string();
        let www = self.dir.join("www");
        fs::create_dir_all(&www)?;
        if big > 0 {
            // Deterministic, incompressible-looking content.
            let mut data = Vec::with_capacity(big);
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while data.len() < big {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(&x.to_le_bytes());
            }
            data.truncate(big);
            fs::write(www.join("big"), data)?;
        }
        let mut servers = String::new();
        for name in SUBDOMAINS {
            servers.push_str(&format!(
                r#"
    server {{
        listen 80; listen [::]:80;
        listen 443 ssl; listen [::]:443 ssl;
        server_name {name};
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        root {d}/www;
        location = / {{ return 200 "home {name} client $remote_addr\n"; }}
        location /big {{ }}
    }}"#
            ));
        }
        let conf = format!(
            r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log lab;
    log_format lab '$remote_addr $host "$request" $status $body_bytes_sent';
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    default_type text/plain;
    sendfile on;
{servers}
}}
"#
        );
        // log_format must precede its use.
        let conf = conf.replace(
            &format!("    access_log {d}/access.log lab;\n    log_format lab '$remote_addr $host \"$request\" $status $body_bytes_sent';\n"),
            &format!("    log_format lab '$remote_addr $host \"$request\" $status $body_bytes_sent';\n    access_log {d}/access.log lab;\n"),
        );
        fs::create_dir_all(self.dir.join("tmp"))?;
        fs::write(self.dir.join("nginx.conf"), conf)?;
        self.start_home_nginx()
    }

    /// Starts home's nginx (its configuration written by the lab) and waits for it.
    pub fn start_home_nginx(&mut self) -> anyhow::Result<()> {
        let h = self.proxy.clone();
        let d = self.dir.display().to_string();
        let conf_path = self.dir.join("nginx.conf").display().to_string();
        let log = self.dir.join("nginx.out");
        self.spawn(
            "nginx",
            &h,
            &["nginx", "-p", &d, "-c", &conf_path, "-g", "daemon off;"],
            &log,
        )?;
        self.wait_listening(&h, 443)
    }

    /// Stops home's nginx (SIGQUIT: its workers finish what they serve) and waits until
    /// nothing listens on 443 at home.
    pub fn stop_home_nginx(&mut self) -> anyhow::Result<()> {
        let at = self
            .children
            .iter()
            .position(|(w, _)| w == "nginx")
            .context("nginx is not running")?;
        let (_, mut child) = self.children.remove(at);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        )?;
        wait_for("nginx to exit", Duration::from_secs(10), || {
            child.try_wait().ok().flatten()
        })?;
        let home = self.proxy.clone();
        wait_for("home's port 443 to close", Duration::from_secs(10), || {
            let out = self.exec(&home, &["ss", "-ltnH", "sport = :443"]).ok()?;
            out.stdout.is_empty().then_some(())
        })
    }

    fn wait_listening(&self, ns: &str, port: u16) -> anyhow::Result<()> {
        let pat = format!(":{port} ");
        wait_for(
            &format!("a listener on port {port} in {ns}"),
            Duration::from_secs(10),
            || {
                let out = self.exec(ns, &["ss", "-Hltn"]).ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains(&pat)
                    .then_some(())
            },
        )
    }

    fn write_config(&self, backends: &[&str], extra: &str) -> anyhow::Result<()> {
        let list = backends
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let conf = format!(
            "public_iface = \"eth0\"\ntunnel_iface = \"{}\"\nbackends = [{list}]\n{extra}",
            self.wg_vps
        );
        fs::write(self.config_path(), conf)?;
        Ok(())
    }

    /// `path` of the daemon's HTTP endpoint at the default `--metrics-addr`, fetched
    /// inside the VPS namespace; `None` while it does not answer.
    fn daemon_get(&self, path: &str) -> Option<Vec<u8>> {
        let url = format!("http://127.0.0.1:9724{path}");
        let out = self
            .exec(&self.vps, &["curl", "-sS", "--max-time", "2", &url])
            .ok()?;
        out.status.success().then_some(out.stdout)
    }

    /// The daemon's metrics page.
    pub fn metrics_page(&self) -> Option<String> {
        self.daemon_get("/metrics")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The daemon's statistics document (`/stats.json`).
    pub fn stats_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.daemon_get("/stats.json")?).ok()
    }

    /// Starts `quic-peer server` (the binary at `peer`) at home on UDP 443 with the lab's
    /// certificate, and waits until it listens. Returns its log, where it writes a JSON
    /// line per connection.
    pub fn start_quic_server(&mut self, peer: &Path) -> anyhow::Result<PathBuf> {
        let log = self.dir.join("quic-server.log");
        let (peer, cert, key) = (
            peer.display().to_string(),
            self.cert().display().to_string(),
            self.dir.join("key.pem").display().to_string(),
        );
        let home = self.proxy.clone();
        self.spawn(
            "quic server",
            &home,
            &[
                &peer,
                "server",
                "--listen",
                "0.0.0.0:443",
                "--cert",
                &cert,
                "--key",
                &key,
            ],
            &log,
        )?;
        wait_for("the QUIC server", Duration::from_secs(10), || {
            fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("listening"))
                .then_some(())
        })?;
        Ok(log)
    }

    /// Runs `quic-peer client` in the client namespace: `count` connections to `host` at
    /// the VPS's IPv4 address, UDP 443, each asking for `bytes`; `big_hello` pads the
    /// ClientHello past one Initial. Its output has a JSON line per connection.
    ///
    /// The client sends its datagrams one by one (`--no-gso`), as they arrive from a wire:
    /// with UDP GSO a veth hands the VPS several datagrams in one buffer, which on 6.1
    /// never reaches the XDP program (the client's first flight of two Initials vanished
    /// there, and the retransmission went through).
    pub fn quic_client(
        &self,
        peer: &Path,
        host: &str,
        bytes: u64,
        count: u32,
        big_hello: bool,
    ) -> anyhow::Result<Output> {
        let (peer, cert) = (
            peer.display().to_string(),
            self.cert().display().to_string(),
        );
        let (connect, bytes, count) = (
            format!("{VPS_V4}:443"),
            bytes.to_string(),
            count.to_string(),
        );
        let mut args = vec![
            peer.as_str(),
            "client",
            "--connect",
            &connect,
            "--name",
            host,
            "--ca",
            &cert,
            "--bytes",
            &bytes,
            "--count",
            &count,
            "--no-gso",
        ];
        if big_hello {
            args.push("--big-hello");
        }
        self.exec(&self.client, &args)
    }

    /// Where the flood generator (`flood.rs`) sends from and to: the client's side of the
    /// link to the VPS's public IPv4 address, SYNs to port 443.
    pub fn flood_target(&self) -> anyhow::Result<flood::Target> {
        let mac = |ns: &str| -> anyhow::Result<[u8; 6]> {
            let out = self.exec(ns, &["cat", "/sys/class/net/eth0/address"])?;
            flood::parse_mac(&String::from_utf8_lossy(&out.stdout))
        };
        Ok(flood::Target {
            ns: self.client.clone(),
            iface: "eth0".into(),
            src_mac: mac(&self.client)?,
            dst_mac: mac(&self.vps)?,
            target: VPS_V4.parse()?,
            syn_port: 443,
        })
    }

    /// `forwarder_backend_up` of home's IPv4 backend on `port`, from the metrics page.
    pub fn backend_up(&self, port: u16) -> Option<f64> {
        let page = self.metrics_page()?;
        let want = format!("forwarder_backend_up{{backend=\"{HOME_WG_V4}:{port}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The daemon's control socket in this lab.
    /// The lab's bpffs mount.
    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    /// Where the forwarder pins its data path (`--pin-dir`).
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs().join("forwarder")
    }

    pub fn control_path(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("forwarder.toml")
    }

    /// Starts `forwarder run` in the VPS namespace and waits until it is attached.
    pub fn start_forwarder(&mut self, extra_args: &[&str]) -> anyhow::Result<()> {
        self.start_forwarder_under(&[], extra_args)
    }

    /// Starts the forwarder behind `wrapper` (e.g. `setpriv` with a capability set), run
    /// inside the VPS namespace.
    pub fn start_forwarder_under(
        &mut self,
        wrapper: &[&str],
        extra_args: &[&str],
    ) -> anyhow::Result<()> {
        let bin = forwarder_bin();
        if !bin.is_file() {
            bail!(
                "forwarder binary {} not found: build it first (cargo xtask test does)",
                bin.display()
            );
        }
        let pid_file = self.dir.join("forwarder.pid");
        let _ = fs::remove_file(&pid_file);
        let log = fs::File::create(&self.forwarder_log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.vps])
            .args(wrapper)
            .arg(&bin)
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--control")
            .arg(self.control_path())
            .args(if extra_args.contains(&"--no-pin") {
                Vec::new()
            } else {
                vec!["--pin-dir".into(), self.pin_dir().into_os_string()]
            })
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn().context("starting the forwarder")?;
        let ready = wait_for("the forwarder to attach", Duration::from_secs(30), || {
            if pid_file.exists() {
                return Some(Ok(()));
            }
            match child.try_wait() {
                Ok(Some(status)) => Some(Err(status)),
                _ => None,
            }
        });
        match ready {
            Ok(Ok(())) => {
                self.forwarder = Some(child);
                Ok(())
            }
            Ok(Err(status)) => bail!(
                "forwarder exited with {status}:\n{}",
                self.forwarder_output()
            ),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.context(self.forwarder_output()))
            }
        }
    }

    pub fn forwarder_output(&self) -> String {
        fs::read_to_string(&self.forwarder_log).unwrap_or_default()
    }

    /// Stops the forwarder with SIGTERM and returns its output (which ends with its counters).
    pub fn stop_forwarder(&mut self) -> anyhow::Result<String> {
        let Some(mut child) = self.forwarder.take() else {
            bail!("forwarder not running");
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        // `ip netns exec` execs the binary, so this PID is the forwarder itself.
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let status = wait_for("the forwarder to exit", Duration::from_secs(15), || {
            child.try_wait().ok().flatten()
        })?;
        let out = self.forwarder_output();
        if !status.success() {
            bail!("forwarder exited with {status}:\n{out}");
        }
        Ok(out)
    }

    /// Parses the counter table the forwarder prints when it stops.
    pub fn counters(output: &str) -> std::collections::HashMap<String, u64> {
        output
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (name, v) = (it.next()?, it.next()?);
                if it.next().is_some() {
                    return None;
                }
                Some((name.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    /// curl from the client namespace to `scheme://host/path`, with `host` resolved to
    /// `addr` (so the right SNI and Host header are sent); returns (HTTP status, body).
    pub fn curl(
        &self,
        scheme: &str,
        host: &str,
        path: &str,
        addr: &str,
        extra: &[&str],
    ) -> anyhow::Result<(u16, String)> {
        let port = if scheme == "https" { 443 } else { 80 };
        let addr = if addr.contains(':') {
            format!("[{addr}]")
        } else {
            addr.to_owned()
        };
        let resolve = format!("{host}:{port}:{addr}");
        let url = format!("{scheme}://{host}{path}");
        let cert = self.cert().display().to_string();
        let mut args = vec![
            "curl",
            "-sS",
            "--max-time",
            "30",
            "--resolve",
            &resolve,
            "--cacert",
            &cert,
            "-w",
            "\n%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = self.exec(&self.client, &args)?;
        if !out.status.success() {
            bail!(
                "curl {url} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text
            .rsplit_once('\n')
            .context("curl output without status")?;
        Ok((code.trim().parse()?, body.to_owned()))
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
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

    /// A file of the lab directory, read fully.
    pub fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let mut v = Vec::new();
        fs::File::open(self.dir.join(name))?.read_to_end(&mut v)?;
        Ok(v)
    }

    /// Ends the forwarder with SIGKILL, as a crash would: nothing of its shutdown runs.
    /// The running daemon's PID (`ip netns exec` execs into it, so it is the child's).
    pub fn forwarder_pid(&self) -> Option<u32> {
        self.forwarder.as_ref().map(Child::id)
    }

    pub fn kill_forwarder(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.forwarder.take() else {
            bail!("forwarder not running");
        };
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Runs a `forwarder` subcommand in the VPS namespace (e.g. `["stop", "--detach"]`),
    /// with the lab's control socket and pin directory.
    pub fn forwarder_cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        let bin = forwarder_bin();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.vps]).arg(&bin).args(args);
        if args.first().is_some_and(|a| *a == "stop") {
            cmd.arg("--pin-dir").arg(self.pin_dir());
        }
        cmd.arg("--control")
            .arg(self.control_path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running forwarder {args:?}"))
    }

    /// Leaves the lab running, processes, namespaces and files (for `cargo xtask demo --keep`).
    pub fn keep(self) {
        // Nothing of the teardown may run: it would also remove the tunnel's control
        // sockets (wireguard-go exits), the bpffs and the lab directory with its configs.
        std::mem::forget(self);
    }
}

/// A download running in the background from the client namespace (curl), stopped by PID
/// when dropped, however the test ends.
pub struct Download {
    child: Option<Child>,
    out: PathBuf,
}

impl Download {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        fs::metadata(&self.out).map(|m| m.len()).unwrap_or(0)
    }

    /// Waits until more than `bytes` have arrived.
    pub fn wait_past(&self, bytes: u64, timeout: Duration) -> anyhow::Result<()> {
        wait_for("the download to progress", timeout, || {
            (self.received() > bytes).then_some(())
        })
    }

    /// Waits for curl to finish (within 60 s) and checks it got home's `/big` byte for
    /// byte: the whole file, nothing changed.
    pub fn finish_intact(self, lab: &Lab) -> anyhow::Result<()> {
        let got = self.finish(Duration::from_secs(60))?;
        let want = lab.read("www/big")?;
        ensure!(
            got.len() == want.len(),
            "download truncated: {} of {} bytes",
            got.len(),
            want.len()
        );
        ensure!(got == want, "downloaded bytes differ from the file at home");
        Ok(())
    }

    /// Waits for curl to finish and returns what it downloaded; an error if it failed.
    pub fn finish(mut self, timeout: Duration) -> anyhow::Result<Vec<u8>> {
        let mut child = self.child.take().context("download not running")?;
        let status = wait_for("the download to finish", timeout, || {
            child.try_wait().ok().flatten()
        })?;
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        if !status.success() {
            bail!("curl: {status} {stderr}");
        }
        Ok(fs::read(&self.out)?)
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Lab {
    /// Starts downloading `https://host/big` through the forwarder at `rate` (curl's
    /// `--limit-rate`, e.g. `2M`) and waits until its first MiB has arrived.
    pub fn start_download(&self, host: &str, rate: &str) -> anyhow::Result<Download> {
        let out = self.dir.join(format!("download-{host}"));
        let _ = fs::remove_file(&out);
        let resolve = format!("{host}:443:{VPS_V4}");
        let url = format!("https://{host}/big");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client,
                "curl",
                "-sS",
                "--max-time",
                "60",
            ])
            .args(["--limit-rate", rate, "--resolve", &resolve, "--cacert"])
            .arg(self.cert())
            .arg("-o")
            .arg(&out)
            .arg(&url)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the download")?;
        let d = Download {
            child: Some(child),
            out,
        };
        d.wait_past(1 << 20, Duration::from_secs(10))?;
        Ok(d)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        use nix::{
            sys::signal::{Signal, kill},
            unistd::Pid,
        };
        let mut all: Vec<Child> = self.forwarder.take().into_iter().collect();
        all.extend(self.children.drain(..).map(|(_, c)| c));
        // SIGTERM first: wireguard-go removes its interface and socket, nginx its workers.
        for c in &all {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut all {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for (ns, name) in self.nics.drain(..) {
            // Back to the machine's own namespace (that of PID 1), under its own name.
            for args in [
                vec!["link", "set", "dev", "eth0", "down"],
                vec!["link", "set", "dev", "eth0", "name", &name],
                vec!["link", "set", "dev", &name, "netns", "1"],
            ] {
                let _ = Command::new("ip")
                    .args(["-n", &ns])
                    .args(&args)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            // Whatever our children forked and left in the namespace (socat, nginx workers)
            // is ours too; deleting a namespace does not end its processes.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
        for wg in [&self.wg_vps, &self.wg_home] {
            let _ = fs::remove_file(format!("/var/run/wireguard/{wg}.sock"));
        }
        // Unmounting the lab's bpffs unpins whatever the forwarder left there.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.bpffs())
            .stderr(Stdio::null())
            .status();
        if std::env::var_os("FWD_LAB_KEEP_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// CPU seconds (user + system, all threads) that process `pid` and its direct children
/// have used so far; 0 for a process that is gone.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    // Fields after the command (which may contain spaces): state is field 3, ppid 4,
    // utime 14, stime 15.
    let read = |p: &str| -> Option<(u32, u64)> {
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let t = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some((ppid, t))
    };
    let mut ticks = read(&pid.to_string()).map_or(0, |(_, t)| t);
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(n) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Some((ppid, t)) = read(n)
                && ppid == pid
            {
                ticks += t;
            }
        }
    }
    ticks as f64 / hz
}

/// What [`Lab::local_web_server`] answers: `local <Host>`, or [`LOCAL_PAGE_BYTES`] bytes of
/// `x` for `/big`.
const LOCAL_PAGE: &str = r#"cr=$(printf '\r')
host=none
path=/
while IFS= read -r l; do
  l=${l%"$cr"}
  [ -z "$l" ] && break
  case "$l" in
    [Hh]ost:*) host=${l#*: } ;;
    "GET "*) path=${l#GET }; path=${path%% *} ;;
  esac
done
if [ "$path" = /big ]; then
  printf 'HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\nConnection: close\r\n\r\n'
  head -c 4000000 /dev/zero | tr '\0' x
  exit
fi
body="local $host"
printf 'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n' $((${#body} + 1)) "$body"
"#;
pub const LOCAL_PAGE_BYTES: usize = 4_000_000;

/// The VPS's own web server's processes, stopped by PID when dropped.
pub struct LocalWebServer(Vec<Child>);

impl Drop for LocalWebServer {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Lab {
    /// Starts a web server on the VPS itself, as a user runs one there for host policy
    /// `local`: plain HTTP on port 80 and TLS (the lab's certificate) on 443, IPv4 and
    /// IPv6, on the public addresses.
    pub fn local_web_server(&self) -> anyhow::Result<LocalWebServer> {
        let script = self.dir.join("local-page.sh");
        fs::write(&script, LOCAL_PAGE)?;
        let cert = self.cert().display().to_string();
        let key = self.dir.join("key.pem").display().to_string();
        let serve = format!("SYSTEM:sh {}", script.display());
        let tls = format!("fork,reuseaddr,cert={cert},key={key},verify=0");
        let mut server = LocalWebServer(Vec::new());
        for listen in [
            format!("TCP-LISTEN:80,bind={VPS_V4},fork,reuseaddr"),
            format!("TCP6-LISTEN:80,bind=[{VPS_V6}],fork,reuseaddr"),
            format!("OPENSSL-LISTEN:443,bind={VPS_V4},{tls}"),
            format!("OPENSSL-LISTEN:443,pf=ip6,bind=[{VPS_V6}],{tls}"),
        ] {
            server.0.push(
                Command::new("ip")
                    .args(["netns", "exec", &self.vps, "socat", &listen, &serve])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting socat")?,
            );
        }
        // Listening once a plain connection from inside the VPS gets an answer.
        wait_for("the local web server", Duration::from_secs(10), || {
            let out = self
                .exec(
                    &self.vps,
                    &[
                        "curl",
                        "-sS",
                        "--max-time",
                        "1",
                        &format!("http://{VPS_V4}/"),
                    ],
                )
                .ok()?;
            out.status.success().then_some(())
        })?;
        Ok(server)
    }
}

/// The client namespace's IPv4 counters: every IPv4 packet the client's kernel sent or
/// received, and their bytes (IP total length, as the forwarder counts them).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IpCounters {
    pub out_pkts: u64,
    pub out_bytes: u64,
    pub in_pkts: u64,
    pub in_bytes: u64,
}

/// The client namespace's kernel counters (`/proc/net/snmp`, `/proc/net/netstat`) by
/// `Group.Name`, e.g. `Tcp.RetransSegs`.
pub fn client_snmp(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    let out = lab
        .exec(&lab.client, &["cat", "/proc/net/snmp", "/proc/net/netstat"])
        .expect("reading the client's kernel counters");
    let text = String::from_utf8_lossy(&out.stdout);
    // Each group is a line of names followed by a line of values, both "Group: ...".
    let mut values = std::collections::BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, nums] = pair else { continue };
        let (group, names) = names.split_once(": ").unwrap_or_default();
        let nums = nums.split_once(": ").unwrap_or_default().1;
        for (n, v) in names.split_whitespace().zip(nums.split_whitespace()) {
            values.insert(format!("{group}.{n}"), v.parse::<u64>().unwrap_or(0));
        }
    }
    values
}

impl IpCounters {
    pub fn read(lab: &Lab) -> Self {
        let values = client_snmp(lab);
        let get = |k: &str| {
            *values
                .get(k)
                .unwrap_or_else(|| panic!("no {k} in {values:?}"))
        };
        IpCounters {
            out_pkts: get("Ip.OutRequests"),
            out_bytes: get("IpExt.OutOctets"),
            in_pkts: get("Ip.InReceives"),
            in_bytes: get("IpExt.InOctets"),
        }
    }

    pub fn since(self, before: Self) -> Self {
        IpCounters {
            out_pkts: self.out_pkts - before.out_pkts,
            out_bytes: self.out_bytes - before.out_bytes,
            in_pkts: self.in_pkts - before.in_pkts,
            in_bytes: self.in_bytes - before.in_bytes,
        }
    }

    pub fn add(&mut self, o: Self) {
        self.out_pkts += o.out_pkts;
        self.out_bytes += o.out_bytes;
        self.in_pkts += o.in_pkts;
        self.in_bytes += o.in_bytes;
    }
}

/// A self-signed certificate (ECDSA P-256, 2 days) for `names`, and its key: `cert.pem`
/// and `key.pem` in `dir` (openssl).
pub fn self_signed(dir: &Path, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let san = format!(
        "subjectAltName={}",
        names
            .iter()
            .map(|s| format!("DNS:{s}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={}", names.first().copied().unwrap_or("example.test")),
            "-addext",
            &san,
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert))?;
    Ok((cert, key))
}

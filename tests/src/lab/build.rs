//! Bringing a lab up: a unique name, its bpffs, and every part in order (links, home's
//! shape, configuration, tunnel, home routing, certificates, servers).

use std::{
    fs,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use super::{
    addresses::{HOME_WG_V4, HOME_WG_V6, UDP_ECHO_PORT, VPS_LOCAL_PORT},
    instance::Lab,
    options::{HomeProxy, LabOptions},
};
use crate::support::run;

static SEQ: AtomicU32 = AtomicU32::new(0);

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

    fn build(&mut self, opts: &LabOptions) -> anyhow::Result<()> {
        self.links(opts)?;
        let (v, h) = (self.vps.clone(), self.home.clone());
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
}

//! The `Lab` value: its names and directory, the processes it owns, commands run in its
//! namespaces, and the paths of its files.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::support::{run, wait_for};

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
    pub(super) namespaces: Vec<String>,
    pub(super) children: Vec<(String, Child)>,
    pub(super) forwarder: Option<Child>,
    pub forwarder_log: PathBuf,
    /// NICs lent by the machine: the namespace each is in, and its own name.
    pub(super) nics: Vec<(String, String)>,
}

impl Lab {
    pub(super) fn ns(&self, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
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

    pub(super) fn wait_listening(&self, ns: &str, port: u16) -> anyhow::Result<()> {
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

    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The lab's bpffs mount.
    pub fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    /// Where the forwarder pins its data path (`--pin-dir`).
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs().join("forwarder")
    }

    /// The daemon's control socket in this lab.
    pub fn control_path(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("forwarder.toml")
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// A file of the lab directory, read fully.
    pub fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let mut v = Vec::new();
        fs::File::open(self.dir.join(name))?.read_to_end(&mut v)?;
        Ok(v)
    }

    /// Leaves the lab running, processes, namespaces and files (for `cargo xtask demo --keep`).
    pub fn keep(self) {
        // Nothing of the teardown may run: it would also remove the tunnel's control
        // sockets (wireguard-go exits), the bpffs and the lab directory with its configs.
        std::mem::forget(self);
    }
}

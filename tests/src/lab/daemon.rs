//! The forwarder under test, in the VPS namespace: its binary, configuration, start, stop
//! and crash, its CLI, and its HTTP endpoint (metrics, statistics).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{addresses::HOME_WG_V4, instance::Lab};
use crate::support::wait_for;

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

impl Lab {
    pub(super) fn write_config(&self, backends: &[&str], extra: &str) -> anyhow::Result<()> {
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

    /// `forwarder_backend_up` of home's IPv4 backend on `port`, from the metrics page.
    pub fn backend_up(&self, port: u16) -> Option<f64> {
        let page = self.metrics_page()?;
        let want = format!("forwarder_backend_up{{backend=\"{HOME_WG_V4}:{port}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
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

    /// The running daemon's PID (`ip netns exec` execs into it, so it is the child's).
    pub fn forwarder_pid(&self) -> Option<u32> {
        self.forwarder.as_ref().map(Child::id)
    }

    /// Ends the forwarder with SIGKILL, as a crash would: nothing of its shutdown runs.
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
}

//! A download running in the background while a test changes things under it.

use std::{
    fs,
    io::Read as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use super::{addresses::VPS_V4, instance::Lab};
use crate::support::wait_for;

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

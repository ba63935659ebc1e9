//! The lab's other servers: home's QUIC server and the VPS's own web server (host policy
//! `local`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use super::{
    addresses::{VPS_V4, VPS_V6},
    instance::Lab,
};
use crate::support::wait_for;

impl Lab {
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

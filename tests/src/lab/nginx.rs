//! Home's web server: the certificate for the subdomains, nginx's configuration, starting
//! and stopping it.

use std::{fs, time::Duration};

use anyhow::Context as _;

use super::{addresses::SUBDOMAINS, instance::Lab};
use crate::support::{self_signed, wait_for};

impl Lab {
    pub(super) fn certificates(&self) -> anyhow::Result<()> {
        self_signed(&self.dir, &SUBDOMAINS)?;
        Ok(())
    }

    pub(super) fn nginx(&mut self, big: usize) -> anyhow::Result<()> {
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
}

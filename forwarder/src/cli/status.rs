//! `forwarder status`: the running daemon's state.

use std::path::Path;

use crate::{
    api::control::{self, StatusReply},
    cli::change::{ask, print_json},
};

pub fn run(control: &Path, json: bool) -> anyhow::Result<()> {
    let status = ask(control, control::Status {})?;
    if json {
        return print_json(&status);
    }
    print!("{}", render_status(&status));
    Ok(())
}

pub fn render_status(v: &StatusReply) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "forwarder {}  up {}s", v.version, v.uptime_seconds);
    let _ = writeln!(out, "attach mode   {}", v.attach_mode);
    let t = &v.tunnel;
    let hs = match t.handshake_age_seconds {
        Some(a) => format!(", last handshake {a}s ago"),
        None => String::new(),
    };
    let up = if t.up { "up" } else { "DOWN" };
    let _ = writeln!(out, "tunnel        {} {up}{hs}", t.iface);
    for b in &v.backends {
        let up = if b.up { "up" } else { "DOWN" };
        let err = match (b.up, &b.last_error) {
            (false, Some(e)) => format!(" ({e})"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "backend       {} {up} for {}s{err}",
            b.backend, b.since_seconds
        );
    }
    if v.rules_in_fallback.is_empty() {
        let _ = writeln!(out, "fallback      none active");
    } else {
        for r in &v.rules_in_fallback {
            let _ = writeln!(out, "fallback      active: {r}");
        }
    }
    let l = &v.local;
    if l.served + l.failed > 0 {
        let _ = writeln!(
            out,
            "local hosts   {} connections served by the VPS ({} now), {} failed",
            l.served, l.active, l.failed
        );
    }
    out
}

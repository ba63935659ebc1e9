//! Asking the daemon over its control socket, and printing what a change did.

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    api::control::{self, Changes, ControlRequest},
    cli::args::ControlArgs,
};

/// Sends a change and prints what it did.
pub fn change<R: ControlRequest<Reply = Changes>>(ctl: &ControlArgs, req: R) -> anyhow::Result<()> {
    let c = ask(&ctl.control, req)?;
    if ctl.json {
        return print_json(&c);
    }
    print!("{}", render_changes(&c));
    Ok(())
}

pub fn render_changes(c: &Changes) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut any = false;
    for (items, what) in [
        (&c.rules_added, "rule added:"),
        (&c.rules_removed, "rule removed:"),
        (&c.hosts_added, "host added:"),
        (&c.hosts_removed, "host removed:"),
        (&c.hosts_changed, "host changed:"),
    ] {
        for item in items {
            let _ = writeln!(out, "{what:<14} {item}");
            any = true;
        }
    }
    if c.limits_changed {
        let _ = writeln!(out, "limits changed");
        any = true;
    }
    if c.health_changed {
        let _ = writeln!(out, "health settings changed");
        any = true;
    }
    if !any {
        let _ = writeln!(out, "no change");
    }
    if let Some(p) = &c.persisted_to {
        let _ = writeln!(out, "written to {p}");
    }
    out
}

/// Sends `req` and waits for the daemon's reply.
pub fn ask<R: ControlRequest>(path: &std::path::Path, req: R) -> anyhow::Result<R::Reply> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(crate::cli::client::request(path, req))
}

/// Prints a reply as `--json` does: as the daemon wrote it, indented.
pub fn print_json(reply: &impl Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&control::encode(reply)?)?
    );
    Ok(())
}

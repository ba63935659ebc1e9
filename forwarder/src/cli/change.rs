//! Asking the daemon over its control socket, and printing what a change did.

use anyhow::Context as _;

use crate::{api::control, cli::args::ControlArgs};

/// Sends a change and prints what it did.
pub fn change(ctl: &ControlArgs, req: control::Request) -> anyhow::Result<()> {
    let v = ask(&ctl.control, req)?;
    if ctl.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut any = false;
    for (key, what) in [
        ("rules_added", "rule added:"),
        ("rules_removed", "rule removed:"),
        ("hosts_added", "host added:"),
        ("hosts_removed", "host removed:"),
        ("hosts_changed", "host changed:"),
    ] {
        for item in v[key].as_array().into_iter().flatten() {
            println!("{what:<14} {}", item.as_str().unwrap_or("?"));
            any = true;
        }
    }
    if v["limits_changed"].as_bool() == Some(true) {
        println!("limits changed");
        any = true;
    }
    if v["health_changed"].as_bool() == Some(true) {
        println!("health settings changed");
        any = true;
    }
    if !any {
        println!("no change");
    }
    if let Some(p) = v["persisted_to"].as_str() {
        println!("written to {p}");
    }
    Ok(())
}

pub fn ask(path: &std::path::Path, req: control::Request) -> anyhow::Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(crate::cli::client::request(path, &req))
}

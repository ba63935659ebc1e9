//! `forwarder status`: the running daemon's state.

use std::path::Path;

use crate::{api::control::Request, cli::change::ask};

pub fn run(control: &Path, json: bool) -> anyhow::Result<()> {
    let v = ask(control, Request::Status)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render_status(&v));
    }
    Ok(())
}

pub fn render_status(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    let _ = writeln!(
        out,
        "forwarder {}  up {}s",
        s("version"),
        v["uptime_seconds"]
    );
    let _ = writeln!(out, "attach mode   {}", s("attach_mode"));
    let t = &v["tunnel"];
    let hs = match t["handshake_age_seconds"].as_u64() {
        Some(a) => format!(", last handshake {a}s ago"),
        None => String::new(),
    };
    let up = if t["up"].as_bool() == Some(true) {
        "up"
    } else {
        "DOWN"
    };
    let _ = writeln!(
        out,
        "tunnel        {} {up}{hs}",
        t["iface"].as_str().unwrap_or("?")
    );
    for b in v["backends"].as_array().into_iter().flatten() {
        let up = if b["up"].as_bool() == Some(true) {
            "up"
        } else {
            "DOWN"
        };
        let err = match (b["up"].as_bool(), b["last_error"].as_str()) {
            (Some(false), Some(e)) => format!(" ({e})"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "backend       {} {up} for {}s{err}",
            b["backend"].as_str().unwrap_or("?"),
            b["since_seconds"]
        );
    }
    let fallback: Vec<&str> = v["rules_in_fallback"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .collect();
    if fallback.is_empty() {
        let _ = writeln!(out, "fallback      none active");
    } else {
        for r in fallback {
            let _ = writeln!(out, "fallback      active: {r}");
        }
    }
    let l = &v["local"];
    if l["served"].as_u64().unwrap_or(0) + l["failed"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            out,
            "local hosts   {} connections served by the VPS ({} now), {} failed",
            l["served"], l["active"], l["failed"]
        );
    }
    out
}

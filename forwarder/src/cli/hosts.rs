//! `forwarder hosts`: the running daemon's host table and each host's policy.

use clap::Subcommand;

use crate::{
    api::control::Request,
    cli::{
        args::ControlArgs,
        change::{ask, change},
    },
};

#[derive(Subcommand)]
pub enum HostsAction {
    /// List the host table: each host's policy and id.
    List {
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Count a host (name or *.wildcard) separately, optionally with a policy.
    Add {
        /// `app.example.com` or `*.example.com`.
        name: String,
        /// forward (default) or drop (the connection is cut; the client gets a TCP RST).
        #[arg(long, default_value = "forward")]
        policy: String,
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Remove a host: its connections count as `other` again.
    Remove {
        name: String,
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Change a host's policy (affects new connections).
    Set {
        name: String,
        /// forward or drop.
        #[arg(long)]
        policy: String,
        #[command(flatten)]
        ctl: ControlArgs,
    },
}

pub fn run(action: HostsAction) -> anyhow::Result<()> {
    match action {
        HostsAction::List { ctl } => {
            let v = ask(&ctl.control, Request::Hosts)?;
            if ctl.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{:<40} {:<8} {:>5}", "host", "policy", "id");
                for h in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<40} {:<8} {:>5}",
                        h["host"].as_str().unwrap_or("?"),
                        h["policy"].as_str().unwrap_or("?"),
                        h["id"]
                    );
                }
            }
            Ok(())
        }
        HostsAction::Add { name, policy, ctl } => change(
            &ctl,
            Request::HostAdd {
                name,
                policy: Some(policy),
            },
        ),
        HostsAction::Remove { name, ctl } => change(&ctl, Request::HostRemove { name }),
        HostsAction::Set { name, policy, ctl } => change(&ctl, Request::HostSet { name, policy }),
    }
}

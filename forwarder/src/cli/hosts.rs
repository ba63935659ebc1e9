//! `forwarder hosts`: the running daemon's host table and each host's policy.

use clap::Subcommand;

use crate::{
    api::control::{self, HostEntry},
    cli::{
        args::ControlArgs,
        change::{ask, change, print_json},
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
            let hosts = ask(&ctl.control, control::Hosts {})?;
            if ctl.json {
                return print_json(&hosts);
            }
            print!("{}", render_hosts(&hosts));
            Ok(())
        }
        HostsAction::Add { name, policy, ctl } => change(
            &ctl,
            control::HostAdd {
                name,
                policy: Some(policy),
            },
        ),
        HostsAction::Remove { name, ctl } => change(&ctl, control::HostRemove { name }),
        HostsAction::Set { name, policy, ctl } => change(&ctl, control::HostSet { name, policy }),
    }
}

/// `hosts list`: a header, then one host a line.
pub fn render_hosts(hosts: &[HostEntry]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{:<40} {:<8} {:>5}\n", "host", "policy", "id");
    for h in hosts {
        // The id is not padded to its column: the table has always been printed so (the
        // id was printed as a JSON value, which ignores the width), and a host without an
        // id shows `null`.
        let id = h.id.map_or_else(|| "null".to_owned(), |id| id.to_string());
        let _ = writeln!(out, "{:<40} {:<8} {id}", h.host, h.policy);
    }
    out
}

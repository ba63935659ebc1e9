//! `forwarder rules`: list, add and remove forwarding rules of the running daemon.

use std::net::IpAddr;

use clap::Subcommand;

use crate::{
    api::control::{self, RuleEntry, RuleSpec},
    cli::{
        args::ControlArgs,
        change::{ask, change, print_json},
    },
};

#[derive(Subcommand)]
pub enum RulesAction {
    /// List the rules in force, with their fallback state.
    List {
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Forward another port (written to the config file, in force at once).
    Add {
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Public port.
        #[arg(long)]
        port: u16,
        /// Backend address (default: the configured backend of the address family).
        #[arg(long, value_name = "ADDR")]
        backend: Option<IpAddr>,
        /// Backend port (default: the public port).
        #[arg(long, value_name = "PORT")]
        backend_port: Option<u16>,
        /// Only this public address (default: every address of the public interface).
        #[arg(long, value_name = "ADDR")]
        public_addr: Option<IpAddr>,
        /// Where new connections go while the backend is down: `local` or ADDR[:PORT].
        #[arg(long, value_name = "local|ADDR[:PORT]")]
        fallback: Option<String>,
        /// What happens to connections whose host cannot be read (no TLS SNI, no HTTP
        /// Host, neither TLS nor HTTP): `forward` (default) or `drop`.
        #[arg(long, value_name = "forward|drop")]
        unknown_policy: Option<String>,
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Stop forwarding a port; its connections end, other rules' connections go on.
    Remove {
        #[arg(long, default_value = "tcp")]
        proto: String,
        #[arg(long)]
        port: u16,
        /// The public address, if the rule names one.
        #[arg(long, value_name = "ADDR")]
        public_addr: Option<IpAddr>,
        #[command(flatten)]
        ctl: ControlArgs,
    },
}

pub fn run(action: RulesAction) -> anyhow::Result<()> {
    match action {
        RulesAction::List { ctl } => {
            let rules = ask(&ctl.control, control::Rules {})?;
            if ctl.json {
                return print_json(&rules);
            }
            print!("{}", render_rules(&rules));
            Ok(())
        }
        RulesAction::Add {
            proto,
            port,
            backend,
            backend_port,
            public_addr,
            fallback,
            unknown_policy,
            ctl,
        } => change(
            &ctl,
            control::RuleAdd {
                rule: RuleSpec {
                    proto: Some(proto),
                    port,
                    backend,
                    backend_port,
                    public_addr,
                    fallback,
                    unknown_policy,
                },
            },
        ),
        RulesAction::Remove {
            proto,
            port,
            public_addr,
            ctl,
        } => change(
            &ctl,
            control::RuleRemove {
                proto,
                port,
                public_addr,
            },
        ),
    }
}

/// `rules list`: one rule a line, marked while its fallback is in force.
pub fn render_rules(rules: &[RuleEntry]) -> String {
    rules
        .iter()
        .map(|r| {
            let state = if r.in_fallback {
                "  [fallback in force]"
            } else {
                ""
            };
            format!("{}{state}\n", r.rule)
        })
        .collect()
}

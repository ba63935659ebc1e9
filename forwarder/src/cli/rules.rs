//! `forwarder rules`: list, add and remove forwarding rules of the running daemon.

use std::net::IpAddr;

use clap::Subcommand;

use crate::{
    api::control::{Request, RuleSpec},
    cli::{
        args::ControlArgs,
        change::{ask, change},
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
            let v = ask(&ctl.control, Request::Rules)?;
            if ctl.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for r in v.as_array().into_iter().flatten() {
                    let state = if r["in_fallback"].as_bool() == Some(true) {
                        "  [fallback in force]"
                    } else {
                        ""
                    };
                    println!("{}{state}", r["rule"].as_str().unwrap_or("?"));
                }
            }
            Ok(())
        }
        RulesAction::Add {
            proto,
            port,
            backend,
            backend_port,
            public_addr,
            fallback,
            ctl,
        } => change(
            &ctl,
            Request::RuleAdd {
                rule: RuleSpec {
                    proto: Some(proto),
                    port,
                    backend,
                    backend_port,
                    public_addr,
                    fallback,
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
            Request::RuleRemove {
                proto,
                port,
                public_addr,
            },
        ),
    }
}

//! `forwarder limits`: the per-client new-connection limit.

use clap::Subcommand;

use crate::{
    api::control,
    cli::{args::ControlArgs, change::change},
};

#[derive(Subcommand)]
pub enum LimitsAction {
    /// Set the per-client limit on new connections (0 turns it off).
    Set {
        /// New connections per second one client address may open.
        #[arg(long, value_name = "N")]
        new_connections_per_second: u16,
        /// How many it may open at once (default: the rate).
        #[arg(long, value_name = "N")]
        burst: Option<u16>,
        #[command(flatten)]
        ctl: ControlArgs,
    },
}

pub fn run(action: LimitsAction) -> anyhow::Result<()> {
    match action {
        LimitsAction::Set {
            new_connections_per_second,
            burst,
            ctl,
        } => change(
            &ctl,
            control::Limits {
                new_connections_per_second,
                burst,
            },
        ),
    }
}

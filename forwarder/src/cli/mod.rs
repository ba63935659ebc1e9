//! The CLI: one file per subcommand, each with its flags and what it runs; `dispatch`
//! runs the one given.

pub mod args;
pub mod change;
pub mod client;
pub mod doctor;
pub mod home_config;
pub mod hosts;
pub mod limits;
pub mod return_probe;
pub mod rules;
pub mod run;
pub mod stats;
pub mod status;
pub mod stop;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    api::control,
    cli::{
        args::{ControlArgs, Target},
        doctor::DoctorArgs,
        home_config::HomeConfigArgs,
        hosts::HostsAction,
        limits::LimitsAction,
        rules::RulesAction,
        run::RunArgs,
        stats::StatsArgs,
        stop::StopArgs,
    },
};

/// XDP/eBPF edge forwarder: steers web traffic arriving at a VPS into a WireGuard tunnel
/// toward a home server, keeping the client's IP address, without terminating TLS.
#[derive(Parser)]
#[command(version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Load and attach the data path and keep forwarding until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Stop the running daemon. The data path keeps forwarding (pinned) unless --detach
    /// is given, so that a restart or an upgrade drops no connection.
    Stop(StopArgs),
    /// Show the running daemon's state: attach mode, tunnel and backend health, rules in
    /// fallback, version (over its control socket).
    Status {
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The running daemon's forwarding rules: list, add, remove (over its control
    /// socket; changes are validated, written to the config file and in force at once).
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
    /// The host table and each host's policy: list, add, remove, set.
    Hosts {
        #[command(subcommand)]
        action: HostsAction,
    },
    /// The per-client new-connection limit.
    Limits {
        #[command(subcommand)]
        action: LimitsAction,
    },
    /// Re-read the config file and put it in force (SIGHUP does the same). A file that
    /// does not validate changes nothing.
    Reload {
        #[command(flatten)]
        ctl: ControlArgs,
    },
    /// Show per-host statistics of the running daemon (from its metrics endpoint).
    Stats(StatsArgs),
    /// Validate the configuration and print the rules it resolves to, without attaching.
    Check {
        #[command(flatten)]
        target: Target,
    },
    /// Check the running setup from the VPS (tunnel and handshake, daemon and attach mode,
    /// metrics, each backend through the tunnel, home's return path for clients' replies,
    /// MTUs) and print what is wrong with the fix. Exits 1 if any check fails.
    Doctor(DoctorArgs),
    /// Print the home-side WireGuard and routing configuration that makes replies to
    /// forwarded connections return through the tunnel (client IP preservation), as
    /// wg-quick PostUp/PreDown lines for the home machine that ends the tunnel.
    HomeConfig(HomeConfigArgs),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Stop(args) => stop::run(args),
        Command::Status { control, json } => status::run(&control, json),
        Command::Rules { action } => rules::run(action),
        Command::Hosts { action } => hosts::run(action),
        Command::Limits { action } => limits::run(action),
        Command::Reload { ctl } => change::change(&ctl, control::Reload {}),
        Command::Stats(args) => stats::command(args),
        Command::Check { target } => check(&target),
        Command::Doctor(args) => doctor::command(args),
        Command::HomeConfig(args) => home_config::run(args),
    }
}

/// `forwarder check`.
fn check(target: &Target) -> anyhow::Result<()> {
    let cfg = target.resolve()?;
    println!("configuration OK: {} rule(s)", cfg.rules.len());
    for r in &cfg.rules {
        println!("  {r}");
    }
    if !cfg.hosts.is_empty() {
        println!("{} host(s) counted separately:", cfg.hosts.len());
        for h in &cfg.hosts {
            println!("  {}", h.label);
        }
    }
    for w in cfg.unknown_policy_warnings() {
        println!("warning: {w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Command-line interface: one module per subcommand.

use clap::{Parser, Subcommand};

/// Build and run the MMS media-stack appliance on Proxmox VE.
#[derive(Debug, Parser)]
#[command(name = "mms-build", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `mms-build`.
#[derive(Debug, Subcommand)]
pub enum Command {}

impl Cli {
    /// Runs the selected subcommand.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        match self.command {}
    }
}

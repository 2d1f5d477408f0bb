//! Command-line interface: one module per subcommand.

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Build and run the MMS media-stack appliance on Proxmox VE.
#[derive(Debug, Parser)]
#[command(name = "mms-build", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `mms-build`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print shell completions for SHELL to stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// Runs the selected subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "mms-build",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}

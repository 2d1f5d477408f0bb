//! Command-line interface of `mms-firstboot`: one module per subcommand.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod status;

/// The MMS appliance's first-boot agent (runs as root in the VM).
#[derive(Debug, Parser)]
#[command(name = "mms-firstboot", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `mms-firstboot`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the status file (/var/lib/mms/firstboot.json) as a table, or as JSON.
    Status(status::StatusCmd),
    /// Print a complete example of /etc/mms/firstboot.yml (the builder writes the real one).
    ExampleConfig,
}

impl Cli {
    /// Runs the selected subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Status(c) => c.run(),
            Command::ExampleConfig => {
                print!("{}", crate::config::Config::example().to_yaml()?);
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// Logs to stderr without timestamps (`RUST_LOG` overrides the level from `-v`).
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn status_flags_parse() {
        let c = Cli::try_parse_from(["mms-firstboot", "status", "--json", "--file", "/x"]).unwrap();
        let Command::Status(s) = c.command else {
            panic!("not status")
        };
        assert!(s.json);
    }
}

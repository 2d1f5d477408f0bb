//! Command-line interface of `mms-firstboot`: one module per subcommand.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cutover;
mod migrate;
mod run;
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
    /// Run (or continue) first boot: wait-secrets, tailscale, state, start, health, done.
    Run(run::RunCmd),
    /// Print the status file (/var/lib/mms/firstboot.json) as a table, or as JSON.
    Status(status::StatusCmd),
    /// Migrate services' state from an LXC host or the previous VM (the `state` step alone).
    Migrate(migrate::MigrateCmd),
    /// After cut-over: rename the tailnet node from `<hostname>-next` to `<hostname>`.
    Cutover(cutover::CutoverCmd),
    /// Print a complete example of /etc/mms/firstboot.yml (the builder writes the real one).
    ExampleConfig,
}

impl Cli {
    /// Runs the selected subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Run(c) => c.run(),
            Command::Status(c) => c.run(),
            Command::Migrate(c) => c.run(),
            Command::Cutover(c) => c.run(),
            Command::ExampleConfig => {
                print!("{}", crate::config::Config::example().to_yaml()?);
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// Logging for the binary (journald under systemd, else stderr).
pub fn init_logging(verbose: u8) {
    crate::journal::init(verbose);
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

    #[test]
    fn migrate_flags_parse() {
        let c = Cli::try_parse_from([
            "mms-firstboot",
            "migrate",
            "--from",
            "root@old:2222",
            "--service",
            "radarr",
            "--service",
            "sonarr",
            "--dry-run",
        ])
        .unwrap();
        let Command::Migrate(m) = c.command else {
            panic!("not migrate")
        };
        assert!(m.dry_run);
        assert_eq!(m.service, ["radarr", "sonarr"]);
        assert!(Cli::try_parse_from(["mms-firstboot", "migrate", "--dry-run"]).is_ok());
    }
}

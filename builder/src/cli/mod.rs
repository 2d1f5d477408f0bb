//! Command-line interface: one module per subcommand.

mod backup;
mod check;
pub mod render;
mod schema;
mod secrets;

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Build and run the MMS media-stack appliance on Proxmox VE.
///
/// Reads the site config (mms.yml), the age-encrypted secrets beside it and the
/// services catalog; renders the appliance's cloud-init seed; and rebuilds the
/// VM on Proxmox from scratch when the site changes.
#[derive(Debug, Parser)]
#[command(name = "mms-build", version, about, long_about)]
pub struct Cli {
    /// The site config.
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "mms.yml",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// age identity (native or SSH private key) that decrypts the secrets file
    /// [default: $MMS_IDENTITY, then ~/.config/mms/identity.txt]
    #[arg(long, short = 'i', global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `mms-build`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the site config, the services catalog and the secrets.
    ///
    /// Exit status: 0 valid, 1 invalid, 2 usage error.
    Check,
    /// Manage the age-encrypted secrets file (secrets.age).
    #[command(subcommand)]
    Secrets(secrets::SecretsCmd),
    /// Render the appliance (cloud-init user-data, units, seed ISO) into a directory, offline.
    ///
    /// Writes user-data, meta-data, network-config (static address only), seed.iso,
    /// rootfs/PATH-IN-THE-VM and plan.json; prints the bundle's location and hash.
    Render(render::RenderArgs),
    /// Print a JSON Schema for mms.yml or a services file, for editors.
    Schema {
        /// Which file the schema describes.
        #[arg(value_enum, default_value = "site")]
        kind: schema::Kind,
    },
    /// Back up the appliance's services now (runs mms-backupd on the VM over SSH).
    Backup(backup::BackupArgs),
    /// Restore a service on the appliance from an archive; the identity (--identity) is
    /// streamed over SSH and never stored on the VM.
    Restore(backup::RestoreArgs),
    /// List the archives on the appliance.
    Backups(backup::BackupsArgs),
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
            Command::Check => check::run(&self.config, self.identity.as_deref()),
            Command::Secrets(cmd) => cmd.run(&self.config, self.identity.as_deref()),
            Command::Schema { kind } => schema::run(kind),
            Command::Backup(args) => backup::run_backup(&self.config, &args),
            Command::Restore(args) => {
                backup::run_restore(&self.config, self.identity.as_deref(), &args)
            }
            Command::Backups(args) => backup::run_backups(&self.config, &args),
            Command::Render(args) => render::run(&self.config, &args),
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

/// Loads the site config; on errors prints every diagnostic and a summary
/// line ending in `consequence` (e.g. "nothing rendered") and returns exit 1.
pub(crate) fn load_config(
    path: &std::path::Path,
    consequence: &str,
) -> Result<crate::config::Loaded, ExitCode> {
    crate::config::load(path).map_err(|errs| {
        for d in &errs.0 {
            eprintln!("{d}");
        }
        let n = errs.errors().count();
        eprintln!(
            "{}: {n} error{}{consequence}",
            path.display(),
            if n == 1 { "" } else { "s" }
        );
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_is_global() {
        let cli = Cli::try_parse_from(["mms-build", "check", "--config", "x.yml"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("x.yml"));
        let cli = Cli::try_parse_from(["mms-build", "-c", "y.yml", "check"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("y.yml"));
    }
}

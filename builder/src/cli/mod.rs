//! Command-line interface: one module per subcommand.

mod apply;
mod backup;
mod check;
mod destroy;
mod plan;
pub mod render;
mod rollback;
mod schema;
mod secrets;
mod status;
mod template;

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

    /// Build or rebuild the VM (same as `mms-build apply`); without it and
    /// without a subcommand, `mms-build` prints the plan and changes nothing.
    #[arg(long)]
    pub apply: bool,

    /// Machine-readable output (plan, status).
    #[arg(long, global = true)]
    pub json: bool,

    /// Do not verify the Proxmox TLS certificate. Loud; for first setup only.
    #[arg(long, global = true)]
    pub insecure: bool,

    #[command(flatten)]
    pub apply_args: apply::ApplyArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
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
    /// List the archives on the appliance (with --json: as JSON).
    Backups,
    /// Build or rebuild the VM on Proxmox (blue/green; resumes what exists).
    Apply(apply::ApplyArgs),
    /// Print what `--apply` would do (reads Proxmox, changes nothing).
    Plan(apply::ApplyArgs),
    /// Show the VMs MMS manages, their bundle and firstboot state.
    Status,
    /// Start the retired VM again and retire the serving one.
    Rollback,
    /// Delete every VM tagged `mms` and this site's seed ISOs.
    Destroy {
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Create the Proxmox template from images/*.yml (download-url + import-from).
    Template(template::TemplateArgs),
    /// Print shell completions for SHELL to stdout.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// Runs the selected subcommand.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let (cfg, id, insecure) = (&self.config, self.identity.as_deref(), self.insecure);
        let Some(command) = self.command else {
            return if self.apply {
                apply::run(cfg, id, insecure, &self.apply_args)
            } else {
                plan::run(cfg, id, insecure, self.json, &self.apply_args)
            };
        };
        if self.apply {
            anyhow::bail!("--apply goes without a subcommand (or use `mms-build apply`)");
        }
        match command {
            Command::Apply(args) => apply::run(cfg, id, insecure, &args),
            Command::Plan(args) => plan::run(cfg, id, insecure, self.json, &args),
            Command::Status => status::run(cfg, id, insecure, self.json),
            Command::Rollback => rollback::run(cfg, id, insecure),
            Command::Destroy { yes } => destroy::run(cfg, id, insecure, yes),
            Command::Template(args) => template::run(cfg, id, insecure, &args),
            Command::Check => check::run(&self.config, self.identity.as_deref()),
            Command::Secrets(cmd) => cmd.run(&self.config, self.identity.as_deref()),
            Command::Schema { kind } => schema::run(kind),
            Command::Backup(args) => backup::run_backup(&self.config, &args),
            Command::Restore(args) => {
                backup::run_restore(&self.config, self.identity.as_deref(), &args)
            }
            Command::Backups => backup::run_backups(&self.config, self.json),
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
    fn plan_is_the_default_and_apply_has_two_spellings() {
        let cli = Cli::try_parse_from(["mms-build"]).unwrap();
        assert!(cli.command.is_none() && !cli.apply);
        let cli =
            Cli::try_parse_from(["mms-build", "--apply", "--bundle", "b", "--config", "x.yml"])
                .unwrap();
        assert!(cli.apply && cli.command.is_none());
        assert_eq!(
            cli.apply_args.bundle.as_deref(),
            Some(std::path::Path::new("b"))
        );
        let cli =
            Cli::try_parse_from(["mms-build", "apply", "--destroy-old", "--insecure"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Apply(ref a)) if a.destroy_old));
        assert!(cli.insecure);
        let cli = Cli::try_parse_from(["mms-build", "destroy", "--yes"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Destroy { yes: true })));
        let cli = Cli::try_parse_from(["mms-build", "status", "--json"]).unwrap();
        assert!(cli.json);
        assert!(
            Cli::try_parse_from(["mms-build", "template", "--image", "a", "--image-file", "b"])
                .is_err()
        );
    }

    #[test]
    fn config_is_global() {
        let cli = Cli::try_parse_from(["mms-build", "check", "--config", "x.yml"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("x.yml"));
        let cli = Cli::try_parse_from(["mms-build", "-c", "y.yml", "check"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("y.yml"));
    }
}

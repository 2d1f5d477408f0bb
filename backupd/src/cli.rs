//! Command line: `mms-backupd [--config FILE] <backup|prune|list|verify|restore|photos>`.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};

use crate::backup::{self, BackupOptions};
use crate::config::{self, Config};
use crate::restore::{self, IdentitySource, RestoreOptions};
use crate::{naming, ops, photos};

/// mms-backupd: encrypted, crash-safe backups of the MMS appliance's services.
#[derive(Debug, Parser)]
#[command(name = "mms-backupd", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// More log output.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive services (all of them unless --service is given).
    Backup {
        /// Service to back up (repeatable).
        #[arg(long = "service", value_name = "S")]
        services: Vec<String>,
        /// Back up every configured service (the default).
        #[arg(long, conflicts_with = "services")]
        all: bool,
        /// Record the archive as taken at this UTC second (RFC 3339, e.g. 2025-05-15T08:38:44Z).
        #[arg(long, value_name = "UTC-TIMESTAMP")]
        at: Option<String>,
    },
    /// Apply the retention rule (restic's, per service, UTC).
    Prune {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print {"service": {"keep": [...], "delete": [...]}}.
        #[arg(long)]
        json: bool,
    },
    /// List committed archives.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash archives and compare with their manifests.
    Verify {
        /// Only this service.
        #[arg(long, value_name = "S")]
        service: Option<String>,
    },
    /// Restore a service from an archive.
    Restore {
        /// Service to restore.
        #[arg(long, value_name = "S")]
        service: String,
        /// Archive path, or a file name in `<target>/<service>/`.
        #[arg(long, value_name = "PATH")]
        archive: PathBuf,
        /// age identity file or SSH private key; `-` reads it from stdin.
        #[arg(long, value_name = "FILE|-")]
        identity: String,
        /// Restore into this directory (absent or empty) instead of the live paths.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
    /// Incremental copy of the photo library.
    Photos,
}

impl Cli {
    /// Runs the command; output goes to stdout, logs to stderr/journal.
    pub fn run(self) -> Result<()> {
        let cfg = Config::load(&self.config)?;
        match self.cmd {
            Command::Backup {
                services,
                all: _,
                at,
            } => {
                let at = at
                    .map(|s| naming::parse_at(&s))
                    .transpose()
                    .map_err(|e| anyhow!(e))?;
                let done = backup::run(
                    &cfg,
                    &BackupOptions {
                        services,
                        at,
                        zstd: None,
                    },
                )?;
                for o in done {
                    println!("{}", o.archive.display());
                }
            }
            Command::Prune { dry_run, json } => {
                let plans = ops::prune(&cfg, dry_run)?;
                if json {
                    println!("{}", ops::prune_json(&plans));
                } else {
                    for (svc, p) in &plans {
                        let verb = if dry_run { "would delete" } else { "deleted" };
                        println!("{svc}: keep {}, {verb} {}", p.keep.len(), p.delete.len());
                        for d in &p.delete {
                            println!("  {verb} {d}");
                        }
                    }
                }
            }
            Command::List { json } => {
                let listing = ops::list(&cfg)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&listing)?);
                } else {
                    print!("{}", ops::format_list(&listing));
                }
            }
            Command::Verify { service } => {
                let n = ops::verify(&cfg, service.as_deref())?;
                println!("verify: {n} archive(s) match their manifests");
            }
            Command::Restore {
                service,
                archive,
                identity,
                to,
            } => {
                let identity = if identity == "-" {
                    IdentitySource::Stdin
                } else {
                    IdentitySource::File(identity.into())
                };
                let rep = restore::run(
                    &cfg,
                    &RestoreOptions {
                        service: service.clone(),
                        archive,
                        identity,
                        to: to.clone(),
                    },
                )?;
                let dest =
                    to.map_or_else(|| "its live paths".to_string(), |d| d.display().to_string());
                println!(
                    "restored {service} from {} into {dest}: {} entries, {} bytes, {} SQLite database(s) ok{}",
                    rep.archive.display(),
                    rep.entries,
                    rep.bytes,
                    rep.databases.len(),
                    if rep.manifest_checked {
                        ", manifest hash ok"
                    } else {
                        ""
                    }
                );
            }
            Command::Photos => {
                let p = cfg.photos.as_ref().with_context(|| {
                    format!("{}: no `photos:` section configured", self.config.display())
                })?;
                let r = photos::run(p)?;
                println!(
                    "photos: {} copied ({} bytes), {} unchanged, {} moved to trash",
                    r.copied, r.bytes, r.unchanged, r.trashed
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["mms-backupd", "list", "--config", "/x.yml"]).unwrap();
        assert_eq!(c.config, PathBuf::from("/x.yml"));
        assert!(Cli::try_parse_from(["mms-backupd", "backup", "--all", "--service", "a"]).is_err());
        assert!(Cli::try_parse_from(["mms-backupd", "restore", "--service", "a"]).is_err());
    }
}

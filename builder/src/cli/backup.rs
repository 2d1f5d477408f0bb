//! `mms-build backup | restore | backups`: the appliance's mms-backupd, run over SSH
//! (see [`crate::remote`]). The restore identity is streamed on stdin, never copied.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use crate::config;
use crate::remote::{self, Remote};

/// `mms-build backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Only this service (default: every service).
    #[arg(long, value_name = "S")]
    pub service: Option<String>,
}

/// `mms-build restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Service to restore.
    #[arg(long, value_name = "S")]
    pub service: String,
    /// Archive file name, as `mms-build backups` lists it.
    #[arg(long, value_name = "NAME")]
    pub archive: String,
}

fn remote_for(config_path: &Path) -> Result<Remote> {
    let loaded = config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    Ok(Remote::for_site(&loaded.site))
}

fn code(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// Runs a backup on the appliance now.
pub fn run_backup(config_path: &Path, args: &BackupArgs) -> Result<ExitCode> {
    let remote = remote_for(config_path)?;
    let mut argv = vec!["backup"];
    match &args.service {
        Some(s) => argv.extend(["--service", s.as_str()]),
        None => argv.push("--all"),
    }
    Ok(code(remote.run(&argv, None)?))
}

/// Restores a service on the appliance from one of its archives.
pub fn run_restore(
    config_path: &Path,
    identity: Option<&Path>,
    args: &RestoreArgs,
) -> Result<ExitCode> {
    if args.archive.contains('/') {
        bail!(
            "--archive {}: expected an archive file name as `mms-build backups` lists it",
            args.archive
        );
    }
    let remote = remote_for(config_path)?;
    let id_path = crate::secrets::identity_path(identity).ok_or_else(|| {
        anyhow!("restore needs the backup identity: pass --identity FILE (age identity or SSH private key of a backup recipient), set MMS_IDENTITY, or create ~/.config/mms/identity.txt")
    })?;
    let key = remote::read_identity(&id_path)?;
    let argv = [
        "restore",
        "--service",
        args.service.as_str(),
        "--archive",
        args.archive.as_str(),
        "--identity",
        "-",
    ];
    let status = remote
        .run(&argv, Some(&key))
        .context("restore on the appliance")?;
    Ok(code(status))
}

/// Lists the archives on the appliance (`--json`: mms-backupd's `list --json`).
pub fn run_backups(config_path: &Path, json: bool) -> Result<ExitCode> {
    let remote = remote_for(config_path)?;
    let argv: &[&str] = if json { &["list", "--json"] } else { &["list"] };
    Ok(code(remote.run(argv, None)?))
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn backup_commands_parse() {
        let c = Cli::try_parse_from([
            "mms-build",
            "restore",
            "--service",
            "radarr",
            "--archive",
            "radarr-2025-05-15T083844Z.tar.zst.age",
            "--identity",
            "k.txt",
        ])
        .unwrap();
        assert_eq!(c.identity.as_deref(), Some(std::path::Path::new("k.txt")));
        assert!(matches!(c.command, Some(Command::Restore(ref a)) if a.service == "radarr"));
        assert!(Cli::try_parse_from(["mms-build", "restore", "--service", "radarr"]).is_err());
        let c = Cli::try_parse_from(["mms-build", "backup", "--service", "sonarr"]).unwrap();
        assert!(
            matches!(c.command, Some(Command::Backup(ref a)) if a.service.as_deref() == Some("sonarr"))
        );
        let c = Cli::try_parse_from(["mms-build", "backups", "--json"]).unwrap();
        assert!(c.json && matches!(c.command, Some(Command::Backups)));
    }

    #[test]
    fn restore_refuses_a_path_as_archive_name() {
        let args = super::RestoreArgs {
            service: "radarr".into(),
            archive: "../x".into(),
        };
        let e = super::run_restore(std::path::Path::new("/nonexistent/mms.yml"), None, &args)
            .unwrap_err();
        assert!(
            e.to_string().contains("expected an archive file name"),
            "{e}"
        );
    }
}

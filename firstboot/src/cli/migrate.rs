//! `mms-firstboot migrate`: the migration step on its own (also usable after boot).

use crate::config::{Config, DEFAULT_PATH, MigrateFrom, SourceKind, StateSource};
use crate::fsutil::under;
use crate::migrate::{self, Migration};
use anyhow::{Result, anyhow, bail};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Copy services' state from an LXC host or the previous VM over SSH + rsync: stop the
/// source units, copy, integrity-check, rewrite stored paths, fix ownership. Services already
/// migrated are skipped (`--again` migrates them anew). After boot, stop the services on this
/// VM first (`systemctl --user -M mms@ stop <unit>`) and start them afterwards: their config
/// dirs are replaced.
#[derive(Debug, Args)]
pub struct MigrateCmd {
    /// Source as user@host[:port] (default: `state.migrate` from the config).
    #[arg(long, value_name = "USER@HOST[:PORT]")]
    pub from: Option<String>,
    /// The source is the previous MMS VM (same layout) rather than an LXC host.
    #[arg(long)]
    pub previous_vm: bool,
    /// Only these services (repeatable; default: all with migration settings).
    #[arg(long, value_name = "SERVICE")]
    pub service: Vec<String>,
    /// Migrate the selected services again even if an earlier run finished them.
    #[arg(long)]
    pub again: bool,
    /// List what would be done; change nothing and connect nowhere.
    #[arg(long)]
    pub dry_run: bool,
    /// Limit rsync's bandwidth, KiB/s (slow or shared links).
    #[arg(long, value_name = "KIB_PER_S")]
    pub bwlimit: Option<u32>,
    /// Private SSH key (default: the config's key file in the secrets dir).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The firstboot config file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Filesystem root that the config's absolute paths are joined onto (tests).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root: PathBuf,
}

/// Parses `user@host[:port]`.
pub fn parse_from(s: &str) -> Result<(String, String, Option<u16>)> {
    let (user, rest) = s
        .split_once('@')
        .ok_or_else(|| anyhow!("--from {s:?}: expected user@host[:port]"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (
            h,
            Some(
                p.parse()
                    .map_err(|_| anyhow!("--from {s:?}: port {p:?} is not a number"))?,
            ),
        ),
        _ => (rest, None),
    };
    if user.is_empty() || host.is_empty() || user.starts_with('-') || host.starts_with('-') {
        bail!("--from {s:?}: expected user@host[:port]");
    }
    Ok((user.to_string(), host.to_string(), port))
}

impl MigrateCmd {
    /// Plans and (unless `--dry-run`) runs the migration.
    pub fn run(self) -> Result<ExitCode> {
        let config = Config::load(&self.config)?;
        let configured = match &config.state {
            StateSource::Migrate(m) => Some(m.clone()),
            _ => None,
        };
        let from = match (&self.from, configured) {
            (Some(s), c) => {
                let (user, host, port) = parse_from(s)?;
                MigrateFrom {
                    kind: if self.previous_vm {
                        SourceKind::PreviousVm
                    } else {
                        c.as_ref().map(|c| c.kind).unwrap_or(SourceKind::Lxc)
                    },
                    host,
                    user,
                    port: port.unwrap_or(22),
                    ssh_key_secret: c
                        .map(|c| c.ssh_key_secret)
                        .unwrap_or_else(|| "migrate_ssh_key".into()),
                }
            }
            (None, Some(c)) => c,
            (None, None) => bail!(
                "no source: pass --from user@host[:port] ({} has no state.migrate)",
                self.config.display()
            ),
        };
        let key = self.identity.clone().unwrap_or_else(|| {
            under(&self.root, &config.paths.secrets_dir).join(&from.ssh_key_secret)
        });
        let m = Migration {
            root: &self.root,
            config: &config,
            from: &from,
            key,
            ssh: PathBuf::from("ssh"),
            rsync: PathBuf::from("rsync"),
            only: self.service.clone(),
            bwlimit_kib: self.bwlimit,
        };
        let plans = migrate::plan(&config, &from, &self.service)?;
        if self.dry_run {
            let again = self.again;
            print!(
                "dry run, nothing changed:\n{}",
                migrate::describe(&plans, &config, &|s| !again && m.is_done(s))
            );
            return Ok(ExitCode::SUCCESS);
        }
        if self.again {
            for p in &plans {
                m.forget(&p.service)?;
            }
        }
        for r in m.run()? {
            if r.already_done {
                println!("{}: already migrated", r.service);
                continue;
            }
            println!(
                "{}: copied; {} SQLite file(s) passed integrity_check; {} rewrite(s)",
                r.service,
                r.checked.len(),
                r.rewrites.len()
            );
            for line in &r.rewrites {
                println!("  {line}");
            }
            for w in &r.warnings {
                println!("  warning: {w}");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parses() {
        assert_eq!(
            parse_from("root@old").unwrap(),
            ("root".into(), "old".into(), None)
        );
        assert_eq!(
            parse_from("mms@10.0.0.2:2222").unwrap(),
            ("mms".into(), "10.0.0.2".into(), Some(2222))
        );
        assert!(parse_from("old").is_err());
        assert!(parse_from("root@old:x").is_err());
        assert!(parse_from("-oProxyCommand=x@h").is_err());
    }
}

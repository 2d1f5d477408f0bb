//! `backup`: one archive per service, committed crash-safely, under the run lock.
//!
//! Per service: clean leftovers → stop the unit (if any) → dump the database (if any) →
//! walk the paths into tar → zstd → age → temp file → fsync → rename → fsync dir → manifest
//! → start the unit again (on every path, errors included).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SubsecRound, Utc};

use crate::archive::{self, WalkStats};
use crate::config::{Config, ServiceConfig};
use crate::pipeline::{self, ZstdOptions};
use crate::report::{self, Progress};
use crate::store::{self, Manifest, RunLock};
use crate::systemd::{Systemd, UnitGuard};
use crate::{crypto, dump, naming};

/// A committed backup.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Service name.
    pub service: String,
    /// Archive path.
    pub archive: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Options of one `backup` run.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Services to back up (empty = all configured).
    pub services: Vec<String>,
    /// Record the archives as taken at this second instead of now.
    pub at: Option<DateTime<Utc>>,
    /// zstd settings (default when `None`).
    pub zstd: Option<ZstdOptions>,
}

/// Prefix of the marker files recording units this daemon stopped (`<target>/.stopped-<unit>`).
const STOPPED_PREFIX: &str = ".stopped-";

/// Stops `unit`, recording it on disk first so a run killed before starting it again is
/// repaired by the next run.
pub fn stop_recorded<'a>(target: &Path, systemd: &'a Systemd, unit: &str) -> Result<UnitGuard<'a>> {
    let marker = target.join(format!("{STOPPED_PREFIX}{unit}"));
    fs::write(&marker, b"").with_context(|| format!("cannot write {}", marker.display()))?;
    UnitGuard::stop(systemd, unit)
}

/// Starts a unit stopped by [`stop_recorded`] and removes its marker.
pub fn restart_recorded(target: &Path, guard: UnitGuard<'_>) -> Result<()> {
    let marker = target.join(format!("{STOPPED_PREFIX}{}", guard.unit()));
    guard.restart()?;
    let _ = fs::remove_file(marker);
    Ok(())
}

/// Starts units that an earlier, killed run stopped and never started again.
pub fn recover_stopped_units(cfg: &Config, systemd: Option<&Systemd>) -> Result<()> {
    let Ok(rd) = fs::read_dir(&cfg.target) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(unit) = name.strip_prefix(STOPPED_PREFIX) else {
            continue;
        };
        let owned;
        let sd = match systemd {
            Some(sd) => sd,
            None => {
                owned = Systemd::connect(cfg.user.uid, cfg.user.gid)?;
                &owned
            }
        };
        tracing::warn!(
            message_id = report::MSG_WARNING,
            unit,
            "an earlier run was killed while {unit} was stopped: starting it"
        );
        sd.start(unit)
            .with_context(|| format!("starting {unit}, left stopped by a killed run"))?;
        fs::remove_file(e.path())?;
    }
    Ok(())
}

/// Selects services by name, refusing unknown ones.
pub fn select<'c>(
    cfg: &'c Config,
    names: &[String],
) -> Result<Vec<(&'c String, &'c ServiceConfig)>> {
    if names.is_empty() {
        return Ok(cfg.services.iter().collect());
    }
    names.iter().map(|n| cfg.service(n)).collect()
}

/// Warns (every run) when archives are written unencrypted.
pub fn warn_if_unencrypted(cfg: &Config) {
    if cfg.recipients.is_empty() {
        tracing::warn!(
            message_id = report::MSG_WARNING,
            "no recipients configured: archives are written UNENCRYPTED (.tar.zst); add age or SSH recipients to the config"
        );
    }
}

/// Runs a backup of the selected services. Every service is attempted; the error lists the
/// ones that failed.
pub fn run(cfg: &Config, opts: &BackupOptions) -> Result<Vec<Outcome>> {
    let selected = select(cfg, &opts.services)?;
    if selected.is_empty() {
        bail!("no services configured in the config file; nothing to back up");
    }
    warn_if_unencrypted(cfg);
    crypto::parse_recipients(&cfg.recipients)?;
    let _lock = RunLock::acquire(&cfg.target)?;
    let needs_systemd = selected.iter().any(|(_, s)| s.unit.is_some());
    let systemd = if needs_systemd {
        Some(Systemd::connect(cfg.user.uid, cfg.user.gid)?)
    } else {
        None
    };
    recover_stopped_units(cfg, systemd.as_ref())?;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (name, svc) in selected {
        match backup_service(cfg, name, svc, opts, systemd.as_ref()) {
            Ok(o) => {
                tracing::info!(
                    message_id = report::MSG_BACKUP_DONE,
                    service = name.as_str(),
                    archive = %o.archive.display(),
                    size = o.manifest.size,
                    files = o.manifest.stats.files,
                    "backup of {name} finished: {} ({} bytes)",
                    o.manifest.archive,
                    o.manifest.size
                );
                done.push(o);
            }
            Err(e) => {
                tracing::error!(
                    message_id = report::MSG_BACKUP_FAILED,
                    service = name.as_str(),
                    "backup of {name} failed: {e:#}"
                );
                failed.push(format!("{name}: {e:#}"));
            }
        }
    }
    if !failed.is_empty() {
        bail!("backup failed for {}", failed.join("; "));
    }
    Ok(done)
}

/// Backs up one service (the lock must be held).
pub fn backup_service(
    cfg: &Config,
    name: &str,
    svc: &ServiceConfig,
    opts: &BackupOptions,
    systemd: Option<&Systemd>,
) -> Result<Outcome> {
    let dir = store::service_dir(&cfg.target, name);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for leftover in store::clean_leftovers(&dir)? {
        tracing::info!(
            service = name,
            "removed leftover of an interrupted run: {leftover}"
        );
    }
    for p in &svc.paths {
        if !p.exists() {
            bail!("path {} of service {name} does not exist", p.display());
        }
    }
    let time = opts.at.unwrap_or_else(Utc::now).trunc_subsecs(0);
    let encrypted = !cfg.recipients.is_empty();
    let archive_name = naming::archive_name(name, time, encrypted);
    let dest = dir.join(&archive_name);
    if dest.exists() || dir.join(naming::manifest_name(&archive_name)).exists() {
        bail!(
            "archive {} already exists (one backup per service and second)",
            dest.display()
        );
    }

    let guard = match (&svc.unit, systemd) {
        (Some(unit), Some(sd)) => Some(stop_recorded(&cfg.target, sd, unit)?),
        _ => None,
    };
    let written = write_archive(cfg, name, svc, opts, &dir, &archive_name, time);
    let restarted = guard.map(|g| restart_recorded(&cfg.target, g)).transpose();
    let (stats, sha256, size, dump_member) = written?;
    let manifest = Manifest {
        format: 1,
        service: name.to_string(),
        archive: archive_name.clone(),
        created: time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        size,
        sha256,
        encrypted,
        recipients: cfg.recipients.len(),
        stats,
        dump: dump_member,
        tool: concat!("mms-backupd ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    store::write_manifest(&dir, &manifest)
        .with_context(|| format!("cannot write the manifest of {}", dest.display()))?;
    for c in &manifest.stats.changed {
        tracing::warn!(
            message_id = report::MSG_WARNING,
            service = name,
            "file changed while it was read (archived up to its size at open): {c}"
        );
    }
    for s in &manifest.stats.skipped {
        tracing::warn!(
            message_id = report::MSG_WARNING,
            service = name,
            "not archived: {s}"
        );
    }
    restarted.with_context(|| {
        format!("archive {archive_name} was written, but the unit did not start again")
    })?;
    Ok(Outcome {
        service: name.to_string(),
        archive: dest,
        manifest,
    })
}

type Written = (WalkStats, String, u64, Option<String>);

fn write_archive(
    cfg: &Config,
    name: &str,
    svc: &ServiceConfig,
    opts: &BackupOptions,
    dir: &Path,
    archive_name: &str,
    time: DateTime<Utc>,
) -> Result<Written> {
    let spool = match &svc.dump {
        Some(d) => Some(dump::take_dump(d, cfg.user, dir)?),
        None => None,
    };
    let total: u64 = svc.paths.iter().map(|p| archive::tree_size(p)).sum::<u64>()
        + spool.as_ref().map_or(0, |s| s.1);
    let progress = Progress::new(name, total);
    let tmp = store::temp_for(dir, archive_name)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    let (file, tmp_path) = tmp.into_parts();
    let recipients = crypto::parse_recipients(&cfg.recipients)?;
    let mut builder = pipeline::start_archive(file, recipients, opts.zstd.unwrap_or_default())?;
    let mut stats = WalkStats::default();
    let cb = progress.callback();
    let cb_ref = move |n: u64| cb(n);
    for p in &svc.paths {
        let member = p
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(name));
        archive::append_tree(&mut builder, p, &member, &mut stats, &cb_ref)
            .with_context(|| format!("archiving {}", p.display()))?;
    }
    let mut dump_member = None;
    if let Some((file, size)) = spool {
        archive::append_stream(
            &mut builder,
            Path::new(dump::DUMP_MEMBER),
            size,
            0o600,
            (cfg.user.uid, cfg.user.gid),
            time.timestamp().max(0) as u64,
            file,
        )
        .context("archiving the database dump")?;
        progress.add(size);
        dump_member = Some(dump::DUMP_MEMBER.to_string());
    }
    let (file, sha, size) = pipeline::finish_archive(builder).context("finishing the archive")?;
    store::commit(&file, tmp_path, &dir.join(archive_name))
        .with_context(|| format!("committing {archive_name}"))?;
    progress.finish();
    Ok((stats, sha, size, dump_member))
}

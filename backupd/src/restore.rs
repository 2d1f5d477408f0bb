//! `restore`: decrypt with an identity held only in memory, verify the whole stream,
//! unpack strictly into staging, check SQLite databases, then stop the unit, swap the
//! directories atomically, start the unit and wait until it is healthy. If anything fails
//! before the swap, the live directories are untouched; if the unit does not come back
//! healthy after the swap, the previous directories are swapped back.
//!
//! `--to DIR` restores into a directory (that does not exist or is empty) without touching
//! units or live paths.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::config::Config;
use crate::pipeline::{self, OpenError};
use crate::report::{self, Progress};
use crate::store::{self, RunLock};
use crate::systemd::Systemd;
use crate::unpack::{self, Limits, Route, UnpackError, Unpacked};
use crate::{backup, crypto, dump, naming};

/// Environment variable: seconds to wait for the unit to become active after a restore.
pub const HEALTH_TIMEOUT_ENV: &str = "MMS_BACKUPD_HEALTH_TIMEOUT";
const MAX_IDENTITY: u64 = 1 << 20;

/// Where the identity comes from.
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// A file path.
    File(PathBuf),
    /// Standard input (`-`), read fully into memory.
    Stdin,
}

/// Options of one `restore` run.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Service name.
    pub service: String,
    /// Archive path, or a file name inside `<target>/<service>/`.
    pub archive: PathBuf,
    /// The age identity or SSH private key.
    pub identity: IdentitySource,
    /// Restore into this directory instead of the live paths.
    pub to: Option<PathBuf>,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The archive read.
    pub archive: PathBuf,
    /// Entries extracted.
    pub entries: u64,
    /// Bytes extracted.
    pub bytes: u64,
    /// SQLite databases that passed `PRAGMA integrity_check`.
    pub databases: Vec<PathBuf>,
    /// Whether the hash matched a manifest (false = no manifest present).
    pub manifest_checked: bool,
}

fn read_identity(src: &IdentitySource) -> Result<(Vec<Box<dyn age::Identity>>, String)> {
    let (mut reader, origin): (Box<dyn Read>, String) = match src {
        IdentitySource::File(p) => (
            Box::new(
                File::open(p).with_context(|| format!("cannot read identity {}", p.display()))?,
            ),
            p.display().to_string(),
        ),
        IdentitySource::Stdin => (Box::new(std::io::stdin().lock()), "(stdin)".to_string()),
    };
    let mut bytes = Vec::new();
    (&mut reader)
        .take(MAX_IDENTITY)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read identity {origin}"))?;
    let ids = crypto::parse_identities(&bytes, &origin)?;
    // Overwrite the key material we held (best effort; the parsed keys live on in `ids`).
    bytes.iter_mut().for_each(|b| *b = 0);
    Ok((ids, origin))
}

/// Finds the archive: an existing path, or a name in the service's directory.
pub fn resolve_archive(cfg: &Config, service: &str, archive: &Path) -> Result<PathBuf> {
    if archive.is_file() {
        return Ok(archive.to_path_buf());
    }
    if archive.components().count() == 1 {
        let p = store::service_dir(&cfg.target, service).join(archive);
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "archive {} not found (looked in {})",
            archive.display(),
            store::service_dir(&cfg.target, service).display()
        );
    }
    bail!("archive {} not found", archive.display())
}

fn stream_error(archive: &Path, e: UnpackError) -> anyhow::Error {
    match e {
        UnpackError::Io(io) => anyhow!(
            "archive {} is damaged, truncated or not readable with this key: {io}",
            archive.display()
        ),
        other => {
            anyhow!("{} : {other}", archive.display()).context("hostile or damaged archive refused")
        }
    }
}

/// Opens, decrypts, unpacks and verifies; the caller owns the staging locations. SQLite
/// databases are checked while the rest of the stream is still being extracted.
fn extract(
    archive: &Path,
    ids: &[Box<dyn age::Identity>],
    route: &Route,
) -> Result<(Unpacked, bool, Vec<PathBuf>)> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let manifest = store::read_manifest(&PathBuf::from(format!(
        "{}{}",
        archive.display(),
        naming::MANIFEST_SUFFIX
    )));
    let progress = Progress::new("restore", size);
    let opened =
        pipeline::open_archive(file, ids, Some(progress.callback())).map_err(|e| match e {
            OpenError::WrongKey => anyhow!(
                "wrong key: the identity cannot decrypt {}",
                archive.display()
            ),
            other => anyhow!("cannot open {}: {other}", archive.display()),
        })?;
    let hash = opened.hash.clone();
    let started = std::time::Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    let checker = std::thread::Builder::new()
        .name("sqlite-check".into())
        .spawn(move || -> Result<Vec<PathBuf>> {
            let mut ok = Vec::new();
            for db in rx {
                let t = std::time::Instant::now();
                check_one(&db)?;
                tracing::debug!("integrity_check of {} took {:?}", db.display(), t.elapsed());
                ok.push(db);
            }
            Ok(ok)
        })
        .context("cannot start the SQLite checker")?;
    let unpacked = unpack::unpack_with(opened.tar, route, Limits::from_env(), &mut |p: &Path| {
        if is_sqlite(p) {
            let _ = tx.send(p.to_path_buf());
        }
    });
    drop(tx);
    tracing::debug!("extraction finished after {:?}", started.elapsed());
    let checked_dbs = checker
        .join()
        .unwrap_or_else(|_| Err(anyhow!("SQLite checker panicked")));
    let out = unpacked.map_err(|e| stream_error(archive, e))?;
    let databases = checked_dbs?;
    tracing::debug!("SQLite checks finished after {:?}", started.elapsed());
    progress.finish();
    let mut checked = false;
    if let Some(m) = manifest {
        let (sha, n) = hash.result();
        if sha != m.sha256 || n != m.size {
            bail!(
                "archive {} does not match its manifest (sha256 {sha}, {n} bytes; manifest {}, {} bytes)",
                archive.display(),
                m.sha256,
                m.size
            );
        }
        checked = true;
    }
    Ok((out, checked, databases))
}

fn is_sqlite(f: &Path) -> bool {
    let mut head = [0u8; 16];
    File::open(f)
        .and_then(|mut h| h.read_exact(&mut head))
        .is_ok()
        && &head == b"SQLite format 3\0"
}

/// Runs `PRAGMA integrity_check` on every SQLite database (found by its magic header)
/// among `files`; fails on the first that is not "ok".
pub fn check_sqlite(files: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let dbs: Vec<PathBuf> = files.iter().filter(|f| is_sqlite(f)).cloned().collect();
    for db in &dbs {
        check_one(db)?;
    }
    Ok(dbs)
}

fn check_one(f: &Path) -> Result<()> {
    let uri = format!("file:{}?mode=ro", f.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = rusqlite::Connection::open_with_flags(&uri, flags)
        .or_else(|_| rusqlite::Connection::open(f))
        .with_context(|| format!("restored database {} cannot be opened", f.display()))?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .with_context(|| format!("restored database {} failed integrity_check", f.display()))?;
    if rows != ["ok"] {
        bail!(
            "restored database {} failed integrity_check: {}",
            f.display(),
            rows.join("; ")
        );
    }
    Ok(())
}

fn owner_if_needed(cfg: &Config, root: &Path) -> Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 || euid != cfg.user.uid {
        unpack::chown_tree(root, cfg.user.uid, cfg.user.gid).with_context(|| {
            format!(
                "cannot give {} to {}:{}",
                root.display(),
                cfg.user.uid,
                cfg.user.gid
            )
        })?;
    }
    Ok(())
}

/// Runs a restore.
pub fn run(cfg: &Config, opts: &RestoreOptions) -> Result<RestoreReport> {
    let archive = resolve_archive(cfg, &opts.service, &opts.archive)?;
    let (ids, _origin) = read_identity(&opts.identity)?;
    let result = match &opts.to {
        Some(dir) => restore_to(cfg, &archive, &ids, dir),
        None => restore_live(cfg, opts, &archive, &ids),
    };
    match &result {
        Ok(r) => tracing::info!(
            message_id = report::MSG_RESTORE_DONE,
            service = opts.service.as_str(),
            "restore of {} from {} finished ({} entries)",
            opts.service,
            archive.display(),
            r.entries
        ),
        Err(e) => tracing::error!(
            message_id = report::MSG_RESTORE_FAILED,
            service = opts.service.as_str(),
            "restore of {} failed: {e:#}",
            opts.service
        ),
    }
    result
}

fn restore_to(
    cfg: &Config,
    archive: &Path,
    ids: &[Box<dyn age::Identity>],
    dir: &Path,
) -> Result<RestoreReport> {
    let existed = match fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                bail!("--to {}: directory is not empty", dir.display());
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            false
        }
        Err(e) => bail!("--to {}: {e}", dir.display()),
    };
    let cleanup = || {
        if existed {
            if let Ok(rd) = fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
        } else {
            let _ = fs::remove_dir_all(dir);
        }
    };
    let result = (|| {
        let (mut out, checked, databases) = extract(archive, ids, &Route::All(dir.to_path_buf()))?;
        out.finish().context("applying modes and mtimes")?;
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                owner_if_needed(cfg, &e.path())?;
            }
        }
        Ok(RestoreReport {
            archive: archive.to_path_buf(),
            entries: out.entries,
            bytes: out.bytes,
            databases,
            manifest_checked: checked,
        })
    })();
    if result.is_err() {
        cleanup();
    }
    result
}

struct Staging {
    /// (temp dir holding the staged member, staged member path, live path)
    items: Vec<(tempfile::TempDir, PathBuf, PathBuf)>,
}

fn restore_live(
    cfg: &Config,
    opts: &RestoreOptions,
    archive: &Path,
    ids: &[Box<dyn age::Identity>],
) -> Result<RestoreReport> {
    let (_, svc) = cfg.service(&opts.service)?;
    let _lock = RunLock::acquire(&cfg.target)?;
    // Stage beside each live path (same filesystem, so the swap is a rename).
    let mut staging = Staging { items: Vec::new() };
    let mut map = BTreeMap::new();
    for live in &svc.paths {
        let name: OsString = live
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let parent = live.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.mms-restore-", name.to_string_lossy()))
            .tempdir_in(parent)
            .with_context(|| {
                format!("cannot create a staging directory in {}", parent.display())
            })?;
        let staged = tmp.path().join(&name);
        map.insert(name, staged.clone());
        staging.items.push((tmp, staged, live.clone()));
    }
    let spool_dir = staging
        .items
        .first()
        .map(|i| i.0.path().to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    let route = Route::Members {
        map,
        special: svc.dump.as_ref().map(|_| OsString::from(dump::DUMP_MEMBER)),
        spool_dir,
    };
    // 1. Everything that can fail without touching the live tree.
    let (mut out, checked, databases) = extract(archive, ids, &route)?;
    out.finish().context("applying modes and mtimes")?;
    staging.items.retain(|(_, staged, live)| {
        let present = staged.exists();
        if !present {
            tracing::warn!(
                "archive has no member for {}; left as it is",
                live.display()
            );
        }
        present
    });
    if staging.items.is_empty() && out.special.is_none() {
        bail!(
            "archive {} holds nothing for service {}",
            archive.display(),
            opts.service
        );
    }
    for (_, staged, _) in &staging.items {
        owner_if_needed(cfg, staged)?;
    }
    if svc.dump.is_some() && out.special.is_none() {
        tracing::warn!("archive has no database dump; the database is left as it is");
    }
    // 2. Stop, database, swap, start, health.
    let systemd = match &svc.unit {
        Some(_) => Some(Systemd::connect(cfg.user.uid, cfg.user.gid)?),
        None => None,
    };
    backup::recover_stopped_units(cfg, systemd.as_ref())?;
    let guard = match (&svc.unit, &systemd) {
        (Some(u), Some(sd)) => Some(backup::stop_recorded(&cfg.target, sd, u)?),
        _ => None,
    };
    if let (Some(d), Some((spool, _))) = (&svc.dump, out.special.take()) {
        dump::restore_dump(d, cfg.user, spool)?;
    }
    let swapped = swap_all(&staging)?;
    let started = guard
        .map(|g| backup::restart_recorded(&cfg.target, g))
        .transpose();
    let healthy = started.and_then(|_| match (&svc.unit, &systemd) {
        (Some(u), Some(sd)) => sd.wait_active(u, health_timeout()),
        _ => Ok(()),
    });
    if let Err(e) = healthy {
        tracing::error!(
            "service did not come back after the restore: {e:#}; putting the previous data back"
        );
        let sd_guard = match (&svc.unit, &systemd) {
            (Some(u), Some(sd)) => backup::stop_recorded(&cfg.target, sd, u).ok(),
            _ => None,
        };
        let back = swap_back(&staging, &swapped);
        let restarted = sd_guard
            .map(|g| backup::restart_recorded(&cfg.target, g))
            .transpose();
        back.context("swapping the previous data back")?;
        restarted.context("starting the unit with the previous data")?;
        return Err(
            e.context("restore rolled back: the service was not healthy with the restored data")
        );
    }
    Ok(RestoreReport {
        archive: archive.to_path_buf(),
        entries: out.entries,
        bytes: out.bytes,
        databases,
        manifest_checked: checked,
    })
}

fn health_timeout() -> Duration {
    std::env::var(HEALTH_TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(600), Duration::from_secs)
}

/// For each staged member: exchange with the live path (or move in if none). Returns
/// whether each live path existed before (for swapping back).
fn swap_all(staging: &Staging) -> Result<Vec<bool>> {
    let mut done = Vec::new();
    for (_, staged, live) in &staging.items {
        let existed = fs::symlink_metadata(live).is_ok();
        let r = if existed {
            exchange(staged, live)
        } else {
            fs::rename(staged, live).map_err(anyhow::Error::from)
        };
        if let Err(e) = r {
            // Undo the ones already swapped (best effort: the first error is the one to show).
            let _ = swap_back(staging, &done);
            return Err(e.context(format!("cannot swap {} into place", live.display())));
        }
        store::sync_dir(live.parent().unwrap_or(Path::new("/")))?;
        done.push(existed);
    }
    Ok(done)
}

/// Swaps the first `swapped.len()` members back. Goes on past a failure (every member it
/// can restore counts) and returns the first error.
fn swap_back(staging: &Staging, swapped: &[bool]) -> Result<()> {
    let mut first_error = None;
    for ((_, staged, live), existed) in staging.items.iter().zip(swapped) {
        let r = if *existed {
            exchange(staged, live)
        } else {
            fs::rename(live, staged).map_err(anyhow::Error::from)
        }
        .and_then(|()| Ok(store::sync_dir(live.parent().unwrap_or(Path::new("/")))?));
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn exchange(a: &Path, b: &Path) -> Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .with_context(|| format!("cannot exchange {} and {}", a.display(), b.display()))
}

//! Restoring the newest backup of every service (the `state` step's `restore` source)
//! through the backupd library (`mms_backupd`).
//!
//! For each service in both firstboot's and backupd's config (`paths.backupd_config`), in
//! firstboot's order: the newest committed archive (`store::list_service`: only archives
//! with a manifest exist) is decrypted with the delivered identity (or read as plain
//! `.tar.zst` when backups are unencrypted), unpacked strictly into a staging directory beside
//! the live paths, checked against its manifest (SHA-256 and size) and with
//! `PRAGMA integrity_check`, chowned to the service user and swapped in by rename. A database
//! dump in the archive (`pg_dumpall.sql`, Immich) becomes the pending dump that the `start`
//! step loads into the Postgres container right after its unit started.
//!
//! Nothing runs yet at this phase, so no unit is stopped. Idempotent: a `done` marker per
//! service; an interrupted restore starts again from the archive. A service without any
//! backup is left empty (it starts fresh) and reported.

use crate::config::Restore;
use crate::fsutil::{touch, under};
use crate::steps::{Context, Outcome};
use anyhow::{Context as _, Result, anyhow, bail};
use mms_backupd::{crypto, dump, naming, pipeline, store, unpack};
use std::fs;
use std::path::{Path, PathBuf};

/// What happened to one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Restored from this archive file name.
    Archive(String),
    /// Restored by an earlier run.
    AlreadyDone,
    /// No backup exists for it.
    NoBackup,
}

/// Restores the newest backup of each configured service; one line of detail.
pub fn restore_newest(ctx: &Context, r: &Restore) -> Result<Outcome> {
    let results = restore_all(ctx, r)?;
    let mut restored = Vec::new();
    let mut none = Vec::new();
    for (svc, res) in &results {
        match res {
            Restored::Archive(a) => restored.push(format!("{svc} ({a})")),
            Restored::AlreadyDone => restored.push(format!("{svc} (earlier run)")),
            Restored::NoBackup => none.push(svc.as_str()),
        }
    }
    Ok(Outcome::Done(format!(
        "restored {}{}",
        if restored.is_empty() {
            "nothing".to_string()
        } else {
            restored.join(", ")
        },
        if none.is_empty() {
            String::new()
        } else {
            format!("; no backup for {} (they start empty)", none.join(", "))
        }
    )))
}

/// Restores every service; returns what happened per service.
pub fn restore_all(ctx: &Context, r: &Restore) -> Result<Vec<(String, Restored)>> {
    let bpath = ctx.path(&ctx.config.paths.backupd_config);
    let bcfg = mms_backupd::config::Config::load(&bpath)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading the backup config {}", bpath.display()))?;
    let identities = match &r.identity_secret {
        Some(name) => {
            let p = ctx.secrets_dir().join(name);
            let bytes =
                fs::read(&p).with_context(|| format!("reading identity {}", p.display()))?;
            crypto::parse_identities(&bytes, &p.display().to_string())
                .map_err(|e| anyhow!("{e}"))?
        }
        None => Vec::new(),
    };
    let target = under(&ctx.root, &bcfg.target);
    let mut out = Vec::new();
    for s in &ctx.config.services {
        let Some(svc) = bcfg.services.get(&s.name) else {
            continue;
        };
        let res = restore_service(ctx, &target, &s.name, svc, &identities)
            .with_context(|| format!("restoring {}", s.name))?;
        out.push((s.name.clone(), res));
    }
    Ok(out)
}

fn restore_service(
    ctx: &Context,
    target: &Path,
    name: &str,
    svc: &mms_backupd::config::ServiceConfig,
    identities: &[Box<dyn age::Identity>],
) -> Result<Restored> {
    let mdir = ctx.state_dir().join("restore").join(name);
    if mdir.join("done").exists() {
        return Ok(Restored::AlreadyDone);
    }
    let archives = store::list_service(target, name)
        .with_context(|| format!("listing backups of {name} in {}", target.display()))?;
    let Some(newest) = archives.last() else {
        fs::create_dir_all(&mdir)?;
        touch(&mdir.join("done"))?;
        return Ok(Restored::NoBackup);
    };
    let live: Vec<PathBuf> = svc.paths.iter().map(|p| under(&ctx.root, p)).collect();
    let first_parent = live
        .first()
        .and_then(|p| p.parent())
        .ok_or_else(|| anyhow!("backup config of {name} lists no paths"))?
        .to_path_buf();
    fs::create_dir_all(&first_parent)?;
    let staging = first_parent.join(format!(".{name}.mms-restore"));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("removing the leftover {}", staging.display()))?;
    }
    fs::create_dir_all(&staging)?;

    // 1. decrypt, decompress, unpack strictly; verify against the manifest
    let file = fs::File::open(&newest.path)
        .with_context(|| format!("opening {}", newest.path.display()))?;
    let opened = pipeline::open_archive(file, identities, None).map_err(|e| match e {
        pipeline::OpenError::NeedIdentity => anyhow!(
            "{} is encrypted but no identity was delivered (state.restore.identity_secret)",
            newest.path.display()
        ),
        pipeline::OpenError::WrongKey => {
            anyhow!(
                "the delivered identity cannot decrypt {}",
                newest.path.display()
            )
        }
        other => anyhow!("cannot open {}: {other}", newest.path.display()),
    })?;
    let hash = opened.hash.clone();
    let mut unpacked = unpack::unpack(
        opened.tar,
        &unpack::Route::All(staging.clone()),
        unpack::Limits::from_env(),
    )
    .map_err(|e| anyhow!("{}: {e}", newest.path.display()))
    .context("unpacking the archive (hostile or damaged archives are refused)")?;
    let (sha, size) = hash.result();
    if sha != newest.manifest.sha256 || size != newest.manifest.size {
        bail!(
            "{} does not match its manifest{} (sha256 {sha}, {size} bytes; manifest {}, {} bytes)",
            newest.path.display(),
            naming::MANIFEST_SUFFIX,
            newest.manifest.sha256,
            newest.manifest.size
        );
    }
    mms_backupd::restore::check_sqlite(&unpacked.files)?;
    unpacked.finish().context("applying modes and times")?;

    // 2. the database dump becomes the start step's pending dump
    let staged_dump = staging.join(dump::DUMP_MEMBER);
    if staged_dump.exists() {
        let dest = crate::migrate::dump_file(&ctx.root, &ctx.config, name);
        crate::migrate::install_dump(&staged_dump, &dest)?;
        let _ = fs::remove_file(dest.with_file_name("loaded"));
    }

    // 3. ownership, then swap each path in
    let (uid, gid) = (ctx.config.user.uid, ctx.config.user.gid);
    for p in &live {
        let member = staging.join(p.file_name().unwrap_or_default());
        if !member.exists() {
            tracing::warn!(service = name, path = %p.display(), "archive has no member for this path");
            continue;
        }
        mms_backupd::unpack::chown_tree(&member, uid, gid)?;
        let old = crate::fsutil::sibling(p, ".mms-old");
        crate::fsutil::swap_in(&member, p, &old)?;
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
    }
    fs::remove_dir_all(&staging).ok();
    fs::create_dir_all(&mdir)?;
    touch(&mdir.join("done"))?;
    Ok(Restored::Archive(newest.name.clone()))
}

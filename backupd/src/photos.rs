//! `photos`: incremental mirror of the photo library, rsync `-a --delete` semantics.
//!
//! A file is copied when it is missing in the mirror or its size or mtime differ (rsync's
//! quick check); copies go to a temp name and are renamed into place, so an interrupted run
//! never leaves a half-written photo under its real name. Files and directories that no
//! longer exist in the source are moved into `<target>.trash/<UTC date>/…` instead of being
//! deleted; each run first empties the trash of earlier runs, so a deletion survives exactly
//! one cycle. Symlinks are mirrored as links.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use chrono::Utc;

use crate::config::PhotosConfig;
use crate::report;
use crate::store::RunLock;

/// What a photos run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PhotosReport {
    /// Files copied (new or changed).
    pub copied: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Files already up to date.
    pub unchanged: u64,
    /// Entries moved to the trash.
    pub trashed: u64,
    /// The trash directory of this run, if anything was trashed.
    pub trash: Option<PathBuf>,
}

/// The trash root beside the mirror.
pub fn trash_root(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_os_string();
    s.push(".trash");
    PathBuf::from(s)
}

/// Runs one incremental copy.
pub fn run(cfg: &PhotosConfig) -> Result<PhotosReport> {
    if !cfg.source.is_dir() {
        bail!("photos source {} is not a directory", cfg.source.display());
    }
    let parent = cfg.target.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(&cfg.target)
        .with_context(|| format!("cannot create {}", cfg.target.display()))?;
    let _lock = RunLock::acquire_file(parent, ".photos.lock")?;
    let trash_root = trash_root(&cfg.target);
    // Deletions of earlier runs have been kept one cycle: drop them now.
    if trash_root.exists() {
        fs::remove_dir_all(&trash_root)
            .with_context(|| format!("cannot empty {}", trash_root.display()))?;
    }
    let trash = trash_root.join(Utc::now().format("%Y-%m-%d").to_string());
    let mut rep = PhotosReport::default();
    sync_dir(&cfg.source, &cfg.target, Path::new(""), &trash, &mut rep)?;
    if rep.trashed > 0 {
        rep.trash = Some(trash);
    }
    tracing::info!(
        message_id = report::MSG_PHOTOS_DONE,
        "photos: {} copied ({} bytes), {} unchanged, {} moved to trash",
        rep.copied,
        rep.bytes,
        rep.unchanged,
        rep.trashed
    );
    Ok(rep)
}

fn sync_dir(
    src: &Path,
    dst: &Path,
    rel: &Path,
    trash: &Path,
    rep: &mut PhotosReport,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in &names {
        let s = src.join(name);
        let d = dst.join(name);
        let r = rel.join(name);
        let sm = fs::symlink_metadata(&s)?;
        let dm = fs::symlink_metadata(&d).ok();
        let ft = sm.file_type();
        // A different kind of entry in the mirror goes to the trash first.
        if let Some(dm) = &dm {
            let same_kind = (ft.is_dir() && dm.is_dir())
                || (ft.is_file() && dm.is_file())
                || (ft.is_symlink() && dm.file_type().is_symlink());
            if !same_kind {
                to_trash(&d, &r, trash, rep)?;
            }
        }
        let dm = fs::symlink_metadata(&d).ok();
        if ft.is_dir() {
            if dm.is_none() {
                fs::create_dir(&d).with_context(|| format!("cannot create {}", d.display()))?;
            }
            sync_dir(&s, &d, &r, trash, rep)?;
            fs::set_permissions(
                &d,
                fs::Permissions::from_mode(sm.permissions().mode() & 0o7777),
            )?;
            File::open(&d)?.set_modified(sm.modified()?)?;
        } else if ft.is_file() {
            let up_to_date = dm.as_ref().is_some_and(|dm| {
                dm.len() == sm.len() && same_second(dm.modified().ok(), sm.modified().ok())
            });
            if up_to_date {
                rep.unchanged += 1;
                continue;
            }
            copy_file(&s, &d, &sm)?;
            rep.copied += 1;
            rep.bytes += sm.len();
        } else if ft.is_symlink() {
            let target = fs::read_link(&s)?;
            if dm.is_some() && fs::read_link(&d).ok().as_ref() == Some(&target) {
                rep.unchanged += 1;
                continue;
            }
            if dm.is_some() {
                fs::remove_file(&d)?;
            }
            std::os::unix::fs::symlink(&target, &d)?;
            rep.copied += 1;
        }
        // Sockets, FIFOs and devices are not mirrored.
    }
    // Entries of the mirror that left the source: to the trash.
    let mut extra: Vec<_> = fs::read_dir(dst)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| !names.contains(n))
        .collect();
    extra.sort();
    for name in extra {
        let tmp_name = name.to_string_lossy().starts_with(".mms-photos-tmp-");
        let d = dst.join(&name);
        if tmp_name {
            // Our own leftover from an interrupted copy.
            fs::remove_file(&d)?;
            continue;
        }
        to_trash(&d, &rel.join(&name), trash, rep)?;
    }
    Ok(())
}

fn same_second(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .ok()
    };
    match (a, b) {
        (Some(a), Some(b)) => secs(a) == secs(b),
        _ => false,
    }
}

fn copy_file(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
    let dir = dst.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".mms-photos-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    let mut input = File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    io::copy(&mut input, tmp.as_file_mut())
        .with_context(|| format!("copying {}", src.display()))?;
    let f = tmp.as_file();
    f.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o7777,
    ))?;
    f.set_modified(meta.modified()?)?;
    f.sync_all()?;
    tmp.persist(dst)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move {} into place", dst.display()))?;
    Ok(())
}

fn to_trash(path: &Path, rel: &Path, trash: &Path, rep: &mut PhotosReport) -> Result<()> {
    let dest = trash.join(rel);
    if let Some(p) = dest.parent() {
        fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    fs::rename(path, &dest).with_context(|| {
        format!(
            "cannot move {} to the trash {}",
            path.display(),
            dest.display()
        )
    })?;
    rep.trashed += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_copy_and_one_cycle_trash() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("photos");
        let dst = d.path().join("backups/photos");
        fs::create_dir_all(src.join("2024/01")).unwrap();
        fs::write(src.join("2024/01/a.jpg"), b"aaaa").unwrap();
        fs::write(src.join("b.jpg"), b"bb").unwrap();
        let cfg = PhotosConfig {
            source: src.clone(),
            target: dst.clone(),
        };
        let r1 = run(&cfg).unwrap();
        assert_eq!((r1.copied, r1.unchanged, r1.trashed), (2, 0, 0));
        assert_eq!(fs::read(dst.join("2024/01/a.jpg")).unwrap(), b"aaaa");
        let r2 = run(&cfg).unwrap();
        assert_eq!((r2.copied, r2.unchanged, r2.trashed), (0, 2, 0));
        fs::remove_file(src.join("b.jpg")).unwrap();
        fs::write(src.join("2024/01/a.jpg"), b"changed!").unwrap();
        let r3 = run(&cfg).unwrap();
        assert_eq!((r3.copied, r3.trashed), (1, 1));
        let trash = r3.trash.unwrap();
        assert_eq!(fs::read(trash.join("b.jpg")).unwrap(), b"bb");
        assert!(!dst.join("b.jpg").exists());
        assert_eq!(fs::read(dst.join("2024/01/a.jpg")).unwrap(), b"changed!");
        // Next cycle: the trash of the previous run is gone.
        let r4 = run(&cfg).unwrap();
        assert_eq!(r4.trashed, 0);
        assert!(!trash_root(&dst).exists());
    }
}

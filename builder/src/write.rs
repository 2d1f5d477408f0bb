//! The filesystem edge of rendering: puts a [`Bundle`] on disk, atomically.
//!
//! Owns nothing but I/O: each file goes to a temp file in its target directory, is fsynced,
//! given its mode and renamed over the target; then the directory is fsynced. Files of an
//! earlier bundle that the new one does not contain are removed (only inside `rootfs/` and
//! the known top-level names), so the directory always shows exactly one bundle.

use crate::render::Bundle;
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Writes one file atomically with `mode`.
pub fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    // A bare file name (`mms.yml`) has the empty path as parent: the current directory.
    let dir = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".mms-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    fsync_dir(dir)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

fn safe_rel(rel: &str) -> Result<PathBuf> {
    let p = PathBuf::from(rel);
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("refusing to write bundle path {rel:?}: not a plain relative path");
    }
    Ok(p)
}

/// Writes `bundle` into `out` (created if needed) and removes stale bundle files.
pub fn write_bundle(out: &Path, bundle: &Bundle) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut wanted = BTreeSet::new();
    for (rel, spec) in &bundle.files {
        let path = out.join(safe_rel(rel)?);
        write_file_atomic(&path, &spec.contents, spec.mode)?;
        wanted.insert(path);
    }
    // Stale files of a previous render: top-level bundle names and anything under rootfs/.
    for name in [
        "user-data",
        "meta-data",
        "network-config",
        "seed.iso",
        "plan.json",
    ] {
        let p = out.join(name);
        if !wanted.contains(&p) && p.exists() {
            fs::remove_file(&p).with_context(|| format!("removing stale {}", p.display()))?;
        }
    }
    let rootfs = out.join("rootfs");
    if rootfs.is_dir() {
        remove_stale(&rootfs, &wanted)?;
    }
    fsync_dir(out)
}

fn remove_stale(dir: &Path, wanted: &BTreeSet<PathBuf>) -> Result<bool> {
    let mut empty = true;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            if remove_stale(&path, wanted)? {
                fs::remove_dir(&path)
                    .with_context(|| format!("removing stale {}", path.display()))?;
            } else {
                empty = false;
            }
        } else if wanted.contains(&path) {
            empty = false;
        } else {
            fs::remove_file(&path).with_context(|| format!("removing stale {}", path.display()))?;
        }
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::FileSpec;
    use crate::render::bundle::{ApplianceBins, Parts, assemble};

    #[test]
    fn writes_modes_and_removes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mut parts = Parts {
            user_data: "#cloud-config\n".into(),
            hostname: "h".into(),
            ..Parts::default()
        };
        parts.rootfs.insert(
            "/etc/a/b".into(),
            FileSpec {
                mode: 0o600,
                contents: b"b".to_vec(),
            },
        );
        let b1 = assemble(parts.clone(), &ApplianceBins::Omitted).unwrap();
        write_bundle(dir.path(), &b1).unwrap();
        let meta = fs::metadata(dir.path().join("rootfs/etc/a/b")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        parts.rootfs.clear();
        parts.network_config = Some("version: 2\n".into());
        let b2 = assemble(parts, &ApplianceBins::Omitted).unwrap();
        write_bundle(dir.path(), &b2).unwrap();
        assert!(!dir.path().join("rootfs/etc").exists());
        assert!(dir.path().join("network-config").exists());
        assert!(safe_rel("../x").is_err());
        assert!(safe_rel("/x").is_err());
    }
}

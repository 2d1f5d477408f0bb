//! The state a stand-in app keeps: SQLite databases under `/config`, marker files under
//! `/data`, and the linuxserver.io `PUID`/`PGID` convention for which user the app runs as.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};

use crate::roles::Db;

/// `PUID`/`PGID` as the linuxserver.io images read them (`None` when `PUID` is unset).
pub fn lsio_ids(puid: Option<&str>, pgid: Option<&str>) -> Result<Option<(u32, u32)>> {
    let Some(puid) = puid else { return Ok(None) };
    let uid: u32 = puid
        .trim()
        .parse()
        .map_err(|_| anyhow!("PUID={puid:?}: expected a numeric user id"))?;
    let gid: u32 = match pgid {
        Some(g) => g
            .trim()
            .parse()
            .map_err(|_| anyhow!("PGID={g:?}: expected a numeric group id"))?,
        None => uid,
    };
    Ok(Some((uid, gid)))
}

/// Like the linuxserver.io init: hand `/config` to PUID:PGID, then run as that user.
pub fn drop_to(config: &Path, uid: u32, gid: u32) -> Result<()> {
    fs::create_dir_all(config).with_context(|| format!("create {}", config.display()))?;
    chown_tree(config, uid, gid)?;
    let g = Gid::from_raw(gid);
    setgroups(&[g]).context("setgroups")?;
    setgid(g).context("setgid")?;
    setuid(Uid::from_raw(uid)).context("setuid")?;
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("chown {}", path.display()))?;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Opens (creating if needed) each database under `config` and records this start in it.
pub fn write_dbs(config: &Path, role: &str, dbs: &[Db]) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for db in dbs {
        let path = config.join(db.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        let conn = rusqlite::Connection::open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=DELETE;
             CREATE TABLE IF NOT EXISTS standin_starts (
                 id INTEGER PRIMARY KEY, role TEXT NOT NULL, started_at INTEGER NOT NULL, pid INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS markers (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .with_context(|| format!("schema of {}", path.display()))?;
        conn.execute(
            "INSERT INTO standin_starts (role, started_at, pid) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                role,
                i64::try_from(now).unwrap_or(i64::MAX),
                std::process::id()
            ],
        )
        .with_context(|| format!("write {}", path.display()))?;
        eprintln!("mms-standin: wrote {}", path.display());
    }
    Ok(())
}

/// Creates `root/<dir>/.immich` marker files, as Immich does in its media location.
pub fn write_data_dirs(root: &Path, dirs: &[&str]) -> Result<()> {
    for d in dirs {
        let dir = root.join(d);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let marker = dir.join(".immich");
        if !marker.exists() {
            fs::write(&marker, b"").with_context(|| format!("write {}", marker.display()))?;
            fs::set_permissions(&marker, fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puid_pgid() {
        assert_eq!(lsio_ids(None, Some("5")).unwrap(), None);
        assert_eq!(lsio_ids(Some("0"), Some("0")).unwrap(), Some((0, 0)));
        assert_eq!(lsio_ids(Some("1000"), None).unwrap(), Some((1000, 1000)));
        assert!(lsio_ids(Some("abc"), None).is_err());
        assert!(lsio_ids(Some("1"), Some("x")).is_err());
    }

    #[test]
    fn dbs_grow_per_start() {
        let dir = tempfile_dir();
        let dbs = [Db {
            path: "admin/history1.db",
        }];
        write_dbs(&dir, "sabnzbd", &dbs).unwrap();
        write_dbs(&dir, "sabnzbd", &dbs).unwrap();
        let conn = rusqlite::Connection::open(dir.join("admin/history1.db")).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM standin_starts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        write_data_dirs(&dir, &["library"]).unwrap();
        assert!(dir.join("library/.immich").is_file());
        fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mms-standin-test-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }
}

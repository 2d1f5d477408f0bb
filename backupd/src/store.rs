//! Archives on disk: the run lock, committed archives and manifests, and cleanup.
//!
//! An archive is *committed* when its manifest exists next to it; list, prune and restore
//! see nothing else. Writing follows DESIGN §7: temp file (`.<name>.tmp-…`, mode 0600) →
//! every layer finished → fsync → rename → fsync dir → manifest the same way, last.
//! Temp files, manifests without archive and archives without manifest are leftovers of an
//! interrupted run and are removed by the next run that holds the lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archive::WalkStats;
use crate::naming;

/// Name of the lock file in the target directory.
pub const LOCK_FILE: &str = ".lock";

/// The JSON manifest written beside every committed archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version (1).
    pub format: u32,
    /// Service name.
    pub service: String,
    /// Archive file name (no directory).
    pub archive: String,
    /// Backup start time (UTC, RFC 3339), also encoded in the name.
    pub created: String,
    /// Archive size in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the archive file as written.
    pub sha256: String,
    /// Whether the archive is age-encrypted.
    pub encrypted: bool,
    /// Number of recipients it is encrypted to.
    pub recipients: usize,
    /// What the tree walk stored and reported.
    pub stats: WalkStats,
    /// Tar member holding a database dump, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<String>,
    /// Writer version, e.g. `mms-backupd 0.1.0`.
    pub tool: String,
}

/// A committed archive of one service.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Archive path.
    pub path: PathBuf,
    /// Archive file name.
    pub name: String,
    /// Start time from the name.
    pub time: DateTime<Utc>,
    /// Its manifest.
    pub manifest: Manifest,
}

/// The exclusive run lock (`<target>/.lock`), released when dropped or when the process dies.
#[derive(Debug)]
pub struct RunLock {
    _lock: nix::fcntl::Flock<File>,
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another mms-backupd run holds the lock {path} (PID {pid})")]
    Held {
        /// Lock file.
        path: PathBuf,
        /// PID written by the holder (or "unknown").
        pid: String,
    },
    /// I/O error on the lock file.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// Lock file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

impl RunLock {
    /// Takes the lock without waiting; records our PID in the file.
    pub fn acquire(target: &Path) -> Result<RunLock, LockError> {
        Self::acquire_file(target, LOCK_FILE)
    }

    /// Takes the lock file `name` in `dir` without waiting.
    pub fn acquire_file(dir: &Path, name: &str) -> Result<RunLock, LockError> {
        let target = dir;
        let path = target.join(name);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(target).map_err(io_err)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                lock.set_len(0).map_err(io_err)?;
                writeln!(&mut *lock, "{}", std::process::id()).map_err(io_err)?;
                lock.flush().map_err(io_err)?;
                Ok(RunLock { _lock: lock })
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                // The holder writes its PID right after locking; give it a moment.
                let mut pid = String::new();
                for _ in 0..40 {
                    pid = fs::read_to_string(&path)
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    if !pid.is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                if pid.is_empty() {
                    pid = "unknown".into();
                }
                Err(LockError::Held { path, pid })
            }
            Err((_, errno)) => Err(io_err(io::Error::from(errno))),
        }
    }
}

/// Directory of a service's archives.
pub fn service_dir(target: &Path, service: &str) -> PathBuf {
    target.join(service)
}

/// Committed archives of `service`, oldest first (ties by name). Missing dir = none.
pub fn list_service(target: &Path, service: &str) -> io::Result<Vec<Committed>> {
    let dir = service_dir(target, service);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", dir.display()),
            ));
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(parsed) = naming::parse_archive_name(&name) else {
            continue;
        };
        if parsed.service != service {
            continue;
        }
        let Some(manifest) = read_manifest(&dir.join(naming::manifest_name(&name))) else {
            continue;
        };
        if manifest.archive != name {
            continue;
        }
        out.push(Committed {
            path: dir.join(&name),
            name,
            time: parsed.time,
            manifest,
        });
    }
    out.sort_by(|a, b| (a.time, &a.name).cmp(&(b.time, &b.name)));
    Ok(out)
}

/// Reads a manifest; `None` when missing or unreadable (the archive then does not exist).
pub fn read_manifest(path: &Path) -> Option<Manifest> {
    let text = fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Removes leftovers of interrupted runs in a service directory. Call with the lock held.
/// Returns the removed file names.
pub fn clean_leftovers(dir: &Path) -> io::Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut removed = Vec::new();
    for name in &names {
        let stale = if name.starts_with('.') && name.contains(naming::TMP_MARKER) {
            true
        } else if let Some(archive) = name.strip_suffix(naming::MANIFEST_SUFFIX) {
            naming::parse_archive_name(archive).is_some() && !names.iter().any(|n| n == archive)
        } else if naming::parse_archive_name(name).is_some() {
            !names.contains(&naming::manifest_name(name))
        } else {
            false
        };
        if stale {
            match fs::remove_file(dir.join(name)) {
                Ok(()) => removed.push(name.clone()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot remove {name}: {e}"),
                    ));
                }
            }
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// fsyncs a directory so renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot fsync directory {}: {e}", dir.display()),
        )
    })
}

/// Creates a temp file `.<final>.tmp-XXXXXX` (O_EXCL, 0600) in `dir`.
pub fn temp_for(dir: &Path, final_name: &str) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!(".{final_name}{}", naming::TMP_MARKER))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
}

/// Durably moves a finished temp file to its final name (fsync file, rename, fsync dir).
pub fn commit(file: &File, tmp: tempfile::TempPath, dest: &Path) -> io::Result<()> {
    file.sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Writes a manifest atomically beside its archive (the commit point of a backup).
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> io::Result<PathBuf> {
    let name = naming::manifest_name(&manifest.archive);
    let dest = dir.join(&name);
    let mut tmp = temp_for(dir, &name)?;
    let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    tmp.write_all(&json)?;
    tmp.write_all(b"\n")?;
    let (file, path) = tmp.into_parts();
    commit(&file, path, &dest)?;
    Ok(dest)
}

/// Removes a committed archive: manifest first (so it stops existing), then the data.
pub fn remove_committed(c: &Committed) -> io::Result<()> {
    let dir = c.path.parent().unwrap_or(Path::new("."));
    fs::remove_file(dir.join(naming::manifest_name(&c.name)))?;
    match fs::remove_file(&c.path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    sync_dir(dir)
}

/// Hashes a file (hex SHA-256, size), reporting bytes read to `progress`.
pub fn hash_file(path: &Path, progress: &dyn Fn(u64)) -> io::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
        progress(n as u64);
    }
    Ok((hex::encode(h.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_names_pid() {
        let d = tempfile::tempdir().unwrap();
        let l = RunLock::acquire(d.path()).unwrap();
        let e = RunLock::acquire(d.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("PID {}", std::process::id())), "{e}");
        drop(l);
        RunLock::acquire(d.path()).unwrap();
    }

    #[test]
    fn leftovers_are_removed_committed_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let a = "svc-2025-01-01T000000Z.tar.zst.age";
        let b = "svc-2025-01-02T000000Z.tar.zst.age";
        let c = "svc-2025-01-03T000000Z.tar.zst.age";
        fs::write(p.join(a), b"x").unwrap();
        fs::write(p.join(naming::manifest_name(a)), b"{}").unwrap();
        fs::write(p.join(b), b"x").unwrap(); // no manifest
        fs::write(p.join(naming::manifest_name(c)), b"{}").unwrap(); // no archive
        fs::write(p.join(format!(".{a}.tmp-abc")), b"x").unwrap();
        fs::write(p.join("notes.txt"), b"x").unwrap();
        let mut removed = clean_leftovers(p).unwrap();
        removed.sort();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(p.join(a).exists() && p.join("notes.txt").exists());
    }
}

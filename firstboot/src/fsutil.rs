//! Filesystem helpers: root-relative paths and atomic writes.
//!
//! Every firstboot function that touches the VM's filesystem takes a `root` (`/` in
//! production, a temp dir in tests) and joins the configured absolute paths onto it with
//! [`under`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// `root` joined with the absolute `path` (its leading `/` dropped; `..` components ignored).
pub fn under(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in path.components() {
        if let Component::Normal(part) = c {
            out.push(part);
        }
    }
    out
}

/// `path` with `suffix` appended to its last component (`radarr` → `radarr.mms-old`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Puts the directory `new` in place of `live` (same filesystem: renames only). A previous
/// `live` is moved to `old` (an earlier `old` is removed first) and left for the caller.
pub fn swap_in(new: &Path, live: &Path, old: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if old.exists() {
        fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
    }
    if live.exists() {
        fs::rename(live, old).with_context(|| format!("moving {} aside", live.display()))?;
    }
    fs::rename(new, live).with_context(|| {
        format!(
            "installing {} (staging and live path must be on one filesystem)",
            live.display()
        )
    })
}

/// Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync of the
/// directory. Creates the parent directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent directory", path.display())))?;
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        crate::status::sync(&mut f)?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Creates an empty marker file (and its parents) durably; no-op when it exists.
pub fn touch(path: &Path) -> io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    write_atomic(path, b"", 0o644)
}

/// An exclusive lock held while firstboot runs (released on drop).
pub type RunLock = nix::fcntl::Flock<File>;

/// Takes the run lock at `path` without waiting: a second `mms-firstboot run` fails at once.
pub fn lock(path: &Path) -> io::Result<RunLock> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        io::Error::other(format!(
            "another mms-firstboot holds {} ({e})",
            path.display()
        ))
    })
}

/// Removes `path` if it exists (a file).
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_joins_absolute_paths_and_drops_parent_components() {
        let r = Path::new("/tmp/root");
        assert_eq!(
            under(r, Path::new("/etc/mms/x")),
            Path::new("/tmp/root/etc/mms/x")
        );
        assert_eq!(under(r, Path::new("/a/../b")), Path::new("/tmp/root/a/b"));
        assert_eq!(under(Path::new("/"), Path::new("/etc")), Path::new("/etc"));
    }
}

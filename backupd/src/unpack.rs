//! Strict extraction of an untrusted tar stream into empty staging directories.
//!
//! We iterate entries ourselves instead of `tar::Archive::unpack` and refuse (not skip):
//! `..` components, absolute paths, symlinks whose target is absolute or leaves the tree,
//! hard links to anything but an already extracted regular file of the same tree, devices,
//! FIFOs, global PAX headers, duplicate paths, paths through a symlink, and archives over
//! the entry or size caps. Files are created `O_EXCL` (never through an existing path);
//! setuid/setgid/sticky bits are dropped. Ownership is applied by the caller.
//!
//! Directory modes and all mtimes are applied by [`Unpacked::finish`] after the caller's
//! checks (SQLite integrity) so those checks cannot disturb them.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use tar::EntryType;

/// Caps against compression bombs and runaway archives.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum number of entries.
    pub max_entries: u64,
    /// Maximum total size of file contents.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 5_000_000,
            max_bytes: 4 << 40,
        }
    }
}

/// Environment variable overriding [`Limits::max_entries`].
pub const MAX_ENTRIES_ENV: &str = "MMS_BACKUPD_MAX_ENTRIES";
/// Environment variable overriding [`Limits::max_bytes`].
pub const MAX_BYTES_ENV: &str = "MMS_BACKUPD_MAX_BYTES";

impl Limits {
    /// The defaults, overridden by `MMS_BACKUPD_MAX_ENTRIES` / `MMS_BACKUPD_MAX_BYTES`.
    pub fn from_env() -> Limits {
        let get = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let d = Limits::default();
        Limits {
            max_entries: get(MAX_ENTRIES_ENV).unwrap_or(d.max_entries),
            max_bytes: get(MAX_BYTES_ENV).unwrap_or(d.max_bytes),
        }
    }
}

/// Where archive members go.
#[derive(Debug, Clone)]
pub enum Route {
    /// Everything below this (empty) directory; links must stay inside it.
    All(PathBuf),
    /// Top-level member name → (empty, not yet existing) staging directory for it; links
    /// must stay inside their member. `special` names a top-level file captured separately.
    Members {
        /// Top-level directory name → staging path.
        map: BTreeMap<OsString, PathBuf>,
        /// A top-level regular file (the database dump) written to [`Unpacked::special`].
        special: Option<OsString>,
        /// Directory for the special file's unnamed spool.
        spool_dir: PathBuf,
    },
}

/// The result of a strict unpack, before metadata is finalised.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// Entries extracted.
    pub entries: u64,
    /// Bytes of file content extracted.
    pub bytes: u64,
    /// Regular files extracted (staging paths).
    pub files: Vec<PathBuf>,
    /// The special top-level file's spool and size, if present.
    pub special: Option<(File, u64)>,
    deferred: Vec<(PathBuf, Option<u32>, u64)>,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive breaks a rule.
    #[error("refused archive member {member:?}: {reason}")]
    Refused {
        /// The member path as stored.
        member: String,
        /// Which rule.
        reason: String,
    },
    /// The archive as a whole is refused (caps, trailing data).
    #[error("refused archive: {0}")]
    Archive(String),
    /// Reading the stream or writing the staging tree failed (includes decryption and
    /// checksum errors surfacing from the stream).
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn refuse(member: &[u8], reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        member: String::from_utf8_lossy(member).into_owned(),
        reason: reason.into(),
    }
}

/// Normalises a member path: strips `./`, refuses absolute paths and `..`.
fn normalise(raw: &[u8]) -> Result<PathBuf, UnpackError> {
    let p = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse(raw, "path contains '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(refuse(raw, "absolute path")),
        }
    }
    Ok(out)
}

/// Whether `target` (a symlink's value or hard link path) resolved lexically from `from_dir`
/// (relative to the tree root) stays inside the tree. Returns the normalised path.
fn inside(from_dir: &Path, target: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in from_dir.components().chain(target.components()) {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// Extracts `reader` (a tar stream) strictly, then drains it to EOF (only zero padding may
/// follow the end of the archive) so the age final chunk and zstd checksum are verified.
pub fn unpack<R: Read>(reader: R, route: &Route, limits: Limits) -> Result<Unpacked, UnpackError> {
    unpack_with(reader, route, limits, &mut |_| {})
}

/// [`unpack`], calling `after_file` with each regular file once its content is written
/// (restore starts SQLite checks there while the rest of the stream is extracted).
pub fn unpack_with<R: Read>(
    reader: R,
    route: &Route,
    limits: Limits,
    after_file: &mut dyn FnMut(&Path),
) -> Result<Unpacked, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut out = Unpacked::default();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut buf = vec![0u8; 1 << 20];
    {
        let entries = archive.entries()?;
        for entry in entries {
            let mut entry = entry?;
            crate::signals::check()?;
            out.entries += 1;
            if out.entries > limits.max_entries {
                return Err(UnpackError::Archive(format!(
                    "more than {} entries",
                    limits.max_entries
                )));
            }
            let raw = entry.path_bytes().into_owned();
            let ty = entry.header().entry_type();
            let rel = normalise(&raw)?;
            match ty {
                EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
                | EntryType::Directory
                | EntryType::Symlink
                | EntryType::Link => {}
                EntryType::Char | EntryType::Block => {
                    return Err(refuse(&raw, "device nodes are not allowed"));
                }
                EntryType::Fifo => return Err(refuse(&raw, "FIFOs are not allowed")),
                EntryType::XGlobalHeader => {
                    return Err(refuse(&raw, "global PAX headers are not allowed"));
                }
                other => return Err(refuse(&raw, format!("entry type {other:?} is not allowed"))),
            }
            if rel.as_os_str().is_empty() {
                // The archive's own root ("./"): nothing to create.
                if ty == EntryType::Directory {
                    continue;
                }
                return Err(refuse(&raw, "empty path"));
            }
            if !seen.insert(rel.clone()) {
                return Err(refuse(&raw, "duplicate entry"));
            }
            // Resolve destination and the tree root this entry belongs to.
            let (dest, tree_root_len) = match route {
                Route::All(dir) => (dir.join(&rel), 0usize),
                Route::Members {
                    map,
                    special,
                    spool_dir,
                } => {
                    let mut comps = rel.components();
                    let first = comps
                        .next()
                        .map(|c| c.as_os_str().to_os_string())
                        .unwrap_or_default();
                    let rest: PathBuf = comps.collect();
                    if special.as_deref() == Some(first.as_os_str()) && rest.as_os_str().is_empty()
                    {
                        if !matches!(ty, EntryType::Regular | EntryType::Continuous) {
                            return Err(refuse(&raw, "the database dump must be a regular file"));
                        }
                        let mut spool = tempfile::tempfile_in(spool_dir)?;
                        let n = io::copy(&mut entry, &mut spool)?;
                        add_bytes(&mut out, n, limits)?;
                        io::Seek::rewind(&mut spool)?;
                        out.special = Some((spool, n));
                        continue;
                    }
                    let Some(root) = map.get(&first) else {
                        let expected: Vec<String> = map
                            .keys()
                            .map(|k| k.to_string_lossy().into_owned())
                            .collect();
                        return Err(refuse(
                            &raw,
                            format!(
                                "not part of this service (expected members {})",
                                expected.join(", ")
                            ),
                        ));
                    };
                    if rest.as_os_str().is_empty() && ty != EntryType::Directory {
                        return Err(refuse(&raw, "a service path must be a directory"));
                    }
                    (root.join(&rest), 1usize)
                }
            };
            // No component of the parent may be a symlink we created (writes through links).
            let mut prefix = PathBuf::new();
            for c in rel.parent().unwrap_or(Path::new("")).components() {
                prefix.push(c);
                if symlinks.contains(&prefix) {
                    return Err(refuse(
                        &raw,
                        format!("path goes through the symlink {}", prefix.display()),
                    ));
                }
                if files.contains(&prefix) {
                    return Err(refuse(
                        &raw,
                        format!("parent {} is a file", prefix.display()),
                    ));
                }
            }
            // Path inside its tree, for link checks.
            let in_tree: PathBuf = rel.components().skip(tree_root_len).collect();
            let parent_in_tree = in_tree.parent().unwrap_or(Path::new("")).to_path_buf();
            if let Some(parent) = dest.parent() {
                create_parents(parent, &mut dirs)?;
            }
            let mode = entry.header().mode().ok().map(|m| m & 0o777);
            let mtime = entry.header().mtime().unwrap_or(0);
            match ty {
                EntryType::Directory => {
                    if dirs.contains(&dest) {
                        // Implicitly created as a parent earlier: take its metadata now.
                    } else {
                        fs::create_dir(&dest)?;
                        fs::set_permissions(&dest, fs::Permissions::from_mode(0o700))?;
                        dirs.insert(dest.clone());
                    }
                    out.deferred
                        .push((dest, Some(mode.unwrap_or(0o755)), mtime));
                }
                EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| PathBuf::from(OsStr::from_bytes(&b)))
                        .ok_or_else(|| refuse(&raw, "symlink without target"))?;
                    if target.is_absolute() {
                        return Err(refuse(
                            &raw,
                            format!("symlink to absolute path {}", target.display()),
                        ));
                    }
                    if inside(&parent_in_tree, &target).is_none() {
                        return Err(refuse(
                            &raw,
                            format!("symlink {} leaves the tree", target.display()),
                        ));
                    }
                    std::os::unix::fs::symlink(&target, &dest)?;
                    symlinks.insert(rel.clone());
                }
                EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| b.into_owned())
                        .ok_or_else(|| refuse(&raw, "hard link without target"))?;
                    let target_rel = normalise(&target)
                        .map_err(|_| refuse(&raw, "hard link target outside the tree"))?;
                    if !files.contains(&target_rel) {
                        return Err(refuse(
                            &raw,
                            format!(
                                "hard link to {} which is not an extracted regular file of the archive",
                                String::from_utf8_lossy(&target)
                            ),
                        ));
                    }
                    let same_tree = target_rel
                        .components()
                        .take(tree_root_len)
                        .eq(rel.components().take(tree_root_len));
                    if !same_tree {
                        return Err(refuse(&raw, "hard link target outside the tree"));
                    }
                    let src = match route {
                        Route::All(dir) => dir.join(&target_rel),
                        Route::Members { map, .. } => {
                            let mut c = target_rel.components();
                            let first = c
                                .next()
                                .map(|c| c.as_os_str().to_os_string())
                                .unwrap_or_default();
                            match map.get(&first) {
                                Some(r) => r.join(c.as_path()),
                                None => {
                                    return Err(refuse(&raw, "hard link target outside the tree"));
                                }
                            }
                        }
                    };
                    fs::hard_link(&src, &dest)?;
                    files.insert(rel.clone());
                }
                _ => {
                    let size = entry.size();
                    add_bytes(&mut out, size, limits)?;
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&dest)?;
                    let n = copy_big(&mut (&mut entry).take(size), &mut f, &mut buf)?;
                    if n != size {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "archive ends inside a file",
                        )
                        .into());
                    }
                    f.set_permissions(fs::Permissions::from_mode(mode.unwrap_or(0o644)))?;
                    drop(f);
                    after_file(&dest);
                    files.insert(rel.clone());
                    out.files.push(dest.clone());
                    out.deferred.push((dest, None, mtime));
                }
            }
        }
    }
    // Drain: the rest must be zero padding, and reading it verifies the stream's end.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(UnpackError::Archive(
                "unexpected data after the end of the tar archive".into(),
            ));
        }
    }
    Ok(out)
}

/// `io::copy` with a large buffer: few, big writes (io::copy uses 8 KiB here).
fn copy_big(r: &mut impl Read, w: &mut impl io::Write, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..filled])?;
        total += filled as u64;
    }
}

fn add_bytes(out: &mut Unpacked, n: u64, limits: Limits) -> Result<(), UnpackError> {
    out.bytes = out.bytes.saturating_add(n);
    if out.bytes > limits.max_bytes {
        return Err(UnpackError::Archive(format!(
            "content exceeds the size cap of {} bytes",
            limits.max_bytes
        )));
    }
    Ok(())
}

fn create_parents(dir: &Path, dirs: &mut HashSet<PathBuf>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(p) = dir.parent() {
        create_parents(p, dirs)?;
    }
    fs::create_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    dirs.insert(dir.to_path_buf());
    Ok(())
}

impl Unpacked {
    /// Applies file mtimes and directory modes/mtimes (deepest first).
    pub fn finish(&mut self) -> io::Result<()> {
        let mut deferred = std::mem::take(&mut self.deferred);
        deferred.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, mode, mtime) in deferred {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
            if let Some(m) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(m))?;
            }
            File::open(&path)?.set_modified(t)?;
        }
        Ok(())
    }
}

/// Changes the owner of everything below (and including) `root`, without following links.
/// The error names the path that could not be changed.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(root, Some(uid), Some(gid)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("chown {uid}:{gid} {}: {e}", root.display()),
        )
    })?;
    if fs::symlink_metadata(root)?.is_dir() {
        for e in fs::read_dir(root)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_rules() {
        assert!(inside(Path::new("a/b"), Path::new("../c")).is_some());
        assert!(inside(Path::new("a"), Path::new("../../c")).is_none());
        assert!(inside(Path::new(""), Path::new("..")).is_none());
        assert!(inside(Path::new(""), Path::new("/etc")).is_none());
    }

    #[test]
    fn normalise_rules() {
        assert_eq!(normalise(b"./a/./b").unwrap(), PathBuf::from("a/b"));
        assert!(normalise(b"a/../b").is_err());
        assert!(normalise(b"/etc/passwd").is_err());
    }
}

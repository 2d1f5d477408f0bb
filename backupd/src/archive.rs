//! The directory walk that feeds tar: our own, because `tar::Builder::append_dir_all`
//! follows symlinks, fails on sockets, walks in `read_dir` order and corrupts the archive
//! when a file changes size while it is read (tar-rs #282/#352).
//!
//! Entries are written directory first, then its contents in byte order of the names, so
//! stock `tar -x` restores directory mtimes and archives are reproducible for a fixed tree.
//! Regular files, directories and symlinks (as links) are stored with uid/gid/mode/mtime;
//! sockets, FIFOs and devices are skipped and reported. A regular file's body is exactly the
//! size recorded in its header: a file that grew is cut, one that shrank is zero-padded, and
//! both are reported as changed.

use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header, HeaderMode};

/// What a walk archived and what it had to report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalkStats {
    /// Regular files stored.
    pub files: u64,
    /// Directories stored.
    pub dirs: u64,
    /// Symlinks stored.
    pub symlinks: u64,
    /// Bytes of regular-file content stored.
    pub bytes: u64,
    /// Files whose size or mtime changed while they were read (archive path).
    pub changed: Vec<String>,
    /// Entries not archived and why (sockets, FIFOs, devices, unreadable files).
    pub skipped: Vec<String>,
}

/// Chooses the zstd level for the next file; implemented by the compressing writer.
pub trait LevelHint {
    /// Called before a regular file's body with its size and first bytes.
    fn before_file(&mut self, size: u64, head: &[u8]) -> io::Result<()>;
}

/// A writer without level control (tests, plain tar output).
impl LevelHint for Vec<u8> {
    fn before_file(&mut self, _size: u64, _head: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// Reports bytes of source data consumed (for progress).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Size of the sample read before a file body (also the read buffer size).
const READ_BUF: usize = 1 << 20;

/// Appends `src` (a directory, file or symlink) to the archive under the name `name`,
/// recursively, without following symlinks.
pub fn append_tree<W: Write + LevelHint>(
    builder: &mut tar::Builder<W>,
    src: &Path,
    name: &Path,
    stats: &mut WalkStats,
    progress: Progress<'_>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot stat {}: {e}", src.display())))?;
    append_entry(builder, src, name, &meta, stats, progress)
}

fn append_entry<W: Write + LevelHint>(
    builder: &mut tar::Builder<W>,
    src: &Path,
    name: &Path,
    meta: &Metadata,
    stats: &mut WalkStats,
    progress: Progress<'_>,
) -> io::Result<()> {
    crate::signals::check()?;
    let ft = meta.file_type();
    let ctx = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", src.display()))
    };
    if ft.is_dir() {
        let mut h = header(meta, EntryType::Directory, 0);
        builder
            .append_data(&mut h, name, io::empty())
            .map_err(|e| ctx(e, "cannot archive directory"))?;
        stats.dirs += 1;
        let mut children: Vec<(std::ffi::OsString, PathBuf)> = fs::read_dir(src)
            .map_err(|e| ctx(e, "cannot read directory"))?
            .map(|d| d.map(|d| (d.file_name(), d.path())))
            .collect::<io::Result<_>>()
            .map_err(|e| ctx(e, "cannot read directory"))?;
        children.sort();
        for (file_name, path) in children {
            let child_meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Deleted between readdir and stat: nothing to archive.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot stat {}: {e}", path.display()),
                    ));
                }
            };
            append_entry(
                builder,
                &path,
                &name.join(&file_name),
                &child_meta,
                stats,
                progress,
            )?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(|e| ctx(e, "cannot read symlink"))?;
        let mut h = header(meta, EntryType::Symlink, 0);
        builder
            .append_link(&mut h, name, &target)
            .map_err(|e| ctx(e, "cannot archive symlink"))?;
        stats.symlinks += 1;
    } else if ft.is_file() {
        let file = match File::open(src) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ctx(e, "cannot open")),
        };
        // Use the open file's own metadata so the header matches what we read.
        let fmeta = file.metadata().map_err(|e| ctx(e, "cannot stat"))?;
        let size = fmeta.len();
        let mut reader = BufReader::with_capacity(READ_BUF, ExactSize::new(file, size));
        let head = io::BufRead::fill_buf(&mut reader).map_err(|e| ctx(e, "cannot read"))?;
        builder.get_mut().before_file(size, head)?;
        let mut h = header(&fmeta, EntryType::Regular, size);
        let mut counting = CountingReader {
            inner: reader,
            progress,
        };
        builder
            .append_data(&mut h, name, &mut counting)
            .map_err(|e| ctx(e, "cannot archive file"))?;
        let exact = counting.inner.into_inner();
        let after = exact.file.metadata().map_err(|e| ctx(e, "cannot stat"))?;
        if exact.short
            || exact.long
            || after.len() != size
            || after.mtime() != fmeta.mtime()
            || after.mtime_nsec() != fmeta.mtime_nsec()
        {
            stats.changed.push(name.display().to_string());
        }
        stats.files += 1;
        stats.bytes += size;
    } else {
        let kind = if ft.is_socket() {
            "socket"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "device"
        };
        stats.skipped.push(format!("{} ({kind})", name.display()));
    }
    Ok(())
}

fn header(meta: &Metadata, ty: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_metadata_in_mode(meta, HeaderMode::Complete);
    h.set_entry_type(ty);
    h.set_size(size);
    h
}

/// Reads exactly `size` bytes: stops early if the file grew, zero-pads if it shrank.
struct ExactSize {
    file: File,
    left: u64,
    short: bool,
    long: bool,
}

impl ExactSize {
    fn new(file: File, size: u64) -> Self {
        ExactSize {
            file,
            left: size,
            short: false,
            long: false,
        }
    }
}

impl Read for ExactSize {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            if !self.long && !self.short {
                // Probe one byte: a file that grew is reported, its tail not archived.
                let mut probe = [0u8; 1];
                if self.file.read(&mut probe)? > 0 {
                    self.long = true;
                }
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = if self.short {
            0
        } else {
            self.file.read(&mut buf[..want])?
        };
        if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            self.left -= want as u64;
            return Ok(want);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

struct CountingReader<'a, R> {
    inner: R,
    progress: Progress<'a>,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::signals::check()?;
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for CountingReader<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        (self.progress)(amt as u64);
        self.inner.consume(amt)
    }
}

/// Appends an in-memory or spooled stream as a regular file entry (used for database dumps).
pub fn append_stream<W: Write + LevelHint, R: Read>(
    builder: &mut tar::Builder<W>,
    name: &Path,
    size: u64,
    mode: u32,
    owner: (u32, u32),
    mtime: u64,
    data: R,
) -> io::Result<()> {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(owner.0.into());
    h.set_gid(owner.1.into());
    h.set_mtime(mtime);
    builder.get_mut().before_file(size, &[])?;
    builder.append_data(
        &mut h,
        name,
        BufReader::with_capacity(READ_BUF, data.take(size)),
    )
}

/// Total size of regular files under `src` (for a progress bar's total); errors count as 0.
pub fn tree_size(src: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(src) else {
        return 0;
    };
    if meta.is_dir() {
        fs::read_dir(src)
            .map(|rd| rd.flatten().map(|d| tree_size(&d.path())).sum())
            .unwrap_or(0)
    } else if meta.is_file() {
        meta.len()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn walk_orders_dirs_first_and_keeps_links_and_dotfiles() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("svc");
        fs::create_dir_all(root.join("b/empty")).unwrap();
        fs::write(root.join(".hidden"), b"x").unwrap();
        fs::write(root.join("b/f"), b"hello").unwrap();
        symlink("b/f", root.join("link")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut stats = WalkStats::default();
        append_tree(&mut b, &root, Path::new("svc"), &mut stats, &|_| {}).unwrap();
        let data = b.into_inner().unwrap();
        let mut ar = tar::Archive::new(&data[..]);
        let names: Vec<(String, EntryType)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                )
            })
            .collect();
        let expect = [
            ("svc", EntryType::Directory),
            ("svc/.hidden", EntryType::Regular),
            ("svc/b", EntryType::Directory),
            ("svc/b/empty", EntryType::Directory),
            ("svc/b/f", EntryType::Regular),
            ("svc/link", EntryType::Symlink),
        ];
        let expect: Vec<(String, EntryType)> = expect
            .iter()
            .map(|(n, t)| {
                (
                    format!("{n}{}", if *t == EntryType::Directory { "/" } else { "" })
                        .trim_end_matches('/')
                        .to_string(),
                    *t,
                )
            })
            .collect();
        assert_eq!(names, expect);
        assert_eq!(
            (stats.files, stats.dirs, stats.symlinks, stats.bytes),
            (2, 3, 1, 6)
        );
    }

    #[test]
    fn exact_size_pads_short_and_cuts_long() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"abc").unwrap();
        let mut r = ExactSize::new(File::open(&p).unwrap(), 5);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert!(r.short);
        let mut r = ExactSize::new(File::open(&p).unwrap(), 2);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
        assert!(r.long);
    }
}

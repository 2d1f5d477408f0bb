//! The archive byte pipeline: tar → zstd → age → file, and back.
//!
//! Writing runs in two threads: the caller walks the tree and feeds tar into a
//! multithreaded zstd context ([`Compressor`]); a sink thread encrypts the compressed stream
//! with age, hashes the ciphertext and writes it ([`ArchiveSink`]). Reading runs age
//! decryption and zstd decoding in their own threads ([`open_archive`]), so restore uses both
//! cores. Every layer is generic over `Read`/`Write` so tests run in memory.
//!
//! Close order matters and is enforced by [`finish_archive`]: `tar.into_inner()` (end
//! blocks) → zstd end of frame (checksum) → age final chunk → flush. A file not closed this
//! way fails to decrypt or decompress, which is what makes a crash detectable.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use zstd::stream::raw::{CParameter, Encoder as RawEncoder, InBuffer, Operation, OutBuffer};

use crate::archive::LevelHint;

/// Chunk size passed between pipeline threads.
const CHUNK: usize = 1 << 20;
/// Chunks in flight per channel (bounds memory: 4 MiB per stage).
const DEPTH: usize = 4;
/// Files at least this large may switch the zstd level.
const SWITCH_MIN: u64 = 1 << 20;
/// Level used for data that does not compress (photos, videos, archives).
pub const INCOMPRESSIBLE_LEVEL: i32 = -5;

/// zstd settings for writing.
#[derive(Debug, Clone, Copy)]
pub struct ZstdOptions {
    /// Level for compressible data (3 = the CLI default).
    pub level: i32,
    /// Worker threads (0 = compress in the caller's thread).
    pub workers: u32,
    /// Start a new frame at a fast level for large files that sample as incompressible.
    pub adaptive: bool,
}

impl Default for ZstdOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        ZstdOptions {
            level: 3,
            workers: cores.clamp(1, 4),
            adaptive: true,
        }
    }
}

/// A zstd stream writer (checksums on) that can change level between frames.
pub struct Compressor<W: Write> {
    enc: RawEncoder<'static>,
    out: Vec<u8>,
    inner: W,
    opts: ZstdOptions,
    current: i32,
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("level", &self.current)
            .finish()
    }
}

impl<W: Write> Compressor<W> {
    /// Starts a zstd stream on `inner`.
    pub fn new(inner: W, opts: ZstdOptions) -> io::Result<Self> {
        let mut enc = RawEncoder::new(opts.level)?;
        enc.set_parameter(CParameter::ChecksumFlag(true))?;
        if opts.workers > 0 {
            enc.set_parameter(CParameter::NbWorkers(opts.workers))?;
        }
        Ok(Compressor {
            enc,
            out: vec![0u8; zstd::zstd_safe::CCtx::out_size().max(CHUNK)],
            inner,
            opts,
            current: opts.level,
        })
    }

    fn drain(
        &mut self,
        op: impl Fn(&mut RawEncoder<'static>, &mut OutBuffer<'_, [u8]>) -> io::Result<usize>,
    ) -> io::Result<()> {
        loop {
            let mut out = OutBuffer::around(&mut self.out[..]);
            let remaining = op(&mut self.enc, &mut out)?;
            let n = out.pos();
            self.inner.write_all(&self.out[..n])?;
            if remaining == 0 {
                return Ok(());
            }
        }
    }

    fn end_frame(&mut self) -> io::Result<()> {
        self.drain(|e, o| e.finish(o, false))
    }

    /// Ends the stream (final frame with checksum) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.end_frame()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut input = InBuffer::around(buf);
        while input.pos() < buf.len() {
            let mut out = OutBuffer::around(&mut self.out[..]);
            self.enc.run(&mut input, &mut out)?;
            let n = out.pos();
            self.inner.write_all(&self.out[..n])?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain(|e, o| e.flush(o))?;
        self.inner.flush()
    }
}

impl<W: Write> LevelHint for Compressor<W> {
    fn before_file(&mut self, size: u64, head: &[u8]) -> io::Result<()> {
        if !self.opts.adaptive || size < SWITCH_MIN {
            return Ok(());
        }
        let want = if incompressible(head) {
            INCOMPRESSIBLE_LEVEL
        } else {
            self.opts.level
        };
        if want != self.current {
            self.end_frame()?;
            self.enc.set_parameter(CParameter::CompressionLevel(want))?;
            self.current = want;
        }
        Ok(())
    }
}

/// Whether a sample of a file's start does not compress (saves < 3 % at level 1).
pub fn incompressible(head: &[u8]) -> bool {
    let sample = &head[..head.len().min(64 * 1024)];
    if sample.len() < 4096 {
        return false;
    }
    match zstd::bulk::compress(sample, 1) {
        Ok(c) => c.len() * 100 >= sample.len() * 97,
        Err(_) => false,
    }
}

/// SHA-256 and byte count of everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }
    /// Returns the inner writer, the hex SHA-256 and the byte count.
    pub fn into_parts(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hash.finalize()), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the sink thread produced: the output, ciphertext SHA-256 (hex) and size.
pub type SinkResult<W> = io::Result<(W, String, u64)>;

/// Writer half of the compressed stream; a thread encrypts, hashes and writes it.
pub struct ArchiveSink<W: Send + 'static> {
    tx: Option<SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<SinkResult<W>>>,
}

impl<W: Send + 'static> std::fmt::Debug for ArchiveSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSink").finish_non_exhaustive()
    }
}

impl<W: Write + Send + 'static> ArchiveSink<W> {
    /// Starts the sink thread. With no recipients the stream is written unencrypted.
    pub fn new(out: W, recipients: Vec<Box<dyn age::Recipient + Send>>) -> io::Result<Self> {
        // Build the encryptor here so recipient errors surface before any data is written.
        let encryptor = if recipients.is_empty() {
            None
        } else {
            Some(
                age::Encryptor::with_recipients(
                    recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient),
                )
                .map_err(|e| io::Error::other(format!("cannot encrypt to the recipients: {e}")))?,
            )
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let thread = std::thread::Builder::new()
            .name("age-sink".into())
            .spawn(move || sink_thread(out, encryptor, rx))?;
        Ok(ArchiveSink {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            thread: Some(thread),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let ok = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if ok {
            Ok(())
        } else {
            // The thread stopped: its own error is the real one.
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("archive writer thread stopped")))
        }
    }

    fn join(&mut self) -> SinkResult<W> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("archive writer thread panicked"))),
            None => Err(io::Error::other("archive writer already finished")),
        }
    }

    /// Sends the rest, closes the age stream (final chunk) and flushes; returns the output.
    pub fn finish(mut self) -> SinkResult<W> {
        self.send()?;
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for ArchiveSink<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn sink_thread<W: Write + Send + 'static>(
    out: W,
    encryptor: Option<age::Encryptor>,
    rx: Receiver<Vec<u8>>,
) -> SinkResult<W> {
    match encryptor {
        Some(enc) => {
            // Hashing and writing the ciphertext run in a thread of their own.
            let inner = ArchiveSink::new(out, Vec::new())?;
            let mut w = enc.wrap_output(inner)?;
            for chunk in rx {
                w.write_all(&chunk)?;
            }
            w.finish()?.finish()
        }
        None => {
            let mut w = HashingWriter::new(BufWriter::with_capacity(CHUNK, out));
            for chunk in rx {
                w.write_all(&chunk)?;
            }
            let (buf, sha, size) = w.into_parts();
            let out = buf.into_inner().map_err(|e| e.into_error())?;
            Ok((out, sha, size))
        }
    }
}

/// The full writer chain type used by backups.
pub type ArchiveBuilder<W> = tar::Builder<Compressor<ArchiveSink<W>>>;

/// Starts an archive on `out`: tar → zstd → age(recipients) → `out`.
pub fn start_archive<W: Write + Send + 'static>(
    out: W,
    recipients: Vec<Box<dyn age::Recipient + Send>>,
    zstd: ZstdOptions,
) -> io::Result<ArchiveBuilder<W>> {
    let sink = ArchiveSink::new(out, recipients)?;
    let mut builder = tar::Builder::new(Compressor::new(sink, zstd)?);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    Ok(builder)
}

/// Closes every layer in order; returns the output, ciphertext SHA-256 (hex) and size.
pub fn finish_archive<W: Write + Send + 'static>(builder: ArchiveBuilder<W>) -> SinkResult<W> {
    let compressor = builder.into_inner()?;
    let sink = compressor.finish()?;
    sink.finish()
}

// ----------------------------------------------------------------------------------------
// Reading

/// The outer format of an archive, recognised from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Binary age file.
    Age,
    /// ASCII-armored age file.
    AgeArmored,
    /// Unencrypted zstd stream.
    Zstd,
}

/// Recognises the outer format from the first bytes.
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"age-encryption.org/") {
        Some(Format::Age)
    } else if head.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----") {
        Some(Format::AgeArmored)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Format::Zstd)
    } else {
        None
    }
}

/// Why an archive could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not an age or zstd file.
    #[error("not an archive: expected an age-encrypted or zstd stream")]
    UnknownFormat,
    /// Encrypted but no identity was given.
    #[error("the archive is encrypted; an identity is required")]
    NeedIdentity,
    /// None of the identities matches a recipient stanza.
    #[error("wrong key: none of the given identities can decrypt this archive")]
    WrongKey,
    /// The age header is malformed or does not authenticate.
    #[error("damaged age header: {0}")]
    Header(String),
    /// I/O error while reading the start of the file.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Shared SHA-256 state of the ciphertext read so far.
#[derive(Debug, Clone, Default)]
pub struct ReadHash(Arc<Mutex<(Sha256, u64)>>);

impl ReadHash {
    /// Hex SHA-256 and byte count of everything read.
    pub fn result(&self) -> (String, u64) {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (hex::encode(g.0.clone().finalize()), g.1)
    }
}

struct HashingReader<R> {
    inner: R,
    hash: ReadHash,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut g = self.hash.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0.update(&buf[..n]);
        g.1 += n as u64;
        drop(g);
        if let Some(p) = &self.progress {
            p(n as u64);
        }
        Ok(n)
    }
}

enum Msg {
    Data(Vec<u8>),
    Err(io::Error),
    End,
}

/// A reader fed by a pump thread; forwards the thread's errors.
pub struct ChannelReader {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl std::fmt::Debug for ChannelReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelReader").finish_non_exhaustive()
    }
}

fn pump<R: Read + Send + 'static>(mut r: R, name: &str) -> io::Result<ChannelReader> {
    let (tx, rx) = sync_channel::<Msg>(DEPTH);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                let res = loop {
                    match r.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(true),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(false);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                if !buf.is_empty() && tx.send(Msg::Data(buf)).is_err() {
                    return;
                }
                match res {
                    Ok(false) => {}
                    Ok(true) => {
                        let _ = tx.send(Msg::End);
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Err(e));
                        return;
                    }
                }
            }
        })?;
    Ok(ChannelReader {
        rx,
        cur: Vec::new(),
        pos: 0,
        done: false,
    })
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Msg::End) => self.done = true,
                Ok(Msg::Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "pipeline stage stopped",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An opened archive: the plaintext tar stream plus the ciphertext hash being computed.
#[derive(Debug)]
pub struct OpenedArchive {
    /// The decrypted, decompressed tar stream.
    pub tar: ChannelReader,
    /// SHA-256 of the file bytes read so far (complete once `tar` hit EOF).
    pub hash: ReadHash,
    /// The outer format.
    pub format: Format,
}

/// Opens an archive stream: sniffs the format, decrypts with `identities` (if encrypted)
/// and decompresses, each stage in its own thread. `progress` receives file bytes read.
pub fn open_archive<R: Read + Send + 'static>(
    input: R,
    identities: &[Box<dyn age::Identity>],
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> Result<OpenedArchive, OpenError> {
    let hash = ReadHash::default();
    // Reading and hashing the file run in a thread of their own.
    let raw = pump(
        HashingReader {
            inner: input,
            hash: hash.clone(),
            progress,
        },
        "read-hash",
    )?;
    let mut reader = BufReader::with_capacity(CHUNK, raw);
    let head = reader.fill_buf()?;
    let format = sniff(head).ok_or(OpenError::UnknownFormat)?;
    let compressed: Box<dyn Read + Send> = match format {
        Format::Zstd => Box::new(reader),
        Format::Age | Format::AgeArmored => {
            if identities.is_empty() {
                return Err(OpenError::NeedIdentity);
            }
            let decrypted: Box<dyn Read + Send> = if format == Format::Age {
                Box::new(decrypt(reader, identities)?)
            } else {
                Box::new(decrypt(
                    BufReader::new(age::armor::ArmoredReader::new(reader)),
                    identities,
                )?)
            };
            Box::new(pump(decrypted, "age-decrypt")?)
        }
    };
    let decoder = zstd::stream::read::Decoder::new(compressed)?;
    let tar = pump(decoder, "zstd-decode")?;
    Ok(OpenedArchive { tar, hash, format })
}

fn decrypt<R: BufRead + Send + 'static>(
    r: R,
    identities: &[Box<dyn age::Identity>],
) -> Result<age::stream::StreamReader<R>, OpenError> {
    let d = age::Decryptor::new_buffered(r).map_err(map_decrypt_error)?;
    d.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(map_decrypt_error)
}

fn map_decrypt_error(e: age::DecryptError) -> OpenError {
    match e {
        age::DecryptError::NoMatchingKeys => OpenError::WrongKey,
        age::DecryptError::Io(io) => OpenError::Io(io),
        other => OpenError::Header(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8], encrypted: bool) {
        let id = age::x25519::Identity::generate();
        let recips: Vec<Box<dyn age::Recipient + Send>> = if encrypted {
            vec![Box::new(id.to_public())]
        } else {
            vec![]
        };
        let sink = ArchiveSink::new(Vec::new(), recips).unwrap();
        let mut c = Compressor::new(sink, ZstdOptions::default()).unwrap();
        c.write_all(data).unwrap();
        let (out, sha, size) = c.finish().unwrap().finish().unwrap();
        assert_eq!(size as usize, out.len());
        assert_eq!(sha, hex::encode(Sha256::digest(&out)));
        let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(id)];
        let mut opened = open_archive(std::io::Cursor::new(out), &ids, None).unwrap();
        let mut back = Vec::new();
        opened.tar.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(opened.hash.result(), (sha, size));
    }

    #[test]
    fn round_trips_at_chunk_edges() {
        for n in [0usize, 1, 65536, 65537, 3 * CHUNK + 17] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            roundtrip(&data, true);
            roundtrip(&data, false);
        }
    }

    #[test]
    fn wrong_key_and_garbage() {
        let id = age::x25519::Identity::generate();
        let sink = ArchiveSink::new(Vec::new(), vec![Box::new(id.to_public())]).unwrap();
        let c = Compressor::new(sink, ZstdOptions::default()).unwrap();
        let (out, _, _) = c.finish().unwrap().finish().unwrap();
        let other: Vec<Box<dyn age::Identity>> = vec![Box::new(age::x25519::Identity::generate())];
        let e = open_archive(std::io::Cursor::new(out), &other, None).unwrap_err();
        assert!(matches!(e, OpenError::WrongKey), "{e}");
        let e = open_archive(std::io::Cursor::new(b"hello".to_vec()), &other, None).unwrap_err();
        assert!(matches!(e, OpenError::UnknownFormat), "{e}");
    }

    #[test]
    fn incompressible_detection() {
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(2000);
        assert!(!incompressible(&text));
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert!(incompressible(&random));
    }
}

//! Shared helpers for mms-backupd's integration tests: real tools, fixtures, tree compare.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

/// Panics (fails the test) when a tool is missing, naming the setup script.
pub fn need(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
    {
        let p = dir.join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "required tool `{tool}` is not installed: run scripts/setup-test-env.sh (as root) first"
    );
}

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mms-backupd"))
}

/// Runs a shell pipeline, panicking with its stderr on failure.
pub fn sh(script: &str) -> Output {
    let out = Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Whether we run as root (CI and this machine do).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The owner restored files get: 1100:1100 as root, ourselves otherwise.
pub fn owner() -> (u32, u32) {
    if is_root() {
        (1100, 1100)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

/// An age X25519 key pair made with `age-keygen`: (identity file, recipient).
pub fn age_key(dir: &Path) -> (PathBuf, String) {
    need("age-keygen");
    let key = dir.join("key.txt");
    sh(&format!("age-keygen -o {} 2>/dev/null", key.display()));
    let r = sh(&format!("age-keygen -y {}", key.display()));
    (key, String::from_utf8(r.stdout).unwrap().trim().to_string())
}

/// An ssh-ed25519 key pair made with `ssh-keygen`: (private key file, public key line).
pub fn ssh_key(dir: &Path) -> (PathBuf, String) {
    need("ssh-keygen");
    let key = dir.join("id_ed25519");
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -C test -f {}",
        key.display()
    ));
    (
        key.clone(),
        fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string(),
    )
}

fn set_mtime(p: &Path, secs: u64) {
    File::open(p)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A source tree with every kind of entry the archive must keep.
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join(".hidden"), b"dotfile\n").unwrap();
    fs::write(
        root.join("config.xml"),
        b"<Config><Port>7878</Port></Config>\n".repeat(50),
    )
    .unwrap();
    fs::write(root.join("zero"), b"").unwrap();
    fs::write(root.join("exact64k"), noise(65536, 3)).unwrap();
    fs::write(root.join("sub/photo.jpg"), noise(3 << 20, 7)).unwrap();
    fs::write(
        root.join("sub/log.txt"),
        b"2025-01-01 INFO something happened\n".repeat(40000),
    )
    .unwrap();
    let long = "a-very-long-directory-name-that-needs-gnu-long-names-0123456789".repeat(2);
    fs::create_dir_all(root.join("sub").join(&long)).unwrap();
    fs::write(
        root.join("sub").join(&long).join("file-with-long-path.txt"),
        b"long\n",
    )
    .unwrap();
    fs::write(root.join("sub/deeper/script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        root.join("sub/deeper/script.sh"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    fs::set_permissions(root.join("config.xml"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("config.xml", root.join("link-to-config")).unwrap();
    symlink("../config.xml", root.join("sub/up-link")).unwrap();
    symlink("deeper", root.join("sub/dir-link")).unwrap();
    let conn = rusqlite::Connection::open(root.join("app.db")).unwrap();
    conn.execute_batch("CREATE TABLE movies(id INTEGER PRIMARY KEY, title TEXT); INSERT INTO movies(title) VALUES ('Alien'), ('Heat');")
        .unwrap();
    drop(conn);
    // Fixed mtimes, deepest first so directory mtimes stick.
    let mut all = Vec::new();
    walk(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        if !fs::symlink_metadata(p).unwrap().file_type().is_symlink() {
            set_mtime(p, 1_600_000_000 + i as u64 * 3600);
        }
    }
    set_mtime(root, 1_500_000_000);
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, out);
        }
    }
}

/// Describes a tree: relative path → (kind, mode, mtime, content hash or link target).
pub fn describe(root: &Path) -> Vec<(String, String)> {
    let mut all = Vec::new();
    walk(root, &mut all);
    let mut out: Vec<(String, String)> = all
        .iter()
        .map(|p| {
            let m = fs::symlink_metadata(p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(p).unwrap().display())
            } else if m.is_dir() {
                format!("dir {:o} {}", m.mode() & 0o7777, m.mtime())
            } else {
                let data = fs::read(p).unwrap();
                use sha2::Digest;
                format!(
                    "file {:o} {} {}",
                    m.mode() & 0o7777,
                    m.mtime(),
                    hex::encode(sha2::Sha256::digest(&data))
                )
            };
            (rel, what)
        })
        .collect();
    out.sort();
    out
}

/// Asserts two trees are equal entry by entry.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (describe(a), describe(b));
    assert!(!da.is_empty());
    for (x, y) in da.iter().zip(db.iter()) {
        assert_eq!(x, y, "trees differ: {} vs {}", a.display(), b.display());
    }
    assert_eq!(
        da.len(),
        db.len(),
        "entry counts differ: {} vs {}",
        a.display(),
        b.display()
    );
}

/// Writes a config file and returns its path.
pub fn write_config(dir: &Path, target: &Path, recipients: &[String], services: &str) -> PathBuf {
    let (uid, gid) = owner();
    let recips: Vec<String> = recipients.iter().map(|r| format!("{r:?}")).collect();
    let text = format!(
        "target: {}\nrecipients: [{}]\nretention: {{ daily: 7, weekly: 4, monthly: 6 }}\nuser: {{ uid: {uid}, gid: {gid} }}\nservices:\n{services}",
        target.display(),
        recips.join(", ")
    );
    let p = dir.join("backupd.yml");
    fs::write(&p, text).unwrap();
    p
}

/// `--config CFG restore --service S --archive A --identity I [--to DIR]`.
pub fn restore_args<'a>(
    cfg: &'a str,
    service: &'a str,
    archive: &'a str,
    identity: &'a str,
    to: Option<&'a str>,
) -> Vec<&'a str> {
    let mut args = vec![
        "--config",
        cfg,
        "restore",
        "--service",
        service,
        "--archive",
        archive,
        "--identity",
        identity,
    ];
    if let Some(to) = to {
        args.extend(["--to", to]);
    }
    args
}

/// Runs the binary with args; returns (exit code, stdout, stderr).
pub fn run(args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary and asserts success.
pub fn ok(args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>) -> String {
    let (code, out, err) = run(args, envs, stdin);
    assert_eq!(
        code, 0,
        "mms-backupd {args:?} failed:\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// Runs the binary and asserts exit 1 with the message's first line containing `needle`.
pub fn refused(args: &[&str], envs: &[(&str, &str)], stdin: Option<&[u8]>, needle: &str) -> String {
    let (code, out, err) = run(args, envs, stdin);
    assert_eq!(
        code, 1,
        "expected exit 1 for {args:?}; stdout: {out} stderr: {err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains(needle),
        "expected {needle:?} in the error line of {args:?}; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    line
}

/// The single archive file in a service dir.
pub fn archives(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| {
                    p.to_string_lossy().ends_with(".age") || p.to_string_lossy().ends_with(".zst")
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

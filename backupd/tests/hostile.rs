//! Hostile and damaged archives: each rule of the strict unpack refuses with a clear error,
//! and the live directory stays exactly as it was (no staging leftovers either).

#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::fs;
use std::path::Path;

/// Builds a tar with python3's tarfile from a small spec, compresses and encrypts it.
fn hostile(dir: &Path, name: &str, spec: &str, recipient: &str) -> std::path::PathBuf {
    need("python3");
    let tar = dir.join(format!("{name}.tar"));
    let script = format!(
        r#"
import tarfile, io, sys
t = tarfile.open({tar:?}, "w", format=tarfile.GNU_FORMAT)
def d(name):
    i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)
def f(name, data=b"x"):
    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
def l(name, target, kind=tarfile.SYMTYPE):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = target; t.addfile(i)
def special(name, kind):
    i = tarfile.TarInfo(name); i.type = kind; i.devmajor = 1; i.devminor = 3; t.addfile(i)
{spec}
t.close()
"#,
        tar = tar.display().to_string()
    );
    let py = dir.join(format!("{name}.py"));
    fs::write(&py, script).unwrap();
    sh(&format!("python3 {}", py.display()));
    let out = dir.join(format!("{name}.tar.zst.age"));
    sh(&format!(
        "zstd -q -c {} | age -r {recipient} > {}",
        tar.display(),
        out.display()
    ));
    out
}

#[test]
fn hostile_corpus_is_refused_and_live_dir_untouched() {
    for t in ["age", "zstd", "python3"] {
        need(t);
    }
    let d = tempfile::tempdir().unwrap();
    let (id, r) = age_key(d.path());
    let live = d.path().join("live/radarr");
    make_tree(&live);
    let before = describe(&live);
    let target = d.path().join("backups");
    let cfg = write_config(
        d.path(),
        &target,
        std::slice::from_ref(&r),
        &format!("  radarr: {{ paths: [{}] }}\n", live.display()),
    );
    let c = cfg.to_str().unwrap().to_string();
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        ("dotdot", "d('radarr'); f('radarr/../evil')", "'..'", &[]),
        (
            "absolute",
            "d('radarr'); f('/tmp/mms-evil-abs')",
            "absolute path",
            &[],
        ),
        (
            "symlink-out",
            "d('radarr'); l('radarr/x', '../../../etc')",
            "leaves the tree",
            &[],
        ),
        (
            "symlink-abs",
            "d('radarr'); l('radarr/x', '/etc/passwd')",
            "symlink to absolute path",
            &[],
        ),
        (
            "through-link",
            "d('radarr'); d('radarr/sub'); l('radarr/l', 'sub'); f('radarr/l/x')",
            "through the symlink",
            &[],
        ),
        (
            "hardlink-out",
            "d('radarr'); l('radarr/h', '/etc/passwd', tarfile.LNKTYPE)",
            "hard link",
            &[],
        ),
        (
            "hardlink-missing",
            "d('radarr'); l('radarr/h', 'radarr/nothing', tarfile.LNKTYPE)",
            "hard link",
            &[],
        ),
        (
            "hardlink-dotdot",
            "d('radarr'); f('radarr/a'); l('radarr/h', 'radarr/../../etc/passwd', tarfile.LNKTYPE)",
            "hard link",
            &[],
        ),
        (
            "device",
            "d('radarr'); special('radarr/null', tarfile.CHRTYPE)",
            "device",
            &[],
        ),
        (
            "block",
            "d('radarr'); special('radarr/sda', tarfile.BLKTYPE)",
            "device",
            &[],
        ),
        (
            "fifo",
            "d('radarr'); special('radarr/p', tarfile.FIFOTYPE)",
            "FIFO",
            &[],
        ),
        (
            "duplicate",
            "d('radarr'); f('radarr/a', b'1'); f('radarr/a', b'2')",
            "duplicate",
            &[],
        ),
        (
            "foreign-member",
            "d('radarr'); f('radarr/a'); d('sonarr'); f('sonarr/b')",
            "not part of this service",
            &[],
        ),
        (
            "entry-cap",
            "d('radarr')\nfor n in range(20): f('radarr/f%d' % n)",
            "entries",
            &[("MMS_BACKUPD_MAX_ENTRIES", "10")],
        ),
        (
            "size-cap",
            "d('radarr'); f('radarr/big', b'x' * 5000)",
            "size cap",
            &[("MMS_BACKUPD_MAX_BYTES", "1000")],
        ),
    ];
    for (name, spec, needle, env) in cases {
        let a = hostile(d.path(), name, spec, &r);
        refused(
            &restore_args(
                &c,
                "radarr",
                a.to_str().unwrap(),
                id.to_str().unwrap(),
                None,
            ),
            env,
            None,
            needle,
        );
        assert_eq!(describe(&live), before, "case {name} changed the live dir");
        let siblings: Vec<_> = fs::read_dir(d.path().join("live"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(siblings.len(), 1, "case {name} left {siblings:?}");
        assert!(!Path::new("/tmp/mms-evil-abs").exists());
        // --to refuses the same archive and leaves no directory behind (a foreign member is
        // fine there: --to accepts any archive).
        if *name == "foreign-member" {
            continue;
        }
        let to = d.path().join(format!("to-{name}"));
        refused(
            &restore_args(
                &c,
                "radarr",
                a.to_str().unwrap(),
                id.to_str().unwrap(),
                Some(to.to_str().unwrap()),
            ),
            env,
            None,
            needle,
        );
        assert!(!to.exists(), "case {name}: --to dir left behind");
    }
}

#[test]
fn trailing_garbage_truncation_flipped_byte_and_wrong_key() {
    for t in ["age", "zstd"] {
        need(t);
    }
    let d = tempfile::tempdir().unwrap();
    let (id, r) = age_key(d.path());
    let live = d.path().join("live/radarr");
    make_tree(&live);
    let target = d.path().join("backups");
    let cfg = write_config(
        d.path(),
        &target,
        std::slice::from_ref(&r),
        &format!("  radarr: {{ paths: [{}] }}\n", live.display()),
    );
    let c = cfg.to_str().unwrap().to_string();
    let archive = PathBuf::from(ok(&["--config", &c, "backup"], &[], None).trim());
    fs::write(live.join("changed-after-backup"), b"new").unwrap();
    let before = describe(&live);
    let data = fs::read(&archive).unwrap();
    let id_s = id.to_str().unwrap();
    let restore = |path: &Path, needle: &str| {
        refused(
            &restore_args(&c, "radarr", path.to_str().unwrap(), id_s, None),
            &[],
            None,
            needle,
        );
        assert_eq!(describe(&live), before);
    };
    // Truncated (outside the store, so no manifest applies).
    let trunc = d.path().join("trunc.tar.zst.age");
    fs::write(&trunc, &data[..data.len() * 2 / 3]).unwrap();
    restore(&trunc, "damaged, truncated");
    // Cut exactly at an age chunk boundary (after the header, its 16-byte nonce and whole
    // 64 KiB + 16 chunks): the missing final chunk is detected.
    let header_end = data
        .windows(5)
        .position(|w| w == b"\n--- ")
        .and_then(|p| {
            data[p + 1..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|q| p + 2 + q)
        })
        .expect("age header");
    let chunk = 65536 + 16;
    let payload = header_end + 16;
    // Every chunk but the last is whole; the last holds 1..=64 KiB of plaintext.
    let before_last = (data.len() - payload - 1) / chunk;
    let boundary = payload + before_last * chunk;
    assert!(boundary < data.len());
    let cut = d.path().join("cut.tar.zst.age");
    fs::write(&cut, &data[..boundary]).unwrap();
    restore(&cut, "damaged, truncated");
    // One flipped byte in the middle.
    let mut flipped = data.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let fl = d.path().join("flip.tar.zst.age");
    fs::write(&fl, &flipped).unwrap();
    restore(&fl, "damaged, truncated");
    // Wrong key.
    let other = tempfile::tempdir().unwrap();
    let (wrong, _) = age_key(other.path());
    refused(
        &restore_args(
            &c,
            "radarr",
            archive.to_str().unwrap(),
            wrong.to_str().unwrap(),
            None,
        ),
        &[],
        None,
        "wrong key",
    );
    assert_eq!(describe(&live), before);
    // Not an identity at all.
    refused(
        &restore_args(&c, "radarr", archive.to_str().unwrap(), "-", None),
        &[],
        Some(b"hello"),
        "expected an age identity",
    );
    // A stored archive that no longer matches its manifest (bit rot): verify and restore fail.
    let mut rotted = data.clone();
    let n = rotted.len();
    rotted[n - 1] ^= 1;
    fs::write(&archive, &rotted).unwrap();
    refused(
        &["--config", &c, "verify"],
        &[],
        None,
        "differs from the manifest",
    );
    restore(&archive, "radarr");
    // A stored archive replaced by another valid one: only the manifest can tell.
    sh(&format!(
        "tar -C {} -cf - radarr | zstd -q | age -r {r} > {}",
        d.path().join("live").display(),
        archive.display()
    ));
    refused(
        &["--config", &c, "verify"],
        &[],
        None,
        "differs from the manifest",
    );
    restore(&archive, "does not match its manifest");
    // Trailing non-zero data after the tar end inside a valid stream.
    need("python3");
    let tar = d.path().join("t.tar");
    sh(&format!(
        "tar -C {} -cf {} radarr && printf 'GARBAGE' >> {}",
        d.path().join("live").display(),
        tar.display(),
        tar.display()
    ));
    let tg = d.path().join("tg.tar.zst.age");
    sh(&format!(
        "zstd -q -c {} | age -r {r} > {}",
        tar.display(),
        tg.display()
    ));
    restore(&tg, "unexpected data after the end");
}

use std::path::PathBuf;

#[test]
fn corrupt_sqlite_database_is_refused_before_the_swap() {
    for t in ["age", "zstd", "tar"] {
        need(t);
    }
    let d = tempfile::tempdir().unwrap();
    let (id, r) = age_key(d.path());
    let src = d.path().join("src/radarr");
    fs::create_dir_all(&src).unwrap();
    let conn = rusqlite::Connection::open(src.join("radarr.db")).unwrap();
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX tv ON t(v);")
        .unwrap();
    for i in 0..2000 {
        conn.execute(
            "INSERT INTO t(v) VALUES (?1)",
            [format!("value number {i} with some padding text")],
        )
        .unwrap();
    }
    drop(conn);
    // Scribble over a b-tree page in the middle of the file (the header stays valid).
    let mut db = fs::read(src.join("radarr.db")).unwrap();
    let page = 4096 * 5;
    for b in &mut db[page + 8..page + 600] {
        *b = 0xA5;
    }
    fs::write(src.join("radarr.db"), db).unwrap();
    let a = d.path().join("corrupt.tar.zst.age");
    sh(&format!(
        "tar -C {} -cf - radarr | zstd -q | age -r {r} > {}",
        d.path().join("src").display(),
        a.display()
    ));
    let live = d.path().join("live/radarr");
    make_tree(&live);
    let before = describe(&live);
    let target = d.path().join("backups");
    let cfg = write_config(
        d.path(),
        &target,
        &[r],
        &format!("  radarr: {{ paths: [{}] }}\n", live.display()),
    );
    let c = cfg.to_str().unwrap();
    refused(
        &restore_args(c, "radarr", a.to_str().unwrap(), id.to_str().unwrap(), None),
        &[],
        None,
        "integrity_check",
    );
    assert_eq!(describe(&live), before);
}

//! Interoperability with the stock tools: Go `age`, `zstd`, GNU `tar`, both directions.

mod common;
use common::*;
use std::fs;

#[test]
fn archive_decrypts_with_go_age_x25519_and_ssh_and_matches_source() {
    for t in ["age", "zstd", "tar"] {
        need(t);
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("live/radarr");
    make_tree(&src);
    let (age_id, age_r) = age_key(d.path());
    let (ssh_id, ssh_r) = ssh_key(d.path());
    let target = d.path().join("backups");
    let cfg = write_config(
        d.path(),
        &target,
        &[age_r, ssh_r],
        &format!("  radarr: {{ paths: [{}] }}\n", src.display()),
    );
    let out = ok(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "backup",
            "--service",
            "radarr",
            "--at",
            "2025-05-15T08:38:44Z",
        ],
        &[],
        None,
    );
    let archive = target.join("radarr/radarr-2025-05-15T083844Z.tar.zst.age");
    assert_eq!(out.trim(), archive.display().to_string());
    assert!(
        target
            .join("radarr/radarr-2025-05-15T083844Z.tar.zst.age.manifest.json")
            .is_file()
    );
    for (i, id) in [age_id, ssh_id].iter().enumerate() {
        let x = d.path().join(format!("x{i}"));
        fs::create_dir(&x).unwrap();
        sh(&format!(
            "age -d -i {} {} | zstd -d | tar -x -C {}",
            id.display(),
            archive.display(),
            x.display()
        ));
        assert_same_tree(&src, &x.join("radarr"));
        // tar -x restores directory mtimes only when directories come before their contents.
        assert_eq!(
            fs::metadata(x.join("radarr")).unwrap().modified().unwrap(),
            fs::metadata(&src).unwrap().modified().unwrap()
        );
    }
    // Directory entries precede their contents in the tar stream.
    let list = sh(&format!(
        "age -d -i {} {} | zstd -d | tar -t",
        d.path().join("key.txt").display(),
        archive.display()
    ));
    let names: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    for (i, n) in names.iter().enumerate() {
        if let Some((parent, _)) = n.rsplit_once('/') {
            let pos = names
                .iter()
                .position(|m| m == parent)
                .expect("parent listed");
            assert!(pos < i, "{parent} listed after {n}");
        }
    }
}

#[test]
fn stock_pipeline_archive_restores_through_mms_backupd() {
    for t in ["age", "zstd", "tar"] {
        need(t);
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src/radarr");
    make_tree(&src);
    let (id, r) = age_key(d.path());
    let stock = d.path().join("stock.tar.zst.age");
    sh(&format!(
        "tar -C {} -cf - radarr | zstd -3 -T0 -q | age -r {r} > {}",
        d.path().join("src").display(),
        stock.display()
    ));
    let live = d.path().join("live/radarr");
    fs::create_dir_all(&live).unwrap();
    fs::write(live.join("old.txt"), b"old").unwrap();
    let target = d.path().join("backups");
    let cfg = write_config(
        d.path(),
        &target,
        std::slice::from_ref(&r),
        &format!("  radarr: {{ paths: [{}] }}\n", live.display()),
    );
    let c = cfg.to_str().unwrap();
    // --to DIR (nonexistent), identity from a file
    let to = d.path().join("restored");
    ok(
        &[
            "restore",
            "--config",
            c,
            "--service",
            "radarr",
            "--archive",
            stock.to_str().unwrap(),
            "--identity",
            id.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ],
        &[],
        None,
    );
    let restored = describe(&to.join("radarr"));
    let source = describe(&src);
    assert_eq!(restored, source);
    // Live restore (no unit): identity from stdin, the live dir is replaced atomically.
    let key = fs::read(&id).unwrap();
    ok(
        &restore_args(c, "radarr", stock.to_str().unwrap(), "-", None),
        &[],
        Some(&key),
    );
    assert_same_tree(&src, &live);
    assert!(!live.join("old.txt").exists());
    let (uid, gid) = owner();
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(live.join("sub/log.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid, gid));
    // No staging leftovers beside the live dir.
    let siblings: Vec<_> = fs::read_dir(d.path().join("live"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec![std::ffi::OsString::from("radarr")]);
    // A stock archive of a directory's contents (./ entries) restores with --to too.
    let stock2 = d.path().join("stock2.tar.zst.age");
    sh(&format!(
        "tar -C {} -cf - . | zstd -q | age -r {r} > {}",
        src.display(),
        stock2.display()
    ));
    let to2 = d.path().join("restored2");
    fs::create_dir(&to2).unwrap();
    ok(
        &[
            "restore",
            "--config",
            c,
            "--service",
            "radarr",
            "--archive",
            stock2.to_str().unwrap(),
            "--identity",
            id.to_str().unwrap(),
            "--to",
            to2.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_same_tree(&src, &to2);
    // ASCII-armored age output (`age -a`) is accepted too.
    let armored = d.path().join("armored.tar.zst.age");
    sh(&format!(
        "tar -C {} -cf - radarr | zstd -q | age -a -r {r} > {}",
        d.path().join("src").display(),
        armored.display()
    ));
    let to3 = d.path().join("restored3");
    ok(
        &[
            "restore",
            "--config",
            c,
            "--service",
            "radarr",
            "--archive",
            armored.to_str().unwrap(),
            "--identity",
            id.to_str().unwrap(),
            "--to",
            to3.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_same_tree(&src, &to3.join("radarr"));
    // --to refuses a non-empty directory.
    refused(
        &[
            "restore",
            "--config",
            c,
            "--service",
            "radarr",
            "--archive",
            stock2.to_str().unwrap(),
            "--identity",
            id.to_str().unwrap(),
            "--to",
            to2.to_str().unwrap(),
        ],
        &[],
        None,
        "not empty",
    );
}

#[test]
fn no_recipients_writes_zstd_tar_and_warns() {
    need("zstd");
    need("tar");
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("live/sonarr");
    make_tree(&src);
    let target = d.path().join("backups");
    let cfg = write_config(
        d.path(),
        &target,
        &[],
        &format!("  sonarr: {{ paths: [{}] }}\n", src.display()),
    );
    let (code, out, err) = run(&["backup", "--config", cfg.to_str().unwrap()], &[], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("UNENCRYPTED"), "{err}");
    let archive = out.trim();
    assert!(archive.ends_with(".tar.zst"), "{archive}");
    let x = d.path().join("x");
    fs::create_dir(&x).unwrap();
    sh(&format!("zstd -d < {archive} | tar -x -C {}", x.display()));
    assert_same_tree(&src, &x.join("sonarr"));
    // And our restore reads it (the identity is not needed but must parse).
    let (id, _) = age_key(d.path());
    let to = d.path().join("to");
    ok(
        &[
            "restore",
            "--config",
            cfg.to_str().unwrap(),
            "--service",
            "sonarr",
            "--archive",
            archive,
            "--identity",
            id.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_same_tree(&src, &to.join("sonarr"));
}

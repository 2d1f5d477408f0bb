//! Crash safety: SIGKILL at random points of backups never leaves a visible incomplete
//! archive, and the next run cleans up; a second concurrent run is refused at once.

mod common;
use common::*;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigkill_at_random_points_leaves_no_visible_incomplete_archive() {
    need("age");
    need("zstd");
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("live/radarr");
    fs::create_dir_all(&src).unwrap();
    // A sizeable tree: ~12 MiB in 48 files, half compressible.
    for i in 0..48u64 {
        let data = if i % 2 == 0 {
            noise(256 << 10, i + 1)
        } else {
            format!("line {i} of a log file\n")
                .repeat(10000)
                .into_bytes()
        };
        fs::write(src.join(format!("f{i:03}")), data).unwrap();
    }
    let (id, r) = age_key(d.path());
    let target = d.path().join("backups");
    let cfg = write_config(
        d.path(),
        &target,
        &[r],
        &format!("  radarr: {{ paths: [{}] }}\n", src.display()),
    );
    let c = cfg.to_str().unwrap();
    // Measure one full run to spread the kill points over it.
    let t0 = Instant::now();
    ok(
        &["--config", c, "backup", "--at", "2024-01-01T00:00:00Z"],
        &[],
        None,
    );
    let full = t0.elapsed();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut killed_mid_write = 0;
    for i in 0..10u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % (full.as_micros() as u64 + 1));
        let at = format!("2024-02-{:02}T00:00:00Z", i + 1);
        let mut child = Command::new(bin())
            .args(["--config", c, "backup", "--at", &at])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let dir = target.join("radarr");
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if names.iter().any(|n| n.contains(".tmp-")) {
            killed_mid_write += 1;
        }
        // What list shows must be complete: every listed archive matches its manifest and
        // decrypts to the end with the stock tools.
        let listing: serde_json::Value =
            serde_json::from_str(&ok(&["--config", c, "list", "--json"], &[], None)).unwrap();
        for a in listing["radarr"].as_array().unwrap() {
            let path = a["path"].as_str().unwrap();
            let (sha, _) =
                mms_backupd::store::hash_file(std::path::Path::new(path), &|_| {}).unwrap();
            assert_eq!(
                sha,
                a["sha256"].as_str().unwrap(),
                "listed archive {path} incomplete (kill #{i}, {status})"
            );
        }
        ok(&["--config", c, "verify"], &[], None);
    }
    assert!(
        killed_mid_write > 0,
        "no kill landed while an archive was being written; the test proves nothing"
    );
    // The next run removes every leftover; all listed archives decrypt fully.
    ok(
        &["--config", c, "backup", "--at", "2024-03-01T00:00:00Z"],
        &[],
        None,
    );
    let dir = target.join("radarr");
    for e in fs::read_dir(&dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains(".tmp-"), "leftover {n}");
        if n.ends_with(".age") {
            assert!(
                dir.join(format!("{n}.manifest.json")).exists(),
                "{n} without manifest after cleanup"
            );
            sh(&format!(
                "age -d -i {} {} | zstd -d -q > /dev/null",
                id.display(),
                dir.join(&n).display()
            ));
        }
    }
}

#[test]
fn second_run_is_refused_naming_the_lock_holder() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("live/radarr");
    make_tree(&src);
    let target = d.path().join("backups");
    let cfg = write_config(
        d.path(),
        &target,
        &[],
        &format!("  radarr: {{ paths: [{}] }}\n", src.display()),
    );
    let c = cfg.to_str().unwrap();
    // Hold the lock from this process, as a running backup would.
    let lock = mms_backupd::store::RunLock::acquire(&target).unwrap();
    let t0 = Instant::now();
    let line = refused(
        &["--config", c, "backup"],
        &[],
        None,
        &format!("PID {}", std::process::id()),
    );
    assert!(line.contains("lock"), "{line}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the second run waited for the lock"
    );
    refused(&["--config", c, "prune"], &[], None, "lock");
    drop(lock);
    ok(&["--config", c, "backup"], &[], None);
}

//! Benchmark (not a test): mms-backupd against the stock `tar | zstd -3 -T0 | age` pipeline.
//!
//! `cargo bench -p mms-backupd --bench pipeline` generates mixed data (random "photos",
//! real SQLite databases, text logs; `MMS_BENCH_MIB`, default 1024 MiB), then prints:
//! backup throughput ÷ `tar -cf - | zstd -3 -T0 | age -r` (both to disk + sync; target ≥ 1.2),
//! output size difference (target ≤ 2 % larger), restore throughput ÷
//! `age -d | zstd -d | tar -x` (target ≥ 1.0; every run includes fsync of the files it wrote), and the peak RSS of mms-backupd
//! (target ≤ 96 MiB) at the full size and at 1/8 of it (independent of data size).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// ~40 % random photos, ~30 % SQLite, ~30 % logs.
fn generate(root: &Path, mib: u64) {
    let photos = root.join("photos");
    let dbs = root.join("db");
    let logs = root.join("logs");
    for d in [&photos, &dbs, &logs] {
        fs::create_dir_all(d).unwrap();
    }
    let photo_count = (mib * 4 / 10 / 5).max(1);
    for i in 0..photo_count {
        fs::write(
            photos.join(format!("IMG_{i:04}.jpg")),
            noise(5 << 20, i + 11),
        )
        .unwrap();
    }
    let db_bytes = (mib * 3 / 10) << 20;
    let db_count = 3u64;
    for n in 0..db_count {
        let conn = rusqlite::Connection::open(dbs.join(format!("app{n}.db"))).unwrap();
        conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; CREATE TABLE history(id INTEGER PRIMARY KEY, title TEXT, data TEXT, hash TEXT)").unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut st = tx
                .prepare("INSERT INTO history(title, data, hash) VALUES (?1, ?2, ?3)")
                .unwrap();
            let mut i = 0u64;
            let target = db_bytes / db_count;
            // Fill to the requested file size (checked every 4096 rows: rows vary in size).
            while !i.is_multiple_of(4096) || db_size(&tx) < target {
                let title = format!("Movie title number {} ({})", i, 1950 + i % 75);
                let data = format!(
                    "{{\"quality\":\"Bluray-{}p\",\"size\":{},\"indexer\":\"idx{}\",\"grabbed\":true}}",
                    [720, 1080, 2160][(i % 3) as usize],
                    i * 7919 % 100000,
                    i % 13
                );
                let hash = format!(
                    "{:016x}{:016x}",
                    i.wrapping_mul(0x9E3779B97F4A7C15),
                    i ^ 0xDEADBEEF
                );
                st.execute((title, data, hash)).unwrap();
                i += 1;
            }
        }
        tx.commit().unwrap();
    }
    let log_count = (mib * 3 / 10 / 10).max(1);
    for i in 0..log_count {
        let mut s = String::with_capacity(10 << 20);
        let mut n = 0u64;
        while s.len() < 10 << 20 {
            s.push_str(&format!(
                "2025-05-{:02} {:02}:{:02}:{:02}.{:03} [{}] Radarr.Core.Download: Tracking download {} from client {}, state {}\n",
                1 + n % 28, n % 24, n % 60, (n * 7) % 60, n % 1000, ["Info", "Debug", "Warn"][(n % 3) as usize], n * 31 + i, n % 4, ["downloading", "imported", "queued"][(n % 3) as usize]
            ));
            n += 1;
        }
        fs::write(logs.join(format!("radarr.{i}.txt")), s).unwrap();
    }
    fs::write(
        root.join("config.xml"),
        "<Config><Port>7878</Port></Config>\n",
    )
    .unwrap();
}

/// Bytes the database file holds (pages × page size).
fn db_size(conn: &rusqlite::Connection) -> u64 {
    conn.query_row(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn du(p: &Path) -> u64 {
    let m = fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        fs::read_dir(p)
            .unwrap()
            .map(|e| du(&e.unwrap().path()))
            .sum()
    } else {
        m.len()
    }
}

fn bash(script: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .status()
        .unwrap();
    assert!(st.success(), "{script} failed");
    t.elapsed()
}

/// Runs a command, polling its VmHWM; returns (wall time, peak RSS in KiB).
fn measured(cmd: &mut Command) -> (Duration, u64) {
    let t = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = fs::read_to_string(&status_path)
            && let Some(l) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            peak = peak.max(
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            );
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{cmd:?} failed");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (t.elapsed(), peak)
}

/// fsyncs the files of a tree (or one file) with coreutils `sync FILE…`: only this data,
/// not the whole system's dirty pages (other processes write on this machine too).
fn sync_path(p: &Path) -> Duration {
    bash(&format!(
        "find {} -type f -print0 | xargs -0 -r sync --",
        p.display()
    ))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Run {
    ours_backup: Duration,
    stock_backup: Duration,
    ours_size: u64,
    stock_size: u64,
    ours_restore: Duration,
    stock_restore: Duration,
    rss_backup_kib: u64,
    rss_restore_kib: u64,
}

fn run(work: &Path, mib: u64, reps: usize) -> (u64, Run) {
    let data = work.join("data");
    let svc = data.join("bench");
    eprintln!("generating {mib} MiB of mixed data…");
    generate(&svc, mib);
    // Write the generated data back now, so no run pays for it.
    bash("sync");
    let bytes = du(&svc);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(work.join("key.txt"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(work.join("key.txt"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let target = work.join("backups");
    let cfg = work.join("backupd.yml");
    fs::write(&cfg, format!("target: {}\nrecipients: [{r:?}]\nretention: {{ daily: 7, weekly: 4, monthly: 6 }}\nuser: {{ uid: 0, gid: 0 }}\nservices:\n  bench: {{ paths: [{}] }}\n", target.display(), svc.display())).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mms-backupd"));
    // Warm the page cache.
    bash(&format!(
        "tar -cf - -C {} bench > /dev/null",
        data.display()
    ));
    let stock = work.join("stock.tar.zst.age");
    let (mut ob, mut sb, mut orr, mut sr) = (vec![], vec![], vec![], vec![]);
    let (mut rss_b, mut rss_r) = (0, 0);
    let mut ours_size = 0;
    for i in 0..reps {
        let _ = fs::remove_dir_all(&target);
        let (t, rss) = measured(
            Command::new(&bin)
                .args([
                    "--config",
                    cfg.to_str().unwrap(),
                    "backup",
                    "--at",
                    &format!("2025-01-01T00:00:{i:02}Z"),
                ])
                .stdout(std::process::Stdio::null()),
        );
        ob.push(t + sync_path(&target));
        rss_b = rss_b.max(rss);
        let archive = fs::read_dir(target.join("bench"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "age"))
            .unwrap();
        ours_size = fs::metadata(&archive).unwrap().len();
        sb.push(
            bash(&format!(
                "tar -cf - -C {} bench | zstd -3 -T0 -q | age -r {r} > {}",
                data.display(),
                stock.display()
            )) + sync_path(&stock),
        );
        let to = work.join("ours-restore");
        let _ = fs::remove_dir_all(&to);
        let (t, rss) = measured(
            Command::new(&bin)
                .args([
                    "--config",
                    cfg.to_str().unwrap(),
                    "restore",
                    "--service",
                    "bench",
                    "--archive",
                    archive.to_str().unwrap(),
                    "--identity",
                    work.join("key.txt").to_str().unwrap(),
                    "--to",
                    to.to_str().unwrap(),
                ])
                .stdout(std::process::Stdio::null()),
        );
        orr.push(t + sync_path(&to));
        rss_r = rss_r.max(rss);
        let sto = work.join("stock-restore");
        let _ = fs::remove_dir_all(&sto);
        fs::create_dir(&sto).unwrap();
        sr.push(
            bash(&format!(
                "age -d -i {} {} | zstd -d -q | tar -x -C {}",
                work.join("key.txt").display(),
                stock.display(),
                sto.display()
            )) + sync_path(&sto),
        );
        let _ = fs::remove_dir_all(&to);
        let _ = fs::remove_dir_all(&sto);
    }
    let stock_size = fs::metadata(&stock).unwrap().len();
    let _ = fs::remove_dir_all(&data);
    let _ = fs::remove_dir_all(&target);
    let _ = fs::remove_file(&stock);
    (
        bytes,
        Run {
            ours_backup: median(ob),
            stock_backup: median(sb),
            ours_size,
            stock_size,
            ours_restore: median(orr),
            stock_restore: median(sr),
            rss_backup_kib: rss_b,
            rss_restore_kib: rss_r,
        },
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs benches without `--bench`: this one takes minutes.
        eprintln!("pipeline benchmark: run it with `cargo bench -p mms-backupd --bench pipeline`");
        return;
    }
    for t in ["tar", "zstd", "age", "age-keygen"] {
        assert!(
            Command::new("which")
                .arg(t)
                .output()
                .unwrap()
                .status
                .success(),
            "`{t}` missing: run scripts/setup-test-env.sh"
        );
    }
    let mib: u64 = std::env::var("MMS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let reps: usize = std::env::var("MMS_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let base = std::env::var("MMS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let work = tempfile::tempdir_in(base).unwrap();
    let (bytes, full) = run(work.path(), mib, reps);
    let small_dir = work.path().join("small");
    fs::create_dir(&small_dir).unwrap();
    let (_, small) = run(&small_dir, (mib / 8).max(64), 1);
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!(
        "mms-backupd pipeline benchmark: {:.0} MiB of mixed data, median of {reps}",
        bytes as f64 / 1048576.0
    );
    println!(
        "backup : mms-backupd {:.2}s ({:.0} MB/s) vs tar|zstd -3 -T0|age {:.2}s ({:.0} MB/s): ratio {:.2} (target >= 1.2)",
        full.ours_backup.as_secs_f64(),
        mbs(full.ours_backup),
        full.stock_backup.as_secs_f64(),
        mbs(full.stock_backup),
        full.stock_backup.as_secs_f64() / full.ours_backup.as_secs_f64()
    );
    println!(
        "size   : mms-backupd {} B vs stock {} B: {:+.2} % (target <= +2 %)",
        full.ours_size,
        full.stock_size,
        (full.ours_size as f64 / full.stock_size as f64 - 1.0) * 100.0
    );
    println!(
        "restore: mms-backupd {:.2}s ({:.0} MB/s) vs age -d|zstd -d|tar -x {:.2}s ({:.0} MB/s): ratio {:.2} (target >= 1.0)",
        full.ours_restore.as_secs_f64(),
        mbs(full.ours_restore),
        full.stock_restore.as_secs_f64(),
        mbs(full.stock_restore),
        full.stock_restore.as_secs_f64() / full.ours_restore.as_secs_f64()
    );
    println!(
        "peak RSS: backup {:.1} MiB, restore {:.1} MiB at {mib} MiB; backup {:.1} MiB, restore {:.1} MiB at {} MiB (target <= 96 MiB)",
        full.rss_backup_kib as f64 / 1024.0,
        full.rss_restore_kib as f64 / 1024.0,
        small.rss_backup_kib as f64 / 1024.0,
        small.rss_restore_kib as f64 / 1024.0,
        (mib / 8).max(64)
    );
}

//! The `state` step's restore source: archives written by the real backupd library
//! (tar → zstd → age) are restored — the newest one, decrypted with the delivered identity,
//! verified, chowned to the service user and swapped into place.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use age::secrecy::ExposeSecret;
use chrono::TimeZone;
use common::*;
use mms_firstboot::config::{Restore, StateSource};
use mms_firstboot::restore::{Restored, restore_all};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn backupd_config(target: &Path, recipient: &str, paths: &[(&str, &Path)]) -> String {
    let mut s = format!(
        "target: {}\nrecipients: [\"{recipient}\"]\nretention: {{daily: 7, weekly: 4, monthly: 6}}\nuser: {{uid: 1100, gid: 1100}}\nservices:\n",
        target.display()
    );
    for (name, p) in paths {
        s.push_str(&format!("  {name}: {{paths: [{}]}}\n", p.display()));
    }
    s
}

fn write_db(dir: &Path, value: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let _ = std::fs::remove_file(dir.join("radarr.db"));
    let c = rusqlite::Connection::open(dir.join("radarr.db")).unwrap();
    c.execute_batch(&format!(
        "CREATE TABLE RootFolders (Id INTEGER PRIMARY KEY, Path TEXT); INSERT INTO RootFolders (Path) VALUES ('{value}');"
    ))
    .unwrap();
    std::fs::write(
        dir.join("config.xml"),
        format!("<Config><Port>7878</Port><!-- {value} --></Config>"),
    )
    .unwrap();
}

#[test]
fn restores_the_newest_backup_of_each_service() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vm");
    let target = root.join("data/backups");
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();

    // Two backups of radarr taken with the real backupd library from a source tree.
    let src = tmp.path().join("src/radarr");
    let make_cfg = tmp.path().join("make-backupd.yml");
    std::fs::write(
        &make_cfg,
        backupd_config(&target, &recipient, &[("radarr", &src)]),
    )
    .unwrap();
    let bcfg = mms_backupd::config::Config::load(&make_cfg).unwrap();
    for (day, value) in [(1, "/old/"), (2, "/data/media/movies/")] {
        write_db(&src, value);
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, day, 3, 0, 0)
            .unwrap();
        mms_backupd::backup::run(
            &bcfg,
            &mms_backupd::backup::BackupOptions {
                services: vec![],
                at: Some(at),
                zstd: None,
            },
        )
        .unwrap();
    }

    // The VM's backupd config names the live paths; firstboot joins them onto its root.
    let vm_cfg = root.join("etc/mms/backupd.yml");
    std::fs::create_dir_all(vm_cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &vm_cfg,
        backupd_config(
            Path::new("/data/backups"),
            &recipient,
            &[
                ("radarr", Path::new("/home/mms/config/radarr")),
                ("sonarr", Path::new("/home/mms/config/sonarr")),
            ],
        ),
    )
    .unwrap();
    let mut cfg = base_config();
    let r = Restore {
        identity_secret: Some("backup_identity".into()),
    };
    cfg.state = StateSource::Restore(r.clone());
    cfg.services = vec![
        service("radarr", &["radarr.service"], "http://127.0.0.1:1/ping"),
        service("sonarr", &["sonarr.service"], "http://127.0.0.1:1/ping"),
    ];
    let ctx = context(&root, cfg);
    // an empty config dir made by cloud-init is replaced
    std::fs::create_dir_all(root.join("home/mms/config/radarr")).unwrap();

    // no identity: a clear error
    let e = restore_all(&ctx, &r).unwrap_err();
    assert!(format!("{e:#}").contains("backup_identity"), "{e:#}");
    deliver(&ctx, "backup_identity", id.to_string().expose_secret());

    let res = restore_all(&ctx, &r).unwrap();
    assert_eq!(res[0].0, "radarr");
    assert_eq!(
        res[0].1,
        Restored::Archive("radarr-2026-11-02T030000Z.tar.zst.age".into())
    );
    assert_eq!(res[1], ("sonarr".to_string(), Restored::NoBackup));
    let live = root.join("home/mms/config/radarr");
    let c = rusqlite::Connection::open(live.join("radarr.db")).unwrap();
    let p: String = c
        .query_row("SELECT Path FROM RootFolders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(p, "/data/media/movies/", "the newest archive");
    for f in ["radarr.db", "config.xml", ""] {
        let m = std::fs::metadata(live.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1100, 1100), "{f}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(root.join("home/mms/config"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["radarr"], "no staging left");

    // a re-run does nothing
    let again = restore_all(&ctx, &r).unwrap();
    assert_eq!(again[0].1, Restored::AlreadyDone);
}

#[test]
fn wrong_identity_is_refused_and_live_data_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vm");
    let target = root.join("data/backups");
    let id = age::x25519::Identity::generate();
    let src = tmp.path().join("src/radarr");
    write_db(&src, "/x/");
    let make_cfg = tmp.path().join("make.yml");
    std::fs::write(
        &make_cfg,
        backupd_config(&target, &id.to_public().to_string(), &[("radarr", &src)]),
    )
    .unwrap();
    let bcfg = mms_backupd::config::Config::load(&make_cfg).unwrap();
    mms_backupd::backup::run(&bcfg, &mms_backupd::backup::BackupOptions::default()).unwrap();
    let vm_cfg = root.join("etc/mms/backupd.yml");
    std::fs::create_dir_all(vm_cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &vm_cfg,
        backupd_config(
            Path::new("/data/backups"),
            &id.to_public().to_string(),
            &[("radarr", Path::new("/home/mms/config/radarr"))],
        ),
    )
    .unwrap();
    let mut cfg = base_config();
    let r = Restore {
        identity_secret: Some("backup_identity".into()),
    };
    cfg.state = StateSource::Restore(r.clone());
    cfg.services = vec![service(
        "radarr",
        &["radarr.service"],
        "http://127.0.0.1:1/ping",
    )];
    let ctx = context(&root, cfg);
    std::fs::create_dir_all(root.join("home/mms/config/radarr")).unwrap();
    std::fs::write(root.join("home/mms/config/radarr/keep"), "x").unwrap();
    let other = age::x25519::Identity::generate();
    deliver(&ctx, "backup_identity", other.to_string().expose_secret());
    let e = restore_all(&ctx, &r).unwrap_err();
    assert!(format!("{e:#}").contains("cannot decrypt"), "{e:#}");
    assert!(root.join("home/mms/config/radarr/keep").exists());
}

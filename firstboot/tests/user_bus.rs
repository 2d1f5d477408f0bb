//! Root reaching a user's bus: a real `dbus-daemon` run as an unprivileged user (uid 1190,
//! `mmsfbtest`, created by scripts/setup/40-firstboot.sh) refuses root, as a user bus does;
//! `systemd::connect_as` connects with the effective ids switched and is accepted.
//!
//! One test in its own binary: switching the effective uid affects every thread of the
//! process, so nothing else may run beside it.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const UID: u32 = 1190;

#[test]
fn root_is_refused_but_connect_as_the_user_works() {
    assert!(
        Command::new("getent")
            .args(["passwd", "mmsfbtest"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success(),
        "user mmsfbtest (uid 1190) missing: run `sudo bash scripts/setup-test-env.sh` (scripts/setup/40-firstboot.sh creates it)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(UID), Some(UID)).unwrap();
    let sock = dir.path().join("bus");
    let address = format!("unix:path={}", sock.display());
    let mut daemon = Command::new("dbus-daemon")
        .args([
            "--session",
            "--nofork",
            "--nopidfile",
            &format!("--address={address}"),
        ])
        .uid(UID)
        .gid(UID)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // the socket file appears at bind(), before listen(): wait until it accepts
    for _ in 0..250 {
        if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        sock.exists(),
        "dbus-daemon (as uid {UID}) did not create its socket"
    );

    let as_root = mms_firstboot::systemd::connect(&address);
    assert!(as_root.is_err(), "the user's bus must refuse root");

    let conn = mms_firstboot::systemd::connect_as(&address, UID, UID).unwrap();
    assert!(nix::unistd::geteuid().is_root(), "root restored");
    assert!(nix::unistd::getegid().as_raw() == 0, "gid restored");
    let dbus = zbus::blocking::fdo::DBusProxy::new(&conn).unwrap();
    let uid = dbus
        .get_connection_unix_user(
            zbus::names::BusName::try_from(conn.unique_name().unwrap().as_str()).unwrap(),
        )
        .unwrap();
    assert_eq!(uid, UID, "the bus sees the service user");
    // root can still do root things afterwards
    std::fs::write(dir.path().join("root-file"), "x").unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("root-file"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap(),
        0
    );
    drop(conn);

    // The whole binary as in production (effective ids switched only for the bus), with the
    // systemd Manager stand-in served on the user's bus and the stand-in tailscale on PATH.
    let server = mms_firstboot::systemd::connect_as(&address, UID, UID).unwrap();
    let sd = serve_manager_on(server, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let ts = tailscale_standin(&tmp.path().join("ts"));
    let port = http_server(true);
    let mut cfg = base_config();
    cfg.user.name = "mmsfbtest".into();
    cfg.user.uid = UID;
    cfg.user.gid = UID;
    cfg.tailscale
        .serve
        .insert(443, format!("http://127.0.0.1:{port}"));
    cfg.services = vec![service(
        "radarr",
        &["radarr.service"],
        &format!("http://127.0.0.1:{port}/ping"),
    )];
    let cfg_file = tmp.path().join("firstboot.yml");
    std::fs::write(&cfg_file, cfg.to_yaml().unwrap()).unwrap();
    let root = tmp.path().join("root");
    let ctx = context(&root, cfg);
    deliver(&ctx, "tailscale_auth_key", "tskey-auth-TEST");
    let path = format!(
        "{}:{}",
        ts.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mms-firstboot"))
        .args(["run", "--config"])
        .arg(&cfg_file)
        .arg("--root")
        .arg(&root)
        .env("PATH", path)
        .env("MMS_FIRSTBOOT_USER_BUS", &address)
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("firstboot phase done"), "{stderr}");
    assert!(!stderr.contains("tskey-auth-TEST"), "no secret in the log");
    assert_eq!(*sd.started.lock().unwrap(), ["radarr.service"]);
    let st = mms_firstboot::status::Status::read(&root.join("var/lib/mms/firstboot.json")).unwrap();
    assert!(st.is_healthy(), "{}", st.render_table());
    assert!(!root.join("etc/mms/secrets").exists());
    assert!(root.join("var/lib/mms/services-enabled").exists());
    assert!(
        calls(&tmp.path().join("ts"))
            .iter()
            .any(|c| c == &format!("serve --bg --https=443 http://127.0.0.1:{port}"))
    );

    let _ = daemon.kill();
    let _ = daemon.wait();
}

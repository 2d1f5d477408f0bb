//! Root reaching a user's bus: a real `dbus-daemon` run as an unprivileged user (uid 1190,
//! `mmsfbtest`, created by scripts/setup/40-firstboot.sh) refuses root, as a user bus does;
//! `systemd::connect_as` connects with the effective ids switched and is accepted.
//!
//! One test in its own binary: switching the effective uid affects every thread of the
//! process, so nothing else may run beside it.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

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
    for _ in 0..200 {
        if sock.exists() {
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
    let _ = daemon.kill();
    let _ = daemon.wait();
}

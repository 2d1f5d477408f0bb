//! The `start` step over a private `dbus-daemon` with a small systemd-Manager stand-in object
//! served by zbus, and the whole run loop (stand-in tailscale, real HTTP health checks).
//!
//! The user-bus address is injected through `Env::user_bus` (`$MMS_FIRSTBOOT_USER_BUS` for
//! the binary).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;
use mms_firstboot::status::{Phase, Status, StepResult};
use mms_firstboot::steps::{self, Step, start::StartStep};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private session bus; killed on drop.
struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn private_bus() -> Bus {
    require("dbus-daemon");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bus");
    let address = format!("unix:path={}", sock.display());
    let child = Command::new("dbus-daemon")
        .args([
            "--session",
            "--nofork",
            "--nopidfile",
            &format!("--address={address}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
        std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        "dbus-daemon does not accept on {}",
        sock.display()
    );
    Bus {
        child,
        address,
        _dir: dir,
    }
}

#[test]
fn starts_units_in_order_and_creates_the_gate_marker() {
    let bus = private_bus();
    let sd = serve_manager(&bus.address, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = base_config();
    cfg.services = vec![
        service("prowlarr", &["prowlarr.service"], "http://127.0.0.1:1/ping"),
        service(
            "immich",
            &[
                "immich-postgres.service",
                "immich-redis.service",
                "immich-server.service",
            ],
            "http://127.0.0.1:1/api/server/ping",
        ),
    ];
    let mut ctx = context(tmp.path(), cfg);
    ctx.env.user_bus = Some(bus.address.clone());
    let out = StartStep.run(&ctx).unwrap();
    assert_eq!(
        *sd.started.lock().unwrap(),
        [
            "prowlarr.service",
            "immich-postgres.service",
            "immich-redis.service",
            "immich-server.service"
        ]
    );
    assert!(*sd.subscribed.lock().unwrap());
    assert!(tmp.path().join("var/lib/mms/services-enabled").exists());
    assert!(format!("{out:?}").contains("4 unit(s) started"));
}

#[test]
fn a_failed_job_stops_with_the_unit_named() {
    let bus = private_bus();
    let sd = serve_manager(&bus.address, &["sonarr.service"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = base_config();
    cfg.services = vec![
        service("sonarr", &["sonarr.service"], "http://127.0.0.1:1/ping"),
        service("radarr", &["radarr.service"], "http://127.0.0.1:1/ping"),
    ];
    let mut ctx = context(tmp.path(), cfg);
    ctx.env.user_bus = Some(bus.address.clone());
    let e = StartStep.run(&ctx).unwrap_err();
    let msg = format!("{:#}", e.error);
    assert!(
        msg.contains("starting sonarr.service: job result failed"),
        "{msg}"
    );
    assert!(msg.contains("last journal lines"), "{msg}");
    assert!(
        e.next_action.contains("_SYSTEMD_USER_UNIT=sonarr.service"),
        "{}",
        e.next_action
    );
    assert_eq!(
        *sd.started.lock().unwrap(),
        ["sonarr.service"],
        "stops at the first failure"
    );
}

#[test]
fn missing_user_bus_times_out_with_linger_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = context(tmp.path(), base_config());
    ctx.env.user_bus = Some(format!("unix:path={}/nobus", tmp.path().display()));
    ctx.env.start_timeout = Duration::from_millis(300);
    let e = StartStep.run(&ctx).unwrap_err();
    assert!(
        format!("{:#}", e.error).contains("did not appear"),
        "{:#}",
        e.error
    );
    assert!(e.next_action.contains("enable-linger"));
}

#[test]
fn whole_run_reaches_done_and_a_rerun_changes_nothing() {
    let bus = private_bus();
    let sd = serve_manager(&bus.address, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let ts = tailscale_standin(&tmp.path().join("ts"));
    let port = http_server(true);
    let mut cfg = base_config();
    cfg.tailscale
        .serve
        .insert(7878, format!("http://127.0.0.1:{port}"));
    cfg.services = vec![service(
        "radarr",
        &["radarr.service"],
        &format!("http://127.0.0.1:{port}/ping"),
    )];
    let root = tmp.path().join("root");
    let mut ctx = context(&root, cfg);
    ctx.env.user_bus = Some(bus.address.clone());
    ctx.env.tailscale = ts;
    deliver(&ctx, "tailscale_auth_key", "tskey-auth-TEST");

    let status = steps::run(&ctx).unwrap();
    assert!(status.is_healthy(), "{}", status.render_table());
    let on_disk = Status::read(&root.join("var/lib/mms/firstboot.json")).unwrap();
    assert_eq!(on_disk.phase, Phase::Done);
    let names: Vec<(&str, StepResult)> = on_disk
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.result))
        .collect();
    assert_eq!(
        names,
        [
            ("wait-secrets", StepResult::Ok),
            ("tailscale", StepResult::Ok),
            ("state", StepResult::Skipped),
            ("start", StepResult::Ok),
            ("health", StepResult::Ok),
        ]
    );
    assert!(on_disk.services.iter().all(|s| s.healthy) && on_disk.services.len() == 1);
    assert!(
        !root.join("etc/mms/secrets").exists(),
        "delivery dir removed at done"
    );

    // A second run (e.g. a reboot) finds everything done and calls nothing.
    let n_calls = calls(&tmp.path().join("ts")).len();
    steps::run(&ctx).unwrap();
    assert_eq!(calls(&tmp.path().join("ts")).len(), n_calls);
    assert_eq!(sd.started.lock().unwrap().len(), 1);
}

#[test]
fn unhealthy_service_fails_the_health_step_and_resumes_there() {
    let bus = private_bus();
    let sd = serve_manager(&bus.address, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let ts = tailscale_standin(&tmp.path().join("ts"));
    let port = http_server(false);
    let mut cfg = base_config();
    cfg.health_deadline_s = 3;
    cfg.services = vec![service(
        "sonarr",
        &["sonarr.service"],
        &format!("http://127.0.0.1:{port}/ping"),
    )];
    let root = tmp.path().join("root");
    let mut ctx = context(&root, cfg);
    ctx.env.user_bus = Some(bus.address.clone());
    ctx.env.tailscale = ts;
    deliver(&ctx, "tailscale_auth_key", "tskey-auth-TEST");
    assert!(steps::run(&ctx).is_err());
    let st = Status::read(&root.join("var/lib/mms/firstboot.json")).unwrap();
    assert_eq!(st.phase, Phase::Health);
    let err = st.error.clone().unwrap();
    assert!(err.message.contains("sonarr: HTTP 500"), "{}", err.message);
    assert!(err.next_action.contains("systemctl restart mms-firstboot"));
    assert!(!st.services[0].healthy);
    assert!(
        root.join("etc/mms/secrets").exists(),
        "secrets stay until done"
    );
    // the re-run only repeats the health step
    let before = sd.started.lock().unwrap().len();
    assert!(steps::run(&ctx).is_err());
    assert_eq!(sd.started.lock().unwrap().len(), before);
}

#[test]
fn a_damaged_status_file_is_set_aside_and_the_run_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), base_config());
    let path = tmp.path().join("var/lib/mms/firstboot.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{\"phase\": ").unwrap();
    // fails later for the missing secret, but with a fresh, valid record
    assert!(steps::run(&ctx).is_err());
    assert!(
        tmp.path()
            .join("var/lib/mms/firstboot.json.damaged")
            .exists()
    );
    let st = Status::read(&path).unwrap();
    assert_eq!(st.phase, Phase::WaitSecrets);
}

#[test]
fn missing_secrets_time_out_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), base_config());
    let e = steps::run(&ctx).unwrap_err();
    assert!(
        format!("{e:#}").contains("missing tailscale_auth_key"),
        "{e:#}"
    );
    let st = Status::read(&tmp.path().join("var/lib/mms/firstboot.json")).unwrap();
    assert_eq!(st.phase, Phase::WaitSecrets);
    assert!(st.error.unwrap().next_action.contains("mms-build --apply"));
}

//! The `tailscale` step against a stand-in `tailscale` CLI that records calls and can fail
//! or hang (the only fake in firstboot's tests).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;
use mms_firstboot::steps::{Step, tailscale::TailscaleStep};
use std::time::{Duration, Instant};

fn setup(rebuild: bool) -> (tempfile::TempDir, mms_firstboot::steps::Context) {
    let tmp = tempfile::tempdir().unwrap();
    let ts = tailscale_standin(&tmp.path().join("ts"));
    let mut cfg = base_config();
    cfg.tailscale.rebuild = rebuild;
    cfg.tailscale
        .serve
        .insert(443, "http://127.0.0.1:8096".into());
    cfg.tailscale
        .serve
        .insert(7878, "http://127.0.0.1:7878".into());
    cfg.tailscale.serve_timeout_s = 1;
    let mut ctx = context(&tmp.path().join("root"), cfg);
    ctx.env.tailscale = ts;
    deliver(&ctx, "tailscale_auth_key", "tskey-auth-TEST");
    (tmp, ctx)
}

#[test]
fn enrolls_serves_removes_key_and_never_enrolls_twice() {
    let (tmp, ctx) = setup(true);
    let d = tmp.path().join("ts");
    let out = TailscaleStep.run(&ctx).unwrap();
    let c = calls(&d);
    let key = ctx.secrets_dir().join("tailscale_auth_key");
    assert_eq!(
        c,
        [
            "status --json".to_string(),
            format!(
                "up --auth-key=file:{} --hostname=mms-next --timeout=10s",
                key.display()
            ),
            "status --json".into(),
            "serve --bg --https=443 http://127.0.0.1:8096".into(),
            "serve --bg --https=7878 http://127.0.0.1:7878".into(),
            "serve status --json".into(),
        ]
    );
    assert!(!key.exists(), "auth key must be removed after use");
    assert!(format!("{out:?}").contains("mms-next"));
    // The secret never reaches argv or the log.
    assert!(
        !std::fs::read_to_string(d.join("calls.log"))
            .unwrap()
            .contains("tskey-auth-TEST")
    );

    // A re-run (after a reboot) does not call `up` again, even without a key.
    std::fs::remove_file(d.join("calls.log")).unwrap();
    TailscaleStep.run(&ctx).unwrap();
    assert!(
        !calls(&d).iter().any(|l| l.starts_with("up ")),
        "{:?}",
        calls(&d)
    );

    // cut-over renames the node
    mms_firstboot::steps::tailscale::cutover(&ctx.env.tailscale, "mms").unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("hostname")).unwrap().trim(),
        "mms"
    );
}

#[test]
fn failing_up_reports_stderr_and_a_next_action() {
    let (tmp, ctx) = setup(false);
    std::fs::write(tmp.path().join("ts/up-fail"), "").unwrap();
    let e = TailscaleStep.run(&ctx).unwrap_err();
    let msg = format!("{:#}", e.error);
    assert!(msg.contains("--hostname=mms "), "{msg}");
    assert!(msg.contains("invalid key"), "{msg}");
    assert!(e.next_action.contains("auth key"), "{}", e.next_action);
    assert!(
        ctx.secrets_dir().join("tailscale_auth_key").exists(),
        "key kept for a retry"
    );
}

#[test]
fn hanging_serve_times_out_and_names_https_certificates() {
    let (tmp, ctx) = setup(false);
    std::fs::write(tmp.path().join("ts/serve-hang"), "").unwrap();
    let t = Instant::now();
    let e = TailscaleStep.run(&ctx).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    let msg = format!("{:#}", e.error);
    assert!(
        msg.contains("--https=443") && msg.contains("did not finish within 1 s"),
        "{msg}"
    );
    assert!(msg.contains("HTTPS certificates"), "{msg}");
    assert!(
        e.next_action.contains("HTTPS Certificates"),
        "{}",
        e.next_action
    );
}

#[test]
fn serve_that_configures_nothing_is_caught() {
    let (tmp, ctx) = setup(false);
    std::fs::write(tmp.path().join("ts/serve-noop"), "").unwrap();
    let e = TailscaleStep.run(&ctx).unwrap_err();
    let msg = format!("{:#}", e.error);
    assert!(msg.contains("443, 7878 are not configured"), "{msg}");
}

#[test]
fn missing_key_when_not_enrolled_says_what_to_do() {
    let (_tmp, ctx) = setup(false);
    std::fs::remove_file(ctx.secrets_dir().join("tailscale_auth_key")).unwrap();
    let e = TailscaleStep.run(&ctx).unwrap_err();
    assert!(
        e.next_action.contains("mms-build --apply"),
        "{}",
        e.next_action
    );
}

#[test]
fn a_stopped_node_comes_back_up_without_a_key() {
    let (tmp, ctx) = setup(false);
    std::fs::write(tmp.path().join("ts/state"), "Stopped\n").unwrap();
    std::fs::remove_file(ctx.secrets_dir().join("tailscale_auth_key")).unwrap();
    TailscaleStep.run(&ctx).unwrap();
    let c = calls(&tmp.path().join("ts"));
    assert!(
        c.contains(&"up --hostname=mms --timeout=10s".to_string()),
        "{c:?}"
    );
}

//! The `mms-firstboot` binary: `status` output and exit codes, `example-config`, usage errors.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mms-firstboot"))
}

#[test]
fn status_prints_table_or_json_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("firstboot.json");

    let out = bin().args(["status", "--file"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "no file yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has not started"));

    std::fs::write(&f, r#"{"phase": "done", "steps": [], "error": null}"#).unwrap();
    let out = bin().args(["status", "--file"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("phase: done (done, healthy)"));

    std::fs::write(
        &f,
        r#"{"phase": "state", "steps": [{"name": "state", "result": "failed", "detail": "x"}],
            "error": {"message": "state: corrupt radarr.db", "next_action": "fix it"}}"#,
    )
    .unwrap();
    let out = bin().args(["status", "--file"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("state  failed") && t.contains("next:  fix it"),
        "{t}"
    );
    let out = bin()
        .args(["status", "--json", "--file"])
        .arg(&f)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "state");
    assert_eq!(v["error"]["next_action"], "fix it");

    std::fs::write(&f, r#"{"phase": "start"}"#).unwrap();
    let out = bin().args(["status", "--file"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "in progress");

    std::fs::write(&f, "not json").unwrap();
    let out = bin().args(["status", "--file"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not valid"));
}

#[test]
fn example_config_loads_back() {
    let out = bin().arg("example-config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("firstboot.yml");
    std::fs::write(&f, &out.stdout).unwrap();
    mms_firstboot::config::Config::load(&f).unwrap();
}

#[test]
fn bad_config_is_reported_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("firstboot.yml");
    std::fs::write(&f, "user: {name: mms, uid: 1100, gid: 1100, home: /home/mms}\ntailscale: {hostname: mms, colour: red}\n").unwrap();
    let out = bin().args(["run", "--config"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains(&format!("{}:2:", f.display())) && e.contains("colour"),
        "{e}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = bin().args(["migrate", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
}

//! `mms-build render` end to end through the binary: output layout, printed hash, and the
//! errors for missing or foreign appliance binaries.

#![allow(clippy::unwrap_used)]

mod render_common;

use render_common::example_path;
use std::path::Path;
use std::process::{Command, Output};

fn mms_build(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mms-build"))
        .arg("--config")
        .arg(example_path())
        .args(args)
        .output()
        .unwrap()
}

fn elf(machine: u16) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b
}

fn bins_dir(firstboot: Option<Vec<u8>>, backupd: Option<Vec<u8>>) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    if let Some(b) = firstboot {
        std::fs::write(d.path().join("mms-firstboot"), b).unwrap();
    }
    if let Some(b) = backupd {
        std::fs::write(d.path().join("mms-backupd"), b).unwrap();
    }
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn renders_the_example_into_the_design_layout() {
    let bins = bins_dir(Some(elf(62)), Some(elf(62)));
    let out = tempfile::tempdir().unwrap();
    let o = mms_build(&[
        "render",
        "--out",
        s(out.path()),
        "--appliance-bin",
        s(bins.path()),
    ]);
    assert!(o.status.success(), "{o:?}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("plan.json")).unwrap()).unwrap();
    let hash = plan["bundle_sha256"].as_str().unwrap();
    assert!(stdout.contains(hash), "{stdout}");
    assert!(stdout.contains(s(out.path())), "{stdout}");
    for f in ["user-data", "meta-data", "seed.iso", "plan.json"] {
        assert!(out.path().join(f).is_file(), "{f}");
    }
    // DHCP: no network-config.
    assert!(!out.path().join("network-config").exists());
    assert!(
        out.path()
            .join("rootfs/etc/containers/systemd/users/1100/radarr.container")
            .is_file()
    );
    // Every file of the plan exists with that hash.
    for f in plan["files"].as_array().unwrap() {
        let p = out.path().join(f["path"].as_str().unwrap());
        let bytes = std::fs::read(&p).unwrap();
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            f["sha256"].as_str().unwrap(),
            "{}",
            p.display()
        );
    }
}

#[test]
fn missing_appliance_binary_is_a_clear_error() {
    let bins = bins_dir(Some(elf(62)), None);
    let out = tempfile::tempdir().unwrap();
    let o = mms_build(&[
        "render",
        "--out",
        s(out.path()),
        "--appliance-bin",
        s(bins.path()),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mms-backupd") && err.contains("not found"),
        "{err}"
    );
    assert!(!out.path().join("seed.iso").exists());
}

#[test]
fn wrong_architecture_is_a_clear_error() {
    let bins = bins_dir(Some(elf(183)), Some(elf(62)));
    let out = tempfile::tempdir().unwrap();
    let o = mms_build(&[
        "render",
        "--out",
        s(out.path()),
        "--appliance-bin",
        s(bins.path()),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mms-firstboot") && err.contains("built for aarch64 but the VM is x86_64"),
        "{err}"
    );
    let bins = bins_dir(Some(b"#!/bin/sh\n".to_vec()), Some(elf(62)));
    let o = mms_build(&[
        "render",
        "--out",
        s(out.path()),
        "--appliance-bin",
        s(bins.path()),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an ELF"));
}

#[test]
fn preview_without_binaries_and_flag_conflict() {
    let out = tempfile::tempdir().unwrap();
    let o = mms_build(&["render", "--out", s(out.path()), "--no-appliance-bin"]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot finish first boot"));
    let fresh = tempfile::tempdir().unwrap();
    let o = mms_build(&[
        "render",
        "--out",
        s(fresh.path()),
        "--no-appliance-bin",
        "--fresh",
    ]);
    assert!(o.status.success(), "{o:?}");
    let fb = std::fs::read_to_string(fresh.path().join("rootfs/etc/mms/firstboot.yml")).unwrap();
    assert!(fb.contains("state: fresh"), "{fb}");
    let o = mms_build(&[
        "render",
        "--out",
        s(out.path()),
        "--no-appliance-bin",
        "--appliance-bin",
        "/tmp",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn invalid_config_renders_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mms.yml");
    std::fs::write(&cfg, "vm: {}\n").unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_mms-build"))
        .args([
            "--config",
            s(&cfg),
            "render",
            "--no-appliance-bin",
            "--out",
            s(&out),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.exists());
}

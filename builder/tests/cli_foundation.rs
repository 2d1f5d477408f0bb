//! The foundation commands through the real `mms-build` binary: `check`,
//! `secrets`, `schema`, `completions`, `--help`/`--version`; and the calendar
//! checker against the real `systemd-analyze calendar`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mms(args: &[&str]) -> Output {
    mms_env(args, &[])
}

/// `mms-build ARGS` in the repo, with `envs` set and nothing from the caller's environment
/// that changes its behaviour (identity, home, secret overrides, editor).
fn mms_env(args: &[&str], envs: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mms-build"));
    cmd.args(args)
        .current_dir(repo())
        .env_remove("MMS_IDENTITY")
        .env_remove("VISUAL")
        .env("HOME", "/nonexistent-home");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MMS_SECRET_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied())
        .output()
        .expect("run mms-build")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const EXAMPLE_ID: &str = "examples/homelab/example-identity.txt";

#[test]
fn check_accepts_the_example_site() {
    let o = mms(&["check", "--config", "examples/homelab/mms.yml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("secrets not checked"));
    let o = mms(&[
        "check",
        "--config",
        "examples/homelab/mms.yml",
        "--identity",
        EXAMPLE_ID,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("secrets checked"));
    // No secret value ever appears.
    assert!(!text(&o).contains("ExampleImmichPassw0rd"));
}

#[test]
fn check_names_all_ten_mistakes_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("examples/homelab/mms.yml")).unwrap();
    let bad = example
        .replace("cores: 4", "cores: four")
        .replace("memory_mib: 8192", "memory_mib: 100")
        .replace("uid: 1100", "uid: 10")
        .replace(
            "network: { ipv4: dhcp }",
            "network: { ipv4: 192.168.1.50/24, gateway: 10.1.1.1 }",
        )
        .replace(
            "/data/backups: /mnt/tank/backups",
            "/srv/backups: /mnt/tank/backups",
        )
        .replace("jellyfin, immich]", "jellyfin, plex]")
        .replace("radarr: 7878,", "radarr: 9696,")
        .replace("  hostname: mms\n", "  hostname: mms_1\n")
        .replace("config: \"*-*-* 03:00:00\"", "config: \"*-*-* 3\"")
        + "colour: blue\n";
    let path = dir.path().join("mms.yml");
    std::fs::write(&path, bad).unwrap();
    let o = mms(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    let error_lines: Vec<&str> = out.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(error_lines.len(), 10, "{out}");
    for l in &error_lines {
        // file:line:col: error: path: message
        let rest = l.strip_prefix(path.to_str().unwrap()).unwrap();
        let mut parts = rest.splitn(4, ':');
        assert_eq!(parts.next(), Some(""));
        assert!(parts.next().unwrap().parse::<u32>().is_ok(), "{l}");
        assert!(parts.next().unwrap().parse::<u32>().is_ok(), "{l}");
    }
    assert!(out.contains("10 errors"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let o = mms(&["check", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = mms(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let o = mms(&["check", "--config", "/nonexistent/mms.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("/nonexistent/mms.yml: error: cannot read the site config"),
        "{}",
        text(&o)
    );
}

#[test]
fn help_version_schema_completions() {
    let o = mms(&["--version"]);
    assert!(o.status.success() && text(&o).starts_with("mms-build "));
    let o = mms(&["--help"]);
    assert!(o.status.success() && text(&o).contains("check"));
    let o = mms(&["schema"]);
    assert!(o.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(schema["properties"]["proxmox"].is_object());
    let o = mms(&["schema", "service"]);
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(schema["properties"]["containers"].is_object());
    let o = mms(&["completions", "bash"]);
    assert!(o.status.success() && text(&o).contains("mms-build"));
}

/// A site in a temp dir, with its own identity, for the secrets commands.
fn temp_site() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("examples/homelab/mms.yml")).unwrap();
    let cfg = dir.path().join("mms.yml");
    std::fs::write(&cfg, example).unwrap();
    let id = dir.path().join("id.txt");
    let st = Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .output()
        .expect("age-keygen (Go age) is installed by scripts/setup-test-env.sh");
    assert!(st.status.success());
    (dir, cfg, id)
}

#[test]
fn secrets_init_show_names_and_edit() {
    let (dir, cfg, id) = temp_site();
    let (cfg, id) = (cfg.to_str().unwrap(), id.to_str().unwrap());
    let plain = dir.path().join("plain.yml");
    std::fs::write(
        &plain,
        "proxmox_token_secret: \"tok-123\"\ntailscale_auth_key: \"tskey-abc\"\nimmich_db_password: \"Passw0rd\"\nbackup_identity: \"AGE-SECRET-KEY-1X\"\n",
    )
    .unwrap();
    let o = mms(&[
        "secrets",
        "init",
        "-c",
        cfg,
        "-i",
        id,
        "--from",
        plain.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let enc = std::fs::read_to_string(dir.path().join("secrets.age")).unwrap();
    assert!(enc.starts_with("-----BEGIN AGE ENCRYPTED FILE-----") && !enc.contains("tok-123"));
    // It decrypts with Go age.
    let o = Command::new("age")
        .args(["-d", "-i", id])
        .arg(dir.path().join("secrets.age"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("tailscale_auth_key: \"tskey-abc\""));

    let o = mms(&["secrets", "show-names", "-c", cfg, "-i", id]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("immich_db_password") && !text(&o).contains("Passw0rd"));

    // Edit through $EDITOR: a script that changes one value and records the temp path.
    let editor = dir.path().join("editor.sh");
    let seen = dir.path().join("seen-path");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\necho \"$1\" > {}\nsed -i 's/tskey-abc/tskey-new/' \"$1\"\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = mms_env(
        &["secrets", "edit", "-c", cfg, "-i", id],
        &[("EDITOR", editor.as_os_str())],
    );
    assert!(o.status.success(), "{}", text(&o));
    let tmp_path = std::fs::read_to_string(&seen).unwrap();
    assert!(
        !Path::new(tmp_path.trim()).exists(),
        "the plain-text temp file must be gone"
    );
    let o = Command::new("age")
        .args(["-d", "-i", id])
        .arg(dir.path().join("secrets.age"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("tskey-new"));

    // An edit that breaks a rule is refused and the file stays as it was.
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/Passw0rd/bad-pass!/' \"$1\"\n",
    )
    .unwrap();
    let before = std::fs::read(dir.path().join("secrets.age")).unwrap();
    let o = mms_env(
        &["secrets", "edit", "-c", cfg, "-i", id],
        &[("EDITOR", editor.as_os_str())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("A-Za-z0-9") && !text(&o).contains("bad-pass"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(dir.path().join("secrets.age")).unwrap(),
        before
    );

    // check with the identity now validates the secrets.
    let o = mms(&["check", "-c", cfg, "-i", id]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn check_reports_missing_and_invalid_secrets() {
    let (dir, cfg, id) = temp_site();
    let (cfgs, ids) = (cfg.to_str().unwrap(), id.to_str().unwrap());
    let plain = dir.path().join("plain.yml");
    std::fs::write(
        &plain,
        "proxmox_token_secret: \"t\"\nimmich_db_password: \"has space\"\n",
    )
    .unwrap();
    // init validates too: refused, nothing written.
    let o = mms(&[
        "secrets",
        "init",
        "-c",
        cfgs,
        "-i",
        ids,
        "--from",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!dir.path().join("secrets.age").exists());
    // Write it with Go age directly, then check names the problems.
    let pubkey = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&id)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let st = Command::new("age")
        .args(["-r", pubkey.trim(), "-o"])
        .arg(dir.path().join("secrets.age"))
        .arg(&plain)
        .status()
        .unwrap();
    assert!(st.success());
    let o = mms(&["check", "-c", cfgs, "-i", ids]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(out.contains("tailscale_auth_key: missing secret"), "{out}");
    assert!(
        out.contains("immich_db_password: Immich accepts only"),
        "{out}"
    );
    assert!(!out.contains("has space"), "{out}");
    // An env override fills the gap (and the bad password still fails).
    let o = mms_env(
        &["check", "-c", cfgs, "-i", ids],
        &[
            ("MMS_SECRET_TAILSCALE_AUTH_KEY", "tskey-env".as_ref()),
            ("MMS_SECRET_IMMICH_DB_PASSWORD", "Good1".as_ref()),
            ("MMS_SECRET_BACKUP_IDENTITY", "AGE-SECRET-KEY-1X".as_ref()),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // A wrong identity is a clear error.
    let other = dir.path().join("other.txt");
    let k = Command::new("age-keygen")
        .arg("-o")
        .arg(&other)
        .output()
        .unwrap();
    assert!(k.status.success(), "age-keygen: {k:?}");
    let o = mms(&["check", "-c", cfgs, "-i", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot decrypt"), "{}", text(&o));
}

#[test]
fn calendar_checker_agrees_with_systemd() {
    let analyze = which("systemd-analyze")
        .expect("systemd-analyze is needed (installed by scripts/setup-test-env.sh)");
    for (expr, _) in mms_builder::config::calendar::CASES {
        let ours = mms_builder::config::calendar::check(expr).is_ok();
        let theirs = Command::new(&analyze)
            .args(["calendar", expr])
            .env("TZ", "UTC")
            .output()
            .unwrap()
            .status
            .success();
        assert_eq!(ours, theirs, "{expr:?}: ours {ours}, systemd {theirs}");
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

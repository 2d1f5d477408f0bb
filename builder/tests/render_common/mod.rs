//! Shared helpers of the render tests: the example site, fake appliance binaries, and one
//! function per real-tool check (each returns `Err(output)` when the tool rejects the input,
//! so tests can show that a broken file fails).
//!
//! The tools come from `scripts/setup/20-render-tools.sh` (run by
//! `scripts/setup-test-env.sh`): trixie's cloud-init, quadlet and firewall-offline-cmd
//! unpacked under `$MMS_TRIXIE_TOOLS` (default `/opt/mms-tools/trixie`), plus isoinfo,
//! xorriso, blkid and systemd-analyze from the host.
#![allow(dead_code, clippy::unwrap_used)]

use mms_builder::catalog::Catalog;
use mms_builder::config::{self, Site};
use mms_builder::render::{ApplianceBins, Bundle};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The lead's example site.
pub fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/homelab/mms.yml")
}

/// Loads the example site and the catalog.
pub fn example() -> (Site, Catalog) {
    let loaded = config::load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    (loaded.site, loaded.catalog)
}

fn fake_elf(tag: u8) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16] = 2;
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[100] = tag;
    b
}

/// Stand-ins for mms-firstboot / mms-backupd: valid x86-64 ELF headers, distinct contents.
pub fn fake_bins() -> ApplianceBins {
    ApplianceBins::Included {
        firstboot: fake_elf(1),
        backupd: fake_elf(2),
    }
}

/// Renders and writes the bundle into a fresh temp dir.
pub fn render_to_dir(site: &Site, catalog: &Catalog) -> (Bundle, tempfile::TempDir) {
    let bundle = mms_builder::render::render(site, catalog, &fake_bins()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    mms_builder::write::write_bundle(dir.path(), &bundle).unwrap();
    (bundle, dir)
}

const SETUP_HINT: &str =
    "install the render test tools: run `sudo scripts/setup-test-env.sh` (step 20-render-tools)";

/// The directory of the unpacked trixie tools.
pub fn trixie() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("MMS_TRIXIE_TOOLS").unwrap_or_else(|_| "/opt/mms-tools/trixie".into()),
    );
    for tool in ["cloud-init", "quadlet", "firewall-offline-cmd"] {
        assert!(
            dir.join("bin").join(tool).is_file(),
            "{}/bin/{tool} is missing: {SETUP_HINT}",
            dir.display()
        );
    }
    dir
}

/// Runs a command, panicking with the setup hint if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; {SETUP_HINT}"))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `cloud-init schema --config-file FILE` (25.1): must say the schema is valid.
pub fn check_cloud_init(file: &Path, schema_type: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new(trixie().join("bin/cloud-init"));
    cmd.arg("schema");
    if let Some(t) = schema_type {
        cmd.args(["--schema-type", t]);
    }
    let o = run(cmd.arg("--config-file").arg(file));
    let out = String::from_utf8_lossy(&o.stdout);
    if o.status.success() && out.contains("Valid schema") {
        Ok(())
    } else {
        Err(text(&o))
    }
}

/// The systemd unit Quadlet generates for a source file name.
pub fn quadlet_service_name(file: &str) -> Option<String> {
    let (stem, ext) = file.rsplit_once('.')?;
    match ext {
        "container" => Some(format!("{stem}.service")),
        "network" | "volume" | "pod" | "kube" | "image" | "build" => {
            Some(format!("{stem}-{ext}.service"))
        }
        _ => None,
    }
}

/// `QUADLET_UNIT_DIRS=dir quadlet -dryrun -user`: exit 0, no error/warning lines, and a
/// generated service for every Quadlet file (dry-run can exit 0 while skipping a file).
/// Returns the generated text.
pub fn check_quadlet(dir: &Path) -> Result<String, String> {
    let o = run(Command::new(trixie().join("bin/quadlet"))
        .env("QUADLET_UNIT_DIRS", dir)
        .args(["-dryrun", "-user"]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(text(&o));
    }
    let bad: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("Loading source unit file"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !bad.is_empty() {
        return Err(format!("quadlet complained:\n{}", bad.join("\n")));
    }
    let mut expected = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(svc) = quadlet_service_name(&name) {
            expected.push((name, svc));
        }
    }
    if expected.is_empty() {
        return Err(format!("no Quadlet files in {}", dir.display()));
    }
    for (file, svc) in expected {
        if !out.contains(&format!("---{svc}---")) {
            return Err(format!(
                "quadlet generated nothing for {file} (expected {svc}):\n{}",
                text(&o)
            ));
        }
    }
    Ok(out)
}

/// `systemd-analyze verify` (host systemd) on `units` (.service/.timer/.mount files, or
/// `x.service.d` drop-in directories, which verify `x.service` with the drop-in) inside
/// a temporary root holding the host's unit directory, the units under /etc/systemd/system
/// and executable stand-ins for `stand_ins` (absolute paths), so ExecStart= binaries that
/// only exist in the VM resolve. Unknown keys only warn in systemd: any line with
/// "Unknown", "ignoring" or "Failed" fails the check too.
pub fn check_systemd_verify(units: &[PathBuf], stand_ins: &[&str]) -> Result<(), String> {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let sys = r.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&sys).unwrap();
    let host = Path::new("/usr/lib/systemd/system");
    assert!(
        host.is_dir(),
        "no /usr/lib/systemd/system on this host: {SETUP_HINT}"
    );
    let o = run(Command::new("cp")
        .arg("-a")
        .arg(host)
        .arg(r.join("usr/lib/systemd")));
    assert!(o.status.success(), "{}", text(&o));
    let etc = r.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    let mut names = Vec::new();
    for u in units {
        let name = u.file_name().unwrap().to_string_lossy().into_owned();
        if u.is_dir() {
            // A drop-in directory `x.service.d`: copy it and verify `x.service` with it.
            let o = run(Command::new("cp").arg("-a").arg(u).arg(&etc));
            assert!(o.status.success(), "{}", text(&o));
            names.push(name.trim_end_matches(".d").to_string());
        } else {
            std::fs::copy(u, etc.join(&name)).unwrap();
            names.push(name);
        }
    }
    for s in stand_ins {
        let p = r.join(s.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = run(Command::new("systemd-analyze")
        .arg(format!("--root={}", r.display()))
        .args(["verify", "--man=no"])
        .args(&names)
        .current_dir(&etc));
    let err = String::from_utf8_lossy(&o.stderr);
    let bad = [
        "Unknown",
        "ignoring",
        "Failed",
        "bad unit",
        "not executable",
    ];
    if o.status.success() && !bad.iter().any(|b| err.contains(b)) {
        Ok(())
    } else {
        Err(text(&o))
    }
}

/// `firewall-offline-cmd --system-config DIR --check-config` (firewalld 2.3): exit 0 and no
/// `ERROR` (an invalid DefaultZone only logs ERROR with exit 0).
pub fn check_firewalld(dir: &Path) -> Result<(), String> {
    let o = run(Command::new(trixie().join("bin/firewall-offline-cmd"))
        .arg(format!("--system-config={}", dir.display()))
        .arg("--check-config"));
    let all = text(&o);
    if o.status.success() && !all.contains("ERROR") {
        Ok(())
    } else {
        Err(all)
    }
}

/// The seed ISO, read back with isoinfo, xorriso and blkid: label `cidata`, Joliet names
/// intact, every file byte-equal to `expected` (ISO path without leading slash → bytes).
pub fn check_iso(iso: &Path, expected: &[(String, Vec<u8>)]) -> Result<(), String> {
    let o = run(Command::new("isoinfo").args(["-d", "-i"]).arg(iso));
    let d = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() || !d.contains("Volume id: cidata") || !d.contains("Joliet") {
        return Err(format!("isoinfo -d: {}", text(&o)));
    }
    let o = run(Command::new("blkid").arg("-p").arg(iso));
    let b = String::from_utf8_lossy(&o.stdout);
    if !b.contains("LABEL=\"cidata\"") || !b.contains("TYPE=\"iso9660\"") {
        return Err(format!("blkid: {}", text(&o)));
    }
    let o = run(Command::new("xorriso")
        .arg("-indev")
        .arg(iso)
        .args(["-find", "/", "-type", "f"]));
    let listed: std::collections::BTreeSet<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            l.trim()
                .trim_matches('\'')
                .trim_start_matches('/')
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    let want: std::collections::BTreeSet<String> =
        expected.iter().map(|(p, _)| p.clone()).collect();
    if listed != want {
        return Err(format!(
            "xorriso lists {listed:?}, expected {want:?}\n{}",
            text(&o)
        ));
    }
    for (path, bytes) in expected {
        let o = run(Command::new("isoinfo")
            .args(["-J", "-i"])
            .arg(iso)
            .args(["-x", &format!("/{path}")]));
        if o.stdout != *bytes {
            return Err(format!(
                "{path}: isoinfo -J -x gives {} bytes, expected {} equal bytes",
                o.stdout.len(),
                bytes.len()
            ));
        }
    }
    Ok(())
}

/// Every file under `dir` (recursively) whose name ends with one of `exts`.
pub fn files_with(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_with(&p, exts));
            } else if exts.iter().any(|x| p.extension().is_some_and(|e| e == *x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs the Quadlet generator for real (`quadlet -user OUTDIR`, what systemd runs at
/// user-manager start) and checks the generated services with `systemd-analyze --user verify`.
/// `/usr/bin/podman` does not exist on this host, so it is pointed at an executable stand-in
/// in the temp dir — the only change to the generated text.
pub fn check_generated_user_units(quadlet_dir: &Path) -> Result<(), String> {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("user");
    std::fs::create_dir_all(&out).unwrap();
    let o = run(Command::new(trixie().join("bin/quadlet"))
        .env("QUADLET_UNIT_DIRS", quadlet_dir)
        .args(["-user", "-no-kmsg-log"])
        .arg(&out));
    if !o.status.success() {
        return Err(text(&o));
    }
    let podman = t.path().join("podman");
    std::fs::write(&podman, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&podman, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "service") {
            let s = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, s.replace("/usr/bin/podman", podman.to_str().unwrap())).unwrap();
            names.push(format!("./{}", p.file_name().unwrap().to_string_lossy()));
        }
    }
    names.sort();
    if names.is_empty() {
        return Err("quadlet generated no services".into());
    }
    let runtime = t.path().join("xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = run(Command::new("systemd-analyze")
        .env("XDG_RUNTIME_DIR", &runtime)
        .args(["--user", "verify", "--man=no"])
        .args(&names)
        .current_dir(&out));
    let err = String::from_utf8_lossy(&o.stderr);
    let bad = [
        "Unknown",
        "ignoring",
        "Failed",
        "bad unit",
        "not executable",
    ];
    if o.status.success() && !bad.iter().any(|b| err.contains(b)) {
        Ok(())
    } else {
        Err(text(&o))
    }
}

//! The rendered bundle checked by the real tools (issue 3): cloud-init 25 schema, the podman 5
//! Quadlet generator, systemd-analyze verify, firewall-offline-cmd, isoinfo/xorriso/blkid —
//! on the example site and generated variations; and each check shown to fail on a
//! deliberately broken input.

#![allow(clippy::unwrap_used)]

mod render_common;

use mms_builder::catalog::Catalog;
use mms_builder::config::{Site, VmNetwork, VmOs};
use mms_builder::render::ini::{self, Ctx};
use mms_builder::render::units::{Body, Container, Install, Service, Unit, UnitFile};
use mms_builder::render::{ApplianceBins, Bundle};
use render_common::*;
use sha2::{Digest, Sha256};
use std::path::Path;

fn variations() -> Vec<(&'static str, Site, Catalog)> {
    let (base, catalog) = example();
    let mut out = vec![("homelab", base.clone(), catalog.clone())];

    let mut debian = base.clone();
    debian.vm.os = VmOs::Debian;
    debian.vm.network = VmNetwork::Static {
        address: "192.168.1.50".parse().unwrap(),
        prefix: 24,
        gateway: "192.168.1.1".parse().unwrap(),
        dns: vec![
            "192.168.1.1".parse().unwrap(),
            "2606:4700:4700::1111".parse().unwrap(),
        ],
        rebuild: None,
    };
    out.push(("debian-static", debian, catalog.clone()));

    let mut subset = base.clone();
    subset.services = vec!["radarr".into(), "sabnzbd".into()];
    subset.tailscale.serve.retain(|s| s.service == "radarr");
    subset.site.lan_ssh = true;
    subset.nfs.mounts.clear();
    subset.nfs.server.clear();
    subset.images.insert(
        "radarr".into(),
        "registry.example.lan/mirror/radarr:6".into(),
    );
    out.push(("subset-local-data", subset, catalog.clone()));

    let mut immich_only = base;
    immich_only.services = vec!["immich".into()];
    immich_only.tailscale.serve.clear();
    out.push(("immich-only", immich_only, catalog));
    out
}

fn iso_expected(bundle: &Bundle) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for name in ["user-data", "meta-data", "network-config"] {
        if let Some(f) = bundle.files.get(name) {
            v.push((name.to_string(), f.contents.clone()));
        }
    }
    let ApplianceBins::Included { firstboot, backupd } = fake_bins() else {
        unreachable!()
    };
    let sums = format!(
        "{}  mms-backupd\n{}  mms-firstboot\n",
        hex::encode(Sha256::digest(&backupd)),
        hex::encode(Sha256::digest(&firstboot))
    );
    v.push(("mms/mms-firstboot".into(), firstboot));
    v.push(("mms/mms-backupd".into(), backupd));
    v.push(("mms/SHA256SUMS".into(), sums.into_bytes()));
    v
}

fn check_bundle(name: &str, site: &Site, bundle: &Bundle, dir: &Path) {
    fn fail<T>(name: &str, what: &str, e: String) -> T {
        panic!("{name}: {what} rejected the bundle:\n{e}")
    }
    check_cloud_init(&dir.join("user-data"), None)
        .unwrap_or_else(|e| fail(name, "cloud-init schema", e));
    if matches!(site.vm.network, VmNetwork::Static { .. }) {
        check_cloud_init(&dir.join("network-config"), Some("network-config"))
            .unwrap_or_else(|e| fail(name, "cloud-init schema (network-config)", e));
    } else {
        assert!(
            !dir.join("network-config").exists(),
            "{name}: DHCP needs no network-config"
        );
    }
    let qdir = dir.join(format!(
        "rootfs/etc/containers/systemd/users/{}",
        site.site.user.uid
    ));
    let generated = check_quadlet(&qdir).unwrap_or_else(|e| fail(name, "quadlet -dryrun", e));
    // Every container of every enabled service got a unit.
    for svc in &site.services {
        for c in &bundle_catalog_containers(site, svc) {
            assert!(
                generated.contains(&format!("---{c}.service---")),
                "{name}: no unit for container {c}"
            );
        }
    }
    check_generated_user_units(&qdir)
        .unwrap_or_else(|e| fail(name, "systemd-analyze --user verify (generated)", e));
    let units = files_with(
        &dir.join("rootfs/etc/systemd/system"),
        &["service", "timer", "mount", "path"],
    );
    assert!(
        units.len() >= 5 + site.nfs.mounts.len(),
        "{name}: {units:?}"
    );
    let mut units = units;
    units.push(dir.join(format!(
        "rootfs/etc/systemd/system/user@{}.service.d",
        site.site.user.uid
    )));
    check_systemd_verify(
        &units,
        &[
            "/usr/local/bin/mms-firstboot",
            "/usr/local/bin/mms-backupd",
            // On the appliance (merged /usr); this host keeps it in /bin.
            "/usr/bin/rm",
            // ExecStart= of the host's user@.service, which the drop-in extends.
            "/lib/systemd/systemd",
        ],
    )
    .unwrap_or_else(|e| fail(name, "systemd-analyze verify", e));
    check_firewalld(&dir.join("rootfs/etc/firewalld"))
        .unwrap_or_else(|e| fail(name, "firewall-offline-cmd --check-config", e));
    check_iso(&dir.join("seed.iso"), &iso_expected(bundle))
        .unwrap_or_else(|e| fail(name, "ISO tools", e));
}

fn bundle_catalog_containers(site: &Site, service: &str) -> Vec<String> {
    let (_, catalog) = example();
    let _ = site;
    catalog
        .get(service)
        .map(|d| d.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn example_and_variations_pass_every_real_tool() {
    for (name, site, catalog) in variations() {
        let (bundle, dir) = render_to_dir(&site, &catalog);
        check_bundle(name, &site, &bundle, dir.path());
    }
}

/// A rebuild of a static site builds on DHCP or `rebuild_ipv4` (the old VM keeps the site's
/// address until cut-over), and firstboot.yml carries the address cut-over takes.
#[test]
fn a_static_site_rebuilds_on_a_temporary_address_cloud_init_accepts() {
    let (_, debian, catalog) = variations()
        .into_iter()
        .find(|(n, ..)| *n == "debian-static")
        .unwrap();
    let fb_config = |b: &Bundle| {
        let text =
            String::from_utf8(b.files["rootfs/etc/mms/firstboot.yml"].contents.clone()).unwrap();
        mms_firstboot::config::Config::from_yaml(Path::new("firstboot.yml"), &text).unwrap()
    };
    let first = mms_builder::render::render(&debian, &catalog, &fake_bins()).unwrap();
    assert_eq!(
        fb_config(&first).network,
        None,
        "a first build has its address"
    );
    for (temporary, want) in [
        (None, "dhcp4: true"),
        (Some("192.168.1.51"), "- 192.168.1.51/24"),
    ] {
        let mut site = debian.clone();
        if let VmNetwork::Static { rebuild, .. } = &mut site.vm.network {
            *rebuild = temporary.map(|a| a.parse().unwrap());
        }
        let b = mms_builder::render::render_for(
            &site,
            &catalog,
            &fake_bins(),
            &mms_builder::render::Deployment {
                previous_vm: Some("mms".into()),
                fresh: false,
            },
        )
        .unwrap();
        let nc = String::from_utf8(b.files["network-config"].contents.clone()).unwrap();
        assert!(nc.contains(want), "{temporary:?}:\n{nc}");
        assert!(!nc.contains("192.168.1.50"), "{temporary:?}:\n{nc}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("network-config"), &nc).unwrap();
        check_cloud_init(&dir.path().join("network-config"), Some("network-config"))
            .unwrap_or_else(|e| panic!("{temporary:?}: cloud-init rejected:\n{e}\n{nc}"));
        let n = fb_config(&b).network.expect("cut-over address");
        assert_eq!(
            (n.address.to_string(), n.prefix, n.gateway.to_string()),
            ("192.168.1.50".into(), 24, "192.168.1.1".into())
        );
        assert_eq!(n.dns.len(), 2);
    }
}

/// Extracts the seed ISO's `/mms` files into `dir` with `isoinfo` (a binary the bundle
/// omits is not written; SHA256SUMS always is).
fn extract_mms_dir(bundle: &Bundle, dir: &Path) {
    let iso = dir.join(".seed.iso");
    std::fs::write(&iso, bundle.iso()).unwrap();
    for name in ["mms-firstboot", "mms-backupd", "SHA256SUMS"] {
        let o = run(std::process::Command::new("isoinfo")
            .args(["-J", "-i"])
            .arg(&iso)
            .args(["-x", &format!("/mms/{name}")]));
        if !o.stdout.is_empty() || name == "SHA256SUMS" {
            std::fs::write(dir.join(name), &o.stdout).unwrap();
        }
    }
    std::fs::remove_file(&iso).unwrap();
}

#[test]
fn seed_iso_checksums_verify_with_sha256sum() {
    let (site, catalog) = example();
    let (bundle, _dir) = render_to_dir(&site, &catalog);
    // The files as they are on the seed ISO, SHA256SUMS included.
    let work = tempfile::tempdir().unwrap();
    extract_mms_dir(&bundle, work.path());
    let o = run(std::process::Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(work.path()));
    assert!(o.status.success(), "{o:?}");
    std::fs::write(work.path().join("mms-backupd"), b"tampered").unwrap();
    let o = run(std::process::Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(work.path()));
    assert!(!o.status.success(), "a tampered binary must fail the check");
}

#[test]
fn broken_user_data_fails_cloud_init_schema() {
    let (site, catalog) = example();
    let (_b, dir) = render_to_dir(&site, &catalog);
    let good = std::fs::read_to_string(dir.path().join("user-data")).unwrap();
    let cases = [
        good.replace("package_update: true", "package_update: sometimes"),
        format!("{good}bogus_top_level_key: 1\n"),
        good.replacen("#cloud-config\n", "", 1),
    ];
    for (i, bad) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad-{i}"));
        std::fs::write(&p, bad).unwrap();
        assert!(check_cloud_init(&p, None).is_err(), "case {i} passed");
    }
}

#[test]
fn broken_quadlet_units_fail_the_generator_check() {
    let (site, catalog) = example();
    let (_b, dir) = render_to_dir(&site, &catalog);
    let qdir = dir.path().join("rootfs/etc/containers/systemd/users/1100");
    let radarr = std::fs::read_to_string(qdir.join("radarr.container")).unwrap();
    let cases = [
        (
            "unknown key",
            radarr.replace("ContainerName=", "ContainerNam="),
        ),
        ("no image", radarr.replace("Image=", "#Image=")),
        (
            "missing network",
            radarr.replace("Network=mms.network", "Network=nope.network"),
        ),
    ];
    for (what, bad) in cases {
        let copy = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&qdir).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
        }
        std::fs::write(copy.path().join("radarr.container"), bad).unwrap();
        assert!(check_quadlet(copy.path()).is_err(), "{what}: passed");
    }
    // Passes the generator, but the generated service is wrong for systemd.
    let copy = tempfile::tempdir().unwrap();
    let bad = radarr.replace("TimeoutStartSec=900", "TimeoutStartSec=soon");
    std::fs::write(copy.path().join("radarr.container"), bad).unwrap();
    std::fs::copy(qdir.join("mms.network"), copy.path().join("mms.network")).unwrap();
    assert!(check_quadlet(copy.path()).is_ok());
    assert!(check_generated_user_units(copy.path()).is_err());
}

#[test]
fn broken_system_units_fail_systemd_verify() {
    let (site, catalog) = example();
    let (_b, dir) = render_to_dir(&site, &catalog);
    let sys = dir.path().join("rootfs/etc/systemd/system");
    let stand_ins = ["/usr/local/bin/mms-firstboot", "/usr/local/bin/mms-backupd"];
    let timer = std::fs::read_to_string(sys.join("mms-backup-config.timer")).unwrap();
    let service = std::fs::read_to_string(sys.join("mms-firstboot.service")).unwrap();
    let cases = [
        (
            "mms-backup-config.timer",
            timer.replace("OnCalendar=*-*-* 03:00:00", "OnCalendar=at three"),
        ),
        (
            "mms-firstboot.service",
            service.replace("Type=oneshot", "Type=oneshoot"),
        ),
        (
            "mms-firstboot.service",
            service.replace("RemainAfterExit=", "RemainAfterExt="),
        ),
    ];
    for (file, bad) in cases {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(file);
        std::fs::write(&p, &bad).unwrap();
        assert!(
            check_systemd_verify(&[p], &stand_ins).is_err(),
            "{file}: {bad}"
        );
    }
    // A drop-in with a typo.
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("user@1100.service.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("x.conf"), "[Unit]\nAftr=remote-fs.target\n").unwrap();
    assert!(check_systemd_verify(std::slice::from_ref(&d), &["/lib/systemd/systemd"]).is_err());
    std::fs::write(d.join("x.conf"), "[Unit]\nAfter=remote-fs.target\n").unwrap();
    assert!(check_systemd_verify(&[d], &["/lib/systemd/systemd"]).is_ok());
    // A binary that does not exist in the VM is an error too.
    assert!(check_systemd_verify(&[sys.join("mms-firstboot.service")], &[]).is_err());
}

#[test]
fn broken_firewalld_config_fails_the_check() {
    let (site, catalog) = example();
    let (_b, dir) = render_to_dir(&site, &catalog);
    let fw = dir.path().join("rootfs/etc/firewalld");
    let copy = |edit: &dyn Fn(&Path)| {
        let t = tempfile::tempdir().unwrap();
        let o = run(std::process::Command::new("cp")
            .arg("-a")
            .arg(&fw)
            .arg(t.path()));
        assert!(o.status.success());
        let d = t.path().join("firewalld");
        edit(&d);
        check_firewalld(&d)
    };
    assert!(copy(&|_| {}).is_ok());
    assert!(
        copy(&|d| std::fs::write(d.join("zones/drop.xml"), "<zone target=\"DROP\">").unwrap())
            .is_err()
    );
    assert!(
        copy(&|d| std::fs::write(d.join("firewalld.conf"), "DefaultZone=nowhere\n").unwrap())
            .is_err()
    );
    assert!(
        copy(&|d| std::fs::write(
            d.join("zones/trusted.xml"),
            "<?xml version=\"1.0\"?><zone><service name=\"no-such-service\"/></zone>"
        )
        .unwrap())
        .is_err()
    );
}

#[test]
fn broken_iso_fails_the_iso_check() {
    let (site, catalog) = example();
    let (bundle, dir) = render_to_dir(&site, &catalog);
    let iso = dir.path().join("seed.iso");
    let expected = iso_expected(&bundle);
    assert!(check_iso(&iso, &expected).is_ok());
    let mut bytes = std::fs::read(&iso).unwrap();
    // Another label.
    let at = 16 * 2048 + 40;
    bytes[at..at + 6].copy_from_slice(b"cidatx");
    let bad = dir.path().join("bad.iso");
    std::fs::write(&bad, &bytes).unwrap();
    assert!(check_iso(&bad, &expected).is_err());
    // Contents differ from the bundle.
    let mut other = expected.clone();
    other[0].1.push(b'\n');
    assert!(check_iso(&iso, &other).is_err());
}

/// Hostile values go through the serializer, the real Quadlet generator parses them and
/// writes the podman command line; systemd's word splitting of that line gives back exactly
/// the input (so nothing broke out of its line, and `%`/`$` were not expanded).
const HEALTH: &str = r#"curl -fsS 'http://127.0.0.1:80/a b' | grep -q "100% $HOME\n" || exit 1"#;
const VOLUME: &str = "/data/with space/100%/$x:/in container";

#[test]
fn hostile_values_survive_the_real_quadlet_generator() {
    let hostile = [
        "plain",
        "with space and \"quotes\" and 'single'",
        "percent %n %% and dollar $HOME ${X} $$",
        "back\\slash\\ and trailing\\",
        "new\nline\n[Service]\nExecStart=/bin/evil",
        "tab\tcr\r bell\u{7} del\u{7f} unicode é ✓",
        "; semicolon # hash = equals",
    ];
    let env: std::collections::BTreeMap<String, String> = hostile
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("V{i}"), (*v).to_string()))
        .collect();
    let unit = UnitFile {
        unit: Unit {
            description: Some("hostile 100% \"test\" $HOME".into()),
            ..Unit::default()
        },
        body: Body::Container(
            Box::new(Container {
                image: "docker.io/library/busybox:1".into(),
                container_name: Some("hostile".into()),
                environment: env.clone(),
                exec: Some(hostile.iter().map(|s| s.to_string()).collect()),
                health_cmd: Some(HEALTH.into()),
                volume: vec![VOLUME.into()],
                ..Container::default()
            }),
            Service::default(),
        ),
        install: Install::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostile.container"), unit.render().unwrap()).unwrap();
    let out = check_quadlet(dir.path()).unwrap();
    let service = out
        .split("---hostile.service---")
        .nth(1)
        .unwrap()
        .split("\n---")
        .next()
        .unwrap();
    let parsed = ini::parse(service).unwrap();
    let exec = parsed
        .iter()
        .find(|(s, k, _)| s == "Service" && k == "ExecStart")
        .map(|(_, _, v)| v.clone())
        .unwrap();
    // systemd expands specifiers and $VARs in ExecStart; our parser undoes %% and $$ and
    // fails on any unescaped % or $, i.e. on anything systemd would have substituted.
    // Quadlet's own `--cidfile=%t/%N.cid` is the one intended specifier use.
    let exec = exec.replacen(" --cidfile=%t/%N.cid", "", 1);
    let words = ini::split_words(&exec, Ctx::Exec).unwrap_or_else(|e| panic!("{e}: {exec}"));
    for (k, v) in &env {
        let want = format!("{k}={v}");
        let pos = words.iter().position(|w| *w == want);
        assert!(
            pos.is_some_and(|p| words[p - 1] == "--env"),
            "--env {want:?} not in {words:?}"
        );
    }
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| w == flag)
            .map(|p| words[p + 1].clone())
    };
    assert_eq!(after("--health-cmd").as_deref(), Some(HEALTH));
    assert_eq!(after("-v").as_deref(), Some(VOLUME));
    let tail = &words[words.len() - hostile.len()..];
    assert_eq!(tail, hostile, "Exec= words");
    let desc = parsed
        .iter()
        .find(|(s, k, _)| s == "Unit" && k == "Description")
        .map(|(_, _, v)| v.clone())
        .unwrap();
    assert_eq!(
        ini::unescape_text(&desc, Ctx::Plain).unwrap(),
        "hostile 100% \"test\" $HOME"
    );
}

/// The rendered install script, run for real (sh, sha256sum, grep, install) against the
/// files of the seed ISO as isoinfo extracts them; only `blkid`/`mount`/`umount` are
/// stand-ins (no iso9660 module or loop device on a CI host) that "mount" the extracted tree.
#[test]
fn install_script_installs_only_verified_binaries() {
    let (site, catalog) = example();
    let run_script = |bundle: &Bundle, tamper: bool| {
        let t = tempfile::tempdir().unwrap();
        let iso_tree = t.path().join("iso");
        std::fs::create_dir_all(iso_tree.join("mms")).unwrap();
        extract_mms_dir(bundle, &iso_tree.join("mms"));
        if tamper {
            std::fs::write(iso_tree.join("mms/mms-backupd"), b"\x7fELF evil").unwrap();
        }
        let stubs = t.path().join("stubs");
        std::fs::create_dir_all(&stubs).unwrap();
        let stub = |name: &str, body: String| {
            let p = stubs.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        stub("blkid", "echo /dev/sr0".into());
        stub("mount", format!("cp -r {}/. \"$4\"", iso_tree.display()));
        stub("umount", "find \"$1\" -mindepth 1 -delete".into());
        let script = t.path().join("install");
        std::fs::write(
            &script,
            &bundle.files["rootfs/usr/local/lib/mms/install-appliance-bins"].contents,
        )
        .unwrap();
        let bin = t.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap());
        let o = run(std::process::Command::new("sh")
            .arg(&script)
            .env("PATH", path)
            .env("MMS_BIN_DIR", &bin));
        let installed: Vec<(String, Vec<u8>)> = ["mms-firstboot", "mms-backupd"]
            .iter()
            .filter_map(|n| std::fs::read(bin.join(n)).ok().map(|b| (n.to_string(), b)))
            .collect();
        (o, installed, t)
    };
    let good = mms_builder::render::render(&site, &catalog, &fake_bins()).unwrap();
    let (o, installed, _t) = run_script(&good, false);
    assert!(o.status.success(), "{o:?}");
    let ApplianceBins::Included { firstboot, backupd } = fake_bins() else {
        unreachable!()
    };
    assert_eq!(
        installed,
        vec![
            ("mms-firstboot".to_string(), firstboot),
            ("mms-backupd".to_string(), backupd)
        ]
    );
    let (o, installed, _t) = run_script(&good, true);
    assert!(
        !o.status.success() && installed.is_empty(),
        "tampered binary installed: {o:?}"
    );
    let preview = mms_builder::render::render(&site, &catalog, &ApplianceBins::Omitted).unwrap();
    let (o, installed, _t) = run_script(&preview, false);
    assert!(!o.status.success() && installed.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--no-appliance-bin"),
        "{o:?}"
    );
}

//! Golden files of the rendered bundle, reproducibility, and hash sensitivity.
//!
//! `builder/tests/golden/<case>/` holds every text file of the bundle (all but `seed.iso`,
//! whose SHA-256 is in `plan.json`). Regenerate after an intended change with
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p mms-builder --test render_golden
//! ```
//!
//! and review the diff like any other change.

#![allow(clippy::unwrap_used)]

mod render_common;

use mms_builder::catalog::Catalog;
use mms_builder::config::{Site, TemplateRef, VmNetwork, VmOs};
use mms_builder::render::{self, Bundle};
use render_common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

fn text_files(bundle: &Bundle) -> BTreeMap<String, Vec<u8>> {
    bundle
        .files
        .iter()
        .filter(|(p, _)| p.as_str() != "seed.iso")
        .map(|(p, f)| (p.clone(), f.contents.clone()))
        .collect()
}

fn read_tree(dir: &Path, base: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            read_tree(&p, base, out);
        } else {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}:\n  expected: {x}\n  rendered: {y}", i + 1);
        }
    }
    format!(
        "lengths differ: expected {} lines, rendered {} lines",
        a.lines().count(),
        b.lines().count()
    )
}

fn check_golden(case: &str, site: &Site, catalog: &Catalog) {
    let bundle = render::render(site, catalog, &fake_bins()).unwrap();
    let rendered = text_files(&bundle);
    let dir = golden_dir(case);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        for (rel, bytes) in &rendered {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        return;
    }
    assert!(
        dir.is_dir(),
        "{} missing: run UPDATE_GOLDEN=1 cargo test -p mms-builder --test render_golden",
        dir.display()
    );
    let mut expected = BTreeMap::new();
    read_tree(&dir, &dir, &mut expected);
    let exp_names: Vec<&String> = expected.keys().collect();
    let got_names: Vec<&String> = rendered.keys().collect();
    assert_eq!(
        exp_names, got_names,
        "{case}: file set changed (UPDATE_GOLDEN=1 to accept)"
    );
    for (rel, want) in &expected {
        let got = &rendered[rel];
        assert!(
            want == got,
            "{case}: {rel} differs from the golden file (UPDATE_GOLDEN=1 to accept)\n{}",
            first_difference(want, got)
        );
    }
}

#[test]
fn golden_homelab() {
    let (site, catalog) = example();
    check_golden("homelab", &site, &catalog);
}

#[test]
fn golden_debian_static() {
    let (mut site, catalog) = example();
    site.vm.os = VmOs::Debian;
    site.vm.network = VmNetwork::Static {
        address: "192.168.1.50".parse().unwrap(),
        prefix: 24,
        gateway: "192.168.1.1".parse().unwrap(),
        dns: vec!["192.168.1.1".parse().unwrap()],
        rebuild: None,
    };
    check_golden("debian-static", &site, &catalog);
}

#[test]
fn two_renders_are_byte_identical() {
    let (site, catalog) = example();
    let a = render::render(&site, &catalog, &fake_bins()).unwrap();
    let b = render::render(&site, &catalog, &fake_bins()).unwrap();
    assert_eq!(a, b);
    let (_, d1) = render_to_dir(&site, &catalog);
    let (_, d2) = render_to_dir(&site, &catalog);
    let (mut t1, mut t2) = (BTreeMap::new(), BTreeMap::new());
    read_tree(d1.path(), d1.path(), &mut t1);
    read_tree(d2.path(), d2.path(), &mut t2);
    assert_eq!(t1, t2);
    assert!(t1.contains_key("seed.iso") && t1.contains_key("plan.json"));
    let plan: serde_json::Value = serde_json::from_slice(&t1["plan.json"]).unwrap();
    assert_eq!(plan["bundle_sha256"], a.hash.as_str());
    assert_eq!(plan["instance_id"], a.instance_id.as_str());
    assert_eq!(a.instance_id, format!("mms-{}", &a.hash[..16]));
}

type Mutation = (&'static str, fn(&mut Site));

fn mutations() -> Vec<Mutation> {
    vec![
        ("vm.name", |s| s.vm.name = "media".into()),
        ("vm.os", |s| s.vm.os = VmOs::Debian),
        ("vm.cores", |s| s.vm.cores += 1),
        ("vm.memory_mib", |s| s.vm.memory_mib += 1024),
        ("vm.disk_gib", |s| s.vm.disk_gib += 1),
        ("vm.network", |s| {
            s.vm.network = VmNetwork::Static {
                address: "10.0.0.5".parse().unwrap(),
                prefix: 24,
                gateway: "10.0.0.1".parse().unwrap(),
                dns: vec![],
                rebuild: None,
            }
        }),
        ("vm.network.rebuild_ipv4", |s| {
            s.vm.network = VmNetwork::Static {
                address: "10.0.0.5".parse().unwrap(),
                prefix: 24,
                gateway: "10.0.0.1".parse().unwrap(),
                dns: vec![],
                rebuild: Some("10.0.0.6".parse().unwrap()),
            }
        }),
        ("vm.ssh_authorized_keys", |s| {
            s.vm.ssh_authorized_keys.clear()
        }),
        ("proxmox.node", |s| s.proxmox.node = "pve2".into()),
        ("proxmox.template", |s| {
            s.proxmox.template = TemplateRef::Vmid(9001)
        }),
        ("proxmox.storage", |s| s.proxmox.storage = "tank".into()),
        ("proxmox.iso_storage", |s| {
            s.proxmox.iso_storage = "isos".into()
        }),
        ("proxmox.bridge", |s| s.proxmox.bridge = "vmbr1".into()),
        ("proxmox.pool", |s| s.proxmox.pool = Some("media".into())),
        ("site.timezone", |s| s.site.timezone = "UTC".into()),
        ("site.user.name", |s| s.site.user.name = "media".into()),
        ("site.user.uid", |s| s.site.user.uid = 1200),
        ("site.user.gid", |s| s.site.user.gid = 1200),
        ("site.lan_ssh", |s| s.site.lan_ssh = !s.site.lan_ssh),
        ("nfs.server", |s| s.nfs.server = "192.168.1.11".into()),
        ("nfs.mounts.export", |s| {
            s.nfs.mounts[0].export = "/mnt/other".into()
        }),
        ("nfs.mounts.remove", |s| {
            s.nfs.mounts.pop();
        }),
        ("services", |s| {
            s.services.retain(|x| x != "lidarr");
        }),
        ("images", |s| {
            s.images
                .insert("radarr".into(), "mirror.lan/radarr:6".into());
        }),
        ("backup.schedule.config", |s| {
            s.backup.schedule.config = "*-*-* 04:00:00".into()
        }),
        ("backup.schedule.photos", |s| {
            s.backup.schedule.photos = "Sat *-*-* 04:00:00".into()
        }),
        ("backup.target", |s| {
            s.backup.target = "/data/backups/mms".into()
        }),
        ("backup.recipients", |s| s.backup.recipients.clear()),
        ("backup.retention", |s| s.backup.retention.daily += 1),
        ("tailscale.hostname", |s| {
            s.tailscale.hostname = "media".into()
        }),
        ("tailscale.serve", |s| s.tailscale.serve[0].port = 8443),
        ("migrate", |s| {
            s.migrate = Some(mms_builder::config::MigrateConfig {
                from: mms_builder::config::MigrateFrom {
                    host: "old-lxc.lan".into(),
                    user: "root".into(),
                    port: 22,
                    proxmox_vmid: Some(105),
                },
                sources: BTreeMap::new(),
                path_map: BTreeMap::new(),
            })
        }),
    ]
}

#[test]
fn every_config_change_changes_hash_and_instance_id() {
    let (site, catalog) = example();
    let base = render::render(&site, &catalog, &fake_bins()).unwrap();
    for (what, mutate) in mutations() {
        let mut s = site.clone();
        mutate(&mut s);
        let b = render::render(&s, &catalog, &fake_bins()).unwrap();
        assert_ne!(b.hash, base.hash, "{what}: hash unchanged");
        assert_ne!(
            b.instance_id, base.instance_id,
            "{what}: instance-id unchanged"
        );
        let meta = String::from_utf8_lossy(&b.files["meta-data"].contents).into_owned();
        assert!(meta.contains(&b.instance_id), "{what}: {meta}");
    }
    // A rebuild differs from a first build.
    let rebuild = render::render_for(
        &site,
        &catalog,
        &fake_bins(),
        &render::Deployment {
            previous_vm: Some("mms".into()),
            fresh: false,
        },
    )
    .unwrap();
    assert_ne!(rebuild.hash, base.hash);
    // The appliance binaries are part of the bundle too.
    let other = render::render(&site, &catalog, &render::ApplianceBins::Omitted).unwrap();
    assert_ne!(other.hash, base.hash);
}

/// The user-data writes exactly the rootfs files of the bundle (content, mode, owner).
#[test]
fn user_data_write_files_match_rootfs() {
    #[derive(serde::Deserialize)]
    struct Doc {
        write_files: Vec<Wf>,
    }
    #[derive(serde::Deserialize)]
    struct Wf {
        path: String,
        content: String,
        permissions: String,
        owner: String,
    }
    let (site, catalog) = example();
    let b = render::render(&site, &catalog, &fake_bins()).unwrap();
    let ud = String::from_utf8(b.files["user-data"].contents.clone()).unwrap();
    assert!(ud.starts_with("#cloud-config\n"));
    let doc: Doc = serde_saphyr::from_str(&ud).unwrap();
    let rootfs: BTreeMap<&str, &render::FileSpec> = b
        .files
        .iter()
        .filter_map(|(p, f)| p.strip_prefix("rootfs").map(|p| (p, f)))
        .collect();
    assert_eq!(doc.write_files.len(), rootfs.len());
    for wf in &doc.write_files {
        let f = rootfs[wf.path.as_str()];
        assert_eq!(wf.content.as_bytes(), f.contents, "{}", wf.path);
        assert_eq!(wf.permissions, format!("{:04o}", f.mode), "{}", wf.path);
        assert_eq!(wf.owner, "root:root");
    }
}

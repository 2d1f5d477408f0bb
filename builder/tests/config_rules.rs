//! Every validation rule of `mms.yml`, each with a failing and a passing case,
//! run through the pure decoder on variations of the example site.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use mms_builder::catalog::Catalog;
use mms_builder::config::{self, VmNetwork};
use mms_builder::yaml::{Diagnostic, Severity};
use std::path::Path;

const EXAMPLE: &str = include_str!("../../examples/homelab/mms.yml");

fn decode(text: &str) -> (Option<config::Site>, Vec<Diagnostic>) {
    let catalog = Catalog::builtin().expect("built-in catalog");
    config::decode(Path::new("site/mms.yml"), text, &catalog)
}

fn errors(text: &str) -> Vec<Diagnostic> {
    decode(text)
        .1
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

/// Replaces exactly one occurrence of `from` in the example.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(EXAMPLE.matches(from).count(), 1, "{from:?} must occur once");
    EXAMPLE.replacen(from, to, 1)
}

#[track_caller]
fn fails(text: &str, path: &str, fragment: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|d| d.path == path && d.message.contains(fragment) && d.loc.line > 0),
        "expected an error at {path} containing {fragment:?}; got:\n{}",
        errs.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[track_caller]
fn passes(text: &str) -> config::Site {
    let (site, diags) = decode(text);
    let errs: Vec<_> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert!(errs.is_empty(), "unexpected errors: {errs:#?}");
    site.expect("site")
}

#[test]
fn the_example_is_valid_and_typed() {
    let site = passes(EXAMPLE);
    assert_eq!(site.vm.name, "mms");
    assert_eq!(site.site.user.uid, 1100);
    assert_eq!(site.services.len(), 7);
    assert_eq!(site.nfs.mounts[0].mount_point, "/data");
    assert_eq!(site.tailscale.serve.len(), 3);
    assert_eq!(site.secrets_file, Path::new("site/secrets.age"));
    assert_eq!(site.backup.retention.daily, 7);
}

#[test]
fn unknown_keys() {
    fails(&format!("{EXAMPLE}colour: blue\n"), "colour", "unknown key");
    fails(
        &edit("  cores: 4\n", "  cores: 4\n  cpus: 2\n"),
        "vm.cpus",
        "expected one of",
    );
    passes(&edit("  cores: 4\n", "  cores: 4\n  os: debian\n"));
}

#[test]
fn wrong_types() {
    fails(
        &edit("cores: 4", "cores: four"),
        "vm.cores",
        "found \"four\"",
    );
    fails(
        &edit("lan_ssh: false", "lan_ssh: \"no\""),
        "site.lan_ssh",
        "true or false",
    );
    fails(
        &edit("  node: pve\n", "  node: [pve]\n"),
        "proxmox.node",
        "found a list",
    );
    fails(
        &edit(
            "services: [prowlarr, radarr, sonarr, lidarr, sabnzbd, jellyfin, immich]",
            "services: radarr",
        ),
        "services",
        "expected a list",
    );
    passes(&edit("cores: 4", "cores: 8"));
}

#[test]
fn unknown_and_duplicate_services() {
    fails(
        &edit("jellyfin, immich]", "jellyfin, plex]"),
        "services[6]",
        "unknown service \"plex\"",
    );
    fails(
        &edit("jellyfin, immich]", "jellyfin, radarr]"),
        "services[6]",
        "listed twice",
    );
    fails(
        &edit(
            "services: [prowlarr, radarr, sonarr, lidarr, sabnzbd, jellyfin, immich]",
            "services: []",
        ),
        "services",
        "at least one",
    );
    let site = passes(&edit("jellyfin, immich]", "jellyfin]"));
    assert!(!site.services.contains(&"immich".to_string()));
}

#[test]
fn port_clashes() {
    // A serve port that is another service's port.
    fails(
        &edit("radarr: 7878,", "radarr: 8989,"),
        "tailscale.serve.radarr",
        "clashes with sonarr",
    );
    // Two services served on one port.
    fails(
        &edit("radarr: 7878,", "radarr: 443,"),
        "tailscale.serve.radarr",
        "also served",
    );
    // Serving a service that is not enabled.
    fails(
        &edit("radarr: 7878,", "plex: 32400,"),
        "tailscale.serve.plex",
        "not in `services`",
    );
    passes(&edit("radarr: 7878,", "radarr: 8443,"));
}

#[test]
fn published_ports_must_not_clash_between_services() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(std::path::PathBuf, String)> = mms_builder::catalog::BUILTIN
        .iter()
        .map(|(n, t)| (format!("services/{n}").into(), t.to_string()))
        .collect();
    let (_, prowlarr) = mms_builder::catalog::BUILTIN
        .iter()
        .find(|(n, _)| *n == "prowlarr.yml")
        .unwrap();
    let clash = prowlarr
        .replace("name: prowlarr", "name: nzbget")
        .replace("9696", "8080");
    files.push((dir.path().join("nzbget.yml"), clash));
    let catalog = Catalog::from_files(files).unwrap();
    let text = edit("jellyfin, immich]", "jellyfin, immich, nzbget]");
    let (_, diags) = config::decode(Path::new("mms.yml"), &text, &catalog);
    assert!(
        diags
            .iter()
            .any(|d| d.path == "services" && d.message.contains("both publish port 8080")),
        "{diags:#?}"
    );
}

#[test]
fn uid_gid_range() {
    fails(
        &edit("uid: 1100", "uid: 500"),
        "site.user.uid",
        "1000 to 60000",
    );
    fails(
        &edit("gid: 1100", "gid: 70000"),
        "site.user.gid",
        "1000 to 60000",
    );
    fails(
        &edit("name: mms, uid", "name: root, uid"),
        "site.user.name",
        "system account",
    );
    passes(&edit("uid: 1100, gid: 1100", "uid: 2000, gid: 2000"));
}

#[test]
fn vm_sizes() {
    fails(&edit("cores: 4", "cores: 0"), "vm.cores", "from 1 to 128");
    fails(
        &edit("memory_mib: 8192", "memory_mib: 512"),
        "vm.memory_mib",
        "from 2048",
    );
    fails(
        &edit("disk_gib: 64", "disk_gib: 8"),
        "vm.disk_gib",
        "from 16",
    );
    fails(
        &edit("  name: mms\n  cores", "  name: mms_vm\n  cores"),
        "vm.name",
        "DNS label",
    );
    passes(&edit("memory_mib: 8192", "memory_mib: 16384"));
}

#[test]
fn ipv4_cidr_gateway() {
    let net = |s: &str| edit("network: { ipv4: dhcp }", s);
    fails(
        &net("network: { ipv4: 192.168.1.50 }"),
        "vm.network.ipv4",
        "prefix length",
    );
    fails(
        &net("network: { ipv4: 192.168.1.0/24, gateway: 192.168.1.1 }"),
        "vm.network.ipv4",
        "network or broadcast",
    );
    fails(
        &net("network: { ipv4: 192.168.1.50/24, gateway: 10.0.0.1 }"),
        "vm.network.gateway",
        "outside",
    );
    fails(
        &net("network: { ipv4: 192.168.1.50/24, gateway: 192.168.1.50 }"),
        "vm.network.gateway",
        "own address",
    );
    fails(
        &net("network: { ipv4: 192.168.1.50/24, gateway: 192.168.1.1, dns: [one.one] }"),
        "vm.network.dns[0]",
        "not an IP",
    );
    fails(
        &net("network: { ipv4: dhcp, gateway: 192.168.1.1 }"),
        "vm.network.gateway",
        "only allowed",
    );
    fails(
        &net("network: { ipv4: 192.168.1.50/24 }"),
        "vm.network",
        "missing key `gateway`",
    );
    let site = passes(&net(
        "network: { ipv4: 192.168.1.50/24, gateway: 192.168.1.1, dns: [1.1.1.1] }",
    ));
    assert!(matches!(
        site.vm.network,
        VmNetwork::Static {
            prefix: 24,
            rebuild: None,
            ..
        }
    ));
}

#[test]
fn rebuild_address_of_a_static_site() {
    let net = |extra: &str| {
        edit(
            "network: { ipv4: dhcp }",
            &format!("network: {{ ipv4: 192.168.1.50/24, gateway: 192.168.1.1{extra} }}"),
        )
    };
    for (value, fragment) in [
        ("192.168.1.50", "must differ from ipv4 and the gateway"),
        ("192.168.1.1", "must differ from ipv4 and the gateway"),
        ("10.0.0.7", "outside the VM's subnet 192.168.1.50/24"),
        ("192.168.1.255", "network or broadcast"),
        ("192.168.1.51/16", "the prefix must be ipv4's /24"),
        ("192.168.1.x", "not an IPv4 address"),
    ] {
        fails(
            &net(&format!(", rebuild_ipv4: {value}")),
            "vm.network.rebuild_ipv4",
            fragment,
        );
    }
    fails(
        &edit(
            "network: { ipv4: dhcp }",
            "network: { ipv4: dhcp, rebuild_ipv4: dhcp }",
        ),
        "vm.network.rebuild_ipv4",
        "only allowed with a static ipv4",
    );
    for (value, want) in [
        ("", None),
        (", rebuild_ipv4: dhcp", None),
        (", rebuild_ipv4: 192.168.1.51", Some("192.168.1.51")),
        (", rebuild_ipv4: 192.168.1.51/24", Some("192.168.1.51")),
    ] {
        let site = passes(&net(value));
        let VmNetwork::Static { rebuild, .. } = site.vm.network else {
            panic!("static expected")
        };
        assert_eq!(rebuild.map(|a| a.to_string()).as_deref(), want, "{value}");
    }
}

#[test]
fn nfs_mounts_and_exports() {
    // A key that is not a string is named, not skipped.
    fails(
        &edit(
            "    /data/backups: /mnt/tank/backups\n",
            "    1: /mnt/tank/backups\n",
        ),
        "nfs.mounts",
        "expected a mount point, found the number 1",
    );
    fails(
        &edit(
            "    /data/backups: /mnt/tank/backups\n",
            "    /srv/backups: /mnt/tank/backups\n",
        ),
        "nfs.mounts./srv/backups",
        "below /data",
    );
    fails(
        &edit(
            "    /data/backups: /mnt/tank/backups\n",
            "    /data/../etc: /mnt/tank/backups\n",
        ),
        "nfs.mounts./data/../etc",
        "without `..`",
    );
    fails(
        &edit(
            "    /data/backups: /mnt/tank/backups\n",
            "    data/backups: /mnt/tank/backups\n",
        ),
        "nfs.mounts.data/backups",
        "absolute",
    );
    fails(
        &edit(
            "/data/backups: /mnt/tank/backups",
            "/data/backups: tank/backups",
        ),
        "nfs.mounts./data/backups",
        "absolute path on the NAS",
    );
    fails(
        &edit("server: 192.168.1.10", "server: nas_1"),
        "nfs.server",
        "host name",
    );
    passes(&edit("server: 192.168.1.10", "server: nas.example.lan"));
}

#[test]
fn hardlink_warning_when_media_and_usenet_are_apart() {
    let text = edit(
        "    /data: /mnt/tank/data                 # ONE export holding media/ and usenet/: hardlinks work\n",
        "    /data/media: /mnt/tank/media\n    /data/usenet: /mnt/tank/usenet\n",
    );
    let (site, diags) = decode(&text);
    assert!(site.is_some(), "a warning is not an error: {diags:#?}");
    assert!(
        diags
            .iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains("hardlinks")),
        "{diags:#?}"
    );
    let (_, diags) = decode(EXAMPLE);
    assert!(!diags.iter().any(|d| d.message.contains("hardlinks")));
}

#[test]
fn tls_fingerprint_format() {
    let fp = "3F:1A:9C:44:0B:7D:E2:58:91:6A:C3:0E:55:B8:2F:D4:7C:19:A0:E6:33:8B:F1:02:6D:4E:B9:75:C8:21:0A:9F";
    fails(
        &edit(fp, "3F:1A"),
        "proxmox.tls_fingerprint",
        "32 hex bytes",
    );
    fails(
        &edit(fp, &fp.replace("3F", "ZZ")),
        "proxmox.tls_fingerprint",
        "32 hex bytes",
    );
    fails(
        &edit(&format!("  tls_fingerprint: \"{fp}\"\n"), ""),
        "proxmox",
        "tls_fingerprint",
    );
    fails(
        &edit(
            &format!("  tls_fingerprint: \"{fp}\"\n"),
            &format!("  tls_fingerprint: \"{fp}\"\n  ca_file: ca.pem\n"),
        ),
        "proxmox",
        "not both",
    );
    passes(&edit(
        &format!("  tls_fingerprint: \"{fp}\"\n"),
        "  ca_file: pve-root-ca.pem\n",
    ));
    passes(&edit(fp, &fp.replace(':', "").to_lowercase()));
}

#[test]
fn recipients_must_parse() {
    let r = "age1a59xzdf90c2zjgv8rpa6g9etltt67z2606vhxgkjdfvgmcjacfsqcje3xs";
    fails(
        &edit(r, "age1nope"),
        "backup.recipients[0]",
        "not a valid age recipient",
    );
    fails(
        &edit(r, "ssh-ed25519 AAAA"),
        "backup.recipients[0]",
        "SSH public key",
    );
    fails(
        &edit(r, "bob@example.com"),
        "backup.recipients[0]",
        "neither",
    );
    passes(&edit(
        r,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAhrZMeIiJ6eTj9QloR5oLJ7E2vroCxmzvv2RkVIOa4+ me",
    ));
    let (site, diags) = decode(&edit(&format!("[\"{r}\"]"), "[]"));
    assert!(site.is_some());
    assert!(
        diags
            .iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains("NOT encrypted"))
    );
}

#[test]
fn oncalendar_schedules() {
    fails(
        &edit("config: \"*-*-* 03:00:00\"", "config: \"*-*-* 25:00:00\""),
        "backup.schedule.config",
        "hour 25",
    );
    fails(
        &edit(
            "photos: \"Sun *-*-* 04:00:00\"",
            "photos: \"Sunday at four\"",
        ),
        "backup.schedule.photos",
        "OnCalendar",
    );
    passes(&edit("photos: \"Sun *-*-* 04:00:00\"", "photos: weekly"));
}

#[test]
fn retention_not_all_zero() {
    fails(
        &edit(
            "daily: 7, weekly: 4, monthly: 6",
            "daily: 0, weekly: 0, monthly: 0",
        ),
        "backup.retention",
        "all counts are 0",
    );
    fails(
        &edit("daily: 7", "daily: -1"),
        "backup.retention.daily",
        "from 0 to 1000",
    );
    passes(&edit(
        "daily: 7, weekly: 4, monthly: 6",
        "daily: 0, weekly: 0, monthly: 3",
    ));
}

#[test]
fn rfc1123_hostnames() {
    fails(
        &edit("  hostname: mms\n", "  hostname: mms_box\n"),
        "tailscale.hostname",
        "RFC 1123",
    );
    fails(
        &edit("  hostname: mms\n", "  hostname: -mms\n"),
        "tailscale.hostname",
        "RFC 1123",
    );
    fails(
        &edit(
            "endpoint: https://pve.example.lan:8006",
            "endpoint: https://pve_1.lan:8006",
        ),
        "proxmox.endpoint",
        "not a host name",
    );
    passes(&edit("  hostname: mms\n", "  hostname: media-box\n"));
}

#[test]
fn proxmox_endpoint_and_token() {
    fails(
        &edit(
            "endpoint: https://pve.example.lan:8006",
            "endpoint: http://pve.example.lan:8006",
        ),
        "proxmox.endpoint",
        "https://",
    );
    fails(
        &edit(
            "endpoint: https://pve.example.lan:8006",
            "endpoint: https://pve.example.lan:8006/api2/json",
        ),
        "proxmox.endpoint",
        "only scheme",
    );
    fails(
        &edit("token_id: \"mms@pve!build\"", "token_id: \"mms\""),
        "proxmox.token_id",
        "USER@REALM!TOKEN",
    );
    fails(
        &edit("template: fedora-43", "template: 5"),
        "proxmox.template",
        "VMID from 100",
    );
    passes(&edit("template: fedora-43", "template: 9000"));
    passes(&edit(
        "endpoint: https://pve.example.lan:8006",
        "endpoint: https://10.0.0.2:8006/",
    ));
}

#[test]
fn migrate_section() {
    let base = format!(
        "{EXAMPLE}migrate:\n  from: {{ host: old-lxc.lan, proxmox_vmid: 105 }}\n  sources: {{ radarr: /var/lib/radarr }}\n  path_map: {{ /movies: /data/media/movies }}\n"
    );
    let site = passes(&base);
    let m = site.migrate.unwrap();
    assert_eq!((m.from.user.as_str(), m.from.port), ("root", 22));
    assert_eq!(m.sources["radarr"], ["/var/lib/radarr"]);
    fails(
        &base.replace("old-lxc.lan", "old_lxc"),
        "migrate.from.host",
        "host name",
    );
    fails(
        &base.replace("radarr: /var/lib/radarr", "plex: /var/lib/plex"),
        "migrate.sources.plex",
        "not in `services`",
    );
    fails(
        &base.replace("/data/media/movies", "/srv/movies"),
        "migrate.path_map./movies",
        "below /data",
    );
    fails(
        &base.replace("proxmox_vmid: 105", "proxmox_vmid: 5"),
        "migrate.from.proxmox_vmid",
        "from 100",
    );
}

#[test]
fn image_overrides() {
    let text = format!("{EXAMPLE}images: {{ radarr: localhost/mms-standin:1 }}\n");
    assert_eq!(passes(&text).images["radarr"], "localhost/mms-standin:1");
    fails(
        &format!("{EXAMPLE}images: {{ plex: docker.io/plex/pms:1 }}\n"),
        "images.plex",
        "no enabled service",
    );
    fails(
        &format!("{EXAMPLE}images: {{ radarr: radarr:latest }}\n"),
        "images.radarr",
        "fully qualified",
    );
}

#[test]
fn syntax_errors_name_line_and_column() {
    let errs = errors("proxmox:\n  node: [pve\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].loc.line >= 2, "{errs:?}");
    assert!(errors("").iter().any(|d| d.message.contains("empty")));
}

#[test]
fn ten_mistakes_are_all_reported() {
    let text = EXAMPLE
        .replace("cores: 4", "cores: four") // 1 wrong type
        .replace("memory_mib: 8192", "memory_mib: 100") // 2 VM size
        .replace("uid: 1100", "uid: 10") // 3 uid range
        .replace("network: { ipv4: dhcp }", "network: { ipv4: 192.168.1.50/24, gateway: 10.1.1.1 }") // 4 gateway
        .replace("/data/backups: /mnt/tank/backups", "/srv/backups: /mnt/tank/backups") // 5 mount point
        .replace("jellyfin, immich]", "jellyfin, plex]") // 6 unknown service
        .replace("radarr: 7878,", "radarr: 9696,") // 7 serve port clash
        .replace("  hostname: mms\n", "  hostname: mms_1\n") // 8 hostname
        .replace("config: \"*-*-* 03:00:00\"", "config: \"*-*-* 3\"") // 9 OnCalendar
        + "colour: blue\n"; // 10 unknown key
    let errs = errors(&text);
    let paths: Vec<&str> = errs.iter().map(|d| d.path.as_str()).collect();
    for p in [
        "vm.cores",
        "vm.memory_mib",
        "site.user.uid",
        "vm.network.gateway",
        "nfs.mounts./srv/backups",
        "services[6]",
        "tailscale.serve.radarr",
        "tailscale.hostname",
        "backup.schedule.config",
        "colour",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    assert!(
        errs.iter().all(|d| d.loc.line > 0 && d.loc.col > 0),
        "{errs:#?}"
    );
}

#[test]
fn key_lists_come_from_the_schema() {
    // The decoder accepts exactly the keys the JSON Schema documents.
    let schema = config::file::site_schema();
    let top: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    assert!(
        top.iter().any(|k| *k == "tailscale") && top.len() == 10,
        "{top:?}"
    );
    let e = errors(&format!("{EXAMPLE}extra: 1\n"));
    let msg = &e.iter().find(|d| d.path == "extra").unwrap().message;
    for k in top {
        assert!(msg.contains(k.as_str()), "{msg}");
    }
}

mod loader_survives_arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    fn yaml_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("~".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            "[a-z0-9/:._ -]{0,12}".prop_map(|s| format!("{s:?}")),
            Just("dhcp".to_string()),
            Just("/data".to_string()),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("proxmox"),
                            Just("vm"),
                            Just("nfs"),
                            Just("mounts"),
                            Just("services"),
                            Just("serve"),
                            Just("ipv4"),
                            Just("cores"),
                            Just("x"),
                            Just("/data")
                        ],
                        inner
                    ),
                    0..4
                )
                .prop_map(|v| format!(
                    "{{{}}}",
                    v.iter()
                        .map(|(k, v)| format!("{k:?}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn random_bytes(s in "\\PC{0,200}") {
            let _ = decode(&s);
        }

        #[test]
        fn random_structures(v in yaml_value()) {
            let _ = decode(&v);
            let _ = decode(&format!("proxmox: {v}\nvm: {v}\nnfs: {v}\nservices: {v}\ntailscale: {v}\nbackup: {v}\nmigrate: {v}\nimages: {v}\n"));
        }

        #[test]
        fn mutated_example(pos in 0usize..4000, len in 0usize..20, junk in "\\PC{0,8}") {
            let mut text = EXAMPLE.to_string();
            let start = text.char_indices().map(|(i, _)| i).nth(pos % EXAMPLE.chars().count()).unwrap_or(0);
            let end = text[start..].char_indices().map(|(i, _)| start + i).nth(len).unwrap_or(text.len());
            text.replace_range(start..end, &junk);
            let (site, diags) = decode(&text);
            // Either it decodes or it says why, with a position for every error.
            prop_assert!(site.is_some() || diags.iter().any(|d| d.severity == Severity::Error));
        }
    }
}

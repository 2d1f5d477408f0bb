//! `/etc/mms/firstboot.yml` and `/etc/mms/backupd.yml`, built with the types of those crates
//! (`mms_firstboot::config`, `mms_backupd::config`) so both sides agree by construction.
//!
//! Owns the mapping site + catalog → the two programs' settings; the file formats and their
//! validation belong to the two crates (their `validate` runs here too, so a bundle never
//! carries a config its program would refuse).

use super::appliance::{BACKUPD_CONFIG, GATE_MARKER};
use crate::catalog::ServiceDef;
use crate::config::{Site, VmNetwork};
use mms_backupd::config as bd;
use mms_firstboot::config as fb;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which VM a render is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    /// A rebuild: the tailnet host name of the running VM this one replaces. firstboot pulls
    /// the state from it (old services stopped first) and enrolls in Tailscale as
    /// `<hostname>-next`. `None`: a first build (migrate from `migrate.from`, else restore the
    /// newest backup).
    pub previous_vm: Option<String>,
    /// A first build that starts with empty state even without `migrate:` (no backup
    /// restore): brand-new sites, and test VMs that have no backup target.
    pub fresh: bool,
}

/// Secret file names the builder delivers into `/etc/mms/secrets/` (besides the runtime
/// secrets named in the catalog, e.g. `immich_db_password`).
pub mod secret_files {
    /// The Tailscale auth key.
    pub const TAILSCALE_AUTH_KEY: &str = "tailscale_auth_key";
    /// The private SSH key for the migration / takeover source.
    pub const MIGRATE_SSH_KEY: &str = "migrate_ssh_key";
    /// An age identity that decrypts the backups, delivered only for a first-build restore.
    pub const BACKUP_IDENTITY: &str = "backup_identity";
}

/// The user's private config dir of a service.
pub fn config_dir(home: &str, service: &str) -> String {
    format!("{home}/config/{service}")
}

fn join_rel(base: &str, rel: &str) -> PathBuf {
    let rel = rel.trim_end_matches('/');
    if rel.is_empty() || rel == "." {
        PathBuf::from(base)
    } else if rel.starts_with('/') {
        PathBuf::from(rel)
    } else {
        Path::new(base).join(rel)
    }
}

/// Where the service's config dir is mounted inside its containers (`/config` for
/// linuxserver images).
fn container_config(def: &ServiceDef) -> String {
    def.containers
        .iter()
        .flat_map(|c| c.volumes.iter())
        .find_map(|v| match v.source() {
            Some(crate::catalog::VolumeSource::Config(sub)) if sub.is_empty() || sub == "." => {
                Some(v.target.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| "/config".to_string())
}

fn app(name: &str) -> fb::App {
    serde_json::from_value(serde_json::Value::String(name.to_string())).unwrap_or(fb::App::Other)
}

/// The firstboot config for the enabled services (in start order).
pub fn firstboot(
    site: &Site,
    services: &[(&ServiceDef, Vec<String>)],
    home: &str,
    deployment: &Deployment,
) -> fb::Config {
    let user = &site.site.user;
    let serve = site
        .tailscale
        .serve
        .iter()
        .filter_map(|s| {
            services
                .iter()
                .find(|(d, _)| d.name == s.service)
                .map(|(d, _)| (s.port, format!("http://127.0.0.1:{}", d.port)))
        })
        .collect();
    let state = match (&deployment.previous_vm, &site.migrate) {
        (Some(host), _) => fb::StateSource::Migrate(fb::MigrateFrom {
            kind: fb::SourceKind::PreviousVm,
            host: host.clone(),
            user: "root".into(),
            port: 22,
            ssh_key_secret: secret_files::MIGRATE_SSH_KEY.into(),
        }),
        (None, Some(m)) => fb::StateSource::Migrate(fb::MigrateFrom {
            kind: fb::SourceKind::Lxc,
            host: m.from.host.clone(),
            user: m.from.user.clone(),
            port: m.from.port,
            ssh_key_secret: secret_files::MIGRATE_SSH_KEY.into(),
        }),
        (None, None) if deployment.fresh => fb::StateSource::Fresh,
        (None, None) => fb::StateSource::Restore(fb::Restore {
            identity_secret: (!site.backup.recipients.is_empty())
                .then(|| secret_files::BACKUP_IDENTITY.to_string()),
        }),
    };
    let rewrites: Vec<fb::Rewrite> = site
        .migrate
        .as_ref()
        .map(|m| {
            m.path_map
                .iter()
                .map(|(from, to)| fb::Rewrite {
                    from: from.clone(),
                    to: to.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let services = services
        .iter()
        .map(|(def, units)| {
            let dir = config_dir(home, &def.name);
            let m = &def.migrate;
            // `migrate.sources` in mms.yml replaces the catalog's source directories.
            let sources: Vec<fb::SourceDir> =
                match site.migrate.as_ref().and_then(|s| s.sources.get(&def.name)) {
                    Some(paths) => paths
                        .iter()
                        .map(|from| fb::SourceDir {
                            from: PathBuf::from(from),
                            to: m
                                .paths
                                .get(from)
                                .map_or_else(|| PathBuf::from("."), PathBuf::from),
                        })
                        .collect(),
                    None => m
                        .paths
                        .iter()
                        .map(|(from, to)| fb::SourceDir {
                            from: PathBuf::from(from),
                            to: PathBuf::from(to),
                        })
                        .collect(),
                };
            let postgres = m.postgres.as_ref().and_then(|_| {
                def.backup.dump.as_ref().map(|d| fb::Postgres {
                    container: d.container.clone(),
                    unit: format!("{}.service", d.container),
                    user: d
                        .command
                        .iter()
                        .find_map(|w| w.strip_prefix("--username="))
                        .unwrap_or("postgres")
                        .to_string(),
                    source_dump_command:
                        "cd / && runuser -u postgres -- pg_dumpall --clean --if-exists".into(),
                })
            });
            fb::Service {
                name: def.name.clone(),
                units: units.clone(),
                config_dir: PathBuf::from(&dir),
                health: fb::Health {
                    url: format!("http://127.0.0.1:{}{}", def.port, def.health.path),
                    expect_status: def.health.expect_status,
                    expect_body: def.health.expect_body.clone(),
                    start_period_s: def.health.start_period_s,
                    interval_s: def.health.interval_s,
                },
                // Only a first build with `migrate:` reads these.
                migrate: (site.migrate.is_some() && !sources.is_empty()).then(|| fb::Migrate {
                    app: Some(app(&def.name)),
                    host: None,
                    source_units: m.units.clone(),
                    sources,
                    sqlite: m.sqlite.iter().map(PathBuf::from).collect(),
                    container_config: container_config(def),
                    rewrites: rewrites.clone(),
                }),
                // Podman secret name = secret name = file name in the delivery directory.
                podman_secrets: def.secrets.iter().map(|s| (s.clone(), s.clone())).collect(),
                postgres,
            }
        })
        .collect();
    // A rebuild of a static site builds on a temporary address; cut-over takes the site's.
    let network = match (&deployment.previous_vm, &site.vm.network) {
        (
            Some(_),
            VmNetwork::Static {
                address,
                prefix,
                gateway,
                dns,
                ..
            },
        ) => Some(fb::StaticAddress {
            address: *address,
            prefix: *prefix,
            gateway: *gateway,
            dns: dns.clone(),
        }),
        _ => None,
    };
    fb::Config {
        network,
        user: fb::User {
            name: user.name.clone(),
            uid: user.uid,
            gid: user.gid,
            home: PathBuf::from(home),
        },
        paths: fb::Paths {
            gate_marker: PathBuf::from(GATE_MARKER),
            backupd_config: PathBuf::from(BACKUPD_CONFIG),
            ..fb::Paths::default()
        },
        tailscale: fb::Tailscale {
            hostname: site.tailscale.hostname.clone(),
            rebuild: deployment.previous_vm.is_some(),
            auth_key_secret: secret_files::TAILSCALE_AUTH_KEY.into(),
            serve,
            up_timeout_s: 180,
            serve_timeout_s: 60,
        },
        state,
        services,
        health_deadline_s: 900,
    }
}

/// The backupd config for the enabled services.
pub fn backupd(site: &Site, services: &[&ServiceDef], home: &str) -> bd::Config {
    let user = &site.site.user;
    let mut out = BTreeMap::new();
    let mut photos = None;
    for def in services {
        let dir = config_dir(home, &def.name);
        let b = &def.backup;
        let mut paths: Vec<PathBuf> = b.paths.iter().map(|p| join_rel(&dir, p)).collect();
        if paths.is_empty() {
            // A dump-only service (Immich) still archives its (small) config dir.
            paths.push(PathBuf::from(&dir));
        }
        out.insert(
            def.name.clone(),
            bd::ServiceConfig {
                paths,
                unit: b.stop_unit.clone(),
                dump: b.dump.as_ref().map(|d| bd::DumpConfig {
                    container: d.container.clone(),
                    command: d.command.join(" "),
                }),
            },
        );
        // The photo library: the /data path mounted at Immich's /data (its library root).
        if def.name == "immich" {
            photos = def
                .containers
                .iter()
                .flat_map(|c| c.volumes.iter())
                .find_map(|v| match v.source() {
                    Some(crate::catalog::VolumeSource::Data(p)) if v.target == "/data" => {
                        Some(PathBuf::from(p))
                    }
                    _ => None,
                })
                .map(|source| bd::PhotosConfig {
                    source,
                    target: Path::new(&site.backup.target).join("photos"),
                });
        }
    }
    bd::Config {
        target: PathBuf::from(&site.backup.target),
        recipients: site.backup.recipients.clone(),
        retention: bd::Retention {
            daily: site.backup.retention.daily,
            weekly: site.backup.retention.weekly,
            monthly: site.backup.retention.monthly,
        },
        user: bd::Owner {
            uid: user.uid,
            gid: user.gid,
        },
        services: out,
        photos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{ApplianceBins, render_for};

    fn load(deployment: &Deployment, migrate: bool) -> (fb::Config, bd::Config) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/homelab/mms.yml");
        let loaded = crate::config::load(&path).unwrap();
        let mut site = loaded.site;
        if migrate {
            site.migrate = Some(crate::config::MigrateConfig {
                from: crate::config::MigrateFrom {
                    host: "old-lxc.lan".into(),
                    user: "root".into(),
                    port: 2222,
                    proxmox_vmid: None,
                },
                sources: [("radarr".to_string(), vec!["/srv/radarr".to_string()])].into(),
                path_map: [("/movies".to_string(), "/data/media/movies".to_string())].into(),
            });
        }
        let b = render_for(&site, &loaded.catalog, &ApplianceBins::Omitted, deployment).unwrap();
        let text = |p: &str| String::from_utf8(b.files[&format!("rootfs{p}")].contents.clone());
        let f = fb::Config::from_yaml(
            Path::new(fb::DEFAULT_PATH),
            &text(fb::DEFAULT_PATH).unwrap(),
        )
        .unwrap();
        let d = bd::Config::from_yaml(
            &text(bd::DEFAULT_PATH).unwrap(),
            Path::new(bd::DEFAULT_PATH),
        )
        .unwrap();
        assert_eq!(b.files[&format!("rootfs{}", fb::DEFAULT_PATH)].mode, 0o600);
        (f, d)
    }

    #[test]
    fn program_configs_load_with_their_own_crates() {
        let (f, d) = load(&Deployment::default(), false);
        assert!(matches!(f.state, fb::StateSource::Restore(_)));
        assert!(!f.tailscale.rebuild);
        assert_eq!(f.tailscale.serve[&443], "http://127.0.0.1:8096");
        let names: Vec<&str> = f.services.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"immich") && names.contains(&"radarr"));
        let immich = f.services.iter().find(|s| s.name == "immich").unwrap();
        assert_eq!(immich.units.last().unwrap(), "immich-server.service");
        assert_eq!(
            immich.podman_secrets["immich_db_password"],
            "immich_db_password"
        );
        assert!(f.services.iter().all(|s| s.migrate.is_none()));
        assert_eq!(d.photos.unwrap().source, PathBuf::from("/data/photos"));
        assert_eq!(d.services["radarr"].unit.as_deref(), Some("radarr.service"));
    }

    #[test]
    fn fresh_first_build() {
        let fresh = Deployment {
            previous_vm: None,
            fresh: true,
        };
        let (f, _) = load(&fresh, false);
        assert_eq!(f.state, fb::StateSource::Fresh);
    }

    #[test]
    fn migration_and_rebuild_states() {
        let (f, _) = load(&Deployment::default(), true);
        let fb::StateSource::Migrate(m) = &f.state else {
            panic!("{:?}", f.state)
        };
        assert_eq!(
            (m.kind, m.host.as_str(), m.port),
            (fb::SourceKind::Lxc, "old-lxc.lan", 2222)
        );
        let radarr = f.services.iter().find(|s| s.name == "radarr").unwrap();
        let mig = radarr.migrate.as_ref().unwrap();
        assert_eq!(mig.sources[0].from, PathBuf::from("/srv/radarr"));
        assert_eq!(mig.rewrites[0].to, "/data/media/movies");
        let prev = Deployment {
            previous_vm: Some("mms".into()),
            fresh: false,
        };
        let (f, _) = load(&prev, true);
        let fb::StateSource::Migrate(m) = &f.state else {
            panic!("{:?}", f.state)
        };
        assert_eq!(m.kind, fb::SourceKind::PreviousVm);
        assert!(f.tailscale.rebuild);
    }
}

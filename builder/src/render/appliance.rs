//! What the appliance is (DESIGN §4): site settings + services catalog → every file the
//! user-data writes and the `#cloud-config` that writes them.
//!
//! Owns the decisions (users, packages, units, firewall, mounts, first-boot gate, ordering
//! of the boot-time commands); the file formats belong to [`super::units`],
//! [`super::cloud_config`] and the firstboot/backupd config types.
//!
//! Boot-time sequence (cloud-init stages, appliance.md §7.3):
//! - init: `bootcmd` creates the primary group (`users` has no gid key), `write_files` writes
//!   every root-owned file below (units, zones, configs, scripts), `users` creates the service
//!   account (not a system user, uid in 1000–60000, so it gets subordinate ids).
//! - config: timezone, (Fedora) the Tailscale dnf repository.
//! - final: packages, then `runcmd`: subids, directories, SELinux boolean,
//!   NFS mounts (enabled only now, after `nfs-utils`/`nfs-common` is installed), TRaSH tree,
//!   firewalld, guest agent, appliance binaries from the seed ISO, linger, timers, and a
//!   non-blocking start of `mms-firstboot.service`.

use super::cloud_config::{self, CloudConfig, User, UserEntry, WriteFile, YumRepo};
use super::configs::{self, Deployment};
use super::ini::IniError;
use super::units::{
    self, Body, Container, Install, Mount, Network, PathUnit, Service, Timer, Unit, UnitFile,
    Volume,
};
use super::{ApplianceBins, Bundle, FileSpec, bundle};
use crate::catalog::{
    Catalog, ContainerDef, EnvValue, HealthCheck, ServiceDef, Setting, VolumeSource, WritesAs,
};
use crate::config::{Site, VmNetwork, VmOs};
use std::collections::{BTreeMap, BTreeSet};

/// Where the appliance programs are installed in the VM.
pub const BIN_DIR: &str = "/usr/local/bin";
/// The first-boot gate (DESIGN §6): every container unit has `ConditionPathExists=` on it;
/// `mms-firstboot` creates it at its `start` phase. Same default as firstboot's config.
pub const GATE_MARKER: &str = "/var/lib/mms/services-enabled";
/// Script that installs the appliance binaries from the seed ISO.
pub const INSTALL_SCRIPT: &str = "/usr/local/lib/mms/install-appliance-bins";
/// firstboot's config file.
pub const FIRSTBOOT_CONFIG: &str = mms_firstboot::config::DEFAULT_PATH;
/// backupd's config file.
pub const BACKUPD_CONFIG: &str = mms_backupd::config::DEFAULT_PATH;
/// The build descriptor: the VM shape and placement the bundle was rendered for.
pub const BUILD_INFO: &str = "/etc/mms/build.json";
/// Where `mms-build` delivers the secrets through the guest agent (firstboot's default).
pub const SECRETS_DIR: &str = "/etc/mms/secrets";
/// Written by `mms-build` after the cut-over; `mms-cutover.path` watches it.
pub const CUTOVER_TRIGGER: &str = "/var/lib/mms/cutover";
/// Name of the podman network (and its Quadlet file `mms.network`).
pub const NETWORK: &str = "mms";
/// Timeout for image pulls + health (pitfall 6).
const START_TIMEOUT: &str = "900";

/// Why a site cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// `services:` names something the catalog does not have.
    #[error("services: {0:?} is not in the services catalog")]
    UnknownService(String),
    /// A container's `after` names a container that is not rendered.
    #[error(
        "service {service}: container {container} is ordered after {missing:?}, which is not an enabled container"
    )]
    UnknownDependency {
        /// Service.
        service: String,
        /// Container.
        container: String,
        /// The missing name.
        missing: String,
    },
    /// Two containers of the enabled services share a name.
    #[error("container name {0:?} is used twice among the enabled services")]
    DuplicateContainer(String),
    /// `tailscale.serve` names a service that is not enabled or publishes no port.
    #[error("tailscale.serve: service {0:?} is not enabled or publishes no port")]
    ServeTarget(String),
    /// A generated program config fails that program's own validation.
    #[error("{file} would be refused by its program: {}", problems.join("; "))]
    Invalid {
        /// The config file in the VM.
        file: String,
        /// Each problem.
        problems: Vec<String>,
    },
    /// A volume path podman's `--volume` syntax cannot carry.
    #[error(
        "container {container}: volume path {path:?} contains ':' or ',', which podman's volume syntax cannot carry"
    )]
    BadVolume {
        /// The container.
        container: String,
        /// The path.
        path: String,
    },
    /// `depends_on` of the enabled services forms a cycle.
    #[error("service {0:?}: depends_on forms a cycle among the enabled services")]
    ServiceCycle(String),
    /// A value cannot be written into a unit file.
    #[error("{file}: {source}")]
    Unit {
        /// The unit file.
        file: String,
        /// What was wrong.
        source: IniError,
    },
    /// YAML serialization failed.
    #[error("serializing {what}: {message}")]
    Yaml {
        /// Which document.
        what: String,
        /// The serializer's message.
        message: String,
    },
    /// Assembling the bundle failed.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
}

/// Renders the appliance for a first build of `site`: a pure function of its arguments.
pub fn render(site: &Site, catalog: &Catalog, bins: &ApplianceBins) -> Result<Bundle, RenderError> {
    render_for(site, catalog, bins, &Deployment::default())
}

/// Renders the appliance for `site` as `deployment` (first build or rebuild).
pub fn render_for(
    site: &Site,
    catalog: &Catalog,
    bins: &ApplianceBins,
    deployment: &Deployment,
) -> Result<Bundle, RenderError> {
    let parts = parts(site, catalog, deployment)?;
    Ok(bundle::assemble(parts, bins)?)
}

struct Ctx<'a> {
    site: &'a Site,
    user: &'a str,
    uid: u32,
    gid: u32,
    home: String,
    selinux: bool,
}

impl Ctx<'_> {
    fn config_dir(&self, service: &str) -> String {
        configs::config_dir(&self.home, service)
    }
    /// A config volume's host path: the service's config dir, or `sub` below it.
    fn config_path(&self, service: &str, sub: &str) -> String {
        let base = self.config_dir(service);
        match sub.trim_end_matches('/') {
            "" | "." => base,
            sub => format!("{base}/{sub}"),
        }
    }
    fn quadlet_dir(&self) -> String {
        format!("/etc/containers/systemd/users/{}", self.uid)
    }
}

/// The enabled services and their containers, in start order.
struct Enabled<'a> {
    services: Vec<(&'a ServiceDef, Vec<&'a ContainerDef>)>,
}

fn enabled<'a>(site: &Site, catalog: &'a Catalog) -> Result<Enabled<'a>, RenderError> {
    let mut names = BTreeSet::new();
    let mut services = Vec::new();
    for name in &site.services {
        let def = catalog
            .get(name)
            .ok_or_else(|| RenderError::UnknownService(name.clone()))?;
        for c in &def.containers {
            if !names.insert(c.name.clone()) {
                return Err(RenderError::DuplicateContainer(c.name.clone()));
            }
        }
        services.push((def, start_order(def)?));
    }
    for (def, containers) in &services {
        for c in containers {
            for dep in &c.after {
                if !names.contains(dep) {
                    return Err(RenderError::UnknownDependency {
                        service: def.name.clone(),
                        container: c.name.clone(),
                        missing: dep.clone(),
                    });
                }
            }
        }
    }
    // Start order across services: `depends_on` first, otherwise as listed in `services:`.
    let mut ordered: Vec<(&ServiceDef, Vec<&ContainerDef>)> = Vec::new();
    while !services.is_empty() {
        let ready = services.iter().position(|(def, _)| {
            def.depends_on.iter().all(|d| {
                ordered.iter().any(|(o, _)| &o.name == d)
                    || !services.iter().any(|(x, _)| &x.name == d)
            })
        });
        let i = ready.ok_or_else(|| RenderError::ServiceCycle(services[0].0.name.clone()))?;
        ordered.push(services.remove(i));
    }
    Ok(Enabled { services: ordered })
}

/// Containers of one service, dependencies (`after`) first, otherwise catalog order.
fn start_order(def: &ServiceDef) -> Result<Vec<&ContainerDef>, RenderError> {
    let mut done: Vec<&ContainerDef> = Vec::new();
    let mut left: Vec<&ContainerDef> = def.containers.iter().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|c| {
            c.after.iter().all(|d| {
                done.iter().any(|x| &x.name == d) || !def.containers.iter().any(|x| &x.name == d)
            })
        });
        match ready {
            Some(i) => done.push(left.remove(i)),
            None => {
                // A cycle: report the first container that cannot start.
                let c = left[0];
                return Err(RenderError::UnknownDependency {
                    service: def.name.clone(),
                    container: c.name.clone(),
                    missing: format!("{} (dependency cycle)", c.after.join(", ")),
                });
            }
        }
    }
    Ok(done)
}

fn unit_text(name: &str, unit: &UnitFile) -> Result<String, RenderError> {
    unit.render().map_err(|source| RenderError::Unit {
        file: name.to_string(),
        source,
    })
}

/// The container's `HealthCmd=`: the catalog's own command, or for the container that
/// serves the service's port, an HTTP check derived from the service's health definition.
fn health_for(def: &ServiceDef, c: &ContainerDef) -> Option<(String, u32, u32)> {
    let timing = (def.health.interval_s.max(1), def.health.start_period_s);
    match &c.health_cmd {
        Some(cmd) => Some((cmd.clone(), timing.0, timing.1)),
        None if c.ports.contains(&def.port) => {
            Some((health_cmd(def.port, &def.health), timing.0, timing.1))
        }
        None => None,
    }
}

/// An HTTP health command in podman's JSON exec form (`["CMD-SHELL", script]`); the script's
/// only interpolations are a shell-quoted URL and literal.
pub fn health_cmd(port: u16, h: &HealthCheck) -> String {
    let url = format!("http://127.0.0.1:{port}{}", h.path);
    let script = match &h.expect_body {
        Some(body) => format!(
            "curl -fsS --max-time 10 {} | grep -qF -- {}",
            sh_quote(&url),
            sh_quote(body)
        ),
        None => format!(
            "test \"$(curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 {})\" = {}",
            sh_quote(&url),
            h.expect_status
        ),
    };
    serde_json::json!(["CMD-SHELL", script]).to_string()
}

/// POSIX shell single-quoting.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The in-container uid/gid the container's process writes files as, and whether podman
/// must start it as root (linuxserver's s6 init runs as root and drops to `PUID`/`PGID`).
fn writer_ids(ctx: &Ctx, c: &ContainerDef) -> (u32, u32) {
    match &c.writes_as {
        WritesAs::Lsio => (ctx.uid, ctx.gid),
        WritesAs::Root => (0, 0),
        WritesAs::User { uid, gid } => (*uid, *gid),
    }
}

fn container_unit(
    ctx: &Ctx,
    def: &ServiceDef,
    c: &ContainerDef,
    named_volumes: &mut BTreeSet<String>,
) -> Result<UnitFile, RenderError> {
    let site = ctx.site;
    let (app_uid, app_gid) = writer_ids(ctx, c);
    let mut environment = BTreeMap::new();
    for (k, v) in &c.environment {
        let value = match v {
            EnvValue::Literal(s) => s.clone(),
            EnvValue::Setting { setting } => match setting {
                Setting::Timezone => site.site.timezone.clone(),
                Setting::AppUid => app_uid.to_string(),
                Setting::AppGid => app_gid.to_string(),
                Setting::Hostname => site.tailscale.hostname.clone(),
            },
        };
        environment.insert(k.clone(), value);
    }
    // Runtime secrets are podman secrets of the user, created by firstboot (DESIGN §6).
    let secret = c
        .secret_env
        .iter()
        .map(|s| format!("{},type=env,target={}", s.secret, s.env))
        .collect();
    let mut volume = Vec::new();
    for v in &c.volumes {
        let Some(source) = v.source() else { continue };
        let (src, label) = match source {
            // Private local config: private SELinux label.
            VolumeSource::Config(sub) => (ctx.config_path(&def.name, sub), Some("Z")),
            // NFS (or local /data): never relabel (virt_use_nfs instead), never :U/:idmap
            // (appliance.md §3). A local /data is shared by several containers: `:z`.
            VolumeSource::Data(path) => {
                let on_nfs = site.nfs.mount_for(path).is_some();
                (path.to_string(), (!on_nfs).then_some("z"))
            }
            VolumeSource::Named(name) => {
                named_volumes.insert(name.to_string());
                (format!("{name}.volume"), None)
            }
            // Read-only host files such as /etc/localtime: system paths are never relabelled.
            VolumeSource::Host(path) => (path.to_string(), None),
        };
        let mut opts = Vec::new();
        if v.read_only {
            opts.push("ro");
        }
        if let Some(l) = label.filter(|_| ctx.selinux) {
            opts.push(l);
        }
        // podman splits `Volume=` on `:`; a path holding one cannot be expressed.
        for path in [src.as_str(), v.target.as_str()] {
            if path.contains(':') || path.contains(',') {
                return Err(RenderError::BadVolume {
                    container: c.name.clone(),
                    path: path.to_string(),
                });
            }
        }
        volume.push(if opts.is_empty() {
            format!("{src}:{}", v.target)
        } else {
            format!("{src}:{}:{}", v.target, opts.join(","))
        });
    }
    let after: Vec<String> = c.after.iter().map(|d| format!("{d}.service")).collect();
    let health = health_for(def, c);
    // Ownership rule (DESIGN §4, appliance.md §3.1): the in-container uid/gid the process
    // writes as is mapped onto the host user itself with `keep-id:uid=…,gid=…`, so every file
    // a container writes — local config and NFS alike — is owned by the user on the host
    // (NFS sees that uid; the server knows nothing of user namespaces). Other container ids,
    // root included, map to subordinate ids without host privileges.
    // - linuxserver (`lsio`): PUID/PGID = the site uid/gid, mapped 1:1; s6 init must start as
    //   container root to create `abc` and drop to it, hence `User=0`/`Group=0` (keep-id
    //   would otherwise start the process as the mapped uid: LSIO's unsupported non-root mode).
    // - fixed users (postgres/valkey 999): keep-id on that uid; the process starts as it.
    // - root images: podman's default rootless mapping already puts container root on the
    //   host user, so no `UserNS=` is needed.
    let (user_ns, user, group) = match &c.writes_as {
        WritesAs::Lsio => (
            Some(format!("keep-id:uid={app_uid},gid={app_gid}")),
            Some("0".to_string()),
            Some("0".to_string()),
        ),
        WritesAs::User { uid, gid } => (Some(format!("keep-id:uid={uid},gid={gid}")), None, None),
        WritesAs::Root => (None, None, None),
    };
    Ok(UnitFile {
        unit: Unit {
            description: Some(format!("{} ({})", def.description, c.name)),
            wants: after.clone(),
            after,
            // First-boot gate: nothing starts before firstboot has brought the state.
            condition_path_exists: vec![GATE_MARKER.to_string()],
            ..Unit::default()
        },
        body: Body::Container(
            Box::new(Container {
                image: site
                    .images
                    .get(&c.name)
                    .cloned()
                    .unwrap_or_else(|| c.image.clone()),
                container_name: Some(c.name.clone()),
                network: vec![format!("{NETWORK}.network")],
                network_alias: c.network_aliases.clone(),
                // Loopback only: the LAN sees nothing, tailscale serve proxies to 127.0.0.1.
                publish_port: c
                    .ports
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}:{p}"))
                    .collect(),
                volume,
                user_ns,
                user,
                group,
                environment,
                secret,
                shm_size: c.shm_size.clone(),
                health_cmd: health.as_ref().map(|h| h.0.clone()),
                health_interval: health.as_ref().map(|h| format!("{}s", h.1)),
                health_start_period: health.as_ref().map(|h| format!("{}s", h.2)),
                health_retries: health.as_ref().map(|_| 3),
                health_timeout: health.as_ref().map(|_| "15s".to_string()),
                // READY only once healthy: start jobs (firstboot, auto-update rollback) wait.
                notify: health.as_ref().map(|_| "healthy".to_string()),
                auto_update: c.auto_update.then(|| "registry".to_string()),
                label: Vec::new(),
                exec: None,
            }),
            Service {
                restart: Some("on-failure".into()),
                restart_sec: Some("10".into()),
                timeout_start_sec: Some(START_TIMEOUT.into()),
                ..Service::default()
            },
        ),
        install: Install {
            // The user manager has no multi-user.target (pitfall 3).
            wanted_by: vec!["default.target".into()],
        },
    })
}

/// Everything the user-data writes and the user-data itself.
pub fn parts(
    site: &Site,
    catalog: &Catalog,
    deployment: &Deployment,
) -> Result<bundle::Parts, RenderError> {
    let u = &site.site.user;
    let ctx = Ctx {
        site,
        user: &u.name,
        uid: u.uid,
        gid: u.gid,
        home: format!("/home/{}", u.name),
        selinux: site.vm.os == VmOs::Fedora,
    };
    let enabled = enabled(site, catalog)?;
    let mut rootfs: BTreeMap<String, FileSpec> = BTreeMap::new();

    // Quadlet units (root-owned, in the per-uid directory: pitfall 1 and §1.1).
    let qdir = ctx.quadlet_dir();
    let mut named_volumes = BTreeSet::new();
    let net = UnitFile {
        unit: Unit {
            description: Some("MMS container network".into()),
            ..Unit::default()
        },
        body: Body::Network(Network {
            network_name: Some(NETWORK.into()),
            driver: Some("bridge".into()),
        }),
        install: Install::default(),
    };
    let name = format!("{qdir}/{NETWORK}.network");
    rootfs.insert(name.clone(), spec(unit_text(&name, &net)?, 0o644));
    for (def, containers) in &enabled.services {
        for c in containers {
            let unit = container_unit(&ctx, def, c, &mut named_volumes)?;
            let name = format!("{qdir}/{}.container", c.name);
            rootfs.insert(name.clone(), spec(unit_text(&name, &unit)?, 0o644));
        }
    }
    for v in &named_volumes {
        let unit = UnitFile {
            unit: Unit {
                description: Some(format!("MMS volume {v}")),
                ..Unit::default()
            },
            body: Body::Volume(Volume {
                volume_name: Some(v.clone()),
            }),
            install: Install::default(),
        };
        let name = format!("{qdir}/{v}.volume");
        rootfs.insert(name.clone(), spec(unit_text(&name, &unit)?, 0o644));
    }

    // NFS mount units.
    let mut mount_units = Vec::new();
    for m in &site.nfs.mounts {
        let unit_name = format!("{}.mount", units::escape_path(&m.mount_point));
        let unit = UnitFile {
            unit: Unit {
                description: Some(format!("MMS NFS {}:{}", site.nfs.server, m.export)),
                ..Unit::default()
            },
            body: Body::Mount(Mount {
                what: format!("{}:{}", nfs_host(&site.nfs.server), m.export),
                r#where: m.mount_point.clone(),
                kind: Some("nfs".into()),
                options: Some("_netdev,noatime".into()),
                timeout_sec: Some("120".into()),
            }),
            install: Install {
                wanted_by: vec!["remote-fs.target".into()],
            },
        };
        let path = format!("/etc/systemd/system/{unit_name}");
        rootfs.insert(path.clone(), spec(unit_text(&path, &unit)?, 0o644));
        mount_units.push((unit_name, m.mount_point.clone()));
    }
    // The user manager (and so every container) starts after the NFS mounts on every boot.
    rootfs.insert(
        format!(
            "/etc/systemd/system/user@{}.service.d/mms-after-mounts.conf",
            ctx.uid
        ),
        spec(
            format!(
                "# {}\n[Unit]\nWants=remote-fs.target\nAfter=remote-fs.target\n",
                units::HEADER
            ),
            0o644,
        ),
    );

    // Appliance program units.
    for (name, unit) in system_units(site) {
        let path = format!("/etc/systemd/system/{name}");
        rootfs.insert(path.clone(), spec(unit_text(&path, &unit)?, 0o644));
    }

    // firewalld.
    for (path, text) in firewall_files(site) {
        rootfs.insert(path, spec(text, 0o644));
    }

    // What this VM was built from (inspection, and so every build-relevant setting is part
    // of the bundle hash: a change of cores or template means a new VM).
    rootfs.insert(BUILD_INFO.into(), spec(build_info(site), 0o644));

    // The two programs' config files (root only: they name secret files and hosts).
    let fb_services: Vec<(&ServiceDef, Vec<String>)> = enabled
        .services
        .iter()
        .map(|(def, cs)| {
            (
                *def,
                cs.iter().map(|c| format!("{}.service", c.name)).collect(),
            )
        })
        .collect();
    let fb = configs::firstboot(site, &fb_services, &ctx.home, deployment);
    let problems = fb.validate();
    if !problems.is_empty() {
        return Err(RenderError::Invalid {
            file: FIRSTBOOT_CONFIG.into(),
            problems,
        });
    }
    let text = fb.to_yaml().map_err(|e| RenderError::Yaml {
        what: FIRSTBOOT_CONFIG.into(),
        message: e.to_string(),
    })?;
    rootfs.insert(FIRSTBOOT_CONFIG.into(), spec(text, 0o600));
    let defs: Vec<&ServiceDef> = enabled.services.iter().map(|(d, _)| *d).collect();
    let bd = configs::backupd(site, &defs, &ctx.home);
    bd.validate(std::path::Path::new(BACKUPD_CONFIG))
        .map_err(|e| RenderError::Invalid {
            file: BACKUPD_CONFIG.into(),
            problems: vec![e.to_string()],
        })?;
    let text = bd.to_yaml().map_err(|e| RenderError::Yaml {
        what: BACKUPD_CONFIG.into(),
        message: e.to_string(),
    })?;
    rootfs.insert(BACKUPD_CONFIG.into(), spec(text, 0o600));

    // Install script for the appliance binaries.
    rootfs.insert(INSTALL_SCRIPT.into(), spec(install_script(), 0o755));

    let cloud = cloud_config(&ctx, &enabled, &rootfs, &mount_units);
    let user_data = cloud_config::user_data(&cloud).map_err(|e| RenderError::Yaml {
        what: "user-data".into(),
        message: e.to_string(),
    })?;
    let network_config = match &site.vm.network {
        VmNetwork::Dhcp => None,
        VmNetwork::Static {
            address,
            prefix,
            gateway,
            dns,
            rebuild,
        } => {
            // A rebuild runs beside the old VM, which holds the site's address until the
            // cut-over: the new VM builds on DHCP or `rebuild_ipv4`, and takes the address at
            // cut-over (firstboot.yml `network`).
            let ethernet = match (&deployment.previous_vm, rebuild) {
                (Some(_), None) => cloud_config::Ethernet {
                    matches: nic_match(),
                    dhcp4: true,
                    addresses: Vec::new(),
                    routes: Vec::new(),
                    nameservers: None,
                },
                (Some(_), Some(temporary)) => static_ethernet(*temporary, *prefix, *gateway, dns),
                (None, _) => static_ethernet(*address, *prefix, *gateway, dns),
            };
            Some(
                cloud_config::to_yaml(&cloud_config::NetworkConfig {
                    version: 2,
                    ethernets: [("lan".to_string(), ethernet)].into(),
                })
                .map_err(|e| RenderError::Yaml {
                    what: "network-config".into(),
                    message: e.to_string(),
                })?,
            )
        }
    };
    Ok(bundle::Parts {
        user_data,
        network_config,
        hostname: site.vm.name.clone(),
        rootfs,
    })
}

/// The VM's one NIC, whatever the image names it (eth0, ens18, …).
fn nic_match() -> cloud_config::MatchName {
    cloud_config::MatchName { name: "e*".into() }
}

fn static_ethernet(
    address: std::net::Ipv4Addr,
    prefix: u8,
    gateway: std::net::Ipv4Addr,
    dns: &[std::net::IpAddr],
) -> cloud_config::Ethernet {
    cloud_config::Ethernet {
        matches: nic_match(),
        dhcp4: false,
        addresses: vec![format!("{address}/{prefix}")],
        routes: vec![cloud_config::Route {
            to: "default".into(),
            via: gateway.to_string(),
        }],
        nameservers: Some(cloud_config::Nameservers {
            addresses: dns.iter().map(ToString::to_string).collect(),
        }),
    }
}

/// The settings that shape the VM but are not otherwise visible in the user-data. Connection
/// details (endpoint, token id, TLS trust) are left out: they say how to reach Proxmox, not
/// what to build.
fn build_info(site: &Site) -> String {
    use crate::config::TemplateRef;
    let p = &site.proxmox;
    let vm = &site.vm;
    let network = match &vm.network {
        VmNetwork::Dhcp => serde_json::json!("dhcp"),
        VmNetwork::Static {
            address,
            prefix,
            gateway,
            dns,
            rebuild,
        } => {
            let mut n = serde_json::json!({
                "address": format!("{address}/{prefix}"),
                "gateway": gateway.to_string(),
                "dns": dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
            });
            // Only when set, so bundles of sites without it keep their hash.
            if let Some(r) = rebuild {
                n["rebuild_ipv4"] = serde_json::json!(r.to_string());
            }
            n
        }
    };
    let migrate = site.migrate.as_ref().map(|m| {
        serde_json::json!({
            "host": m.from.host, "user": m.from.user, "port": m.from.port,
            "proxmox_vmid": m.from.proxmox_vmid, "sources": m.sources, "path_map": m.path_map,
        })
    });
    let info = serde_json::json!({
        "proxmox": {
            "node": p.node,
            "template": match &p.template {
                TemplateRef::Name(n) => serde_json::json!(n),
                TemplateRef::Vmid(id) => serde_json::json!(id),
            },
            "storage": p.storage,
            "iso_storage": p.iso_storage,
            "bridge": p.bridge,
            "pool": p.pool,
        },
        "vm": {
            "name": vm.name,
            "os": match vm.os { VmOs::Fedora => "fedora", VmOs::Debian => "debian" },
            "cores": vm.cores,
            "memory_mib": vm.memory_mib,
            "disk_gib": vm.disk_gib,
            "network": network,
        },
        "services": site.services,
        "images": site.images,
        "migrate": migrate,
    });
    let mut text = serde_json::to_string_pretty(&info).unwrap_or_default();
    text.push('\n');
    text
}

fn spec(text: String, mode: u32) -> FileSpec {
    FileSpec {
        mode,
        contents: text.into_bytes(),
    }
}

/// An IPv6 literal needs brackets in `What=host:/export`.
fn nfs_host(server: &str) -> String {
    if server.contains(':') && !server.starts_with('[') {
        format!("[{server}]")
    } else {
        server.to_string()
    }
}

fn system_units(site: &Site) -> Vec<(String, UnitFile)> {
    let firstboot = UnitFile {
        unit: Unit {
            description: Some("MMS first boot: Tailscale, state, start services, health".into()),
            // Both: cloud-final is itself After=multi-user.target, so ordering only after
            // cloud-final while WantedBy=multi-user.target would be a cycle (pitfall 2).
            after: vec![
                "cloud-final.service".into(),
                "multi-user.target".into(),
                "network-online.target".into(),
                "remote-fs.target".into(),
                "tailscaled.service".into(),
            ],
            wants: vec!["network-online.target".into(), "tailscaled.service".into()],
            ..Unit::default()
        },
        body: Body::Service(Service {
            kind: Some("oneshot".into()),
            remain_after_exit: Some(true),
            exec_start: vec![vec![
                format!("{BIN_DIR}/mms-firstboot"),
                "run".into(),
                "--config".into(),
                FIRSTBOOT_CONFIG.into(),
            ]],
            timeout_start_sec: Some("infinity".into()),
            ..Service::default()
        }),
        install: Install {
            wanted_by: vec!["multi-user.target".into()],
        },
    };
    let backupd = |args: &[&str]| {
        let mut v = vec![
            format!("{BIN_DIR}/mms-backupd"),
            "--config".to_string(),
            BACKUPD_CONFIG.to_string(),
        ];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let backup = |what: &str, desc: &str, calendar: &str, nice: bool| {
        let service = UnitFile {
            unit: Unit {
                description: Some(format!("MMS backup: {desc}")),
                after: vec!["remote-fs.target".into(), "network-online.target".into()],
                wants: vec!["network-online.target".into()],
                requires_mounts_for: vec![site.backup.target.clone()],
                // No backup before firstboot brought the state (it would back up empty dirs).
                condition_path_exists: vec![GATE_MARKER.into()],
                ..Unit::default()
            },
            body: Body::Service(Service {
                kind: Some("oneshot".into()),
                // Config: archive every service, then apply retention. Photos: the
                // incremental copy of the library.
                exec_start: if what == "config" {
                    vec![backupd(&["backup", "--all"]), backupd(&["prune"])]
                } else {
                    vec![backupd(&["photos"])]
                },
                nice: nice.then_some(10),
                io_scheduling_class: nice.then(|| "idle".to_string()),
                ..Service::default()
            }),
            install: Install::default(),
        };
        let timer = UnitFile {
            unit: Unit {
                description: Some(format!("MMS backup timer: {desc}")),
                ..Unit::default()
            },
            body: Body::Timer(Timer {
                on_calendar: vec![calendar.to_string()],
                persistent: Some(true),
                randomized_delay_sec: None,
                unit: Some(format!("mms-backup-{what}.service")),
            }),
            install: Install {
                wanted_by: vec!["timers.target".into()],
            },
        };
        [
            (format!("mms-backup-{what}.service"), service),
            (format!("mms-backup-{what}.timer"), timer),
        ]
    };
    // Cut-over: `mms-build` writes the trigger file through the guest agent (agent exec
    // would need VM.GuestAgent.Unrestricted); the path unit runs `mms-firstboot cutover`,
    // which takes the tailnet name `<hostname>` from the old VM (and a static site's
    // address). The trigger is removed once it worked, so it does not fire again on the
    // next boot.
    let cutover_service = UnitFile {
        unit: Unit {
            description: Some(
                "MMS cut-over: take over the tailnet name and the site address".into(),
            ),
            after: vec!["mms-firstboot.service".into(), "tailscaled.service".into()],
            // A failed run leaves the trigger, and the path unit starts it again: a few
            // tries, then it stays failed (`systemctl status mms-cutover`) instead of
            // touching the network every minute. A reboot tries again.
            start_limit: Some((3600, 3)),
            ..Unit::default()
        },
        body: Body::Service(Service {
            kind: Some("oneshot".into()),
            exec_start: vec![vec![
                format!("{BIN_DIR}/mms-firstboot"),
                "cutover".into(),
                "--config".into(),
                FIRSTBOOT_CONFIG.into(),
            ]],
            exec_start_post: vec![vec![
                "/usr/bin/rm".into(),
                "-f".into(),
                CUTOVER_TRIGGER.into(),
            ]],
            ..Service::default()
        }),
        install: Install::default(),
    };
    let cutover_path = UnitFile {
        unit: Unit {
            description: Some("MMS cut-over trigger (written by mms-build)".into()),
            ..Unit::default()
        },
        body: Body::Path(PathUnit {
            path_exists: vec![CUTOVER_TRIGGER.into()],
            unit: Some("mms-cutover.service".into()),
        }),
        install: Install {
            wanted_by: vec!["multi-user.target".into()],
        },
    };
    let mut out = vec![
        ("mms-firstboot.service".to_string(), firstboot),
        ("mms-cutover.service".to_string(), cutover_service),
        ("mms-cutover.path".to_string(), cutover_path),
    ];
    out.extend(backup(
        "config",
        "service configuration",
        &site.backup.schedule.config,
        false,
    ));
    out.extend(backup(
        "photos",
        "photo library",
        &site.backup.schedule.photos,
        true,
    ));
    out
}

/// firewalld: default zone `drop` (nothing on the LAN; SSH only with `site.lan_ssh`),
/// `tailscale0` in `trusted`. /etc zone files replace the built-in ones (appliance.md §5).
fn firewall_files(site: &Site) -> Vec<(String, String)> {
    let head = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- Generated by mms-build; the appliance is rebuilt, never edited. -->\n";
    let ssh = if site.site.lan_ssh {
        "  <service name=\"ssh\"/>\n"
    } else {
        ""
    };
    vec![
        (
            "/etc/firewalld/firewalld.conf".into(),
            format!(
                "# {}\n# Everything not listed keeps firewalld's default.\nDefaultZone=drop\n",
                units::HEADER
            ),
        ),
        (
            "/etc/firewalld/zones/drop.xml".into(),
            format!(
                "{head}<zone target=\"DROP\">\n  <short>Drop</short>\n  <description>MMS: everything from the LAN is dropped.</description>\n{ssh}  <forward/>\n</zone>\n"
            ),
        ),
        (
            "/etc/firewalld/zones/trusted.xml".into(),
            format!(
                "{head}<zone target=\"ACCEPT\">\n  <short>Trusted</short>\n  <description>MMS: the tailnet.</description>\n  <interface name=\"tailscale0\"/>\n  <forward/>\n</zone>\n"
            ),
        ),
    ]
}

fn install_script() -> String {
    format!(
        r#"#!/bin/sh
# {header}
# Installs mms-firstboot and mms-backupd from the NoCloud seed ISO (label cidata) after
# checking them against the ISO's mms/SHA256SUMS. Copies first, verifies the copies.
set -eu
dev=$(blkid -t LABEL=cidata -o device 2>/dev/null | head -n 1 || true)
[ -n "$dev" ] || dev=$(blkid -t LABEL=CIDATA -o device 2>/dev/null | head -n 1 || true)
[ -n "$dev" ] || {{ echo "mms: seed ISO (label cidata) not found" >&2; exit 1; }}
mnt=$(mktemp -d)
work=$(mktemp -d)
cleanup() {{ umount "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; rm -rf "$work"; }}
trap cleanup EXIT
mount -o ro "$dev" "$mnt"
for f in SHA256SUMS mms-firstboot mms-backupd; do
  [ -f "$mnt/mms/$f" ] || {{ echo "mms: $f missing on the seed ISO (rendered with --no-appliance-bin?)" >&2; exit 1; }}
  cp "$mnt/mms/$f" "$work/$f"
done
cd "$work"
for f in mms-firstboot mms-backupd; do
  grep -q "  $f\$" SHA256SUMS || {{ echo "mms: $f is not listed in SHA256SUMS" >&2; exit 1; }}
done
sha256sum --strict -c SHA256SUMS
bin=${{MMS_BIN_DIR:-{bin}}}
for f in mms-firstboot mms-backupd; do
  install -m 0755 -o root -g root "$f" "$bin/$f"
done
echo "mms: installed mms-firstboot and mms-backupd into $bin"
"#,
        header = units::HEADER,
        bin = BIN_DIR
    )
}

/// Top-level mount points (not inside another configured mount) vs. nested ones.
fn is_nested(point: &str, all: &[(String, String)]) -> bool {
    all.iter().any(|(_, other)| {
        other != point && point.starts_with(&format!("{}/", other.trim_end_matches('/')))
    })
}

fn sh(script: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        "mms".to_string(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// TRaSH layout (TRaSH-Guides "Hardlinks and Instant Moves"): one tree under /data with
/// downloads and media side by side so imports are hardlinks/renames.
pub const TRASH_TREE: &[&str] = &[
    "/data/media/movies",
    "/data/media/tv",
    "/data/media/music",
    "/data/usenet/incomplete",
    "/data/usenet/complete/movies",
    "/data/usenet/complete/tv",
    "/data/usenet/complete/music",
];

fn runcmd(ctx: &Ctx, enabled: &Enabled, mounts: &[(String, String)]) -> Vec<Vec<String>> {
    let site = ctx.site;
    let uid = ctx.uid.to_string();
    let gid = ctx.gid.to_string();
    let mut r = Vec::new();
    // 1. Subordinate ids in a range derived from the uid (never overlapping useradd's
    //    automatic 100000+ ranges), unless useradd already allocated some.
    let start = u64::from(ctx.uid) * 65536;
    let range = format!("{}-{}", start, start + 65535);
    r.push(sh(
        "grep -q \"^$1:\" /etc/subuid 2>/dev/null || usermod --add-subuids \"$2\" \"$1\"; \
         grep -q \"^$1:\" /etc/subgid 2>/dev/null || usermod --add-subgids \"$2\" \"$1\"",
        &[ctx.user, &range],
    ));
    // 2. Local directories: config dirs private to the user; /var/lib/mms traversable so the
    //    user manager can evaluate the first-boot gate.
    let mut dirs = vec![format!("{}/config", ctx.home)];
    for (def, containers) in &enabled.services {
        dirs.push(ctx.config_dir(&def.name));
        for c in containers {
            for v in &c.volumes {
                if let Some(VolumeSource::Config(sub)) = v.source() {
                    dirs.push(ctx.config_path(&def.name, sub));
                }
            }
        }
    }
    // Each once, in first-seen order.
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    let mut install = cmd(&["install", "-d", "-o", &uid, "-g", &gid, "-m", "0750"]);
    install.extend(dirs);
    r.push(install);
    r.push(cmd(&[
        "install",
        "-d",
        "-o",
        "root",
        "-g",
        "root",
        "-m",
        "0755",
        "/var/lib/mms",
    ]));
    // The guest agent cannot create directories: `mms-build` writes the secrets into
    // this one, which only root may read.
    r.push(cmd(&[
        "install",
        "-d",
        "-o",
        "root",
        "-g",
        "root",
        "-m",
        "0700",
        SECRETS_DIR,
    ]));
    // 3. SELinux: containers may use NFS (no relabelling of NFS paths).
    if ctx.selinux {
        r.push(cmd(&["setsebool", "-P", "virt_use_nfs", "1"]));
    }
    // /data itself on local disk (no NFS mount of /data): the user owns it, so the tree
    // below can be created by the user whether or not parts of it are NFS mounts.
    if !mounts.iter().any(|(_, p)| p == "/data") {
        r.push(cmd(&[
            "install", "-d", "-o", &uid, "-g", &gid, "-m", "0755", "/data",
        ]));
    }
    // 4. NFS: units were written in the init stage but are enabled only now, after the
    //    packages step installed the NFS client. Nested mount points are created on the
    //    parent export by the user (root may be squashed).
    if !mounts.is_empty() {
        r.push(cmd(&["systemctl", "daemon-reload"]));
    }
    for (unit, point) in mounts {
        if is_nested(point, mounts) {
            r.push(cmd(&[
                "runuser", "-u", ctx.user, "--", "mkdir", "-p", point,
            ]));
        } else {
            r.push(cmd(&["mkdir", "-p", point]));
        }
        r.push(cmd(&["systemctl", "enable", "--now", unit]));
    }
    // 5. TRaSH tree, every /data path a container mounts and the backup target, created
    //    by the user so NFS sees uid:gid (podman refuses a bind mount of a missing path).
    let mut data_dirs: BTreeSet<String> = TRASH_TREE.iter().map(|s| s.to_string()).collect();
    for (_, containers) in &enabled.services {
        for c in containers {
            for v in &c.volumes {
                if let Some(VolumeSource::Data(p)) = v.source() {
                    data_dirs.insert(p.to_string());
                }
            }
        }
    }
    data_dirs.insert(site.backup.target.clone());
    // Under /data (NFS, or local and owned by the user) the user creates them; elsewhere
    // (a backup target on another local path) root creates them for the user.
    let (under_data, elsewhere): (Vec<String>, Vec<String>) = data_dirs
        .into_iter()
        .partition(|p| p == "/data" || p.starts_with("/data/"));
    let mut trash = cmd(&["runuser", "-u", ctx.user, "--", "mkdir", "-p"]);
    trash.extend(under_data);
    r.push(trash);
    if !elsewhere.is_empty() {
        let mut local = cmd(&["install", "-d", "-o", &uid, "-g", &gid, "-m", "0750"]);
        local.extend(elsewhere);
        r.push(local);
    }
    // 6. Firewall with the zone files written above.
    r.push(cmd(&["systemctl", "enable", "firewalld.service"]));
    r.push(cmd(&["systemctl", "restart", "firewalld.service"]));
    // 7. Guest agent: udev starts it on later boots; it was installed after udev ran now.
    // (`enable` only warns for the udev-activated static unit some distributions ship.)
    r.push(cmd(&["systemctl", "enable", "qemu-guest-agent.service"]));
    r.push(cmd(&["systemctl", "start", "qemu-guest-agent.service"]));
    if site.vm.os == VmOs::Fedora {
        r.push(cmd(&["systemctl", "enable", "--now", "tailscaled.service"]));
    }
    // 8. The appliance programs from the seed ISO.
    r.push(cmd(&[INSTALL_SCRIPT]));
    // 9. podman auto-update for units that allow it (user timer, enabled before the user
    //    manager first starts, in the user's own ~/.config so it is owned by the user).
    let auto = enabled
        .services
        .iter()
        .any(|(_, cs)| cs.iter().any(|c| c.auto_update));
    if auto {
        r.push(sh(
            "runuser -u \"$1\" -- sh -c 'mkdir -p \"$HOME/.config/systemd/user/timers.target.wants\" && ln -sf /usr/lib/systemd/user/podman-auto-update.timer \"$HOME/.config/systemd/user/timers.target.wants/podman-auto-update.timer\"'",
            &[ctx.user],
        ));
    }
    // 10. Linger: the user manager starts now and on every boot; container units are gated.
    r.push(cmd(&["loginctl", "enable-linger", ctx.user]));
    // 11. System units, then firstboot without blocking cloud-final (it is ordered after it).
    r.push(cmd(&["systemctl", "daemon-reload"]));
    r.push(cmd(&[
        "systemctl",
        "enable",
        "mms-firstboot.service",
        "mms-backup-config.timer",
        "mms-backup-photos.timer",
        "mms-cutover.path",
    ]));
    r.push(cmd(&[
        "systemctl",
        "start",
        "mms-backup-config.timer",
        "mms-backup-photos.timer",
        "mms-cutover.path",
    ]));
    r.push(cmd(&[
        "systemctl",
        "start",
        "--no-block",
        "mms-firstboot.service",
    ]));
    r
}

fn packages(os: VmOs) -> Vec<String> {
    let list: &[&str] = match os {
        VmOs::Fedora => &[
            "podman",
            "nfs-utils",
            "firewalld",
            "qemu-guest-agent",
            "tailscale",
            "rsync",
        ],
        // Debian 13: rootless podman needs uidmap + passt; `systemctl --user -M` needs
        // dbus-user-session. Tailscale has its own install step (not in Debian's archive).
        VmOs::Debian => &[
            "podman",
            "nfs-common",
            "firewalld",
            "qemu-guest-agent",
            "rsync",
            "uidmap",
            "passt",
            "dbus-user-session",
        ],
    };
    list.iter().map(|s| s.to_string()).collect()
}

fn cloud_config(
    ctx: &Ctx,
    enabled: &Enabled,
    rootfs: &BTreeMap<String, FileSpec>,
    mounts: &[(String, String)],
) -> CloudConfig {
    let site = ctx.site;
    let mut yum_repos = BTreeMap::new();
    if site.vm.os == VmOs::Fedora {
        yum_repos.insert(
            "tailscale-stable".to_string(),
            YumRepo {
                name: "Tailscale stable".into(),
                baseurl: "https://pkgs.tailscale.com/stable/fedora/$basearch".into(),
                enabled: true,
                gpgcheck: false,
                repo_gpgcheck: true,
                gpgkey: "https://pkgs.tailscale.com/stable/fedora/repo.gpg".into(),
            },
        );
    }
    let write_files = rootfs
        .iter()
        .map(|(path, spec)| WriteFile {
            path: path.clone(),
            content: String::from_utf8_lossy(&spec.contents).into_owned(),
            owner: "root:root".into(),
            permissions: format!("{:04o}", spec.mode),
            defer: false,
        })
        .collect();
    CloudConfig {
        bootcmd: vec![sh(
            "getent group \"$1\" >/dev/null || groupadd -g \"$2\" \"$1\"",
            &[ctx.user, &ctx.gid.to_string()],
        )],
        // `default`: the distribution's admin account (sudo) gets the SSH keys; the service
        // account has none.
        users: vec![
            UserEntry::Default,
            UserEntry::User(User {
                name: ctx.user.to_string(),
                uid: ctx.uid,
                primary_group: ctx.user.to_string(),
                no_user_group: true,
                shell: "/bin/bash".into(),
                lock_passwd: true,
                homedir: ctx.home.clone(),
                ssh_authorized_keys: Vec::new(),
                groups: None,
                sudo: None,
            }),
        ],
        ssh_authorized_keys: site.vm.ssh_authorized_keys.clone(),
        ssh_pwauth: Some(false),
        timezone: Some(site.site.timezone.clone()),
        yum_repos,
        package_update: true,
        // Fedora: the appliance boots with current packages (podman ≥ the 5.x it was tested
        // with). Debian: the test target; its image carries what it needs.
        package_upgrade: site.vm.os == VmOs::Fedora,
        packages: packages(site.vm.os),
        write_files,
        runcmd: runcmd(ctx, enabled, mounts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (Site, Catalog) {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/homelab/mms.yml");
        let loaded = crate::config::load(&path).unwrap();
        (loaded.site, loaded.catalog)
    }

    fn unit<'a>(b: &'a Bundle, name: &str) -> &'a str {
        std::str::from_utf8(
            &b.files[&format!("rootfs/etc/containers/systemd/users/1100/{name}")].contents,
        )
        .unwrap()
    }

    #[test]
    fn unknown_service_is_named() {
        let (mut site, catalog) = example();
        site.services.push("plex".into());
        let err = render(&site, &catalog, &ApplianceBins::Omitted).unwrap_err();
        assert_eq!(
            err.to_string(),
            "services: \"plex\" is not in the services catalog"
        );
    }

    #[test]
    fn user_namespace_per_writer_kind() {
        let (site, catalog) = example();
        let b = render(&site, &catalog, &ApplianceBins::Omitted).unwrap();
        let radarr = unit(&b, "radarr.container");
        assert!(radarr.contains("UserNS=keep-id:uid=1100,gid=1100\nUser=0\nGroup=0\n"));
        assert!(radarr.contains("Environment=\"PUID=1100\""));
        assert!(radarr.contains("Volume=/home/mms/config/radarr:/config:Z\n"));
        assert!(
            radarr.contains("Volume=/data:/data\n"),
            "NFS: no SELinux label"
        );
        let pg = unit(&b, "immich-postgres.container");
        assert!(pg.contains("UserNS=keep-id:uid=999,gid=999\n") && !pg.contains("User="));
        assert!(pg.contains("Secret=immich_db_password,type=env,target=POSTGRES_PASSWORD"));
        assert!(!pg.contains("AutoUpdate="));
        let server = unit(&b, "immich-server.container");
        assert!(
            !server.contains("UserNS="),
            "root images use the default rootless mapping"
        );
        assert!(server.contains("Volume=/etc/localtime:/etc/localtime:ro\n"));
        for name in [
            "radarr.container",
            "immich-server.container",
            "jellyfin.container",
        ] {
            let u = unit(&b, name);
            for line in [
                "Notify=healthy",
                "Restart=on-failure",
                "TimeoutStartSec=900",
                "WantedBy=default.target",
                "ConditionPathExists=/var/lib/mms/services-enabled",
                "Network=mms.network",
            ] {
                assert!(u.contains(line), "{name}: {line}");
            }
            assert!(
                u.contains("PublishPort=127.0.0.1:"),
                "{name}: loopback only"
            );
        }
    }

    #[test]
    fn debian_has_no_selinux_options_and_no_tailscale_package() {
        let (mut site, catalog) = example();
        site.vm.os = VmOs::Debian;
        let b = render(&site, &catalog, &ApplianceBins::Omitted).unwrap();
        assert!(!unit(&b, "radarr.container").contains(":Z"));
        let ud = String::from_utf8_lossy(&b.files["user-data"].contents).into_owned();
        assert!(ud.contains("- nfs-common") && !ud.contains("nfs-utils"));
        assert!(!ud.contains("tailscale-stable") && !ud.contains("- tailscale\n"));
        assert!(!ud.contains("virt_use_nfs"));
    }

    #[test]
    fn shell_quoting_and_health_command() {
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        let h = HealthCheck {
            path: "/ping".into(),
            expect_status: 204,
            expect_body: None,
            start_period_s: 1,
            interval_s: 1,
        };
        let cmd: Vec<String> = serde_json::from_str(&health_cmd(7878, &h)).unwrap();
        assert_eq!(cmd[0], "CMD-SHELL");
        assert!(cmd[1].contains("'http://127.0.0.1:7878/ping'") && cmd[1].ends_with("= 204"));
    }

    #[test]
    fn lan_ssh_opens_ssh_in_the_drop_zone_only_when_asked() {
        let (mut site, catalog) = example();
        let drop = |b: &Bundle| {
            String::from_utf8_lossy(&b.files["rootfs/etc/firewalld/zones/drop.xml"].contents)
                .into_owned()
        };
        site.site.lan_ssh = false;
        let b = render(&site, &catalog, &ApplianceBins::Omitted).unwrap();
        assert!(!drop(&b).contains("ssh"));
        site.site.lan_ssh = true;
        let b = render(&site, &catalog, &ApplianceBins::Omitted).unwrap();
        assert!(drop(&b).contains("<service name=\"ssh\"/>"));
    }
}

#[cfg(test)]
mod volume_tests {
    use super::*;

    #[test]
    fn volume_paths_with_a_colon_are_refused() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/homelab/mms.yml");
        let loaded = crate::config::load(&path).unwrap();
        let mut catalog_site = loaded.site.clone();
        catalog_site.site.user.name = "m:s".into();
        let err = render(&catalog_site, &loaded.catalog, &ApplianceBins::Omitted).unwrap_err();
        assert!(matches!(err, RenderError::BadVolume { .. }), "{err}");
    }
}

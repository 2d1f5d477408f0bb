//! The services catalog: one YAML file per service (`services/<name>.yml`).
//!
//! A service is data, not code: its containers, images, ports, volumes,
//! environment, health check, backup method and migration defaults. The files
//! in the repository's `services/` folder are compiled into `mms-build`; a
//! `services/` folder beside `mms.yml` adds site-local services or replaces a
//! built-in one with the same name. Parsing and checking are pure; only
//! [`Catalog::load_with_dir`] reads files.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The built-in service files, `(file name, contents)`, from the repository's `services/`.
pub const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_services.rs"));

/// One service of the media stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// Service name; must equal the file name without `.yml`.
    pub name: String,
    /// One line for humans (`[Unit] Description=`).
    pub description: String,
    /// The port the service's web UI answers on (health checks, `tailscale.serve`).
    pub port: u16,
    /// Other services this one needs running first (start order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// The containers, in start order (dependencies first).
    pub containers: Vec<ContainerDef>,
    /// How to tell the service is up (HTTP, from the VM).
    pub health: HealthCheck,
    /// Secrets (names in `secrets.age`) this service needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// What a config backup contains.
    pub backup: BackupDef,
    /// Where the state lives on an old install (community helper-script LXC layout).
    pub migrate: MigrateDef,
}

/// One container of a service: one Quadlet `.container` unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerDef {
    /// `ContainerName=` and the unit's base name (`<name>.container` → `<name>.service`).
    pub name: String,
    /// Fully-qualified image reference pinned by tag (and digest where known).
    pub image: String,
    /// Ports published on the VM (same number inside and outside).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeDef>,
    /// Environment; values are literals or references, never secret values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, EnvValue>,
    /// Secrets handed to the container as environment variables (`Secret=…,type=env`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<SecretEnv>,
    /// The container's own health command (`HealthCmd=`), run inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_cmd: Option<String>,
    /// Extra DNS names on `mms.network` (`NetworkAlias=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_aliases: Vec<String>,
    /// Containers of the same service that must be up first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Whether `podman auto-update` may replace the image (`AutoUpdate=registry`).
    #[serde(default)]
    pub auto_update: bool,
    /// Which user inside the container writes the files, so the renderer can
    /// map it to the host's `mms` user (DESIGN §4 ownership rule).
    pub writes_as: WritesAs,
    /// `ShmSize=` (Postgres wants 128m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
}

/// Which user inside the container owns what it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WritesAs {
    /// linuxserver.io image: s6 init as root, the app as `abc` with `PUID`/`PGID`.
    Lsio,
    /// The process runs as root inside the container.
    Root,
    /// A fixed uid/gid inside the image (e.g. Postgres 999).
    User { uid: u32, gid: u32 },
}

/// A mount: exactly one of `config`, `data`, `named`, `host` gives the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeDef {
    /// A private sub-directory of `/home/mms/config/<service>` (`.` = the dir itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// A path of the shared `/data` tree (NFS): must be `/data` or below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A named podman volume on local disk (`<name>.volume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named: Option<String>,
    /// A host path that is not ours (e.g. `/etc/localtime`); always read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path inside the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Where a volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource<'a> {
    Config(&'a str),
    Data(&'a str),
    Named(&'a str),
    Host(&'a str),
}

impl VolumeDef {
    /// The single source of this volume (checked when the catalog is loaded).
    pub fn source(&self) -> Option<VolumeSource<'_>> {
        match (&self.config, &self.data, &self.named, &self.host) {
            (Some(c), None, None, None) => Some(VolumeSource::Config(c)),
            (None, Some(d), None, None) => Some(VolumeSource::Data(d)),
            (None, None, Some(n), None) => Some(VolumeSource::Named(n)),
            (None, None, None, Some(h)) => Some(VolumeSource::Host(h)),
            _ => None,
        }
    }
}

/// An environment value: a literal, or a setting of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    Literal(String),
    Setting { setting: Setting },
}

/// Site settings a service may refer to in its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    /// `site.timezone`.
    Timezone,
    /// The uid the app runs as inside the container (LSIO `PUID`).
    AppUid,
    /// The gid the app runs as inside the container (LSIO `PGID`).
    AppGid,
    /// `tailscale.hostname`.
    Hostname,
}

/// A secret exposed to a container as an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretEnv {
    /// The secret's name in `secrets.age` (also the podman secret's name).
    pub secret: String,
    /// The variable inside the container.
    pub env: String,
}

/// An HTTP health check run from the VM against the published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Path and query, e.g. `/ping`.
    pub path: String,
    /// Expected HTTP status.
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Text the body must contain, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// Seconds after start before failures count.
    #[serde(default = "default_start_period")]
    pub start_period_s: u32,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval_s: u32,
}

fn default_status() -> u16 {
    200
}
fn default_start_period() -> u32 {
    120
}
fn default_interval() -> u32 {
    30
}

/// What a config backup of the service holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupDef {
    /// Paths relative to the service's config dir to archive (`.` = all of it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The unit to stop while archiving (so SQLite files are consistent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_unit: Option<String>,
    /// A database dump taken inside a container instead of copying DB files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpDef>,
}

/// A dump command run inside a container; its stdout goes into the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DumpDef {
    pub container: String,
    pub command: Vec<String>,
}

/// Where an existing install keeps this service's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateDef {
    /// systemd units to stop on the source before copying.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// Source directory → where it lands: a sub-directory of the new config dir
    /// (`.` = the dir itself), or an absolute path at or below `/data`.
    pub paths: BTreeMap<String, String>,
    /// SQLite files (relative to the new config dir) to integrity-check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sqlite: Vec<String>,
    /// Native Postgres on the source to dump with `pg_dumpall` (Immich).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
}

/// Every service known to this build, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    services: BTreeMap<String, ServiceDef>,
}

/// A catalog file that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CatalogError(pub String);

impl Catalog {
    /// The services compiled into this build.
    pub fn builtin() -> Result<Self, Vec<CatalogError>> {
        let files = BUILTIN.iter().map(|(name, text)| {
            (
                PathBuf::from(format!("services/{name}")),
                (*text).to_owned(),
            )
        });
        Self::from_files(files)
    }

    /// Parses and checks service files `(path, contents)`; a later file with
    /// the same service name replaces an earlier one.
    pub fn from_files(
        files: impl IntoIterator<Item = (PathBuf, String)>,
    ) -> Result<Self, Vec<CatalogError>> {
        let mut services = BTreeMap::new();
        let mut errors = Vec::new();
        for (path, text) in files {
            match parse_service(&path, &text) {
                Ok(def) => {
                    services.insert(def.name.clone(), def);
                }
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        let catalog = Catalog { services };
        errors.extend(catalog.cross_check());
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(errors)
        }
    }

    /// The built-in services plus `*.yml` in `dir` (if it exists).
    pub fn load_with_dir(dir: &Path) -> Result<Self, Vec<CatalogError>> {
        let mut files: Vec<(PathBuf, String)> = BUILTIN
            .iter()
            .map(|(name, text)| {
                (
                    PathBuf::from(format!("services/{name}")),
                    (*text).to_owned(),
                )
            })
            .collect();
        files.extend(read_yaml_dir(dir)?);
        Self::from_files(files)
    }

    /// Looks a service up by name.
    pub fn get(&self, name: &str) -> Option<&ServiceDef> {
        self.services.get(name)
    }

    /// All services, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceDef> {
        self.services.values()
    }

    /// All service names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.services.keys().map(String::as_str).collect()
    }

    /// Checks that need the whole catalog: container names unique across services.
    fn cross_check(&self) -> Vec<CatalogError> {
        let mut errors = Vec::new();
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for s in self.services.values() {
            for c in &s.containers {
                if let Some(other) = seen.insert(&c.name, &s.name) {
                    errors.push(CatalogError(format!(
                        "services/{}.yml: container name {:?} is also used by service {other:?}; container names must be unique",
                        s.name, c.name
                    )));
                }
            }
            for d in &s.depends_on {
                if !self.services.contains_key(d) {
                    errors.push(CatalogError(format!(
                        "services/{}.yml: depends_on: unknown service {d:?}",
                        s.name
                    )));
                }
            }
        }
        errors
    }
}

fn read_yaml_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, Vec<CatalogError>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(vec![CatalogError(format!(
                "{}: cannot read the services folder: {e}",
                dir.display()
            ))]);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::read_to_string(&p) {
            Ok(text) => out.push((p, text)),
            Err(e) => errors.push(CatalogError(format!("{}: cannot read: {e}", p.display()))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Parses one service file and checks it on its own.
pub fn parse_service(path: &Path, text: &str) -> Result<ServiceDef, Vec<CatalogError>> {
    let def: ServiceDef = serde_saphyr::from_str(text)
        .map_err(|e| vec![CatalogError(crate::yaml::format_serde_error(path, &e))])?;
    let mut errs = check_service(&def);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != def.name {
        errs.push(format!(
            "name: {:?} must equal the file name {stem:?}",
            def.name
        ));
    }
    if errs.is_empty() {
        Ok(def)
    } else {
        Err(errs
            .into_iter()
            .map(|e| CatalogError(format!("{}: {e}", path.display())))
            .collect())
    }
}

/// Checks one service definition; returns messages (without the file name).
pub fn check_service(def: &ServiceDef) -> Vec<String> {
    let mut errs = Vec::new();
    if !is_unit_name(&def.name) {
        errs.push(format!(
            "name: {:?} must be lower-case letters, digits and dashes",
            def.name
        ));
    }
    if def.containers.is_empty() {
        errs.push("containers: a service needs at least one container".into());
    }
    if !def.health.path.starts_with('/') {
        errs.push(format!(
            "health.path: {:?} must start with /",
            def.health.path
        ));
    }
    let names: BTreeSet<&str> = def.containers.iter().map(|c| c.name.as_str()).collect();
    if names.len() != def.containers.len() {
        errs.push("containers: container names must be unique".into());
    }
    if !def.containers.iter().any(|c| c.ports.contains(&def.port)) {
        errs.push(format!(
            "port: {} is not published by any of the service's containers",
            def.port
        ));
    }
    for (i, c) in def.containers.iter().enumerate() {
        let at = format!("containers[{i}] ({})", c.name);
        if !is_unit_name(&c.name) {
            errs.push(format!(
                "{at}: name must be lower-case letters, digits and dashes"
            ));
        }
        if let Err(e) = check_image_ref(&c.image) {
            errs.push(format!("{at}: image {:?}: {e}", c.image));
        }
        for a in &c.after {
            if !names.contains(a.as_str()) {
                errs.push(format!(
                    "{at}: after: {a:?} is not a container of this service"
                ));
            }
        }
        for (j, v) in c.volumes.iter().enumerate() {
            let vat = format!("{at}: volumes[{j}]");
            match v.source() {
                None => errs.push(format!(
                    "{vat}: give exactly one of config, data, named, host"
                )),
                Some(VolumeSource::Data(d)) => {
                    if !(d == "/data" || d.starts_with("/data/")) || d.split('/').any(|p| p == "..")
                    {
                        errs.push(format!(
                            "{vat}: data: {d:?} must be /data or a path below it"
                        ));
                    }
                }
                Some(VolumeSource::Config(c)) => {
                    if c.starts_with('/') || c.split('/').any(|p| p == "..") {
                        errs.push(format!(
                            "{vat}: config: {c:?} must be relative to the config dir, without .."
                        ));
                    }
                }
                Some(VolumeSource::Named(n)) => {
                    if !is_unit_name(n) {
                        errs.push(format!("{vat}: named: {n:?} must be a plain name"));
                    }
                }
                Some(VolumeSource::Host(h)) => {
                    if !h.starts_with('/') || !v.read_only {
                        errs.push(format!(
                            "{vat}: host: {h:?} must be absolute and read_only: true"
                        ));
                    }
                }
            }
            if !v.target.starts_with('/') {
                errs.push(format!("{vat}: target {:?} must be absolute", v.target));
            }
        }
        for k in c.environment.keys() {
            if k.is_empty() || !k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                errs.push(format!("{at}: environment: {k:?} is not a variable name"));
            }
        }
        for s in &c.secret_env {
            if !def.secrets.contains(&s.secret) {
                errs.push(format!(
                    "{at}: secret_env: {:?} is not listed in the service's secrets",
                    s.secret
                ));
            }
        }
    }
    if let Some(d) = &def.backup.dump
        && !names.contains(d.container.as_str())
    {
        errs.push(format!(
            "backup.dump.container: {:?} is not a container of this service",
            d.container
        ));
    }
    for (src, to) in &def.migrate.paths {
        if !src.starts_with('/') {
            errs.push(format!("migrate.paths: source {src:?} must be absolute"));
        }
        let data = to == "/data" || to.starts_with("/data/");
        if (to.starts_with('/') && !data) || to.split('/').any(|p| p == "..") {
            errs.push(format!(
                "migrate.paths: target {to:?} must be relative to the config dir or at or below /data, without .."
            ));
        }
    }
    errs
}

/// A systemd-unit-friendly name: `[a-z0-9-]`, starting with a letter.
pub fn is_unit_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.len() <= 64
}

/// Checks that an image reference is fully qualified (registry host first) and
/// pinned (a tag other than `latest`, or a digest).
pub fn check_image_ref(image: &str) -> Result<(), String> {
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain white space".into());
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let Some((registry, rest)) = name.split_once('/') else {
        return Err(
            "must be fully qualified, e.g. docker.io/library/postgres:16 (registry first)".into(),
        );
    };
    if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
        return Err(format!(
            "must start with a registry host (found {registry:?}), e.g. docker.io/…"
        ));
    }
    let last = rest.rsplit('/').next().unwrap_or(rest);
    let tag = last.split_once(':').map(|(_, t)| t);
    if let Some(d) = digest
        && !(d.starts_with("sha256:")
            && d.len() == 71
            && d[7..].chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err("digest must be sha256: followed by 64 hex digits".into());
    }
    match (tag, digest) {
        (None, None) => Err("must be pinned by a tag (or digest)".into()),
        (Some("latest"), None) => Err("`latest` is not a pin; use a version tag".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_loads_all_seven() {
        let c = Catalog::builtin().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            c.names(),
            [
                "immich", "jellyfin", "lidarr", "prowlarr", "radarr", "sabnzbd", "sonarr"
            ]
        );
        let ports: Vec<u16> = c.iter().map(|s| s.port).collect();
        assert_eq!(ports, [2283, 8096, 8686, 9696, 7878, 8080, 8989]);
    }

    #[test]
    fn arr_and_sabnzbd_share_one_data_volume() {
        let c = Catalog::builtin().unwrap();
        for name in ["radarr", "sonarr", "lidarr", "sabnzbd"] {
            let s = c.get(name).unwrap();
            let data: Vec<_> = s.containers[0]
                .volumes
                .iter()
                .filter_map(|v| match v.source() {
                    Some(VolumeSource::Data(d)) => Some((d, v.target.as_str())),
                    _ => None,
                })
                .collect();
            assert_eq!(data, [("/data", "/data")], "{name}");
        }
    }

    #[test]
    fn immich_has_the_four_containers_and_hostnames() {
        let c = Catalog::builtin().unwrap();
        let s = c.get("immich").unwrap();
        let names: Vec<_> = s.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "immich-postgres",
                "immich-redis",
                "immich-machine-learning",
                "immich-server"
            ]
        );
        assert!(
            s.containers[0]
                .network_aliases
                .contains(&"database".to_string())
        );
        assert!(
            s.containers[1]
                .network_aliases
                .contains(&"redis".to_string())
        );
        assert!(s.containers.iter().take(2).all(|c| !c.auto_update));
        assert!(s.secrets.contains(&"immich_db_password".to_string()));
    }

    #[test]
    fn image_refs_must_be_qualified_and_pinned() {
        assert!(check_image_ref("lscr.io/linuxserver/radarr:6.0.4.10291-ls291").is_ok());
        assert!(check_image_ref("localhost/standin:1").is_ok());
        assert!(check_image_ref("radarr:1").is_err());
        assert!(check_image_ref("linuxserver/radarr:1").is_err());
        assert!(check_image_ref("docker.io/valkey/valkey").is_err());
        assert!(check_image_ref("docker.io/valkey/valkey:latest").is_err());
        assert!(check_image_ref("docker.io/valkey/valkey@sha256:abc").is_err());
        let d = format!("docker.io/valkey/valkey@sha256:{}", "a".repeat(64));
        assert!(check_image_ref(&d).is_ok());
    }

    #[test]
    fn file_name_must_match_and_errors_name_the_file() {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == "radarr.yml").unwrap();
        let e = parse_service(Path::new("x/sonarr.yml"), text).unwrap_err();
        assert!(
            e[0].0.contains("x/sonarr.yml") && e[0].0.contains("file name"),
            "{e:?}"
        );
        let bad = text.replace("port: 7878", "port: 7878\nportt: 1");
        let e = parse_service(Path::new("radarr.yml"), &bad).unwrap_err();
        assert!(e[0].0.starts_with("radarr.yml:"), "{e:?}");
        assert!(e[0].0.contains("portt"), "{e:?}");
    }

    #[test]
    fn volume_needs_exactly_one_source() {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == "radarr.yml").unwrap();
        let mut def: ServiceDef = serde_saphyr::from_str(text).unwrap();
        def.containers[0].volumes[0].data = Some("/data".into());
        let errs = check_service(&def);
        assert!(errs.iter().any(|e| e.contains("exactly one")), "{errs:?}");
        def.containers[0].volumes[0].data = None;
        def.containers[0].volumes[1].data = Some("/srv/x".into());
        assert!(check_service(&def).iter().any(|e| e.contains("below it")));
    }

    #[test]
    fn site_local_folder_adds_services() {
        let dir = tempfile::tempdir().unwrap();
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == "prowlarr.yml").unwrap();
        let extra = text
            .replace("name: prowlarr", "name: whisparr")
            .replace("9696", "6969");
        std::fs::write(dir.path().join("whisparr.yml"), &extra).unwrap();
        let c = Catalog::load_with_dir(dir.path()).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(c.get("whisparr").is_some());
        assert!(c.get("radarr").is_some());
    }
}

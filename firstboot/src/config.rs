//! `/etc/mms/firstboot.yml`: everything `mms-firstboot` needs, written by `mms-build`.
//!
//! The builder resolves the site config (`mms.yml`) and the services catalog
//! (`services/*.yml`) into this one file, so firstboot never reads either of them. This
//! module owns the file format (serde types, strict: unknown keys are errors), loading with
//! `file:line:column` errors and serialising back to YAML. It does not validate the site
//! (that is `mms-build check`); it only checks what firstboot itself relies on
//! ([`Config::validate`]).
//!
//! Keys are `snake_case`, like `mms.yml`. A complete example is [`Config::example`];
//! `mms-firstboot example-config` prints it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Default location of the config file in the VM.
pub const DEFAULT_PATH: &str = "/etc/mms/firstboot.yml";

/// The whole firstboot config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The rootless account every container runs under (`site.user` in `mms.yml`).
    pub user: User,
    /// Well-known files and directories in the VM.
    #[serde(default)]
    pub paths: Paths,
    /// Tailscale enrollment and `tailscale serve` ports.
    pub tailscale: Tailscale,
    /// Where the services' state comes from.
    pub state: StateSource,
    /// The enabled services, in start order (dependencies first).
    pub services: Vec<Service>,
    /// Overall health deadline in seconds, counted from the start of the `health` phase.
    #[serde(default = "default_health_deadline")]
    pub health_deadline_s: u32,
    /// The site's static address, taken by `mms-firstboot cutover`. Set on a rebuild of a
    /// site with a static address: the new VM is built on a temporary one
    /// (`vm.network.rebuild_ipv4`) while the old VM still holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<StaticAddress>,
}

/// A static IPv4 configuration of the VM's one NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticAddress {
    /// The address, e.g. `192.168.1.50`.
    pub address: std::net::Ipv4Addr,
    /// Prefix length, 8–30.
    pub prefix: u8,
    /// Default gateway, inside the subnet.
    pub gateway: std::net::Ipv4Addr,
    /// DNS servers.
    pub dns: Vec<std::net::IpAddr>,
}

fn default_health_deadline() -> u32 {
    900
}

/// The rootless service account (`site.user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name, e.g. `mms`.
    pub name: String,
    /// Numeric uid (1000–60000 so it gets subuid ranges).
    pub uid: u32,
    /// Numeric primary gid.
    pub gid: u32,
    /// Home directory, e.g. `/home/mms`.
    pub home: PathBuf,
}

impl User {
    /// `/run/user/<uid>`: the user's runtime dir (exists once linger started the manager).
    pub fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }

    /// The default D-Bus address of the user's bus, `unix:path=/run/user/<uid>/bus`.
    pub fn default_bus_address(&self) -> String {
        format!("unix:path=/run/user/{}/bus", self.uid)
    }
}

/// Well-known paths in the VM. All absolute; firstboot joins them onto its root directory
/// (`/` in production, a temp dir in tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Delivery directory the builder fills through the guest agent (mode 0700, files 0600).
    /// Removed at `done`.
    pub secrets_dir: PathBuf,
    /// The status file `mms-build` reads through the guest agent.
    pub status_file: PathBuf,
    /// firstboot's own bookkeeping (per-step markers, the Immich dump); root only.
    pub state_dir: PathBuf,
    /// The first-boot gate: service units carry `ConditionPathExists=<this>`; firstboot creates
    /// it at `start`, so on every later boot the units start by themselves.
    pub gate_marker: PathBuf,
    /// The backupd config file (used to restore the newest backup).
    pub backupd_config: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            secrets_dir: PathBuf::from("/etc/mms/secrets"),
            status_file: PathBuf::from("/var/lib/mms/firstboot.json"),
            state_dir: PathBuf::from("/var/lib/mms/firstboot"),
            gate_marker: PathBuf::from("/var/lib/mms/services-enabled"),
            backupd_config: PathBuf::from("/etc/mms/backupd.yml"),
        }
    }
}

/// Tailscale enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tailscale {
    /// The node's final hostname (`tailscale.hostname`).
    pub hostname: String,
    /// A rebuild: enroll as `<hostname>-next`, renamed by `mms-firstboot cutover`.
    #[serde(default)]
    pub rebuild: bool,
    /// File name of the auth key inside `paths.secrets_dir`.
    #[serde(default = "default_auth_key_secret")]
    pub auth_key_secret: String,
    /// HTTPS port on the tailnet → local target URL, e.g. `443: http://127.0.0.1:8096`.
    #[serde(default)]
    pub serve: BTreeMap<u16, String>,
    /// Timeout of `tailscale up` and of waiting for `BackendState` `Running`, seconds.
    #[serde(default = "default_up_timeout")]
    pub up_timeout_s: u32,
    /// Timeout of each `tailscale serve` call, seconds.
    #[serde(default = "default_serve_timeout")]
    pub serve_timeout_s: u32,
}

fn default_auth_key_secret() -> String {
    "tailscale_auth_key".into()
}
fn default_up_timeout() -> u32 {
    180
}
fn default_serve_timeout() -> u32 {
    60
}

impl Tailscale {
    /// The hostname to enroll with: `<hostname>-next` on a rebuild.
    pub fn enroll_hostname(&self) -> String {
        if self.rebuild {
            format!("{}-next", self.hostname)
        } else {
            self.hostname.clone()
        }
    }
}

/// Where the services' state comes from (exactly one).
///
/// YAML: `state: fresh`, `state: restore`, `state: { restore: { identity_secret: … } }`,
/// `state: { migrate: { kind: lxc, host: …, … } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StateSource {
    /// A fresh install: nothing to bring.
    Fresh,
    /// Restore the newest backup of every service through `mms_backupd`.
    Restore(Restore),
    /// Pull the state over SSH + rsync from an LXC host or the previous VM.
    Migrate(MigrateFrom),
}

/// Restore options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// File name inside `paths.secrets_dir` of the age identity that decrypts the backups
    /// (delivered once, deleted at `done`). Absent: backups are unencrypted.
    #[serde(default)]
    pub identity_secret: Option<String>,
}

/// What kind of machine the state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A community helper-script LXC (or any host running the apps natively as system units).
    Lxc,
    /// The previous MMS VM (same layout; its units run on the user's manager).
    PreviousVm,
}

/// The migration source host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateFrom {
    /// LXC host or previous VM.
    pub kind: SourceKind,
    /// Host name or address (the previous VM is reached over the tailnet).
    pub host: String,
    /// SSH user.
    #[serde(default = "default_ssh_user")]
    pub user: String,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// File name inside `paths.secrets_dir` of the private SSH key (`migrate_ssh_key`).
    #[serde(default = "default_ssh_key_secret")]
    pub ssh_key_secret: String,
}

fn default_ssh_user() -> String {
    "root".into()
}
fn default_ssh_port() -> u16 {
    22
}
fn default_ssh_key_secret() -> String {
    "migrate_ssh_key".into()
}

/// One enabled service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Catalog name, e.g. `radarr`.
    pub name: String,
    /// User units to start, in order (e.g. `immich-postgres.service` before `immich-server.service`).
    pub units: Vec<String>,
    /// The private config dir, e.g. `/home/mms/config/radarr`.
    pub config_dir: PathBuf,
    /// HTTP health check of the main container.
    pub health: Health,
    /// Migration defaults (absent: nothing to migrate for this service).
    #[serde(default)]
    pub migrate: Option<Migrate>,
    /// Runtime podman secrets of the user: podman secret name → file name in `secrets_dir`.
    #[serde(default)]
    pub podman_secrets: BTreeMap<String, String>,
    /// Postgres in a container (Immich): the migration loads the source's `pg_dumpall` into it.
    #[serde(default)]
    pub postgres: Option<Postgres>,
}

/// HTTP health check: `GET url` must answer `expect_status` (and contain `expect_body`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Plain-HTTP URL on loopback, e.g. `http://127.0.0.1:7878/ping`.
    pub url: String,
    /// Expected HTTP status code.
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// A substring the body must contain, e.g. `OK`, `Healthy`, `pong`.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// Grace period after start before failures count, seconds.
    #[serde(default)]
    pub start_period_s: u32,
    /// Seconds between attempts.
    #[serde(default = "default_interval")]
    pub interval_s: u32,
}

fn default_status() -> u16 {
    200
}
fn default_interval() -> u32 {
    5
}

/// Which application's stored paths to rewrite (where each app keeps them: arr-state.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum App {
    /// Radarr (v5/v6 schema).
    Radarr,
    /// Sonarr v4.
    Sonarr,
    /// Lidarr 2.x.
    Lidarr,
    /// Prowlarr.
    Prowlarr,
    /// SABnzbd (`sabnzbd.ini`, `admin/history1.db`).
    Sabnzbd,
    /// Jellyfin 10.10/10.11 (`options.xml`, `*.mblink`, `system.xml`, `encoding.xml`, DBs).
    Jellyfin,
    /// Immich (Postgres; paths are migrated by Immich itself on first start).
    Immich,
    /// Copy only, rewrite nothing.
    Other,
}

/// Migration defaults of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    /// Which app's stored paths to rewrite; default: from the service name
    /// (`radarr` → [`App::Radarr`], …; unknown names → [`App::Other`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    /// This service's own source host when it differs from `state.migrate.host` (the
    /// helper scripts make one LXC per service); user, port and key stay the same.
    #[serde(default)]
    pub host: Option<String>,
    /// Units to stop on the source before copying (e.g. `radarr.service`).
    #[serde(default)]
    pub source_units: Vec<String>,
    /// Source directories and where each lands inside `config_dir` (`.` = the dir itself).
    pub sources: Vec<SourceDir>,
    /// SQLite files (relative to `config_dir`) that must pass `PRAGMA integrity_check`.
    /// Every `*.db` found in the copy is checked too.
    #[serde(default)]
    pub sqlite: Vec<PathBuf>,
    /// Where `config_dir` is mounted in the service's main container (default `/config`, the
    /// linuxserver layout). Each source dir with a relative `to` adds the layout rewrite
    /// `from` → `<container_config>/<to>` (e.g. `/var/lib/jellyfin` → `/config/data`).
    #[serde(default = "default_container_config")]
    pub container_config: String,
    /// Stored-path rewrites, old → new, applied on path-component boundaries, longest first.
    /// They win over the derived layout rewrites for the same `from`.
    #[serde(default)]
    pub rewrites: Vec<Rewrite>,
}

/// One source directory on the old host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDir {
    /// Absolute directory on the source, e.g. `/var/lib/radarr`.
    pub from: PathBuf,
    /// Where it lands: relative = inside the service's `config_dir` (`.` = the dir itself);
    /// absolute = that directory in the VM (e.g. Immich's upload tree → `/data/photos`).
    #[serde(default = "default_to")]
    pub to: PathBuf,
}

fn default_container_config() -> String {
    "/config".into()
}

impl App {
    /// The app a catalog service name stands for.
    pub fn for_service(name: &str) -> App {
        match name {
            "radarr" => App::Radarr,
            "sonarr" => App::Sonarr,
            "lidarr" => App::Lidarr,
            "prowlarr" => App::Prowlarr,
            "sabnzbd" => App::Sabnzbd,
            "jellyfin" => App::Jellyfin,
            "immich" => App::Immich,
            _ => App::Other,
        }
    }
}

fn default_to() -> PathBuf {
    PathBuf::from(".")
}

/// A stored absolute path prefix to replace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Old absolute prefix, e.g. `/movies`.
    pub from: String,
    /// New absolute prefix, e.g. `/data/media/movies`.
    pub to: String,
}

/// A Postgres container to load the source's `pg_dumpall` into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postgres {
    /// Container name (`ContainerName=`), e.g. `immich_postgres`.
    pub container: String,
    /// The unit that runs it; the dump is loaded right after this unit started.
    pub unit: String,
    /// Database superuser inside the container, e.g. `postgres`.
    pub user: String,
    /// Command run on an LXC source to dump (stdout), e.g.
    /// `sudo -u postgres pg_dumpall --clean --if-exists`.
    #[serde(default = "default_source_dump")]
    pub source_dump_command: String,
}

fn default_source_dump() -> String {
    "cd / && runuser -u postgres -- pg_dumpall --clean --if-exists".into()
}

/// A config file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read firstboot config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// YAML or type error at a position.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The file parsed but a value is unusable.
    #[error("{}: {}", .path.display(), .problems.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each problem, naming the field and the value.
        problems: Vec<String>,
    },
}

impl Config {
    /// Reads and parses `path`, then [`validate`](Self::validate)s it.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(path, &text)
    }

    /// Parses YAML text; `path` is only used in messages.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Config, LoadError> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            LoadError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: plain_message(&e.to_string()),
            }
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(LoadError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Serialises to YAML (what the builder writes to `/etc/mms/firstboot.yml`).
    pub fn to_yaml(&self) -> Result<String, serde_saphyr::ser_error::Error> {
        serde_saphyr::to_string(self)
    }

    /// Checks what firstboot relies on; returns one message per problem (empty = fine).
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let abs = |p: &mut Vec<String>, field: &str, v: &Path| {
            if !v.is_absolute() || v.components().any(|c| c.as_os_str() == "..") {
                p.push(format!(
                    "{field}: {:?} must be an absolute path without `..`",
                    v.display().to_string()
                ));
            }
        };
        abs(&mut p, "user.home", &self.user.home);
        abs(&mut p, "paths.secrets_dir", &self.paths.secrets_dir);
        abs(&mut p, "paths.status_file", &self.paths.status_file);
        abs(&mut p, "paths.state_dir", &self.paths.state_dir);
        abs(&mut p, "paths.gate_marker", &self.paths.gate_marker);
        abs(&mut p, "paths.backupd_config", &self.paths.backupd_config);
        if self.user.uid == 0 || self.user.gid == 0 {
            p.push("user: uid and gid must not be 0 (services run rootless)".into());
        }
        let h = &self.tailscale.hostname;
        if h.is_empty()
            || h.len() > 63
            || h.starts_with('-')
            || h.ends_with('-')
            || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            p.push(format!(
                "tailscale.hostname: {h:?} must be 1-63 letters, digits and inner `-` (RFC 1123)"
            ));
        }
        if !is_file_name(&self.tailscale.auth_key_secret) {
            p.push(format!(
                "tailscale.auth_key_secret: {:?} must be a plain file name",
                self.tailscale.auth_key_secret
            ));
        }
        for (port, target) in &self.tailscale.serve {
            if !(target.starts_with("http://") || target.starts_with("https+insecure://")) {
                p.push(format!(
                    "tailscale.serve.{port}: target {target:?} must be an http:// URL"
                ));
            }
        }
        if let Some(n) = &self.network {
            if !(8..=30).contains(&n.prefix) {
                p.push(format!("network.prefix: {} must be 8-30", n.prefix));
            } else {
                let mask = u32::MAX << (32 - u32::from(n.prefix));
                if u32::from(n.gateway) & mask != u32::from(n.address) & mask
                    || n.gateway == n.address
                {
                    p.push(format!(
                        "network.gateway: {} must be another address in {}/{}",
                        n.gateway, n.address, n.prefix
                    ));
                }
            }
            if n.dns.is_empty() {
                p.push("network.dns: at least one server".into());
            }
        }
        if let StateSource::Migrate(m) = &self.state {
            if m.host.is_empty() || m.host.starts_with('-') || m.host.contains(char::is_whitespace)
            {
                p.push(format!(
                    "state.migrate.host: {:?} is not a host name",
                    m.host
                ));
            }
            if m.user.is_empty() || m.user.starts_with('-') || m.user.contains(['@', ' ']) {
                p.push(format!(
                    "state.migrate.user: {:?} is not a user name",
                    m.user
                ));
            }
            if !is_file_name(&m.ssh_key_secret) {
                p.push(format!(
                    "state.migrate.ssh_key_secret: {:?} must be a plain file name",
                    m.ssh_key_secret
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let f = format!("services[{i}] ({})", s.name);
            if !names.insert(s.name.as_str()) {
                p.push(format!("{f}: duplicate service name"));
            }
            if !s
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || s.name.is_empty()
            {
                p.push(format!("{f}.name: must be lower-case letters, digits, `-`"));
            }
            abs(&mut p, &format!("{f}.config_dir"), &s.config_dir);
            for u in &s.units {
                if !is_unit_name(u) {
                    p.push(format!(
                        "{f}.units: {u:?} is not a unit name like `x.service`"
                    ));
                }
            }
            if !s.health.url.starts_with("http://") {
                p.push(format!(
                    "{f}.health.url: {:?} must be a plain http:// URL",
                    s.health.url
                ));
            }
            for file in s.podman_secrets.values() {
                if !is_file_name(file) {
                    p.push(format!(
                        "{f}.podman_secrets: {file:?} must be a plain file name"
                    ));
                }
            }
            if let Some(m) = &s.migrate {
                if let Some(h) = &m.host
                    && (h.is_empty() || h.starts_with('-') || h.contains(char::is_whitespace))
                {
                    p.push(format!("{f}.migrate.host: {h:?} is not a host name"));
                }
                for u in &m.source_units {
                    if !is_unit_name(u) {
                        p.push(format!(
                            "{f}.migrate.source_units: {u:?} is not a unit name"
                        ));
                    }
                }
                for src in &m.sources {
                    abs(&mut p, &format!("{f}.migrate.sources.from"), &src.from);
                    if src.to.components().any(|c| c.as_os_str() == "..") {
                        p.push(format!(
                            "{f}.migrate.sources.to: {:?} must not contain `..`",
                            src.to.display().to_string()
                        ));
                    }
                }
                for db in &m.sqlite {
                    if db.is_absolute() || db.components().any(|c| c.as_os_str() == "..") {
                        p.push(format!(
                            "{f}.migrate.sqlite: {:?} must be relative to config_dir",
                            db.display().to_string()
                        ));
                    }
                }
                if !m.container_config.starts_with('/') {
                    p.push(format!(
                        "{f}.migrate.container_config: {:?} must be an absolute path",
                        m.container_config
                    ));
                }
                for r in &m.rewrites {
                    for (k, v) in [("from", &r.from), ("to", &r.to)] {
                        if !v.starts_with('/') || v.len() < 2 || v.split('/').any(|c| c == "..") {
                            p.push(format!(
                                "{f}.migrate.rewrites.{k}: {v:?} must be an absolute path other than `/`"
                            ));
                        }
                    }
                }
            }
            if let Some(pg) = &s.postgres
                && !s.units.contains(&pg.unit)
            {
                p.push(format!(
                    "{f}.postgres.unit: {:?} is not one of the service's units",
                    pg.unit
                ));
            }
        }
        p
    }

    /// A complete example (the seven services on a helper-script LXC migration).
    pub fn example() -> Config {
        let arr = |name: &str, port: u16, app: App, db: &str, rewrites: &[(&str, &str)]| Service {
            name: name.into(),
            units: vec![format!("{name}.service")],
            config_dir: PathBuf::from(format!("/home/mms/config/{name}")),
            health: Health {
                url: format!("http://127.0.0.1:{port}/ping"),
                expect_status: 200,
                expect_body: Some("OK".into()),
                start_period_s: 60,
                interval_s: 5,
            },
            migrate: Some(Migrate {
                app: Some(app),
                host: None,
                container_config: default_container_config(),
                source_units: vec![format!("{name}.service")],
                sources: vec![SourceDir {
                    from: PathBuf::from(format!("/var/lib/{name}")),
                    to: PathBuf::from("."),
                }],
                sqlite: vec![PathBuf::from(db), PathBuf::from("logs.db")],
                rewrites: rewrites
                    .iter()
                    .map(|(f, t)| Rewrite {
                        from: (*f).into(),
                        to: (*t).into(),
                    })
                    .collect(),
            }),
            podman_secrets: BTreeMap::new(),
            postgres: None,
        };
        let dl: &[(&str, &str)] = &[("/downloads", "/data/usenet")];
        Config {
            user: User {
                name: "mms".into(),
                uid: 1100,
                gid: 1100,
                home: PathBuf::from("/home/mms"),
            },
            paths: Paths::default(),
            tailscale: Tailscale {
                hostname: "mms".into(),
                rebuild: false,
                auth_key_secret: default_auth_key_secret(),
                serve: BTreeMap::from([
                    (443, "http://127.0.0.1:8096".to_string()),
                    (7878, "http://127.0.0.1:7878".to_string()),
                ]),
                up_timeout_s: default_up_timeout(),
                serve_timeout_s: default_serve_timeout(),
            },
            state: StateSource::Migrate(MigrateFrom {
                kind: SourceKind::Lxc,
                host: "old-lxc.lan".into(),
                user: "root".into(),
                port: 22,
                ssh_key_secret: default_ssh_key_secret(),
            }),
            services: vec![
                arr("prowlarr", 9696, App::Prowlarr, "prowlarr.db", &[]),
                arr(
                    "radarr",
                    7878,
                    App::Radarr,
                    "radarr.db",
                    &[("/movies", "/data/media/movies"), dl[0]],
                ),
                Service {
                    name: "sabnzbd".into(),
                    units: vec!["sabnzbd.service".into()],
                    config_dir: PathBuf::from("/home/mms/config/sabnzbd"),
                    health: Health {
                        url: "http://127.0.0.1:8080/api?mode=version".into(),
                        expect_status: 200,
                        expect_body: None,
                        start_period_s: 30,
                        interval_s: 5,
                    },
                    migrate: Some(Migrate {
                        app: None,
                        container_config: default_container_config(),
                        host: Some("old-sabnzbd.lan".into()),
                        source_units: vec!["sabnzbd.service".into()],
                        sources: vec![SourceDir {
                            from: PathBuf::from("/root/.sabnzbd"),
                            to: PathBuf::from("."),
                        }],
                        sqlite: vec![PathBuf::from("admin/history1.db")],
                        rewrites: vec![
                            Rewrite {
                                from: "/root/Downloads".into(),
                                to: "/data/usenet".into(),
                            },
                            Rewrite {
                                from: "/downloads".into(),
                                to: "/data/usenet".into(),
                            },
                        ],
                    }),
                    podman_secrets: BTreeMap::new(),
                    postgres: None,
                },
                Service {
                    name: "jellyfin".into(),
                    units: vec!["jellyfin.service".into()],
                    config_dir: PathBuf::from("/home/mms/config/jellyfin"),
                    health: Health {
                        url: "http://127.0.0.1:8096/health".into(),
                        expect_status: 200,
                        expect_body: Some("Healthy".into()),
                        start_period_s: 180,
                        interval_s: 10,
                    },
                    // Debian package layout → linuxserver layout; the layout rewrites
                    // (/etc/jellyfin → /config, /var/lib/jellyfin → /config/data) are derived.
                    migrate: Some(Migrate {
                        app: None,
                        host: None,
                        source_units: vec!["jellyfin.service".into()],
                        sources: vec![
                            SourceDir {
                                from: PathBuf::from("/etc/jellyfin"),
                                to: PathBuf::from("."),
                            },
                            SourceDir {
                                from: PathBuf::from("/var/lib/jellyfin"),
                                to: PathBuf::from("data"),
                            },
                        ],
                        sqlite: vec![PathBuf::from("data/data/jellyfin.db")],
                        container_config: default_container_config(),
                        rewrites: vec![
                            Rewrite {
                                from: "/var/cache/jellyfin".into(),
                                to: "/config/cache".into(),
                            },
                            Rewrite {
                                from: "/movies".into(),
                                to: "/data/media/movies".into(),
                            },
                        ],
                    }),
                    podman_secrets: BTreeMap::new(),
                    postgres: None,
                },
                Service {
                    name: "immich".into(),
                    units: vec![
                        "immich-postgres.service".into(),
                        "immich-redis.service".into(),
                        "immich-machine-learning.service".into(),
                        "immich-server.service".into(),
                    ],
                    config_dir: PathBuf::from("/home/mms/config/immich"),
                    health: Health {
                        url: "http://127.0.0.1:2283/api/server/ping".into(),
                        expect_status: 200,
                        expect_body: Some("pong".into()),
                        start_period_s: 120,
                        interval_s: 10,
                    },
                    migrate: Some(Migrate {
                        app: None,
                        container_config: default_container_config(),
                        host: None,
                        source_units: vec!["immich-web.service".into(), "immich-ml.service".into()],
                        sources: vec![SourceDir {
                            from: PathBuf::from("/opt/immich/upload"),
                            to: PathBuf::from("/data/photos"),
                        }],
                        sqlite: vec![],
                        rewrites: vec![],
                    }),
                    podman_secrets: BTreeMap::from([(
                        "immich_db_password".to_string(),
                        "immich_db_password".to_string(),
                    )]),
                    postgres: Some(Postgres {
                        container: "immich_postgres".into(),
                        unit: "immich-postgres.service".into(),
                        user: "postgres".into(),
                        source_dump_command: default_source_dump(),
                    }),
                },
            ],
            health_deadline_s: default_health_deadline(),
            network: None,
        }
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// serde-saphyr's message without its own location prefix and source snippet.
fn plain_message(full: &str) -> String {
    let first = full.lines().next().unwrap_or(full);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((pos, rest)) if pos.contains(" column ") => rest.to_string(),
        _ => first.to_string(),
    }
}

/// A file name without directories.
fn is_file_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/')
}

/// `name.service`, `name.target`, … with the characters systemd allows.
fn is_unit_name(s: &str) -> bool {
    let Some((base, suffix)) = s.rsplit_once('.') else {
        return false;
    };
    !base.is_empty()
        && matches!(suffix, "service" | "target" | "socket" | "timer" | "mount")
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':' | '\\'))
}

impl fmt::Display for StateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateSource::Fresh => f.write_str("fresh install"),
            StateSource::Restore(_) => f.write_str("restore the newest backup"),
            StateSource::Migrate(m) => write!(
                f,
                "migrate from {} {}@{}:{}",
                match m.kind {
                    SourceKind::Lxc => "LXC host",
                    SourceKind::PreviousVm => "previous VM",
                },
                m.user,
                m.host,
                m.port
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_round_trips_through_yaml() {
        let c = Config::example();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let y = c.to_yaml().unwrap();
        let back = Config::from_yaml(Path::new("x.yml"), &y).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let y = "user: {name: mms, uid: 1100, gid: 1100, home: /home/mms}\n\
                 tailscale: {hostname: mms}\nstate: fresh\nservices: []\n";
        let c = Config::from_yaml(Path::new("f.yml"), y).unwrap();
        assert_eq!(c.paths, Paths::default());
        assert_eq!(c.state, StateSource::Fresh);
        assert_eq!(c.tailscale.enroll_hostname(), "mms");
        assert_eq!(c.health_deadline_s, 900);
    }

    #[test]
    fn cutover_address_reads_and_is_checked() {
        let base = "user: {name: mms, uid: 1100, gid: 1100, home: /home/mms}\n\
                    tailscale: {hostname: mms, rebuild: true}\nstate: fresh\nservices: []\n";
        let y = format!(
            "{base}network: {{address: 192.168.1.50, prefix: 24, gateway: 192.168.1.1, dns: [192.168.1.1, '2606:4700:4700::1111']}}\n"
        );
        let c = Config::from_yaml(Path::new("f.yml"), &y).unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.network.as_ref().map(|n| n.dns.len()), Some(2));
        let bad = format!(
            "{base}network: {{address: 192.168.1.50, prefix: 24, gateway: 10.0.0.1, dns: []}}\n"
        );
        let Err(LoadError::Invalid { problems, .. }) = Config::from_yaml(Path::new("f.yml"), &bad)
        else {
            panic!("validated on load")
        };
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("network.gateway: 10.0.0.1")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("network.dns")),
            "{problems:?}"
        );
        let e = Config::from_yaml(
            Path::new("f.yml"),
            &format!("{base}network: {{address: 192.168.1.300, prefix: 24, gateway: 192.168.1.1, dns: []}}\n"),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("f.yml:5:"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let y = "user: {name: mms, uid: 1100, gid: 1100, home: /home/mms}\n\
                 tailscale: {hostname: mms}\nstate: fresh\nservices: []\nbogus: 1\n";
        let e = Config::from_yaml(Path::new("/etc/mms/firstboot.yml"), y).unwrap_err();
        let LoadError::Parse { line, column, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!((*line, *column), (5, 1));
        let msg = e.to_string();
        assert!(
            msg.starts_with("/etc/mms/firstboot.yml:5:1: unknown field `bogus`"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn state_variants_parse() {
        let base = "user: {name: mms, uid: 1100, gid: 1100, home: /home/mms}\n\
                    tailscale: {hostname: mms, rebuild: true}\nservices: []\n";
        let c = Config::from_yaml(
            Path::new("f"),
            &format!(
                "{base}state: {{migrate: {{kind: previous_vm, host: mms.tail, user: mms}}}}\n"
            ),
        )
        .unwrap();
        let StateSource::Migrate(m) = &c.state else {
            panic!()
        };
        assert_eq!(m.kind, SourceKind::PreviousVm);
        assert_eq!(m.port, 22);
        assert_eq!(c.tailscale.enroll_hostname(), "mms-next");
        let c = Config::from_yaml(Path::new("f"), &format!("{base}state: {{restore: {{}}}}\n"))
            .unwrap();
        assert_eq!(
            c.state,
            StateSource::Restore(Restore {
                identity_secret: None
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn loader_never_panics(text in "\\PC{0,400}") {
            let _ = Config::from_yaml(Path::new("f.yml"), &text);
        }

        #[test]
        fn loader_never_panics_on_yaml_shaped_input(
            keys in proptest::collection::vec("(user|paths|tailscale|state|services|name|uid|x)", 0..6),
            vals in proptest::collection::vec("(1100|-1|mms|\\[\\]|\\{\\}|fresh|/a|~|'')", 0..6),
        ) {
            let text: String = keys.iter().zip(vals.iter()).map(|(k, v)| format!("{k}: {v}\n")).collect();
            let _ = Config::from_yaml(Path::new("f.yml"), &text);
        }
    }

    #[test]
    fn invalid_values_are_all_reported() {
        let mut c = Config::example();
        c.user.uid = 0;
        c.tailscale.hostname = "bad_name".into();
        c.services[0].config_dir = PathBuf::from("relative");
        c.services[0].units.push("nounit".into());
        c.services[1]
            .migrate
            .as_mut()
            .unwrap()
            .rewrites
            .push(Rewrite {
                from: "/".into(),
                to: "/data".into(),
            });
        let p = c.validate();
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(
            p.iter()
                .any(|m| m.contains("services[0] (prowlarr).config_dir"))
        );
    }
}

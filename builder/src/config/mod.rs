//! The site config `mms.yml`: parse → defaults → validate into typed [`Site`].
//!
//! Loading is layered. [`crate::yaml::parse`] turns the text into a tree that
//! keeps every value's line and column; [`decode`] walks it with the key names
//! of the documented file model ([`mod@file`]), applies defaults and checks each
//! value; cross-field rules (ports, mounts, serve targets) run last. Every
//! problem is collected, so one run of `mms-build check` names all of them.
//! Everything here is pure except [`load`], which reads the file.

pub mod calendar;
mod decode;
pub mod file;
pub mod net;

use crate::catalog::Catalog;
use crate::yaml::{Diagnostic, Severity};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

pub use decode::decode;

/// Validated settings of `mms.yml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// The `mms.yml` that was read.
    pub path: PathBuf,
    pub proxmox: ProxmoxConfig,
    pub vm: VmConfig,
    pub site: SiteConfig,
    pub nfs: NfsConfig,
    /// Enabled catalog service names, as listed.
    pub services: Vec<String>,
    pub tailscale: TailscaleConfig,
    pub backup: BackupConfig,
    pub migrate: Option<MigrateConfig>,
    /// Container name → image override.
    pub images: BTreeMap<String, String>,
    /// Resolved path of the secrets file.
    pub secrets_file: PathBuf,
}

/// Proxmox VE connection and placement.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxmoxConfig {
    /// `https://host:port`, no trailing slash.
    pub endpoint: String,
    pub node: String,
    /// `user@realm!name`.
    pub token_id: String,
    pub tls: TlsTrust,
    pub template: TemplateRef,
    pub storage: String,
    pub iso_storage: String,
    pub bridge: String,
    pub pool: Option<String>,
}

/// How the API certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// SHA-256 of the server certificate (DER).
    Fingerprint([u8; 32]),
    /// A CA certificate file (PEM), resolved relative to `mms.yml`.
    CaFile(PathBuf),
}

/// The template VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRef {
    Name(String),
    Vmid(u32),
}

/// The appliance VM.
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    pub name: String,
    pub os: VmOs,
    pub cores: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
    pub network: VmNetwork,
    pub ssh_authorized_keys: Vec<String>,
}

/// Guest OS of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmOs {
    #[default]
    Fedora,
    Debian,
}

/// VM addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmNetwork {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
        dns: Vec<IpAddr>,
        /// The address of a rebuild's new VM until cut-over (same prefix); `None`: DHCP.
        rebuild: Option<Ipv4Addr>,
    },
}

/// Site-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    pub timezone: String,
    pub user: UserConfig,
    pub lan_ssh: bool,
}

/// The unprivileged user all containers run under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// NFS mounts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NfsConfig {
    /// Empty when no `nfs:` section is given (then /data is local disk).
    pub server: String,
    /// Sorted by mount point.
    pub mounts: Vec<NfsMount>,
}

/// One NFS mount: mount point in the VM ← export on the NAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMount {
    pub mount_point: String,
    pub export: String,
}

impl NfsConfig {
    /// The mount that holds `path` (longest mount point that is a path prefix).
    pub fn mount_for(&self, path: &str) -> Option<&NfsMount> {
        self.mounts
            .iter()
            .filter(|m| net::path_within(path, &m.mount_point))
            .max_by_key(|m| m.mount_point.len())
    }
}

/// Tailscale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleConfig {
    pub hostname: String,
    pub serve: Vec<ServePort>,
}

/// A service served over HTTPS on the tailnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServePort {
    pub service: String,
    pub port: u16,
}

/// Backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    /// Empty = encryption off (warned).
    pub recipients: Vec<String>,
    pub target: String,
    pub schedule: BackupSchedule,
    pub retention: Retention,
}

/// OnCalendar expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSchedule {
    pub config: String,
    pub photos: String,
}

/// Retention counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

/// Migration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateConfig {
    pub from: MigrateFrom,
    /// Service → source paths (only services given in `migrate.sources`).
    pub sources: BTreeMap<String, Vec<String>>,
    /// Old path → new path under /data.
    pub path_map: BTreeMap<String, String>,
}

/// The old host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateFrom {
    pub host: String,
    pub user: String,
    pub port: u16,
    pub proxmox_vmid: Option<u32>,
}

/// A config that decoded, with its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub site: Site,
    pub catalog: Catalog,
    pub warnings: Vec<Diagnostic>,
}

/// Every problem found in a config (and the warnings seen on the way).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl ConfigErrors {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }
}

fn render(diags: &[Diagnostic]) -> String {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut out = format!(
        "{errors} problem{} in the site config:",
        if errors == 1 { "" } else { "s" }
    );
    for d in diags {
        out.push('\n');
        out.push_str(&d.to_string());
    }
    out
}

/// Reads `path` and the services catalog (built-in + `services/` beside it) and
/// decodes the site config.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let one = |message: String| {
        ConfigErrors(vec![Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            loc: Default::default(),
            path: String::new(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| one(format!("cannot read the site config: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let catalog = Catalog::load_with_dir(&dir.join("services")).map_err(|errs| {
        ConfigErrors(
            errs.into_iter()
                .map(|e| Diagnostic {
                    severity: Severity::Error,
                    file: PathBuf::from("services"),
                    loc: Default::default(),
                    path: String::new(),
                    message: e.0,
                })
                .collect(),
        )
    })?;
    let (site, diags) = decode(path, &text, &catalog);
    match site {
        Some(site) if !diags.iter().any(|d| d.severity == Severity::Error) => Ok(Loaded {
            site,
            catalog,
            warnings: diags,
        }),
        _ => Err(ConfigErrors(diags)),
    }
}

//! TEMPORARY stand-in for the lead's `config`/`catalog` API (prompts/config-api.md) so the
//! renderer compiles and is tested before those modules land on `main`. Replaced by
//! `crate::config` / `crate::catalog` at the first merge; nothing outside `render` uses it.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Site {
    pub path: PathBuf,
    pub vm: VmConfig,
    pub site: SiteConfig,
    pub nfs: NfsConfig,
    pub services: Vec<String>,
    pub tailscale: TailscaleConfig,
    pub backup: BackupConfig,
    pub migrate: Option<MigrateConfig>,
    pub images: BTreeMap<String, String>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmOs {
    Fedora,
    Debian,
}
#[derive(Debug, Clone)]
pub enum VmNetwork {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
        dns: Vec<IpAddr>,
    },
}
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub name: String,
    pub os: VmOs,
    pub network: VmNetwork,
    pub ssh_authorized_keys: Vec<String>,
}
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub timezone: String,
    pub user: UserConfig,
    pub lan_ssh: bool,
}
#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}
#[derive(Debug, Clone)]
pub struct NfsConfig {
    pub server: String,
    pub mounts: Vec<NfsMount>,
}
#[derive(Debug, Clone)]
pub struct NfsMount {
    pub mount_point: String,
    pub export: String,
}
#[derive(Debug, Clone)]
pub struct TailscaleConfig {
    pub hostname: String,
    pub serve: Vec<ServePort>,
}
#[derive(Debug, Clone)]
pub struct ServePort {
    pub service: String,
    pub port: u16,
}
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub recipients: Vec<String>,
    pub target: String,
    pub schedule: BackupSchedule,
    pub retention: Retention,
}
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    pub config: String,
    pub photos: String,
}
#[derive(Debug, Clone)]
pub struct Retention {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    pub from: MigrateFrom,
    pub sources: BTreeMap<String, Vec<String>>,
}
#[derive(Debug, Clone)]
pub struct MigrateFrom {
    pub host: String,
    pub user: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub services: BTreeMap<String, ServiceDef>,
}
impl Catalog {
    pub fn get(&self, name: &str) -> Option<&ServiceDef> {
        self.services.get(name)
    }
}
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: String,
    pub description: String,
    pub containers: Vec<ContainerDef>,
    pub health: HealthCheck,
    pub backup: BackupMethod,
}
#[derive(Debug, Clone)]
pub enum BackupMethod {
    Archive { paths: Vec<String> },
    PgDumpall { container: String, user: String },
}
#[derive(Debug, Clone)]
pub struct ContainerDef {
    pub name: String,
    pub image: String,
    pub ports: Vec<PortDef>,
    pub volumes: Vec<VolumeDef>,
    pub environment: BTreeMap<String, EnvValue>,
    pub health: Option<HealthCheck>,
    pub network_aliases: Vec<String>,
    pub after: Vec<String>,
    pub auto_update: bool,
    pub run_as: u32,
    pub shm_size: Option<String>,
}
#[derive(Debug, Clone)]
pub struct PortDef {
    pub host: u16,
    pub container: u16,
}
#[derive(Debug, Clone)]
pub enum EnvValue {
    Literal(String),
    Secret(String),
    Setting(Setting),
}
#[derive(Debug, Clone, Copy)]
pub enum Setting {
    Timezone,
    Uid,
    Gid,
}
#[derive(Debug, Clone)]
pub struct VolumeDef {
    pub source: VolumeSource,
    pub target: String,
    pub read_only: bool,
}
#[derive(Debug, Clone)]
pub enum VolumeSource {
    Config(String),
    Shared(String),
    Data(String),
    Named(String),
}
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub port: u16,
    pub expect_status: u16,
    pub expect_body: Option<String>,
    pub start_period_s: u32,
    pub interval_s: u32,
}

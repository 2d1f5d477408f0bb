//! The documented file format of `mms.yml`, as types.
//!
//! These types exist for `mms-build schema` (editors complete and check
//! `mms.yml` with the JSON Schema made from them) and as the single source of
//! the key names the decoder accepts ([`keys_of`]). Loading does not go through
//! serde: see [`super::decode`], which reports every problem at once.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `mms.yml`: one site of the MMS media stack.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    /// How to reach Proxmox VE and where the VM goes.
    pub proxmox: ProxmoxFile,
    /// The appliance VM.
    pub vm: VmFile,
    /// Site-wide settings.
    #[serde(default)]
    pub site: Option<SiteSectionFile>,
    /// NFS exports of the NAS, mounted in the VM.
    #[serde(default)]
    pub nfs: Option<NfsFile>,
    /// Enabled services (names of `services/*.yml`).
    pub services: Vec<String>,
    /// Tailscale enrollment and HTTPS serving.
    pub tailscale: TailscaleFile,
    /// Encrypted backups.
    #[serde(default)]
    pub backup: Option<BackupFile>,
    /// First build only: where to take existing state from.
    #[serde(default)]
    pub migrate: Option<MigrateFile>,
    /// Image override per container name (e.g. your own registry mirror).
    #[serde(default)]
    pub images: Option<BTreeMap<String, String>>,
    /// The age-encrypted secrets file (default: `secrets.age` beside `mms.yml`).
    #[serde(default)]
    pub secrets_file: Option<String>,
}

/// Proxmox VE connection and placement.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxFile {
    /// API endpoint, e.g. `https://pve.example.lan:8006`.
    pub endpoint: String,
    /// Node name, e.g. `pve`.
    pub node: String,
    /// API token id `user@realm!name`; the secret part comes from the secrets file.
    pub token_id: String,
    /// SHA-256 fingerprint of the API certificate (`AB:CD:…`, 32 bytes).
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    /// Or: a CA certificate file (PEM) that signed the API certificate.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Template VM: name or numeric VMID.
    pub template: TemplateFile,
    /// Storage for VM disks.
    pub storage: String,
    /// Storage for the seed ISO (content type iso).
    pub iso_storage: String,
    /// Network bridge.
    pub bridge: String,
    /// Resource pool (optional).
    #[serde(default)]
    pub pool: Option<String>,
}

/// A template given by name or VMID.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TemplateFile {
    Vmid(u32),
    Name(String),
}

/// The appliance VM.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmFile {
    /// VM name (a DNS label); the new VM is `<name>-next` until cut-over.
    pub name: String,
    /// Guest OS of the template: `fedora` (default) or `debian`.
    #[serde(default)]
    pub os: Option<String>,
    /// vCPUs (1–128, default 4).
    #[serde(default)]
    pub cores: Option<u32>,
    /// Memory in MiB (2048–1048576, default 8192).
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// System disk in GiB (16–65536, default 64).
    #[serde(default)]
    pub disk_gib: Option<u32>,
    /// `{ ipv4: dhcp }` (default) or `{ ipv4: 192.168.1.50/24, gateway: …, dns: [...] }`.
    #[serde(default)]
    pub network: Option<NetworkFile>,
    /// SSH public keys for the admin user.
    #[serde(default)]
    pub ssh_authorized_keys: Option<Vec<String>>,
}

/// VM addressing.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// `dhcp` or an address with prefix length, e.g. `192.168.1.50/24`.
    pub ipv4: String,
    /// Default gateway (static only).
    #[serde(default)]
    pub gateway: Option<String>,
    /// DNS servers (static only; default: the gateway).
    #[serde(default)]
    pub dns: Option<Vec<String>>,
    /// Static only: the address a rebuild's new VM uses while the old VM still holds `ipv4`
    /// (`dhcp`, the default, or another host address of the subnet); the new VM takes
    /// `ipv4` at cut-over.
    #[serde(default)]
    pub rebuild_ipv4: Option<String>,
}

/// Site-wide settings.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteSectionFile {
    /// IANA time zone, e.g. `Europe/Berlin` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The unprivileged user every container runs under (default mms 1100:1100).
    #[serde(default)]
    pub user: Option<UserFile>,
    /// Allow SSH from the LAN (default false: SSH only over Tailscale).
    #[serde(default)]
    pub lan_ssh: Option<bool>,
}

/// The container user.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub name: String,
    /// 1000–60000 (rootless podman needs subuid ranges).
    pub uid: u32,
    /// 1000–60000.
    pub gid: u32,
}

/// NFS mounts.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NfsFile {
    /// NAS host name or IPv4 address.
    pub server: String,
    /// Mount point in the VM (under /data) → export path on the NAS.
    pub mounts: BTreeMap<String, String>,
}

/// Tailscale.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TailscaleFile {
    /// Machine name on the tailnet.
    pub hostname: String,
    /// Service → HTTPS port on the tailnet.
    #[serde(default)]
    pub serve: Option<BTreeMap<String, u16>>,
}

/// Backups.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// age recipients (`age1…`) or SSH public keys; empty = encryption off.
    #[serde(default)]
    pub recipients: Option<Vec<String>>,
    /// Where archives go in the VM (default /data/backups).
    #[serde(default)]
    pub target: Option<String>,
    /// systemd OnCalendar expressions.
    #[serde(default)]
    pub schedule: Option<ScheduleFile>,
    /// How many archives to keep.
    #[serde(default)]
    pub retention: Option<RetentionFile>,
}

/// Backup schedules (systemd OnCalendar syntax).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Config backups (default `*-*-* 03:00:00`).
    #[serde(default)]
    pub config: Option<String>,
    /// Photo library copy (default `Sun *-*-* 04:00:00`).
    #[serde(default)]
    pub photos: Option<String>,
}

/// Retention: newest archive per day/ISO week/month (restic's rule).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    #[serde(default)]
    pub daily: Option<u32>,
    #[serde(default)]
    pub weekly: Option<u32>,
    #[serde(default)]
    pub monthly: Option<u32>,
}

/// Migration source (first build only).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateFile {
    /// The old host (LXC or VM) reached over SSH.
    pub from: MigrateFromFile,
    /// Per service: source path(s), overriding the catalog's defaults.
    #[serde(default)]
    pub sources: Option<BTreeMap<String, SourcePaths>>,
    /// Old media path → new path under /data, rewritten in the apps' databases.
    #[serde(default)]
    pub path_map: Option<BTreeMap<String, String>>,
}

/// One path or a list of paths.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SourcePaths {
    One(String),
    Many(Vec<String>),
}

/// The migration source host.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateFromFile {
    pub host: String,
    /// Default root.
    #[serde(default)]
    pub user: Option<String>,
    /// Default 22.
    #[serde(default)]
    pub port: Option<u16>,
    /// Proxmox VMID of the source container: it is snapshotted first.
    #[serde(default)]
    pub proxmox_vmid: Option<u32>,
}

/// The property names of a schema type: the keys the decoder accepts.
pub fn keys_of<T: JsonSchema>() -> Vec<String> {
    let schema = schemars::schema_for!(T);
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The JSON Schema of `mms.yml`.
pub fn site_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(SiteFile)).unwrap_or_default()
}

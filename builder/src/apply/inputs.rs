//! The narrow seam between the site (config, secrets, rendered bundle) and the
//! Proxmox flow: everything `flow` needs and nothing more.

use super::plan::{Desired, hash16};
use crate::config::{Site, TemplateRef, TlsTrust};
use crate::proxmox::{ClientSettings, Trust};
use crate::secrets::{Secret, Secrets};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// The rendered bundle as the flow needs it.
#[derive(Clone)]
pub struct Bundle {
    /// The bundle's SHA-256 (hex).
    pub hash: String,
    /// The seed ISO's bytes (no secrets in it).
    pub seed_iso: Vec<u8>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("hash", &self.hash)
            .field("seed_iso_bytes", &self.seed_iso.len())
            .finish()
    }
}

impl Bundle {
    /// Reads a bundle written by `mms-build render --out DIR`: `plan.json`
    /// (`bundle_sha256`) and `seed.iso`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let plan_path = dir.join("plan.json");
        let text = std::fs::read_to_string(&plan_path)
            .with_context(|| format!("reading {}", plan_path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not JSON", plan_path.display()))?;
        let hash = v
            .get("bundle_sha256")
            .and_then(serde_json::Value::as_str)
            .with_context(|| format!("{}: no \"bundle_sha256\" string", plan_path.display()))?
            .to_owned();
        if hash.len() < 16 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!(
                "{}: bundle_sha256 {hash:?} is not a hex SHA-256",
                plan_path.display()
            );
        }
        let iso_path = dir.join("seed.iso");
        let seed_iso =
            std::fs::read(&iso_path).with_context(|| format!("reading {}", iso_path.display()))?;
        Ok(Bundle { hash, seed_iso })
    }
}

/// Everything the apply flow needs.
#[derive(Debug, Clone)]
pub struct ApplyInputs {
    /// Proxmox node.
    pub node: String,
    /// The template to clone.
    pub template: TemplateRef,
    /// Storage for VM disks.
    pub storage: String,
    /// Optional pool.
    pub pool: Option<String>,
    /// The desired state for planning.
    pub desired: Desired,
    /// The bundle rendered for a first build.
    pub bundle: Bundle,
    /// The bundle rendered for a rebuild (state pulled from the running VM), when
    /// rendering in memory; `None` for a pre-rendered `--bundle`.
    pub rebuild_bundle: Option<Bundle>,
    /// Secrets to write into the VM: (file name, value). Never the token secret.
    pub secrets: Vec<(String, Secret)>,
}

impl ApplyInputs {
    /// Builds the inputs from the site, its secrets and the rendered bundle.
    pub fn new(
        site: &Site,
        secrets: &Secrets,
        bundle: Bundle,
        rebuild_bundle: Option<Bundle>,
    ) -> Result<Self> {
        let mut delivered = Vec::new();
        for name in secrets.names() {
            if name == "proxmox_token_secret" {
                continue;
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                bail!("secret name {name:?} cannot be a file name (expected [a-z0-9_]+)");
            }
            if let Some(s) = secrets.get(name) {
                delivered.push((name.to_owned(), s.clone()));
            }
        }
        Ok(ApplyInputs {
            node: site.proxmox.node.clone(),
            template: site.proxmox.template.clone(),
            storage: site.proxmox.storage.clone(),
            pool: site.proxmox.pool.clone(),
            desired: Desired {
                name: site.vm.name.clone(),
                hash16: hash16(&bundle.hash),
                accept: Vec::new(),
                cores: site.vm.cores,
                memory_mib: site.vm.memory_mib,
                disk_gib: site.vm.disk_gib,
                bridge: site.proxmox.bridge.clone(),
                iso_storage: site.proxmox.iso_storage.clone(),
                migrate_vmid: site.migrate.as_ref().and_then(|m| m.from.proxmox_vmid),
            },
            bundle,
            rebuild_bundle,
            secrets: delivered,
        })
    }
}

/// Client settings from the site: endpoint, token, TLS trust (`--insecure` overrides).
pub fn client_settings(site: &Site, secrets: &Secrets, insecure: bool) -> Result<ClientSettings> {
    let secret = secrets.get("proxmox_token_secret").context(
        "secret proxmox_token_secret is missing: add it to the secrets file (mms-build secrets edit) or set MMS_SECRET_PROXMOX_TOKEN_SECRET",
    )?;
    let trust = if insecure {
        Trust::Insecure
    } else {
        match &site.proxmox.tls {
            TlsTrust::Fingerprint(fp) => Trust::Fingerprint(*fp),
            TlsTrust::CaFile(p) => Trust::CaFile(p.clone()),
        }
    };
    Ok(ClientSettings::new(
        &site.proxmox.endpoint,
        &site.proxmox.token_id,
        secret.expose(),
        trust,
    ))
}

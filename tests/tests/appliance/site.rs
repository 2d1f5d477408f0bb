//! The test's variant of the example site (`examples/homelab/mms.yml`): same services,
//! schedules, recipients and secrets (encrypted to the public example identity), changed only
//! where a VM on this machine needs it:
//!
//! - `vm.os: debian` (the Debian 13 test image; Fedora mirrors are unreachable here),
//! - `vm.ssh_authorized_keys`: the throw-away key of this run,
//! - `site.lan_ssh: true`: the harness reaches SSH through QEMU's user-mode NAT, which arrives
//!   from the LAN side (the default zone stays `drop`; only the ssh service is added to it),
//! - `nfs`: the loopback NFS server of the test image (`127.0.0.1:/srv/nfs/…`),
//! - `images`: every container → its local stand-in image (no registry is reachable).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// One container of the site and the stand-in that plays it.
#[derive(Debug, Clone)]
pub struct Container {
    /// Container name (= unit base name).
    pub name: String,
    /// Stand-in image reference used in the `images:` override.
    pub image: String,
    /// Stand-in role (`mms-standin serve ROLE`, or `postgres`).
    pub role: String,
    /// Whether the catalog gives the container a health command.
    pub has_health: bool,
}

/// The written test site.
#[derive(Debug)]
pub struct TestSite {
    /// `mms.yml` of the variant.
    pub config: PathBuf,
    /// The example identity (public on purpose) that decrypts secrets and backups.
    pub identity: PathBuf,
    /// Every container of the enabled services.
    pub containers: Vec<Container>,
    /// Enabled services, as listed.
    pub services: Vec<String>,
    /// Appliance user name, uid, gid.
    pub user: (String, u32, u32),
    /// Backup target in the VM.
    pub backup_target: String,
}

/// The stand-in role for a catalog container; `None` when no stand-in exists (the test then
/// fails naming the container: a new catalog container needs a stand-in).
pub fn role_for(container: &str) -> Option<&'static str> {
    Some(match container {
        "prowlarr" => "prowlarr",
        "radarr" => "radarr",
        "sonarr" => "sonarr",
        "lidarr" => "lidarr",
        "sabnzbd" => "sabnzbd",
        "jellyfin" => "jellyfin",
        "immich-server" => "immich-server",
        "immich-machine-learning" => "immich-machine-learning",
        "immich-postgres" => "postgres",
        "immich-redis" => "valkey",
        _ => return None,
    })
}

/// Writes the variant into `dir` and returns what the test needs to know about it.
pub fn write(repo: &Path, dir: &Path, ssh_pubkey: &str) -> Result<TestSite> {
    let example_dir = repo.join("examples/homelab");
    let example = example_dir.join("mms.yml");
    let text =
        fs::read_to_string(&example).with_context(|| format!("read {}", example.display()))?;
    let mut v: Value =
        serde_saphyr::from_str(&text).map_err(|e| anyhow!("parse {}: {e}", example.display()))?;

    // The catalog as the builder sees it (services/*.yml of this checkout).
    let loaded = mms_builder::config::load(&example)
        .map_err(|e| anyhow!("load {}: {e:?}", example.display()))?;
    let mut containers = Vec::new();
    for service in &loaded.site.services {
        let def = loaded
            .catalog
            .get(service)
            .ok_or_else(|| anyhow!("service {service} is not in the catalog"))?;
        for c in &def.containers {
            let role = role_for(&c.name).ok_or_else(|| {
                anyhow!(
                    "container {:?} of service {service} has no stand-in; add one to \
                     tests/standin and tests/tests/appliance/site.rs",
                    c.name
                )
            })?;
            containers.push(Container {
                name: c.name.clone(),
                image: format!("localhost/mms-standin/{}:test", c.name),
                role: role.to_string(),
                has_health: c.health_cmd.is_some(),
            });
        }
    }
    let images: BTreeMap<&str, &str> = containers
        .iter()
        .map(|c| (c.name.as_str(), c.image.as_str()))
        .collect();

    let obj = v
        .as_object_mut()
        .ok_or_else(|| anyhow!("{}: not a mapping", example.display()))?;
    let section = |obj: &mut serde_json::Map<String, Value>, k: &str| -> Result<()> {
        if !obj.get(k).is_some_and(Value::is_object) {
            bail!("{}: `{k}` is not a mapping", example.display());
        }
        Ok(())
    };
    for k in ["vm", "site", "nfs"] {
        section(obj, k)?;
    }
    obj["vm"]["os"] = json!("debian");
    obj["vm"]["ssh_authorized_keys"] = json!([ssh_pubkey.trim()]);
    obj["site"]["lan_ssh"] = json!(true);
    obj["nfs"] = json!({
        "server": "127.0.0.1",
        "mounts": {
            "/data": "/srv/nfs/data",
            "/data/photos": "/srv/nfs/photos",
            "/data/backups": "/srv/nfs/backups",
        }
    });
    obj.insert("images".into(), json!(images));
    obj.insert(
        "secrets_file".into(),
        json!(example_dir.join("secrets.age").display().to_string()),
    );

    fs::create_dir_all(dir)?;
    let config = dir.join("mms.yml");
    // JSON is YAML: the loader reads it like any mms.yml.
    let body = format!(
        "# Appliance VM test variant of examples/homelab/mms.yml (tests/tests/appliance/site.rs)\n{}\n",
        serde_json::to_string_pretty(&v)?
    );
    fs::write(&config, body)?;
    let site = mms_builder::config::load(&config)
        .map_err(|e| anyhow!("the test site {} does not load: {e:?}", config.display()))?
        .site;
    Ok(TestSite {
        config,
        identity: example_dir.join("example-identity.txt"),
        containers,
        services: site.services.clone(),
        user: (
            site.site.user.name.clone(),
            site.site.user.uid,
            site.site.user.gid,
        ),
        backup_target: site.backup.target.clone(),
    })
}

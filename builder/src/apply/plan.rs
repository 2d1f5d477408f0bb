//! Pure planning: what exists on Proxmox (names, tags, config, firstboot
//! status) versus what the site wants → the actions `--apply` would take.
//!
//! Everything needed to resume is read from Proxmox: the `-next` VM is found by
//! name and marker, its progress by its config and its firstboot status, the old
//! VM by name and tags. No local state. The flow (`flow.rs`) executes the
//! actions in order; a re-run observes again and plans only what is left.

use std::collections::BTreeMap;
use std::fmt;

/// Tag on every VM MMS manages.
pub const TAG: &str = "mms";
/// Tag on a VM retired by a cut-over (kept for rollback).
pub const RETIRED_TAG: &str = "mms-retired";
/// Marker at the start of the description of every VM MMS clones.
pub const DESCRIPTION_MARKER: &str = "mms-build bundle ";
/// Written last, after every secret: firstboot's `wait-secrets` waits for it.
pub const SECRETS_COMPLETE: &str = "/etc/mms/secrets/.complete";
/// The one-time private key for the old→new state pull, on the new VM: the secret
/// file firstboot's `previous_vm` migration reads (render's `secret_files::MIGRATE_SSH_KEY`).
pub const REBUILD_KEY: &str = "/etc/mms/secrets/migrate_ssh_key";
/// The secret name of [`REBUILD_KEY`]; the user's own `migrate_ssh_key` (for an LXC
/// migration) is not delivered on a rebuild.
pub const MIGRATE_KEY_SECRET: &str = "migrate_ssh_key";
/// The old VM's root authorized keys: the one-time public key is appended (marked with
/// its comment) and removed again at the cut-over.
pub const REBUILD_AUTHORIZED_KEYS: &str = "/root/.ssh/authorized_keys";
/// The comment that marks the one-time key's line.
pub const REBUILD_KEY_COMMENT: &str = "mms-rebuild-key";
pub use crate::render::appliance::CUTOVER_TRIGGER;
/// Written on the new VM after the cut-over: its `mms-cutover.path` unit runs
/// `mms-firstboot cutover` (tailnet name `<hostname>-next` → `<hostname>`).
/// Where secrets go in the VM (one file per secret, DESIGN §5 step 4).
pub use crate::render::appliance::SECRETS_DIR;
/// firstboot's status file.
pub const FIRSTBOOT_STATUS: &str = "/var/lib/mms/firstboot.json";

/// The bundle tag: `mms-` + the first 16 hex digits of the bundle hash.
pub fn hash_tag(hash16: &str) -> String {
    format!("{TAG}-{hash16}")
}

/// The first 16 hex digits of a bundle hash, lower-cased.
pub fn hash16(hash: &str) -> String {
    hash.chars()
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The seed ISO's file name: `<name>-<hash16>.iso`.
pub fn iso_filename(name: &str, hash16: &str) -> String {
    format!("{name}-{hash16}.iso")
}

/// The new VM's name during a build.
pub fn next_name(name: &str) -> String {
    format!("{name}-next")
}

/// A retired VM's name.
pub fn retired_name(name: &str) -> String {
    format!("{name}-retired")
}

/// A guest as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVm {
    /// VMID.
    pub vmid: u32,
    /// Name.
    pub name: String,
    /// Tags, lower-case.
    pub tags: Vec<String>,
    /// Running?
    pub running: bool,
    /// Config lock (`clone` while cloning).
    pub lock: Option<String>,
    /// A template?
    pub template: bool,
    /// Description (carries the clone marker).
    pub description: Option<String>,
    /// The cluster node the guest lives on.
    pub node: String,
}

impl ObservedVm {
    /// Carries the `mms` tag or the clone marker.
    pub fn is_ours(&self) -> bool {
        self.tags.iter().any(|t| t == TAG)
            || self
                .description
                .as_deref()
                .is_some_and(|d| d.starts_with(DESCRIPTION_MARKER))
    }

    /// Tagged retired.
    pub fn is_retired(&self) -> bool {
        self.tags.iter().any(|t| t == RETIRED_TAG)
    }

    /// The bundle hash (16 hex) this VM was built from: tag, else description.
    pub fn bundle(&self) -> Option<String> {
        self.tags
            .iter()
            .filter_map(|t| t.strip_prefix("mms-"))
            .find(|h| is_hash16(h))
            .map(str::to_owned)
            .or_else(|| {
                self.description
                    .as_deref()?
                    .strip_prefix(DESCRIPTION_MARKER)
                    .map(|h| h.chars().take(16).collect())
            })
    }
}

/// Which VM plays which part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    /// Named `vm.name`, ours, not retired: serving now.
    pub current: Option<ObservedVm>,
    /// Named `<name>-next`, ours: a build in progress.
    pub next: Option<ObservedVm>,
    /// Tagged retired, highest VMID (newest) first.
    pub retired: Vec<ObservedVm>,
}

/// Sorts observed guests into roles; refuses ambiguous states.
pub fn classify(vms: &[ObservedVm], name: &str) -> Result<Roles, String> {
    let mut roles = Roles::default();
    let next = next_name(name);
    for vm in vms.iter().filter(|v| !v.template && v.is_ours()) {
        if vm.is_retired() {
            roles.retired.push(vm.clone());
        } else if vm.name == name {
            if let Some(other) = &roles.current {
                return Err(format!(
                    "two VMs are named {name} and tagged {TAG} (VMIDs {} and {}): remove the tag from the one MMS should not manage",
                    other.vmid, vm.vmid
                ));
            }
            roles.current = Some(vm.clone());
        } else if vm.name == next {
            if let Some(other) = &roles.next {
                return Err(format!(
                    "two VMs are named {next} (VMIDs {} and {}): delete the one that is not wanted (`qm destroy`)",
                    other.vmid, vm.vmid
                ));
            }
            roles.next = Some(vm.clone());
        }
    }
    roles.retired.sort_by_key(|v| std::cmp::Reverse(v.vmid));
    Ok(roles)
}

/// 16 lower- or upper-case hex digits: a bundle hash as tags and ISO names carry it.
fn is_hash16(h: &str) -> bool {
    h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether `volid` is one of this site's seed ISOs: `<storage>:iso/<name>-<hash16>.iso`
/// (and not, say, the ISO of a site named `<name>-lab`).
pub fn is_seed_iso(volid: &str, iso_storage: &str, name: &str) -> bool {
    volid
        .strip_prefix(&format!("{iso_storage}:iso/{name}-"))
        .and_then(|rest| rest.strip_suffix(".iso"))
        .is_some_and(is_hash16)
}

/// Refuses to act when a VM of this site lives on another cluster node than `node`
/// (`proxmox.node`): every step addresses that node, and a guest answers only on its own.
pub fn check_nodes(roles: &Roles, node: &str) -> Result<(), String> {
    let elsewhere: Vec<&ObservedVm> = roles
        .current
        .iter()
        .chain(&roles.next)
        .chain(&roles.retired)
        .filter(|v| v.node != node)
        .collect();
    let Some(first) = elsewhere.first() else {
        return Ok(());
    };
    let list: Vec<String> = elsewhere
        .iter()
        .map(|v| format!("VM {} ({}) is on node {}", v.vmid, v.name, v.node))
        .collect();
    Err(format!(
        "{}, but this site builds on node {node} (proxmox.node): migrate it back \
         (`qm migrate {} {node}` on node {}, or Migrate in the web UI) or set proxmox.node to its node \
         (the template must be there too)",
        list.join("; "),
        first.vmid,
        first.node
    ))
}

/// firstboot's status document, read tolerantly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstbootStatus {
    /// Current phase (`wait-secrets` … `done`).
    pub phase: String,
    /// The error text, when firstboot stopped on one.
    pub error: Option<String>,
    /// Finished step names, in order.
    pub steps: Vec<String>,
}

impl FirstbootStatus {
    /// `done` with no error.
    pub fn healthy(&self) -> bool {
        self.phase == "done" && self.error.is_none()
    }

    /// Still waiting for the builder's secrets.
    pub fn waiting_for_secrets(&self) -> bool {
        self.phase == "wait-secrets" && self.error.is_none()
    }
}

/// Parses `/var/lib/mms/firstboot.json` (`{"phase": …, "steps": [], "error": null}`),
/// tolerating unknown keys and error objects or strings.
pub fn parse_firstboot(text: &str) -> Result<FirstbootStatus, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("firstboot status is not JSON: {e}"))?;
    let phase = v
        .get("phase")
        .and_then(serde_json::Value::as_str)
        .ok_or("firstboot status has no \"phase\"")?
        .to_owned();
    let error = match v.get("error") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(obj) => {
            let msg = obj
                .get("message")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| obj.to_string());
            let next = obj
                .get("next_action")
                .or_else(|| obj.get("next"))
                .and_then(serde_json::Value::as_str);
            Some(match next {
                Some(n) => format!("{msg} (next: {n})"),
                None => msg,
            })
        }
    };
    let steps = v
        .get("steps")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    s.as_str().map(str::to_owned).or_else(|| {
                        s.get("phase")
                            .or_else(|| s.get("name"))
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_owned)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(FirstbootStatus {
        phase,
        error,
        steps,
    })
}

/// What the site wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `vm.name`.
    pub name: String,
    /// First 16 hex digits of the bundle hash.
    pub hash16: String,
    /// Other bundle hashes (16 hex) of this same site that count as up to date: a
    /// site renders differently for a first build and for a rebuild.
    pub accept: Vec<String>,
    /// Cores.
    pub cores: u32,
    /// Memory (MiB).
    pub memory_mib: u32,
    /// Boot disk size (GiB).
    pub disk_gib: u32,
    /// Bridge for net0.
    pub bridge: String,
    /// ISO storage.
    pub iso_storage: String,
    /// LXC to snapshot before a first-build migration.
    pub migrate_vmid: Option<u32>,
}

impl Desired {
    /// Whether a VM built from `bundle` serves this site as it is now.
    pub fn accepts(&self, bundle: Option<&str>) -> bool {
        bundle.is_some_and(|b| b == self.hash16 || self.accept.iter().any(|a| a == b))
    }

    /// The seed ISO's volume id.
    pub fn iso_volid(&self) -> String {
        format!(
            "{}:iso/{}",
            self.iso_storage,
            iso_filename(&self.name, &self.hash16)
        )
    }

    /// The snapshot taken of the migration source.
    pub fn snapshot_name(&self) -> String {
        format!("mms-pre-migrate-{}", self.hash16)
    }
}

/// A VM's config as key → text.
pub type Config = BTreeMap<String, String>;

/// Everything `plan` needs, read from Proxmox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The roles.
    pub roles: Roles,
    /// Config of the `-next` VM.
    pub next_config: Option<Config>,
    /// Config of the current VM (when it may be up to date).
    pub current_config: Option<Config>,
    /// Config of the template (for the disk size), when a clone is planned.
    pub template_config: Option<Config>,
    /// firstboot status of the current VM.
    pub current_firstboot: Option<FirstbootStatus>,
    /// firstboot status of the `-next` VM.
    pub next_firstboot: Option<FirstbootStatus>,
    /// Seed ISOs of this site (`<name>-*.iso`) in the ISO storage.
    pub isos: Vec<String>,
    /// Whether the migration source already has our snapshot.
    pub source_snapshot: Option<bool>,
    /// The cluster node the migration source container lives on.
    pub source_node: Option<String>,
}

/// One step of the apply flow. Steps without a VMID act on the `-next` VM
/// (which does not exist yet when the plan clones it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop (if running) and delete a stale or failed `-next` VM.
    DiscardNext {
        vmid: u32,
        running: bool,
        why: String,
    },
    /// Snapshot the LXC migration source on its node (`None`: `proxmox.node`).
    SnapshotSource {
        vmid: u32,
        node: Option<String>,
        snapname: String,
    },
    /// `nextid` + full clone of the template as `<name>-next`.
    Clone { name: String },
    /// Wait until the clone lock is released.
    WaitUnlock,
    /// Set config keys (cores, memory, net0, agent, serial0, tags).
    Configure { changes: Vec<(String, String)> },
    /// Grow the boot disk.
    Resize { disk: String, size: String },
    /// Upload the seed ISO.
    UploadIso { filename: String },
    /// Attach the seed ISO as ide2 cdrom.
    AttachIso { volid: String },
    /// Start the VM.
    Start,
    /// Wait for the guest agent.
    WaitAgent,
    /// One-time SSH key: private half to the new VM, public half to the old.
    KeyExchange { old_vmid: u32 },
    /// Write the secrets with `agent/file-write`.
    DeliverSecrets,
    /// Follow `/var/lib/mms/firstboot.json` until `done`.
    FollowFirstboot,
    /// Rename new → `<name>`; stop the old VM, tag it retired.
    CutOver { old: Option<(u32, bool)> },
    /// Eject the seed ISO (`ide2=none,media=cdrom`).
    Eject { vmid: Option<u32> },
    /// Delete a seed ISO volume.
    DeleteIso { volid: String },
    /// Delete older retired VMs (`--destroy-old`).
    DestroyRetired { vmid: u32 },
}

impl Action {
    /// The step name used in progress lines and errors.
    pub fn step(&self) -> &'static str {
        match self {
            Action::DiscardNext { .. } => "discard-stale-next",
            Action::SnapshotSource { .. } => "snapshot-source",
            Action::Clone { .. } => "clone",
            Action::WaitUnlock => "wait-clone",
            Action::Configure { .. } => "configure",
            Action::Resize { .. } => "resize",
            Action::UploadIso { .. } => "upload-iso",
            Action::AttachIso { .. } => "attach-iso",
            Action::Start => "start",
            Action::WaitAgent => "wait-agent",
            Action::KeyExchange { .. } => "rebuild-key",
            Action::DeliverSecrets => "secrets",
            Action::FollowFirstboot => "firstboot",
            Action::CutOver { .. } => "cut-over",
            Action::Eject { .. } => "eject-iso",
            Action::DeleteIso { .. } => "delete-iso",
            Action::DestroyRetired { .. } => "destroy-retired",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::DiscardNext { vmid, why, .. } => write!(f, "delete VM {vmid} ({why})"),
            Action::SnapshotSource {
                vmid,
                node,
                snapname,
            } => {
                write!(f, "snapshot container {vmid}")?;
                if let Some(node) = node {
                    write!(f, " on node {node}")?;
                }
                write!(f, " as {snapname} before migrating")
            }
            Action::Clone { name } => write!(f, "full clone of the template as {name}"),
            Action::WaitUnlock => write!(f, "wait for the running clone to finish"),
            Action::Configure { changes } => {
                let keys: Vec<String> = changes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "configure {}", keys.join(" "))
            }
            Action::Resize { disk, size } => write!(f, "resize {disk} to {size}"),
            Action::UploadIso { filename } => write!(f, "upload seed ISO {filename}"),
            Action::AttachIso { volid } => write!(f, "attach {volid} as ide2 cdrom"),
            Action::Start => write!(f, "start the new VM"),
            Action::WaitAgent => write!(f, "wait for the guest agent"),
            Action::KeyExchange { old_vmid } => {
                write!(f, "one-time SSH key for the state pull from VM {old_vmid}")
            }
            Action::DeliverSecrets => {
                write!(f, "write secrets into {SECRETS_DIR} (values: (secret))")
            }
            Action::FollowFirstboot => write!(f, "follow firstboot until done"),
            Action::CutOver {
                old: Some((vmid, _)),
            } => {
                write!(
                    f,
                    "cut over: rename the new VM, stop VM {vmid} and tag it {RETIRED_TAG}"
                )
            }
            Action::CutOver { old: None } => write!(f, "cut over: rename the new VM"),
            Action::Eject { .. } => write!(f, "eject the seed ISO (ide2=none,media=cdrom)"),
            Action::DeleteIso { volid } => write!(f, "delete {volid}"),
            Action::DestroyRetired { vmid } => write!(f, "delete retired VM {vmid}"),
        }
    }
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Nothing to build: the serving VM runs this bundle and is healthy.
    pub up_to_date: bool,
    /// The serving VM, if any.
    pub current: Option<u32>,
    /// The steps, in order.
    pub actions: Vec<Action>,
}

/// A property-string value by key (`bridge=vmbr0`), or the default (first, key-less) value.
pub fn prop(value: &str, key: &str) -> Option<String> {
    for (i, part) in value.split(',').enumerate() {
        match part.split_once('=') {
            Some((k, v)) if k == key => return Some(v.to_owned()),
            None if i == 0 && key.is_empty() => return Some(part.to_owned()),
            _ => {}
        }
    }
    None
}

/// Parses a disk size (`5G`, `512M`, `1T`, bytes) into GiB, rounding up.
pub fn size_gib(s: &str) -> Option<u64> {
    let idx = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(idx);
    let n: f64 = num.parse().ok()?;
    let g = match unit {
        "T" => n * 1024.0,
        "G" => n,
        "M" => n / 1024.0,
        "K" => n / 1024.0 / 1024.0,
        "" => n / 1024.0 / 1024.0 / 1024.0,
        _ => return None,
    };
    Some(g.ceil() as u64)
}

/// The boot disk key: first of `boot: order=` that is a disk, else scsi0/virtio0/sata0.
pub fn boot_disk(config: &Config) -> Option<String> {
    let is_disk = |k: &str| {
        config
            .get(k)
            .is_some_and(|v| prop(v, "media").as_deref() != Some("cdrom"))
            && ["scsi", "virtio", "sata", "ide"]
                .iter()
                .any(|p| k.starts_with(p))
    };
    if let Some(order) = config.get("boot").and_then(|b| prop(b, "order"))
        && let Some(d) = order.split(';').find(|d| is_disk(d))
    {
        return Some(d.to_owned());
    }
    ["scsi0", "virtio0", "sata0", "ide0"]
        .iter()
        .find(|k| is_disk(k))
        .map(|k| (*k).to_owned())
}

/// Config changes that bring `config` to `desired` (tags included).
pub fn config_changes(config: &Config, desired: &Desired) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if config.get("cores").map(String::as_str) != Some(&desired.cores.to_string()) {
        out.push(("cores".into(), desired.cores.to_string()));
    }
    let mem = config
        .get("memory")
        .and_then(|m| prop(m, "current").or_else(|| prop(m, "")));
    if mem.as_deref() != Some(&desired.memory_mib.to_string()) {
        out.push(("memory".into(), desired.memory_mib.to_string()));
    }
    let net = config.get("net0").cloned().unwrap_or_default();
    let bridge_ok = prop(&net, "bridge").as_deref() == Some(desired.bridge.as_str());
    if !bridge_ok {
        // Keep the model and MAC the clone got; change the bridge only.
        let model = net
            .split(',')
            .next()
            .filter(|m| !m.is_empty())
            .unwrap_or("virtio");
        out.push(("net0".into(), format!("{model},bridge={}", desired.bridge)));
    }
    let agent = config.get("agent").cloned().unwrap_or_default();
    let agent_on = prop(&agent, "enabled")
        .or_else(|| prop(&agent, "").filter(|v| !v.contains('=')))
        .is_some_and(|v| v == "1");
    if !agent_on {
        out.push(("agent".into(), "enabled=1".into()));
    }
    if config.get("serial0").map(String::as_str) != Some("socket") {
        out.push(("serial0".into(), "socket".into()));
    }
    let tags: Vec<&str> = config
        .get("tags")
        .map(|t| t.split([';', ',', ' ']).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let want = hash_tag(&desired.hash16);
    if !tags.contains(&TAG) || !tags.contains(&want.as_str()) {
        out.push(("tags".into(), format!("{TAG};{want}")));
    }
    out
}

/// A resize of `disk` to `vm.disk_gib` when it is smaller (or its size is unknown);
/// Proxmox only grows disks.
fn resize_if_small(cfg: &Config, disk: String, desired: &Desired) -> Option<Action> {
    let have = cfg
        .get(&disk)
        .and_then(|d| prop(d, "size"))
        .and_then(|s| size_gib(&s));
    have.is_none_or(|h| h < u64::from(desired.disk_gib))
        .then(|| Action::Resize {
            disk,
            size: format!("{}G", desired.disk_gib),
        })
}

/// Whether `ide2` holds `volid`.
fn iso_attached(cfg: &Config, volid: &str) -> bool {
    cfg.get("ide2")
        .is_some_and(|v| v.split(',').next() == Some(volid))
}

/// Plans `--apply`.
pub fn plan(obs: &Observed, desired: &Desired, destroy_old: bool) -> Plan {
    let mut actions = Vec::new();
    let hash = desired.hash16.as_str();
    let volid = desired.iso_volid();
    let current = obs.roles.current.as_ref();
    let current_is_target = current.is_some_and(|c| {
        desired.accepts(c.bundle().as_deref())
            && c.running
            && obs
                .current_firstboot
                .as_ref()
                .is_some_and(FirstbootStatus::healthy)
    });

    // A stale or failed -next VM goes first.
    let mut next = obs.roles.next.clone();
    if let Some(n) = &next {
        let why = if n.bundle().as_deref() != Some(hash) {
            Some(format!(
                "unfinished build of another bundle ({})",
                n.bundle().unwrap_or_else(|| "unknown".into())
            ))
        } else if let Some(err) = obs.next_firstboot.as_ref().and_then(|f| f.error.clone()) {
            Some(format!("its firstboot failed: {err}"))
        } else if current_is_target {
            Some("the serving VM already runs this bundle".into())
        } else {
            None
        };
        if let Some(why) = why {
            actions.push(Action::DiscardNext {
                vmid: n.vmid,
                running: n.running,
                why,
            });
            next = None;
        }
    }

    if current_is_target {
        // Up to date, except for cleanup a crash may have left behind.
        let cfg = obs.current_config.clone().unwrap_or_default();
        if iso_attached(&cfg, &volid) {
            actions.push(Action::Eject {
                vmid: current.map(|c| c.vmid),
            });
        }
        for iso in &obs.isos {
            actions.push(Action::DeleteIso { volid: iso.clone() });
        }
        return Plan {
            up_to_date: actions.is_empty(),
            current: current.map(|c| c.vmid),
            actions,
        };
    }

    let first_build = current.is_none() && obs.roles.retired.is_empty();
    match &next {
        None => {
            if first_build
                && let Some(vmid) = desired.migrate_vmid
                && obs.source_snapshot != Some(true)
            {
                actions.push(Action::SnapshotSource {
                    vmid,
                    node: obs.source_node.clone(),
                    snapname: desired.snapshot_name(),
                });
            }
            actions.push(Action::Clone {
                name: next_name(&desired.name),
            });
            let tcfg = obs.template_config.clone().unwrap_or_default();
            // After the clone the config is the template's (new MAC, same bridge).
            actions.push(Action::Configure {
                changes: config_changes(&tcfg, desired),
            });
            let disk = boot_disk(&tcfg).unwrap_or_else(|| "scsi0".into());
            actions.extend(resize_if_small(&tcfg, disk, desired));
            if !obs.isos.contains(&volid) {
                actions.push(Action::UploadIso {
                    filename: iso_filename(&desired.name, hash),
                });
            }
            actions.push(Action::AttachIso {
                volid: volid.clone(),
            });
            actions.push(Action::Start);
            actions.push(Action::WaitAgent);
            if let Some(c) = current.filter(|c| c.running) {
                actions.push(Action::KeyExchange { old_vmid: c.vmid });
            }
            actions.push(Action::DeliverSecrets);
        }
        Some(n) => {
            let cfg = obs.next_config.clone().unwrap_or_default();
            if n.lock.is_some() || cfg.contains_key("lock") {
                actions.push(Action::WaitUnlock);
            }
            let changes = config_changes(&cfg, desired);
            if !changes.is_empty() {
                actions.push(Action::Configure { changes });
            }
            if let Some(disk) = boot_disk(&cfg) {
                actions.extend(resize_if_small(&cfg, disk, desired));
            }
            let attached = iso_attached(&cfg, &volid);
            if !n.running {
                if !obs.isos.contains(&volid) {
                    actions.push(Action::UploadIso {
                        filename: iso_filename(&desired.name, hash),
                    });
                }
                if !attached {
                    actions.push(Action::AttachIso {
                        volid: volid.clone(),
                    });
                }
                actions.push(Action::Start);
            }
            actions.push(Action::WaitAgent);
            let waiting = obs
                .next_firstboot
                .as_ref()
                .is_none_or(FirstbootStatus::waiting_for_secrets);
            if waiting {
                if let Some(c) = current.filter(|c| c.running) {
                    actions.push(Action::KeyExchange { old_vmid: c.vmid });
                }
                actions.push(Action::DeliverSecrets);
            }
        }
    }
    actions.push(Action::FollowFirstboot);
    actions.push(Action::CutOver {
        old: current.map(|c| (c.vmid, c.running)),
    });
    actions.push(Action::Eject { vmid: None });
    let mut isos: Vec<String> = obs.isos.clone();
    if !isos.contains(&volid) {
        isos.push(volid);
    }
    for iso in isos {
        actions.push(Action::DeleteIso { volid: iso });
    }
    if destroy_old {
        for r in &obs.roles.retired {
            actions.push(Action::DestroyRetired { vmid: r.vmid });
        }
        if let Some(c) = current {
            actions.push(Action::DestroyRetired { vmid: c.vmid });
        }
    }
    Plan {
        up_to_date: false,
        current: current.map(|c| c.vmid),
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef";
    const OLD: &str = "fedcba9876543210";

    fn desired() -> Desired {
        Desired {
            name: "mms".into(),
            hash16: H.into(),
            accept: vec![],
            cores: 4,
            memory_mib: 8192,
            disk_gib: 64,
            bridge: "vmbr0".into(),
            iso_storage: "local".into(),
            migrate_vmid: None,
        }
    }

    fn vm(vmid: u32, name: &str, tags: &[&str], running: bool) -> ObservedVm {
        ObservedVm {
            vmid,
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            running,
            lock: None,
            template: false,
            description: None,
            node: "pve".into(),
        }
    }

    fn healthy() -> FirstbootStatus {
        parse_firstboot(r#"{"phase":"done","steps":[],"error":null}"#).unwrap()
    }

    fn steps(p: &Plan) -> Vec<&'static str> {
        p.actions.iter().map(Action::step).collect()
    }

    fn template_cfg() -> Config {
        Config::from([
            ("scsi0".into(), "local-lvm:base-9000-disk-0,size=5G".into()),
            (
                "net0".into(),
                "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0".into(),
            ),
            ("agent".into(), "enabled=1".into()),
            ("serial0".into(), "socket".into()),
            ("cores".into(), "2".into()),
            ("memory".into(), "2048".into()),
        ])
    }

    #[test]
    fn first_build_from_nothing() {
        let obs = Observed {
            template_config: Some(template_cfg()),
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert!(!p.up_to_date);
        assert_eq!(
            steps(&p),
            [
                "clone",
                "configure",
                "resize",
                "upload-iso",
                "attach-iso",
                "start",
                "wait-agent",
                "secrets",
                "firstboot",
                "cut-over",
                "eject-iso",
                "delete-iso"
            ]
        );
        let Action::Configure { changes } = &p.actions[1] else {
            panic!()
        };
        let keys: Vec<&str> = changes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["cores", "memory", "tags"]);
    }

    #[test]
    fn migration_source_is_snapshotted_once_on_first_build() {
        let mut d = desired();
        d.migrate_vmid = Some(105);
        let obs = Observed {
            template_config: Some(template_cfg()),
            source_snapshot: Some(false),
            ..Default::default()
        };
        assert_eq!(steps(&plan(&obs, &d, false))[0], "snapshot-source");
        let obs = Observed {
            source_snapshot: Some(true),
            ..obs
        };
        assert_eq!(steps(&plan(&obs, &d, false))[0], "clone");
    }

    #[test]
    fn up_to_date_needs_tag_running_and_healthy() {
        let cur = vm(100, "mms", &["mms", &format!("mms-{H}")], true);
        let mut obs = Observed {
            roles: classify(&[cur], "mms").unwrap(),
            current_firstboot: Some(healthy()),
            current_config: Some(Config::new()),
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert!(p.up_to_date && p.actions.is_empty());
        obs.current_firstboot = Some(
            parse_firstboot(r#"{"phase":"health","steps":[],"error":"radarr unhealthy"}"#).unwrap(),
        );
        assert!(!plan(&obs, &desired(), false).up_to_date);
    }

    #[test]
    fn rebuild_with_old_vm_exchanges_a_key_and_retires_it() {
        let cur = vm(100, "mms", &["mms", &format!("mms-{OLD}")], true);
        let obs = Observed {
            roles: classify(&[cur], "mms").unwrap(),
            current_firstboot: Some(healthy()),
            template_config: Some(template_cfg()),
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert!(steps(&p).contains(&"rebuild-key"));
        assert!(p.actions.contains(&Action::CutOver {
            old: Some((100, true))
        }));
    }

    #[test]
    fn resume_after_clone_skips_done_steps() {
        let cur = vm(100, "mms", &["mms", &format!("mms-{OLD}")], true);
        let mut next = vm(101, "mms-next", &["mms", &format!("mms-{H}")], true);
        next.description = Some(format!("{DESCRIPTION_MARKER}{H}"));
        let mut cfg = template_cfg();
        cfg.insert("cores".into(), "4".into());
        cfg.insert("memory".into(), "8192".into());
        cfg.insert("tags".into(), format!("mms;mms-{H}"));
        cfg.insert("scsi0".into(), "local-lvm:vm-101-disk-0,size=64G".into());
        cfg.insert(
            "ide2".into(),
            "local:iso/mms-0123456789abcdef.iso,media=cdrom".into(),
        );
        let obs = Observed {
            roles: classify(&[cur, next], "mms").unwrap(),
            next_config: Some(cfg),
            next_firstboot: Some(
                parse_firstboot(r#"{"phase":"state","steps":["tailscale"],"error":null}"#).unwrap(),
            ),
            isos: vec!["local:iso/mms-0123456789abcdef.iso".into()],
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert_eq!(
            steps(&p),
            [
                "wait-agent",
                "firstboot",
                "cut-over",
                "eject-iso",
                "delete-iso"
            ]
        );
    }

    #[test]
    fn untagged_clone_in_progress_is_found_by_its_marker() {
        let mut next = vm(101, "mms-next", &[], false);
        next.lock = Some("clone".into());
        next.description = Some(format!("{DESCRIPTION_MARKER}{H}"));
        let roles = classify(&[next], "mms").unwrap();
        assert_eq!(roles.next.as_ref().map(|n| n.vmid), Some(101));
        let obs = Observed {
            roles,
            next_config: Some(Config::from([("lock".into(), "clone".into())])),
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert_eq!(steps(&p)[0], "wait-clone");
        assert!(!steps(&p).contains(&"clone"));
    }

    #[test]
    fn stale_or_failed_next_is_discarded() {
        let stale = vm(101, "mms-next", &["mms", &format!("mms-{OLD}")], true);
        let obs = Observed {
            roles: classify(&[stale], "mms").unwrap(),
            template_config: Some(template_cfg()),
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert_eq!(steps(&p)[..2], ["discard-stale-next", "clone"]);
        let failed = vm(101, "mms-next", &["mms", &format!("mms-{H}")], true);
        let obs = Observed {
            roles: classify(&[failed], "mms").unwrap(),
            next_firstboot: Some(
                parse_firstboot(r#"{"phase":"state","error":{"message":"rsync failed"}}"#).unwrap(),
            ),
            template_config: Some(template_cfg()),
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert_eq!(steps(&p)[..2], ["discard-stale-next", "clone"]);
    }

    #[test]
    fn interrupted_cut_over_resumes() {
        // Old already retired, new still named -next and healthy.
        let old = vm(
            100,
            "mms-retired",
            &["mms", &format!("mms-{OLD}"), RETIRED_TAG],
            false,
        );
        let next = vm(101, "mms-next", &["mms", &format!("mms-{H}")], true);
        let mut cfg = template_cfg();
        cfg.insert("cores".into(), "4".into());
        cfg.insert("memory".into(), "8192".into());
        cfg.insert("tags".into(), format!("mms;mms-{H}"));
        cfg.insert("scsi0".into(), "local-lvm:vm-101-disk-0,size=64G".into());
        let obs = Observed {
            roles: classify(&[old, next], "mms").unwrap(),
            next_config: Some(cfg),
            next_firstboot: Some(healthy()),
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert_eq!(
            steps(&p),
            [
                "wait-agent",
                "firstboot",
                "cut-over",
                "eject-iso",
                "delete-iso"
            ]
        );
        assert!(p.actions.contains(&Action::CutOver { old: None }));
        // Renamed but not yet cleaned up.
        let cur = vm(101, "mms", &["mms", &format!("mms-{H}")], true);
        let obs = Observed {
            roles: classify(&[cur], "mms").unwrap(),
            current_firstboot: Some(healthy()),
            current_config: Some(Config::from([(
                "ide2".into(),
                "local:iso/mms-0123456789abcdef.iso,media=cdrom".into(),
            )])),
            isos: vec!["local:iso/mms-0123456789abcdef.iso".into()],
            ..Default::default()
        };
        let p = plan(&obs, &desired(), false);
        assert!(!p.up_to_date);
        assert_eq!(steps(&p), ["eject-iso", "delete-iso"]);
    }

    #[test]
    fn guests_on_another_node_are_refused_by_name() {
        let cur = vm(100, "mms", &["mms"], true);
        let mut retired = vm(90, "mms-retired", &["mms", "mms-retired"], false);
        let roles = classify(&[cur.clone(), retired.clone()], "mms").unwrap();
        assert_eq!(check_nodes(&roles, "pve"), Ok(()));
        retired.node = "pve2".into();
        let roles = classify(&[cur, retired], "mms").unwrap();
        let e = check_nodes(&roles, "pve").unwrap_err();
        assert!(e.starts_with("VM 90 (mms-retired) is on node pve2, but this site builds on node pve (proxmox.node)"), "{e}");
        assert!(e.contains("`qm migrate 90 pve` on node pve2"), "{e}");
        // Other sites' guests and foreign VMs do not matter.
        let mut other = vm(7, "plex", &[], true);
        other.node = "pve3".into();
        let roles = classify(&[other], "mms").unwrap();
        assert_eq!(check_nodes(&roles, "pve"), Ok(()));
    }

    #[test]
    fn ambiguity_is_refused() {
        let a = vm(100, "mms", &["mms"], true);
        let b = vm(101, "mms", &["mms"], true);
        assert!(classify(&[a, b], "mms").unwrap_err().contains("two VMs"));
    }

    #[test]
    fn firstboot_status_is_read_tolerantly() {
        let s = parse_firstboot(r#"{"phase":"done","steps":[],"error":null,"extra":1}"#).unwrap();
        assert!(s.healthy());
        let s = parse_firstboot(r#"{"phase":"state","steps":[{"phase":"tailscale","result":"ok"}],"error":{"message":"boom","next_action":"retry"}}"#).unwrap();
        assert_eq!(s.error.as_deref(), Some("boom (next: retry)"));
        assert_eq!(s.steps, ["tailscale"]);
        assert!(parse_firstboot("{}").is_err());
        assert!(parse_firstboot("not json").is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(size_gib("5G"), Some(5));
        assert_eq!(size_gib("512M"), Some(1));
        assert_eq!(size_gib("1T"), Some(1024));
        assert_eq!(
            prop("virtio=AA,bridge=vmbr1", "bridge").as_deref(),
            Some("vmbr1")
        );
        assert_eq!(prop("8192", "").as_deref(), Some("8192"));
        let cfg = Config::from([
            ("boot".into(), "order=ide2;virtio0;net0".into()),
            ("ide2".into(), "local:iso/x.iso,media=cdrom".into()),
            ("virtio0".into(), "local-lvm:vm-1-disk-0,size=5G".into()),
        ]);
        assert_eq!(boot_disk(&cfg).as_deref(), Some("virtio0"));
    }
}

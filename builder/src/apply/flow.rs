//! The I/O side of `--apply`: observe Proxmox, plan (pure), execute the steps.
//!
//! Any failure names the step, the reason and the command to run next; the old
//! VM keeps serving because it is only touched at cut-over, after the new one
//! reported healthy. A re-run observes again and resumes from what exists.

use super::inputs::ApplyInputs;
use super::plan::{
    self, Action, CUTOVER_TRIGGER, Config, DESCRIPTION_MARKER, Desired, FIRSTBOOT_STATUS,
    MIGRATE_KEY_SECRET, Observed, ObservedVm, Plan, REBUILD_AUTHORIZED_KEYS, REBUILD_KEY,
    REBUILD_KEY_COMMENT, RETIRED_TAG, SECRETS_COMPLETE, SECRETS_DIR, TAG,
};
use super::progress::Progress;
use crate::config::TemplateRef;
use crate::proxmox::api::{VmConfig, VmRow};
use crate::proxmox::sshkey::SshKeyPair;
use crate::proxmox::tasks::PollPolicy;
use crate::proxmox::{Client, ErrorKind, Form, ProxmoxError, Upid};
use std::time::{Duration, Instant};

/// Timeouts and switches of the apply flow.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// One Proxmox task (clone, resize, upload, …).
    pub task_timeout: Duration,
    /// Start → guest agent answers.
    pub agent_timeout: Duration,
    /// Secrets delivered → firstboot `done`.
    pub firstboot_timeout: Duration,
    /// Trigger written → the new VM's cut-over finished (tailnet name, static address).
    /// Waiting longer only warns: the new VM serves already.
    pub cutover_timeout: Duration,
    /// Delete retired VMs after a successful cut-over.
    pub destroy_old: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            task_timeout: Duration::from_secs(1800),
            agent_timeout: Duration::from_secs(600),
            firstboot_timeout: Duration::from_secs(3600),
            // tailscale set (60 s) + taking the static address (60 s) + slack.
            cutover_timeout: Duration::from_secs(180),
            destroy_old: false,
        }
    }
}

/// A failed step: what, why, and what to run next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// The step name (`clone`, `wait-agent`, …).
    pub step: String,
    /// Why it failed.
    pub reason: String,
    /// The command to run next.
    pub next: String,
    /// The VM that keeps serving, if any.
    pub serving: Option<u32>,
    /// The error kind, when it came from Proxmox.
    pub kind: Option<ErrorKind>,
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "apply failed at step '{}': {}", self.step, self.reason)?;
        if let Some(v) = self.serving {
            write!(f, "\nthe old VM {v} keeps serving")?;
        }
        write!(f, "\nnext: {}", self.next)
    }
}

impl std::error::Error for ApplyError {}

/// What `--apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Nothing needed doing.
    pub up_to_date: bool,
    /// The VM serving now.
    pub serving: Option<u32>,
    /// The VM retired by this run.
    pub retired: Option<u32>,
    /// Steps executed.
    pub steps: Vec<String>,
    /// The bundle (16 hex) the serving VM runs.
    pub bundle: Option<String>,
    /// What went wrong without stopping the build (also shown as it happens).
    pub warnings: Vec<String>,
}

const RERUN: &str = "run `mms-build --apply` again: it resumes from what exists on Proxmox";

/// Guest-agent calls pass through Proxmox into the VM: never poll them faster than this.
const AGENT_POLL_FLOOR: Duration = Duration::from_millis(50);

/// One bounded wait: whether its limit has passed, and the adaptive pause between polls.
struct Wait {
    start: Instant,
    limit: Duration,
    poll: PollPolicy,
    floor: Duration,
}

impl Wait {
    fn new(poll: PollPolicy, limit: Duration, floor: Duration) -> Self {
        Wait {
            start: Instant::now(),
            limit,
            poll,
            floor,
        }
    }

    fn expired(&self) -> bool {
        self.start.elapsed() > self.limit
    }

    fn limit_secs(&self) -> u64 {
        self.limit.as_secs()
    }

    async fn pause(&self) {
        let delay = self.poll.next_delay(self.start.elapsed()).max(self.floor);
        tokio::time::sleep(delay).await;
    }
}

fn next_for(step: &str, e: &ProxmoxError) -> String {
    match e.kind() {
        ErrorKind::Auth => "check proxmox.token_id and the secret proxmox_token_secret, then run `mms-build --apply` again".into(),
        ErrorKind::Tls => "check proxmox.tls_fingerprint (or ca_file), then run `mms-build --apply` again".into(),
        ErrorKind::Permission => match e {
            ProxmoxError::Permission { privilege: Some(p), .. } => format!(
                "grant {p} to the API token's role (docs/proxmox.md lists every privilege), then run `mms-build --apply` again"
            ),
            _ => "grant the missing privilege (docs/proxmox.md), then run `mms-build --apply` again".into(),
        },
        ErrorKind::Parameter => format!(
            "this is a bug in mms-build or a setting Proxmox rejects (step {step}); check the values named above, then {RERUN}"
        ),
        _ => RERUN.into(),
    }
}

fn fail(step: &str, serving: Option<u32>, e: ProxmoxError) -> ApplyError {
    ApplyError {
        step: step.into(),
        next: next_for(step, &e),
        reason: e.to_string(),
        kind: Some(e.kind()),
        serving,
    }
}

fn fail_msg(step: &str, serving: Option<u32>, reason: String, next: String) -> ApplyError {
    ApplyError {
        step: step.into(),
        reason,
        next,
        serving,
        kind: None,
    }
}

pub(super) fn observed_from(row: &VmRow, cfg: Option<&VmConfig>) -> ObservedVm {
    let mut vm = ObservedVm {
        vmid: row.vmid,
        name: row.name.clone().unwrap_or_default(),
        tags: row.tag_list(),
        running: row.status == "running",
        lock: row.lock.clone(),
        template: row.template,
        description: None,
        node: row.node.clone(),
    };
    if let Some(cfg) = cfg {
        if let Some(n) = cfg.get("name") {
            vm.name = n;
        }
        vm.tags = cfg.tags();
        vm.lock = cfg.get("lock");
        vm.template = cfg.get("template").is_some_and(|t| t == "1");
        vm.description = cfg.get("description");
    }
    vm
}

fn to_config(cfg: &VmConfig) -> Config {
    cfg.0
        .keys()
        .filter_map(|k| cfg.get(k).map(|v| (k.clone(), v)))
        .collect()
}

/// Finds the template's VMID among the rows.
pub fn template_vmid(rows: &[VmRow], template: &TemplateRef) -> Result<u32, String> {
    match template {
        TemplateRef::Vmid(id) => rows
            .iter()
            .find(|r| r.vmid == *id && r.kind == "qemu")
            .map(|r| r.vmid)
            .ok_or_else(|| format!("proxmox.template: no VM with VMID {id}")),
        TemplateRef::Name(name) => {
            let found: Vec<&VmRow> = rows
                .iter()
                .filter(|r| r.kind == "qemu" && r.template && r.name.as_deref() == Some(name))
                .collect();
            match found.as_slice() {
                [one] => Ok(one.vmid),
                [] => Err(format!(
                    "proxmox.template: no template named {name:?} (create it with `mms-build template`)"
                )),
                many => Err(format!(
                    "proxmox.template: {} templates are named {name:?} (VMIDs {}): use the VMID",
                    many.len(),
                    many.iter()
                        .map(|r| r.vmid.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

/// The observed state plus what the flow needs to act on it.
#[derive(Debug, Clone)]
pub struct Observation {
    /// For the planner.
    pub observed: Observed,
    /// All rows.
    pub rows: Vec<VmRow>,
}

/// Why the cluster could not be observed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A request failed.
    #[error(transparent)]
    Proxmox(#[from] ProxmoxError),
    /// The guests are in a state MMS must not act on (the message says what to change).
    #[error("{0}")]
    Refused(String),
}

/// Reads what exists (read-only): guests, the `-next` and current VMs' config
/// and firstboot status, this site's seed ISOs, the migration snapshot.
pub async fn observe(client: &Client, inputs: &ApplyInputs) -> Result<Observation, ObserveError> {
    // Either rendering (first build or rebuild) may be what runs.
    let mut d = inputs.desired.clone();
    if let Some(rb) = &inputs.rebuild_bundle {
        d.accept.push(plan::hash16(&rb.hash));
    }
    let d = &d;
    let node = &inputs.node;
    let rows = client.vms().await?;
    let next_name = plan::next_name(&d.name);
    let mut vms = Vec::new();
    let mut next_config = None;
    for row in rows.iter().filter(|r| r.kind == "qemu") {
        // Right after a clone a row has no name yet; a -next VM may not be tagged yet.
        // (A guest on another node answers only there: it is refused below by its row.)
        let needs_config = !row.template
            && row.node == *node
            && (row.name.is_none() || row.name.as_deref() == Some(next_name.as_str()));
        if needs_config {
            match client.vm_config(node, row.vmid).await {
                Ok(cfg) => {
                    let mut vm = observed_from(row, Some(&cfg));
                    if row.status != "running" && row.status != "stopped" {
                        // Not in the resource stats yet: ask for the power state.
                        vm.running = client.vm_status(node, row.vmid).await?.status == "running";
                    }
                    if vm.name == next_name && vm.is_ours() {
                        next_config = Some(to_config(&cfg));
                    }
                    vms.push(vm);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            vms.push(observed_from(row, None));
        }
    }
    let roles = plan::classify(&vms, &d.name)
        .and_then(|roles| plan::check_nodes(&roles, node).map(|()| roles))
        .map_err(ObserveError::Refused)?;
    let mut obs = Observed {
        next_config,
        ..Default::default()
    };
    if let Some(c) = &roles.current
        && c.running
        && d.accepts(c.bundle().as_deref())
    {
        obs.current_config = Some(to_config(&client.vm_config(node, c.vmid).await?));
        obs.current_firstboot = read_firstboot(client, node, c.vmid).await;
    }
    if let Some(n) = &roles.next
        && n.running
    {
        obs.next_firstboot = read_firstboot(client, node, n.vmid).await;
    }
    let current_is_target = roles.current.as_ref().is_some_and(|c| {
        d.accepts(c.bundle().as_deref())
            && obs
                .current_firstboot
                .as_ref()
                .is_some_and(plan::FirstbootStatus::healthy)
    });
    // Whether a -next VM is kept depends on the rendering `choose` picks later (plan
    // discards one of the other rendering), so any build that is not up to date may clone:
    // the template's disk size and bus are needed then.
    if !current_is_target && let Ok(t) = template_vmid(&rows, &inputs.template) {
        obs.template_config = Some(to_config(&client.vm_config(node, t).await?));
    }
    obs.isos = client
        .storage_content(node, &d.iso_storage, "iso")
        .await?
        .into_iter()
        .map(|v| v.volid)
        .filter(|v| plan::is_seed_iso(v, &d.iso_storage, &d.name))
        .collect();
    let first_build = roles.current.is_none() && roles.retired.is_empty() && roles.next.is_none();
    if first_build && let Some(ct) = d.migrate_vmid {
        // The container may live on any node of the cluster.
        let source = rows
            .iter()
            .find(|r| r.vmid == ct && r.kind == "lxc")
            .ok_or_else(|| {
                ObserveError::Refused(format!(
                    "migrate.from.proxmox_vmid is {ct}, but the cluster has no container with that VMID \
                     (`pct list` on each node): correct the VMID in mms.yml, or remove proxmox_vmid to migrate without a snapshot"
                ))
            })?;
        let snaps = client.lxc_snapshots(&source.node, ct).await?;
        obs.source_snapshot = Some(snaps.contains(&d.snapshot_name()));
        obs.source_node = Some(source.node.clone());
    }
    obs.roles = roles;
    Ok(Observation {
        observed: obs,
        rows,
    })
}

/// Reads and parses the firstboot status; `None` when it cannot be read yet.
pub async fn read_firstboot(
    client: &Client,
    node: &str,
    vmid: u32,
) -> Option<plan::FirstbootStatus> {
    let read = client
        .agent_file_read(node, vmid, FIRSTBOOT_STATUS)
        .await
        .ok()?;
    plan::parse_firstboot(&read.content).ok()
}

/// Observes and plans (read-only): what `--apply` would do.
pub async fn plan_only(
    client: &Client,
    inputs: &ApplyInputs,
    destroy_old: bool,
) -> Result<(Observation, Plan), ApplyError> {
    let obs = observe(client, inputs).await.map_err(|e| match e {
        ObserveError::Proxmox(e) => fail("observe", None, e),
        ObserveError::Refused(why) => fail_msg(
            "observe",
            None,
            why,
            "make that change in Proxmox, then run `mms-build --apply` again".into(),
        ),
    })?;
    let (d, _) = choose(inputs, &obs.observed);
    let p = plan::plan(&obs.observed, &d, destroy_old);
    Ok((obs, p))
}

/// Picks the bundle to build: the rebuild rendering (state pulled from the running
/// VM) when a VM serves a different bundle and runs, else the first-build rendering.
/// Both count as up to date.
pub fn choose<'a>(inputs: &'a ApplyInputs, obs: &Observed) -> (Desired, &'a [u8]) {
    let first = &inputs.desired;
    let Some(rb) = &inputs.rebuild_bundle else {
        return (first.clone(), &inputs.bundle.seed_iso);
    };
    let rb16 = plan::hash16(&rb.hash);
    let mut as_first = first.clone();
    as_first.accept.push(rb16.clone());
    let current_other = obs
        .roles
        .current
        .as_ref()
        .is_some_and(|c| c.running && !as_first.accepts(c.bundle().as_deref()));
    if current_other {
        let mut d = first.clone();
        d.accept.push(first.hash16.clone());
        d.hash16 = rb16;
        (d, &rb.seed_iso)
    } else {
        (as_first, &inputs.bundle.seed_iso)
    }
}

/// Runs `--apply`.
pub async fn apply(
    client: &Client,
    inputs: &ApplyInputs,
    opts: &ApplyOptions,
    progress: &Progress,
) -> Result<ApplyReport, ApplyError> {
    let (obs, p) = plan_only(client, inputs, opts.destroy_old).await?;
    let (desired, iso) = choose(inputs, &obs.observed);
    let serving = p.current;
    if p.up_to_date {
        return Ok(ApplyReport {
            up_to_date: true,
            serving,
            retired: None,
            steps: vec![],
            bundle: obs
                .observed
                .roles
                .current
                .as_ref()
                .and_then(ObservedVm::bundle),
            warnings: vec![],
        });
    }
    let mut run = Run {
        client,
        inputs,
        d: desired,
        iso,
        rebuild_key: p
            .actions
            .iter()
            .any(|a| matches!(a, Action::KeyExchange { .. })),
        opts,
        progress,
        serving,
        next_vmid: obs.observed.roles.next.as_ref().map(|n| n.vmid),
        rows: obs.rows.clone(),
        observed: obs.observed.clone(),
        retired: None,
        warnings: Vec::new(),
    };
    let total = p.actions.len();
    let mut steps = Vec::new();
    for (i, action) in p.actions.iter().enumerate() {
        progress.step(i + 1, total, &action.to_string());
        run.exec(action).await?;
        steps.push(action.step().to_owned());
    }
    progress.finish();
    Ok(ApplyReport {
        up_to_date: false,
        serving: run.serving,
        retired: run.retired,
        steps,
        bundle: Some(run.d.hash16.clone()),
        warnings: run.warnings,
    })
}

struct Run<'a> {
    client: &'a Client,
    inputs: &'a ApplyInputs,
    d: Desired,
    iso: &'a [u8],
    rebuild_key: bool,
    opts: &'a ApplyOptions,
    progress: &'a Progress,
    serving: Option<u32>,
    next_vmid: Option<u32>,
    rows: Vec<VmRow>,
    observed: Observed,
    retired: Option<u32>,
    warnings: Vec<String>,
}

impl Run<'_> {
    fn warn(&mut self, msg: String) {
        self.progress.info(&format!("warning: {msg}"));
        self.warnings.push(msg);
    }

    fn node(&self) -> &str {
        &self.inputs.node
    }

    fn err(&self, step: &str, e: ProxmoxError) -> ApplyError {
        fail(step, self.serving, e)
    }

    fn next(&self, step: &str) -> Result<u32, ApplyError> {
        self.next_vmid.ok_or_else(|| {
            fail_msg(
                step,
                self.serving,
                "no -next VM to act on".into(),
                RERUN.into(),
            )
        })
    }

    async fn task(&self, step: &str, upid: Result<Upid, ProxmoxError>) -> Result<(), ApplyError> {
        let upid = upid.map_err(|e| self.err(step, e))?;
        self.client
            .wait_task(&upid, self.opts.task_timeout)
            .await
            .map(|_| ())
            .map_err(|e| self.err(step, e))
    }

    async fn exec(&mut self, action: &Action) -> Result<(), ApplyError> {
        let step = action.step();
        let node = self.node().to_owned();
        let d = &self.d;
        match action {
            Action::DiscardNext { vmid, running, .. } => {
                // A clone still copying must finish (or fail) before the VM can go.
                self.next_vmid = Some(*vmid);
                match self.wait_unlock().await {
                    Ok(()) => {}
                    // The clone failed and Proxmox removed the VM: nothing to discard.
                    Err(_) if self.next_vmid.is_none() => return Ok(()),
                    Err(e) => return Err(e),
                }
                if *running {
                    self.task(step, self.client.power(&node, *vmid, "stop").await)
                        .await?;
                }
                self.task(step, self.client.delete_vm(&node, *vmid).await)
                    .await?;
                self.next_vmid = None;
            }
            Action::SnapshotSource {
                vmid,
                node: on,
                snapname,
            } => {
                let desc = format!("before migration to MMS bundle {}", d.hash16);
                let on = on.as_deref().unwrap_or(&node);
                self.task(
                    step,
                    self.client.lxc_snapshot(on, *vmid, snapname, &desc).await,
                )
                .await?;
            }
            Action::Clone { name } => self.clone_next(name).await?,
            Action::WaitUnlock => self.wait_unlock().await?,
            Action::Configure { changes } => {
                let vmid = self.next(step)?;
                let mut form = Form::new();
                for (k, v) in changes {
                    form = form.text(k, v.clone());
                }
                self.client
                    .set_config(&node, vmid, form)
                    .await
                    .map_err(|e| self.err(step, e))?;
            }
            Action::Resize { disk, size } => {
                let vmid = self.next(step)?;
                self.task(step, self.client.resize(&node, vmid, disk, size).await)
                    .await?;
            }
            Action::UploadIso { filename } => {
                let upid = self
                    .client
                    .upload(&node, &d.iso_storage, "iso", filename, self.iso)
                    .await;
                self.task(step, upid).await?;
            }
            Action::AttachIso { volid } => {
                let vmid = self.next(step)?;
                self.client
                    .set_config(
                        &node,
                        vmid,
                        Form::new().text("ide2", format!("{volid},media=cdrom")),
                    )
                    .await
                    .map_err(|e| self.err(step, e))?;
            }
            Action::Start => {
                let vmid = self.next(step)?;
                let upid = self
                    .client
                    .power(&node, vmid, "start")
                    .await
                    .map_err(|e| self.err(step, e))?;
                match self.client.wait_task(&upid, self.opts.task_timeout).await {
                    Ok(_) => {}
                    Err(ProxmoxError::TaskFailed { exitstatus, .. })
                        if exitstatus.contains("already running") => {}
                    Err(e) => return Err(self.err(step, e)),
                }
            }
            Action::WaitAgent => {
                let vmid = self.next(step)?;
                self.wait_agent(vmid).await?;
            }
            Action::KeyExchange { old_vmid } => {
                let new = self.next(step)?;
                let kp = SshKeyPair::generate(&format!("{REBUILD_KEY_COMMENT}-{}", d.hash16))
                    .map_err(|e| fail_msg(step, self.serving, e, RERUN.into()))?;
                // Append to the old VM's root keys (earlier one-time keys dropped).
                let mut keys = self
                    .old_keys_without_ours(*old_vmid)
                    .await
                    .map_err(|e| self.err(step, e))?;
                keys.push_str(&kp.public);
                keys.push('\n');
                self.client
                    .agent_file_write(&node, *old_vmid, REBUILD_AUTHORIZED_KEYS, &keys)
                    .await
                    .map_err(|e| self.err(step, e))?;
                self.client
                    .agent_file_write(&node, new, REBUILD_KEY, kp.private_openssh())
                    .await
                    .map_err(|e| self.err(step, e))?;
            }
            Action::DeliverSecrets => {
                let vmid = self.next(step)?;
                for (name, secret) in &self.inputs.secrets {
                    // On a rebuild the one-time key is the migration key.
                    if self.rebuild_key && name == MIGRATE_KEY_SECRET {
                        continue;
                    }
                    self.client
                        .agent_file_write(
                            &node,
                            vmid,
                            &format!("{SECRETS_DIR}/{name}"),
                            secret.expose(),
                        )
                        .await
                        .map_err(|e| self.err(step, e))?;
                }
                let names: Vec<&str> = self
                    .inputs
                    .secrets
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect();
                let mut marker = names.join("\n");
                marker.push('\n');
                self.client
                    .agent_file_write(&node, vmid, SECRETS_COMPLETE, &marker)
                    .await
                    .map_err(|e| self.err(step, e))?;
            }
            Action::FollowFirstboot => {
                let vmid = self.next(step)?;
                self.follow_firstboot(vmid).await?;
            }
            Action::CutOver { old } => self.cut_over(*old).await?,
            Action::Eject { vmid } => {
                let vmid = match vmid {
                    Some(v) => *v,
                    None => self.serving.or(self.next_vmid).ok_or_else(|| {
                        fail_msg(
                            step,
                            self.serving,
                            "no VM to eject the ISO from".into(),
                            RERUN.into(),
                        )
                    })?,
                };
                self.client
                    .set_config(&node, vmid, Form::new().text("ide2", "none,media=cdrom"))
                    .await
                    .map_err(|e| self.err(step, e))?;
            }
            Action::DeleteIso { volid } => {
                match self
                    .client
                    .delete_volume(&node, &d.iso_storage, volid)
                    .await
                {
                    Ok(Some(upid)) => self.task(step, Ok(upid)).await?,
                    Ok(None) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(self.err(step, e)),
                }
            }
            Action::DestroyRetired { vmid } => {
                let running = self
                    .client
                    .vm_status(&node, *vmid)
                    .await
                    .map_err(|e| self.err(step, e))?
                    .status
                    == "running";
                if running {
                    self.task(step, self.client.power(&node, *vmid, "stop").await)
                        .await?;
                }
                self.task(step, self.client.delete_vm(&node, *vmid).await)
                    .await?;
            }
        }
        Ok(())
    }

    async fn clone_next(&mut self, name: &str) -> Result<(), ApplyError> {
        let step = "clone";
        let node = self.node().to_owned();
        let template = template_vmid(&self.rows, &self.inputs.template).map_err(|r| {
            fail_msg(
                step,
                self.serving,
                r,
                "fix proxmox.template in mms.yml, then run `mms-build --apply`".into(),
            )
        })?;
        let description = format!("{DESCRIPTION_MARKER}{}", self.d.hash16);
        for _ in 0..3 {
            let newid = self.client.next_id().await.map_err(|e| self.err(step, e))?;
            let res = self
                .client
                .clone_vm(
                    &node,
                    template,
                    newid,
                    name,
                    self.inputs.pool.as_deref(),
                    Some(&self.inputs.storage),
                    Some(&description),
                )
                .await;
            match res {
                Ok(upid) => {
                    self.next_vmid = Some(newid);
                    return self.task(step, Ok(upid)).await;
                }
                Err(e) if e.message().contains("already exists") => {
                    // The clone may have started before the answer was lost: adopt it.
                    if let Ok(cfg) = self.client.vm_config(&node, newid).await
                        && cfg.get("name").as_deref() == Some(name)
                        && cfg.get("description").as_deref() == Some(description.as_str())
                    {
                        self.next_vmid = Some(newid);
                        return self.wait_unlock().await;
                    }
                    // Someone else took the id: ask for another.
                }
                Err(e) => return Err(self.err(step, e)),
            }
        }
        Err(fail_msg(
            step,
            self.serving,
            "three VMIDs from /cluster/nextid were taken before the clone could use them".into(),
            RERUN.into(),
        ))
    }

    async fn wait_unlock(&mut self) -> Result<(), ApplyError> {
        let step = "wait-clone";
        let vmid = self.next(step)?;
        let node = self.node().to_owned();
        let wait = Wait::new(
            self.client.poll_policy(),
            self.opts.task_timeout,
            Duration::ZERO,
        );
        loop {
            match self.client.vm_config(&node, vmid).await {
                Ok(cfg) if cfg.get("lock").is_none() => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    self.next_vmid = None;
                    return Err(fail_msg(
                        step,
                        self.serving,
                        format!("the clone into VM {vmid} failed and Proxmox removed it"),
                        RERUN.into(),
                    ));
                }
                Err(e) => return Err(self.err(step, e)),
            }
            if wait.expired() {
                return Err(fail_msg(
                    step,
                    self.serving,
                    format!("VM {vmid} is still locked after {} s", wait.limit_secs()),
                    format!(
                        "check the clone task in the Proxmox UI (Tasks of node {node}), then {RERUN}"
                    ),
                ));
            }
            wait.pause().await;
        }
    }

    async fn wait_agent(&self, vmid: u32) -> Result<(), ApplyError> {
        let step = "wait-agent";
        let node = self.node();
        let poll = self.client.poll_policy();
        let wait = Wait::new(poll, self.opts.agent_timeout, AGENT_POLL_FLOOR);
        loop {
            let last = match self.client.agent_ping(node, vmid).await {
                Ok(()) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Permission | ErrorKind::Auth | ErrorKind::Tls
                    ) =>
                {
                    return Err(self.err(step, e));
                }
                Err(e) => e.message(),
            };
            if wait.expired() {
                return Err(fail_msg(
                    step,
                    self.serving,
                    format!(
                        "the guest agent of VM {vmid} did not answer within {} s (last: {last})",
                        wait.limit_secs()
                    ),
                    format!(
                        "look at the VM's console (`qm terminal {vmid}` on the node): did it boot, is qemu-guest-agent installed in the template? Then {RERUN}"
                    ),
                ));
            }
            wait.pause().await;
        }
        // The agent answers early in boot; secrets go in once cloud-init has
        // installed the appliance and firstboot has started (its status file exists).
        let wait = Wait::new(poll, self.opts.firstboot_timeout, AGENT_POLL_FLOOR);
        self.progress
            .status("waiting for cloud-init to start firstboot");
        loop {
            if read_firstboot(self.client, node, vmid).await.is_some() {
                return Ok(());
            }
            if wait.expired() {
                return Err(fail_msg(
                    step,
                    self.serving,
                    format!(
                        "firstboot did not start in VM {vmid} within {} s: {FIRSTBOOT_STATUS} does not exist",
                        wait.limit_secs()
                    ),
                    format!(
                        "look at `cloud-init status --long` and `journalctl -u mms-firstboot` on VM {vmid} (console: `qm terminal {vmid}`), then {RERUN}"
                    ),
                ));
            }
            wait.pause().await;
        }
    }

    async fn follow_firstboot(&self, vmid: u32) -> Result<(), ApplyError> {
        let step = "firstboot";
        let node = self.node();
        let wait = Wait::new(
            self.client.poll_policy(),
            self.opts.firstboot_timeout,
            AGENT_POLL_FLOOR,
        );
        let mut shown = String::new();
        loop {
            if let Some(st) = read_firstboot(self.client, node, vmid).await {
                if st.phase != shown {
                    self.progress.info(&format!("    firstboot: {}", st.phase));
                    shown = st.phase.clone();
                }
                self.progress.status(&format!("firstboot: {}", st.phase));
                if let Some(err) = st.error {
                    return Err(fail_msg(
                        step,
                        self.serving,
                        format!("firstboot of VM {vmid} failed in phase {}: {err}", st.phase),
                        format!(
                            "see `mms-build status` (and `journalctl -u mms-firstboot` in VM {vmid}); fix the cause, then run `mms-build --apply`: the failed VM is deleted and rebuilt"
                        ),
                    ));
                }
                if st.healthy() {
                    return Ok(());
                }
            }
            if wait.expired() {
                return Err(fail_msg(
                    step,
                    self.serving,
                    format!(
                        "firstboot of VM {vmid} did not finish within {} s (phase {shown})",
                        wait.limit_secs()
                    ),
                    format!("see `mms-build status`; then {RERUN}"),
                ));
            }
            wait.pause().await;
        }
    }

    async fn cut_over(&mut self, old: Option<(u32, bool)>) -> Result<(), ApplyError> {
        let step = "cut-over";
        let node = self.node().to_owned();
        let new = self.next(step)?;
        let name = self.d.name.clone();
        if let Some((old_vmid, running)) = old {
            if running {
                // The one-time public key goes first, while the old VM still runs.
                let cleaned = match self.old_keys_without_ours(old_vmid).await {
                    Ok(k) if k.is_empty() => Ok("# mms: no rebuild key\n".to_owned()),
                    other => other,
                };
                let removed = match cleaned {
                    Ok(keys) => {
                        self.client
                            .agent_file_write(&node, old_vmid, REBUILD_AUTHORIZED_KEYS, &keys)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = removed {
                    self.warn(format!(
                        "could not remove the one-time key from VM {old_vmid} ({e}); its private half is gone with the new VM's secrets"
                    ));
                }
                self.task(step, self.client.power(&node, old_vmid, "stop").await)
                    .await?;
            }
            let mut tags: Vec<String> = self
                .observed
                .roles
                .current
                .as_ref()
                .filter(|c| c.vmid == old_vmid)
                .map(|c| c.tags.clone())
                .unwrap_or_else(|| vec![TAG.to_owned()]);
            if !tags.iter().any(|t| t == RETIRED_TAG) {
                tags.push(RETIRED_TAG.to_owned());
            }
            self.client
                .set_config(
                    &node,
                    old_vmid,
                    Form::new()
                        .text("name", plan::retired_name(&name))
                        .text("tags", tags.join(";")),
                )
                .await
                .map_err(|e| self.err(step, e))?;
            self.retired = Some(old_vmid);
        }
        self.client
            .set_config(&node, new, Form::new().text("name", name))
            .await
            .map_err(|e| self.err(step, e))?;
        self.serving = Some(new);
        // The new VM takes over the tailnet name (and a static address) once the old one
        // is down.
        if old.is_some() {
            self.client
                .agent_file_write(&node, new, CUTOVER_TRIGGER, "cutover\n")
                .await
                .map_err(|e| self.err(step, e))?;
            self.follow_cutover(&node, new).await;
        }
        Ok(())
    }

    /// Waits, bounded, until the new VM's `mms-cutover.service` has removed the trigger (it
    /// does on success). Not fatal: the new VM serves already, and the unit retries.
    async fn follow_cutover(&mut self, node: &str, vmid: u32) {
        self.progress
            .status("waiting for the new VM to take over the tailnet name");
        let wait = Wait::new(
            self.client.poll_policy(),
            self.opts.cutover_timeout,
            AGENT_POLL_FLOOR,
        );
        loop {
            match self
                .client
                .agent_file_read(node, vmid, CUTOVER_TRIGGER)
                .await
            {
                Err(e) if e.kind() == ErrorKind::NotFound => return,
                Ok(_) | Err(_) => {}
            }
            if wait.expired() {
                self.warn(format!(
                    "VM {vmid} has not finished its cut-over (tailnet name, static address) within {} s; \
                     it keeps retrying: see `journalctl -u mms-cutover` in the VM (console: `qm terminal {vmid}`)",
                    wait.limit_secs()
                ));
                return;
            }
            wait.pause().await;
        }
    }

    /// The old VM's root authorized keys without one-time rebuild keys ("" if none).
    async fn old_keys_without_ours(&self, old_vmid: u32) -> Result<String, ProxmoxError> {
        let text = match self
            .client
            .agent_file_read(self.node(), old_vmid, REBUILD_AUTHORIZED_KEYS)
            .await
        {
            Ok(r) => r.content,
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut out = String::new();
        for line in text
            .lines()
            .filter(|l| !l.contains(REBUILD_KEY_COMMENT) && !l.starts_with("# mms:"))
        {
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }
}

//! The simulated cluster: VMs, containers, storage, tasks, the guest agent
//! playing first boot, and the request handlers with Proxmox's error texts.

use super::http::{RawRequest, Response};
use super::schema::{self, Endpoint};
use mms_builder::proxmox::form::percent_decode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Where the builder writes secrets and where firstboot reports (the contract).
pub const SECRETS_DIR: &str = "/etc/mms/secrets/";
/// The marker the builder writes last, after every secret.
pub const SECRETS_COMPLETE: &str = "/etc/mms/secrets/.complete";
/// firstboot's status file.
pub const FIRSTBOOT_STATUS: &str = "/var/lib/mms/firstboot.json";
/// The cut-over trigger; the guest's `mms-cutover.path` runs the cut-over and removes it.
pub const CUTOVER_TRIGGER: &str = "/var/lib/mms/cutover";
/// Phases after wait-secrets, in order.
pub const PHASES: &[&str] = &["tailscale", "state", "start", "health", "done"];

/// How long simulated work takes.
#[derive(Debug, Clone)]
pub struct Durations {
    /// Full clone task.
    pub clone: Duration,
    /// Resize task.
    pub resize: Duration,
    /// Start task.
    pub start: Duration,
    /// Stop task.
    pub stop: Duration,
    /// Destroy task.
    pub destroy: Duration,
    /// Upload copy task.
    pub upload: Duration,
    /// download-url task.
    pub download: Duration,
    /// Create (import) task.
    pub create: Duration,
    /// Template conversion.
    pub template: Duration,
    /// Snapshot task.
    pub snapshot: Duration,
    /// Start → guest agent answers.
    pub agent_boot: Duration,
    /// Agent up → cloud-init done and firstboot started (its status file exists).
    pub cloud_init: Duration,
    /// Each firstboot phase after secrets arrive.
    pub firstboot_phase: Duration,
    /// Trigger written → the guest's cut-over unit removed it (tailnet rename, address).
    pub cutover: Duration,
}

impl Durations {
    /// Fast durations for tests.
    pub fn fast() -> Self {
        let ms = Duration::from_millis;
        Durations {
            clone: ms(150),
            resize: ms(30),
            start: ms(40),
            stop: ms(30),
            destroy: ms(30),
            upload: ms(30),
            download: ms(60),
            create: ms(60),
            template: ms(30),
            snapshot: ms(30),
            agent_boot: ms(150),
            cloud_init: ms(60),
            firstboot_phase: ms(40),
            cutover: ms(40),
        }
    }

    /// Realistic-shaped durations (scaled down ~10x) for the benchmark.
    pub fn realistic() -> Self {
        let ms = Duration::from_millis;
        Durations {
            clone: ms(4000),
            resize: ms(400),
            start: ms(900),
            stop: ms(600),
            destroy: ms(500),
            upload: ms(700),
            download: ms(3000),
            create: ms(2000),
            template: ms(300),
            snapshot: ms(500),
            agent_boot: ms(3000),
            cloud_init: ms(2500),
            firstboot_phase: ms(1500),
            cutover: ms(300),
        }
    }
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The node name.
    pub node: String,
    /// Accepted token id (`user@realm!name`).
    pub token_id: String,
    /// Accepted token secret.
    pub token_secret: String,
    /// Privileges the token has (everything by default).
    pub privileges: BTreeSet<String>,
    /// Delay before a 401 (pveproxy: 3 s).
    pub auth_delay: Duration,
    /// Keep-alive idle timeout (pveproxy: 5 s).
    pub idle_timeout: Duration,
    /// Work durations.
    pub durations: Durations,
    /// How long a new VM shows in cluster/resources without name/tags.
    pub rrd_delay: Duration,
    /// Storages and their content types.
    pub storages: BTreeMap<String, Vec<String>>,
    /// Files download-url can fetch: URL → (size, sha256 hex).
    pub downloads: BTreeMap<String, (u64, String)>,
}

/// Every privilege the simulator checks.
pub const ALL_PRIVILEGES: &[&str] = &[
    "VM.Allocate",
    "VM.Clone",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Config.Disk",
    "VM.Config.CDROM",
    "VM.Config.HWType",
    "VM.Audit",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    "Datastore.AllocateTemplate",
    "Datastore.Allocate",
    "SDN.Use",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileWrite",
    "Sys.AccessNetwork",
];

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            node: "pve".into(),
            token_id: "mms@pve!build".into(),
            token_secret: "5f0c1a7e-3b1d-4c2e-9a61-0d6f3f1e2b7c".into(),
            privileges: ALL_PRIVILEGES.iter().map(|s| s.to_string()).collect(),
            auth_delay: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(5),
            durations: Durations::fast(),
            rrd_delay: Duration::ZERO,
            storages: BTreeMap::from([
                (
                    "local".into(),
                    vec![
                        "iso".into(),
                        "vztmpl".into(),
                        "import".into(),
                        "backup".into(),
                    ],
                ),
                ("local-lvm".into(), vec!["images".into(), "rootdir".into()]),
            ]),
            downloads: BTreeMap::new(),
        }
    }
}

/// What a fault does to a matching call.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Reset the connection before handling the request.
    Reset,
    /// Handle the request, then reset instead of answering.
    ResetAfter,
    /// Answer with this status and reason, doing nothing.
    Status(u16, String),
    /// 500 `can't lock file … - got timeout`.
    LockTimeout,
    /// The task this call starts fails with this message.
    FailTask(String),
    /// The task this call starts takes this long.
    SlowTask(Duration),
    /// Guest agent calls answer `QEMU guest agent is not running`.
    AgentDown,
    /// The task this call starts succeeds with `WARNINGS: n`.
    Warnings(u32),
}

/// A fault for calls whose method matches and whose path contains `path_contains`.
#[derive(Debug, Clone)]
pub struct Fault {
    /// HTTP method or `*`.
    pub method: String,
    /// Substring of the decoded path.
    pub path_contains: String,
    /// What happens.
    pub kind: FaultKind,
    /// How many matching calls are affected.
    pub times: u32,
    /// How many matching calls pass untouched first.
    pub skip: u32,
}

impl Fault {
    /// A fault on the next `times` calls matching `method` and `path_contains`.
    pub fn new(method: &str, path_contains: &str, kind: FaultKind, times: u32) -> Self {
        Fault {
            method: method.into(),
            path_contains: path_contains.into(),
            kind,
            times,
            skip: 0,
        }
    }

    /// Lets the first `n` matching calls through.
    pub fn after(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// Whether this fault applies to a call; consumes a skip when it matches.
    fn matches(&mut self, method: &str, path: &str) -> bool {
        if self.times == 0
            || !(self.method == "*" || self.method == method)
            || !path.contains(&self.path_contains)
        {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }
}

/// A logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Method.
    pub method: String,
    /// Decoded path without query.
    pub path: String,
    /// Answer status (0 = reset).
    pub status: u16,
}

/// Guest kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QEMU VM.
    Qemu,
    /// LXC container.
    Lxc,
}

/// A simulated guest.
#[derive(Debug, Clone)]
pub struct Vm {
    /// VMID.
    pub vmid: u32,
    /// Kind.
    pub kind: Kind,
    /// Config (raw values as stored).
    pub config: BTreeMap<String, String>,
    /// Power state.
    pub running: bool,
    /// When created.
    pub created: Instant,
    /// When the last start finished.
    pub started_at: Option<Instant>,
    /// Files in the guest (agent view).
    pub files: BTreeMap<String, String>,
    /// When the secrets marker was written.
    pub secrets_complete_at: Option<Instant>,
    /// Firstboot fails at this phase.
    pub firstboot_fail: Option<String>,
    /// Firstboot already finished before the simulation (a pre-existing VM).
    pub firstboot_done: bool,
    /// Snapshot names.
    pub snapshots: Vec<String>,
    /// Another cluster node the guest lives on (`None`: the simulated node).
    pub node: Option<String>,
    /// When the cut-over trigger was written.
    pub cutover_at: Option<Instant>,
}

impl Vm {
    /// The VM's name.
    pub fn name(&self) -> &str {
        self.config.get("name").map(String::as_str).unwrap_or("")
    }
    /// The VM's tags (split).
    pub fn tags(&self) -> Vec<String> {
        self.config
            .get("tags")
            .map(|t| {
                t.split(';')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Effect {
    None,
    CloneDone {
        newid: u32,
    },
    CloneFailed {
        newid: u32,
    },
    Started {
        vmid: u32,
    },
    Stopped {
        vmid: u32,
    },
    Destroyed {
        vmid: u32,
    },
    Resized {
        vmid: u32,
        disk: String,
        size: String,
    },
    Volume {
        volid: String,
        size: u64,
    },
    Created {
        vmid: u32,
    },
    Templated {
        vmid: u32,
    },
    Snapshot {
        vmid: u32,
        name: String,
    },
}

#[derive(Debug, Clone)]
struct Task {
    upid: String,
    start: Instant,
    duration: Duration,
    error: Option<String>,
    effect: Effect,
    done: bool,
    log: Vec<String>,
}

/// A stored volume.
#[derive(Debug, Clone)]
pub struct StoredVolume {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content (uploads).
    pub sha256: String,
}

/// The whole simulated cluster.
#[derive(Debug)]
pub struct State {
    /// Settings.
    pub cfg: SimConfig,
    /// Guests by VMID.
    pub vms: BTreeMap<u32, Vm>,
    /// Volumes by volid.
    pub volumes: BTreeMap<String, StoredVolume>,
    /// Pending faults.
    pub faults: Vec<Fault>,
    /// Request log.
    pub log: Vec<Logged>,
    /// Sum of all task durations plus guest-side waits (boot, firstboot).
    pub server_time: Duration,
    /// The next VM built fails firstboot at this phase.
    pub next_firstboot_fail: Option<String>,
    tasks: Vec<Task>,
    pid: u32,
    epoch: Instant,
}

fn ok(data: Value) -> Response {
    Response::Json {
        status: 200,
        reason: "OK".into(),
        body: json!({ "data": data }),
    }
}

/// A handler error (500 unless stated) with Proxmox's message text.
fn fail(status: u16, message: &str) -> Response {
    let first = message.lines().next().unwrap_or("").to_owned();
    Response::Json {
        status,
        reason: first,
        body: json!({ "data": null, "message": format!("{message}\n") }),
    }
}

fn param_error(errors: BTreeMap<String, String>) -> Response {
    Response::Json {
        status: 400,
        reason: "Parameter verification failed.".into(),
        body: json!({ "data": null, "errors": errors, "message": "Parameter verification failed.\n" }),
    }
}

fn perm(path: &str, privilege: &str) -> Response {
    fail(
        403,
        &format!("Permission check failed ({path}, {privilege})"),
    )
}

/// Decodes a form body or query like pveproxy: pairs split on `&` and `;`,
/// each pair on `=` keeping two fields, `+` is a space.
pub fn decode_form(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for kv in s.split(['&', ';']) {
        if kv.is_empty() {
            continue;
        }
        let mut it = kv.split('=');
        let k = it.next().unwrap_or("");
        let v = it.next().unwrap_or("");
        let k = percent_decode(k, true).ok_or_else(|| format!("bad encoding in {kv:?}"))?;
        let v = percent_decode(v, true).ok_or_else(|| format!("bad encoding in {kv:?}"))?;
        out.insert(k, v);
    }
    Ok(out)
}

impl State {
    /// A fresh cluster.
    pub fn new(cfg: SimConfig) -> Self {
        State {
            cfg,
            vms: BTreeMap::new(),
            volumes: BTreeMap::new(),
            faults: Vec::new(),
            log: Vec::new(),
            server_time: Duration::ZERO,
            next_firstboot_fail: None,
            tasks: Vec::new(),
            pid: 0x1000,
            epoch: Instant::now(),
        }
    }

    /// Adds a guest directly.
    pub fn insert_vm(&mut self, vm: Vm) {
        self.vms.insert(vm.vmid, vm);
    }

    /// VMs (QEMU, not templates) whose tags include `tag`.
    pub fn vms_tagged(&self, tag: &str) -> Vec<&Vm> {
        self.vms
            .values()
            .filter(|v| v.kind == Kind::Qemu && v.tags().iter().any(|t| t == tag))
            .collect()
    }

    fn digest(config: &BTreeMap<String, String>) -> String {
        let mut h = Sha256::new();
        for (k, v) in config {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())[..40].to_owned()
    }

    fn task_override(&mut self, path: &str, method: &str) -> (Option<String>, Option<Duration>) {
        let mut fail_msg = None;
        let mut slow = None;
        for f in &mut self.faults {
            if !matches!(
                f.kind,
                FaultKind::FailTask(_) | FaultKind::SlowTask(_) | FaultKind::Warnings(_)
            ) || !f.matches(method, path)
            {
                continue;
            }
            match &f.kind {
                FaultKind::FailTask(m) if fail_msg.is_none() => {
                    fail_msg = Some(m.clone());
                    f.times -= 1;
                }
                FaultKind::SlowTask(d) if slow.is_none() => {
                    slow = Some(*d);
                    f.times -= 1;
                }
                FaultKind::Warnings(n) if fail_msg.is_none() => {
                    fail_msg = Some(format!("WARNINGS: {n}"));
                    f.times -= 1;
                }
                _ => {}
            }
        }
        (fail_msg, slow)
    }

    fn new_task(
        &mut self,
        ttype: &str,
        id: &str,
        duration: Duration,
        effect: Effect,
        ov: (Option<String>, Option<Duration>),
    ) -> String {
        self.pid += 1;
        let start = Instant::now();
        let st =
            0x6900_0000u32 + u32::try_from(start.duration_since(self.epoch).as_secs()).unwrap_or(0);
        let upid = format!(
            "UPID:{}:{:08X}:{:08X}:{:08X}:{ttype}:{id}:{}:",
            self.cfg.node,
            self.pid,
            0x0200_0000 + self.pid,
            st,
            self.cfg.token_id
        );
        let duration = ov.1.unwrap_or(duration);
        let warnings = ov.0.as_deref().is_some_and(|e| e.starts_with("WARNINGS: "));
        let effect = match (&ov.0, effect) {
            (Some(_), e) if warnings => e,
            (Some(_), Effect::CloneDone { newid }) => Effect::CloneFailed { newid },
            (Some(_), _) => Effect::None,
            (None, e) => e,
        };
        self.server_time += duration;
        self.tasks.push(Task {
            upid: upid.clone(),
            start,
            duration,
            error: ov.0,
            effect,
            done: false,
            log: vec![format!("starting {ttype} {id}")],
        });
        upid
    }

    /// Applies the effects of finished tasks.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let mut effects = Vec::new();
        for t in &mut self.tasks {
            if !t.done && now >= t.start + t.duration {
                t.done = true;
                match &t.error {
                    None => t.log.push("TASK OK".into()),
                    Some(w) if w.starts_with("WARNINGS: ") => t.log.push(format!("TASK {w}")),
                    Some(e) => t.log.push(format!("TASK ERROR: {e}")),
                }
                effects.push(t.effect.clone());
            }
        }
        for e in effects {
            self.apply(e, now);
        }
    }

    fn apply(&mut self, e: Effect, now: Instant) {
        match e {
            Effect::None => {}
            Effect::CloneDone { newid } => {
                if let Some(vm) = self.vms.get_mut(&newid) {
                    vm.config.remove("lock");
                }
            }
            Effect::CloneFailed { newid } => {
                self.vms.remove(&newid);
            }
            Effect::Created { vmid } => {
                if let Some(vm) = self.vms.get_mut(&vmid) {
                    vm.config.remove("lock");
                }
            }
            Effect::Started { vmid } => {
                let boot = self.cfg.durations.agent_boot + self.cfg.durations.cloud_init;
                if let Some(vm) = self.vms.get_mut(&vmid) {
                    vm.running = true;
                    vm.started_at = Some(now);
                    self.server_time += boot;
                }
            }
            Effect::Stopped { vmid } => {
                if let Some(vm) = self.vms.get_mut(&vmid) {
                    vm.running = false;
                }
            }
            Effect::Destroyed { vmid } => {
                self.vms.remove(&vmid);
            }
            Effect::Resized { vmid, disk, size } => {
                if let Some(vm) = self.vms.get_mut(&vmid)
                    && let Some(d) = vm.config.get(&disk).cloned()
                {
                    let kept: Vec<&str> =
                        d.split(',').filter(|p| !p.starts_with("size=")).collect();
                    vm.config
                        .insert(disk, format!("{},size={size}", kept.join(",")));
                }
            }
            Effect::Volume { volid, size } => {
                self.volumes.insert(
                    volid,
                    StoredVolume {
                        size,
                        sha256: String::new(),
                    },
                );
            }
            Effect::Templated { vmid } => {
                if let Some(vm) = self.vms.get_mut(&vmid) {
                    vm.config.insert("template".into(), "1".into());
                    if let Some(d) = vm.config.get("scsi0").cloned() {
                        vm.config.insert("scsi0".into(), d.replace("vm-", "base-"));
                    }
                }
            }
            Effect::Snapshot { vmid, name } => {
                if let Some(vm) = self.vms.get_mut(&vmid) {
                    vm.snapshots.push(name);
                }
            }
        }
    }

    fn has(&self, privilege: &str) -> bool {
        self.cfg.privileges.contains(privilege)
    }

    /// Handles one request (auth already checked by the caller? no: here).
    pub fn handle(&mut self, req: &RawRequest) -> (Response, bool) {
        self.tick();
        let (raw_path, query) = match req.target.split_once('?') {
            Some((p, q)) => (p, q),
            None => (req.target.as_str(), ""),
        };
        let Some(path) = raw_path.strip_prefix("/api2/json") else {
            return (fail(501, &format!("no such uri {raw_path}")), false);
        };
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false).unwrap_or_else(|| s.to_owned()))
            .collect();
        let decoded_path = format!("/{}", segs.join("/"));

        // Authentication: PVEAPIToken=<id>=<secret>, split on the last '='.
        let authed = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("PVEAPIToken="))
            .and_then(|v| v.rsplit_once('='))
            .is_some_and(|(id, secret)| id == self.cfg.token_id && secret == self.cfg.token_secret);
        if !authed {
            return (Response::Unauthorized, false);
        }

        // Faults that replace the answer.
        let mut reset_after = false;
        for f in &mut self.faults {
            if matches!(
                f.kind,
                FaultKind::FailTask(_) | FaultKind::SlowTask(_) | FaultKind::Warnings(_)
            ) || (matches!(f.kind, FaultKind::AgentDown) && !decoded_path.contains("/agent/"))
                || !f.matches(&req.method, &decoded_path)
            {
                continue;
            }
            let hit = match &f.kind {
                FaultKind::Reset => Some(Response::Reset),
                FaultKind::ResetAfter => {
                    reset_after = true;
                    None
                }
                FaultKind::Status(code, reason) => Some(Response::Json {
                    status: *code,
                    reason: reason.clone(),
                    body: json!({"data": null}),
                }),
                FaultKind::LockTimeout => {
                    let id = segs.get(3).cloned().unwrap_or_default();
                    Some(fail(
                        500,
                        &format!(
                            "can't lock file '/var/lock/qemu-server/lock-{id}.conf' - got timeout"
                        ),
                    ))
                }
                FaultKind::AgentDown if decoded_path.contains("/agent/") => {
                    Some(fail(500, "QEMU guest agent is not running"))
                }
                _ => continue,
            };
            f.times -= 1;
            if let Some(r) = hit {
                return (r, false);
            }
            break;
        }

        if (req.method == "GET" || req.method == "DELETE") && !req.body.is_empty() {
            return (
                Response::Plain {
                    status: 501,
                    reason: format!("Unexpected content for method '{}'", req.method),
                },
                false,
            );
        }

        let ctype = req.header("content-type").unwrap_or("");
        let is_upload = req.method == "POST" && segs.last().is_some_and(|s| s == "upload");
        let mut params = match decode_form(query) {
            Ok(p) => p,
            Err(e) => return (fail(400, &e), false),
        };
        let mut upload_data = None;
        if is_upload {
            if !self.has("Datastore.AllocateTemplate") {
                let storage = segs.get(3).cloned().unwrap_or_default();
                return (
                    Response::Bare {
                        status: 403,
                        reason: format!(
                            "Permission check failed (/storage/{storage}, Datastore.AllocateTemplate)"
                        ),
                    },
                    false,
                );
            }
            match parse_multipart(ctype, &req.body) {
                Ok((fields, filename, data)) => {
                    params.extend(fields);
                    params.insert("filename".into(), filename);
                    upload_data = Some(data);
                }
                Err(e) => {
                    return (
                        Response::Plain {
                            status: 500,
                            reason: e,
                        },
                        false,
                    );
                }
            }
        } else if !req.body.is_empty() {
            if !ctype.starts_with("application/x-www-form-urlencoded") {
                return (
                    Response::Plain {
                        status: 506,
                        reason: format!("upload 'Content-Type '{ctype}' not implemented"),
                    },
                    false,
                );
            }
            let body = String::from_utf8_lossy(&req.body);
            match decode_form(&body) {
                Ok(p) => params.extend(p),
                Err(e) => return (fail(400, &e), false),
            }
        }

        let resp = self.route(&req.method, &segs, params, upload_data);
        (resp, reset_after)
    }

    fn route(
        &mut self,
        method: &str,
        segs: &[String],
        mut params: BTreeMap<String, String>,
        upload: Option<Vec<u8>>,
    ) -> Response {
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let (template, path_params): (String, Vec<(&str, &str)>) = match s.as_slice() {
            ["version"] => ("/version".into(), vec![]),
            ["cluster", "nextid"] => ("/cluster/nextid".into(), vec![]),
            ["cluster", "resources"] => ("/cluster/resources".into(), vec![]),
            ["nodes", n, "qemu"] => ("/nodes/{node}/qemu".into(), vec![("node", n)]),
            ["nodes", n, "qemu", id] => (
                "/nodes/{node}/qemu/{vmid}".into(),
                vec![("node", n), ("vmid", id)],
            ),
            ["nodes", n, "qemu", id, "status", a] => (
                format!("/nodes/{{node}}/qemu/{{vmid}}/status/{a}"),
                vec![("node", n), ("vmid", id)],
            ),
            ["nodes", n, "qemu", id, "agent", a] => (
                format!("/nodes/{{node}}/qemu/{{vmid}}/agent/{a}"),
                vec![("node", n), ("vmid", id)],
            ),
            ["nodes", n, "qemu", id, a] => (
                format!("/nodes/{{node}}/qemu/{{vmid}}/{a}"),
                vec![("node", n), ("vmid", id)],
            ),
            ["nodes", n, "lxc", id, "snapshot"] => (
                "/nodes/{node}/lxc/{vmid}/snapshot".into(),
                vec![("node", n), ("vmid", id)],
            ),
            ["nodes", n, "tasks", u, a] => (
                format!("/nodes/{{node}}/tasks/{{upid}}/{a}"),
                vec![("node", n), ("upid", u)],
            ),
            ["nodes", n, "storage", st, "content"] => (
                "/nodes/{node}/storage/{storage}/content".into(),
                vec![("node", n), ("storage", st)],
            ),
            ["nodes", n, "storage", st, "content", v] => (
                "/nodes/{node}/storage/{storage}/content/{volume}".into(),
                vec![("node", n), ("storage", st), ("volume", v)],
            ),
            ["nodes", n, "storage", st, a] => (
                format!("/nodes/{{node}}/storage/{{storage}}/{a}"),
                vec![("node", n), ("storage", st)],
            ),
            _ => (String::new(), vec![]),
        };
        let not_impl = || {
            fail(
                501,
                &format!("Method '{method} /{}' not implemented", segs.join("/")),
            )
        };
        let Some(ep) = schema::endpoints()
            .into_iter()
            .find(|e| e.method == method && e.path == template)
        else {
            return not_impl();
        };
        for (k, v) in &path_params {
            if let Some(existing) = params.get(*k)
                && existing != v
            {
                return fail(
                    400,
                    "duplicate parameter (already defined in URI) with conflicting values!",
                );
            }
            params.insert((*k).to_owned(), (*v).to_owned());
        }
        if let Err(errors) = schema::validate(&ep, &params) {
            return param_error(errors);
        }
        if let Some(n) = params.get("node") {
            let known =
                *n == self.cfg.node || self.vms.values().any(|vm| vm.node.as_ref() == Some(n));
            if !known {
                return fail(
                    500,
                    &format!(
                        "hostname lookup '{n}' failed - failed to get address info for: {n}: Name or service not known"
                    ),
                );
            }
            // A guest answers only on the node that holds its config (pve-cluster's
            // nodes/<node>/qemu-server/<vmid>.conf).
            let guest = params
                .get("vmid")
                .and_then(|v| v.parse::<u32>().ok())
                .and_then(|id| self.vms.get(&id));
            if let Some(vm) = guest
                && vm.node.as_deref().unwrap_or(&self.cfg.node) != n.as_str()
            {
                let dir = if vm.kind == Kind::Qemu {
                    "qemu-server"
                } else {
                    "lxc"
                };
                return fail(
                    500,
                    &format!(
                        "Configuration file 'nodes/{n}/{dir}/{}.conf' does not exist",
                        vm.vmid
                    ),
                );
            }
        }
        self.dispatch(&ep, params, upload)
    }

    fn vm_or_err(&self, vmid: u32) -> Result<&Vm, Response> {
        self.vms.get(&vmid).ok_or_else(|| {
            fail(
                500,
                &format!(
                    "Configuration file 'nodes/{}/qemu-server/{vmid}.conf' does not exist",
                    self.cfg.node
                ),
            )
        })
    }

    fn dispatch(
        &mut self,
        ep: &Endpoint,
        p: BTreeMap<String, String>,
        upload: Option<Vec<u8>>,
    ) -> Response {
        let node = self.cfg.node.clone();
        let vmid: u32 = p.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
        let key = ep.key();
        let ov = self.task_override(
            &key.replace("{vmid}", &vmid.to_string())
                .replace("{node}", &node),
            ep.method,
        );
        let d = self.cfg.durations.clone();
        match key.as_str() {
            "GET /version" => {
                ok(json!({"version": "9.1.1", "release": "9.1", "repoid": "42d4b65b"}))
            }
            "GET /cluster/nextid" => {
                let mut id = 100;
                while self.vms.contains_key(&id) {
                    id += 1;
                }
                ok(json!(id.to_string()))
            }
            "GET /cluster/resources" => {
                let now = Instant::now();
                let rows: Vec<Value> = self
                    .vms
                    .values()
                    .filter(|_| self.has("VM.Audit"))
                    .map(|vm| {
                        let kind = if vm.kind == Kind::Qemu { "qemu" } else { "lxc" };
                        let node = vm.node.as_deref().unwrap_or(&node);
                        if now < vm.created + self.cfg.rrd_delay {
                            return json!({"id": format!("{kind}/{}", vm.vmid), "type": kind, "vmid": vm.vmid,
                                          "node": node, "status": "unknown"});
                        }
                        let mut row = json!({
                            "id": format!("{kind}/{}", vm.vmid), "type": kind, "vmid": vm.vmid, "node": node,
                            "status": if vm.running { "running" } else { "stopped" },
                            "name": vm.name(), "template": if vm.config.contains_key("template") { 1 } else { 0 },
                            "maxcpu": 2, "cpu": 0.01, "maxmem": 2147483648u64, "mem": 0, "maxdisk": 0, "disk": 0,
                            "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0, "uptime": 0, "memhost": 0,
                        });
                        if let Some(t) = vm.config.get("tags") {
                            row["tags"] = json!(t);
                        }
                        if let Some(l) = vm.config.get("lock") {
                            row["lock"] = json!(l);
                        }
                        row
                    })
                    .collect();
                ok(json!(rows))
            }
            "GET /nodes/{node}/qemu/{vmid}/config" => {
                if !self.has("VM.Audit") {
                    return perm(&format!("/vms/{vmid}"), "VM.Audit");
                }
                let vm = match self.vm_or_err(vmid) {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let mut obj = serde_json::Map::new();
                for (k, v) in &vm.config {
                    let numeric = matches!(k.as_str(), "cores" | "sockets" | "template" | "onboot");
                    obj.insert(
                        k.clone(),
                        if numeric {
                            json!(v.parse::<i64>().unwrap_or(0))
                        } else {
                            json!(v)
                        },
                    );
                }
                obj.insert("digest".into(), json!(Self::digest(&vm.config)));
                ok(Value::Object(obj))
            }
            "PUT /nodes/{node}/qemu/{vmid}/config" => self.put_config(vmid, p),
            "POST /nodes/{node}/qemu/{vmid}/clone" => {
                if !self.has("VM.Clone") {
                    return perm(&format!("/vms/{vmid}"), "VM.Clone");
                }
                let newid: u32 = p.get("newid").and_then(|v| v.parse().ok()).unwrap_or(0);
                if !self.has("VM.Allocate") {
                    return perm(&format!("/vms/{newid}"), "VM.Allocate");
                }
                let src = match self.vm_or_err(vmid) {
                    Ok(v) => v.clone(),
                    Err(r) => return r,
                };
                if let Some(bridge) = src
                    .config
                    .get("net0")
                    .and_then(|n| schema_prop(n, "bridge"))
                    && !self.has("SDN.Use")
                {
                    return perm(&format!("/sdn/zones/localnetwork/{bridge}"), "SDN.Use");
                }
                if !self.has("Datastore.AllocateSpace") {
                    return perm("/storage/local-lvm", "Datastore.AllocateSpace");
                }
                if let Some(l) = src.config.get("lock") {
                    return fail(500, &format!("VM is locked ({l})"));
                }
                if self.vms.contains_key(&newid) {
                    return fail(
                        500,
                        &format!("unable to create VM {newid}: config file already exists"),
                    );
                }
                let mut config = src.config.clone();
                config.remove("template");
                config.insert("lock".into(), "clone".into());
                config.insert(
                    "name".into(),
                    p.get("name")
                        .cloned()
                        .unwrap_or_else(|| format!("Copy-of-VM-{}", src.name())),
                );
                if let Some(desc) = p.get("description") {
                    config.insert("description".into(), desc.clone());
                }
                if let Some(net) = config.get("net0").cloned() {
                    let rest: Vec<&str> = net.split(',').skip(1).collect();
                    config.insert(
                        "net0".into(),
                        format!(
                            "virtio=BC:24:11:{:02X}:{:02X}:{:02X},{}",
                            newid >> 16 & 255,
                            newid >> 8 & 255,
                            newid & 255,
                            rest.join(",")
                        ),
                    );
                }
                if let Some(disk) = config.get("scsi0").cloned() {
                    let size = disk
                        .split(',')
                        .find(|p| p.starts_with("size="))
                        .unwrap_or("size=5G")
                        .to_owned();
                    let storage = p
                        .get("storage")
                        .cloned()
                        .unwrap_or_else(|| "local-lvm".into());
                    config.insert(
                        "scsi0".into(),
                        format!("{storage}:vm-{newid}-disk-0,{size}"),
                    );
                }
                let firstboot_fail = self.next_firstboot_fail.take();
                self.insert_vm(Vm {
                    vmid: newid,
                    kind: Kind::Qemu,
                    config,
                    running: false,
                    created: Instant::now(),
                    started_at: None,
                    files: BTreeMap::new(),
                    secrets_complete_at: None,
                    firstboot_fail,
                    firstboot_done: false,
                    snapshots: vec![],
                    node: None,
                    cutover_at: None,
                });
                let upid = self.new_task(
                    "qmclone",
                    &vmid.to_string(),
                    d.clone,
                    Effect::CloneDone { newid },
                    ov,
                );
                ok(json!(upid))
            }
            "PUT /nodes/{node}/qemu/{vmid}/resize" => {
                if !self.has("VM.Config.Disk") {
                    return perm(&format!("/vms/{vmid}"), "VM.Config.Disk");
                }
                let vm = match self.vm_or_err(vmid) {
                    Ok(v) => v.clone(),
                    Err(r) => return r,
                };
                if let Some(l) = vm.config.get("lock") {
                    return fail(500, &format!("VM is locked ({l})"));
                }
                let disk = p["disk"].clone();
                let size = p["size"].clone();
                let mut ov = ov;
                let current = vm
                    .config
                    .get(&disk)
                    .and_then(|d| schema_prop(d, "size"))
                    .map(|s| gib(&s));
                let new_size = match current {
                    None => {
                        ov.0.get_or_insert(format!("disk '{disk}' does not exist"));
                        String::new()
                    }
                    Some(cur) => {
                        let want = if let Some(rel) = size.strip_prefix('+') {
                            cur + gib(rel)
                        } else {
                            gib(&size)
                        };
                        if want < cur {
                            ov.0.get_or_insert("shrinking disks is not supported".into());
                        }
                        format!("{}G", want.max(cur))
                    }
                };
                let upid = self.new_task(
                    "resize",
                    &vmid.to_string(),
                    d.resize,
                    Effect::Resized {
                        vmid,
                        disk,
                        size: new_size,
                    },
                    ov,
                );
                ok(json!(upid))
            }
            "POST /nodes/{node}/qemu/{vmid}/status/start"
            | "POST /nodes/{node}/qemu/{vmid}/status/stop" => {
                if !self.has("VM.PowerMgmt") {
                    return perm(&format!("/vms/{vmid}"), "VM.PowerMgmt");
                }
                let vm = match self.vm_or_err(vmid) {
                    Ok(v) => v.clone(),
                    Err(r) => return r,
                };
                if let Some(l) = vm.config.get("lock") {
                    return fail(500, &format!("VM is locked ({l})"));
                }
                let mut ov = ov;
                if key.ends_with("start") {
                    if vm.config.contains_key("template") {
                        ov.0.get_or_insert("you can't start a vm if it's a template".into());
                    } else if vm.running {
                        ov.0.get_or_insert(format!("VM {vmid} already running"));
                    }
                    let upid = self.new_task(
                        "qmstart",
                        &vmid.to_string(),
                        d.start,
                        Effect::Started { vmid },
                        ov,
                    );
                    ok(json!(upid))
                } else {
                    let upid = self.new_task(
                        "qmstop",
                        &vmid.to_string(),
                        d.stop,
                        Effect::Stopped { vmid },
                        ov,
                    );
                    ok(json!(upid))
                }
            }
            "GET /nodes/{node}/qemu/{vmid}/status/current" => {
                let vm = match self.vm_or_err(vmid) {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let mut v = json!({"vmid": vmid, "status": if vm.running {"running"} else {"stopped"},
                    "name": vm.name(), "cpus": 2, "maxmem": 1, "mem": 0, "maxdisk": 0, "diskread": 0,
                    "diskwrite": 0, "netin": 0, "netout": 0, "cpu": 0, "ha": {"managed": 0}});
                if let Some(l) = vm.config.get("lock") {
                    v["lock"] = json!(l);
                }
                ok(v)
            }
            "DELETE /nodes/{node}/qemu/{vmid}" => {
                if !self.has("VM.Allocate") {
                    return perm(&format!("/vms/{vmid}"), "VM.Allocate");
                }
                let vm = match self.vm_or_err(vmid) {
                    Ok(v) => v.clone(),
                    Err(r) => return r,
                };
                if vm.running {
                    return fail(500, &format!("VM {vmid} is running - destroy failed"));
                }
                if let Some(l) = vm.config.get("lock") {
                    return fail(500, &format!("VM is locked ({l})"));
                }
                let upid = self.new_task(
                    "qmdestroy",
                    &vmid.to_string(),
                    d.destroy,
                    Effect::Destroyed { vmid },
                    ov,
                );
                ok(json!(upid))
            }
            "POST /nodes/{node}/qemu" => self.create_vm(vmid, p, ov),
            "POST /nodes/{node}/qemu/{vmid}/template" => {
                if !self.has("VM.Allocate") {
                    return perm(&format!("/vms/{vmid}"), "VM.Allocate");
                }
                let vm = match self.vm_or_err(vmid) {
                    Ok(v) => v.clone(),
                    Err(r) => return r,
                };
                if vm.running {
                    return fail(500, "you can't convert a VM to template if VM is running");
                }
                if vm.config.contains_key("template") {
                    return fail(500, "you can't convert a template to a template");
                }
                if let Some(l) = vm.config.get("lock") {
                    return fail(500, &format!("VM is locked ({l})"));
                }
                let upid = self.new_task(
                    "qmtemplate",
                    &vmid.to_string(),
                    d.template,
                    Effect::Templated { vmid },
                    ov,
                );
                ok(json!(upid))
            }
            k if k.contains("/agent/") => self.agent(vmid, k, p),
            "GET /nodes/{node}/tasks/{upid}/status" | "GET /nodes/{node}/tasks/{upid}/log" => {
                let upid = p["upid"].clone();
                if upid.parse::<mms_builder::proxmox::Upid>().is_err() {
                    return param_error(BTreeMap::from([(
                        "upid".into(),
                        "unable to parse worker upid".into(),
                    )]));
                }
                let Some(t) = self.tasks.iter().find(|t| t.upid == upid) else {
                    return param_error(BTreeMap::from([("upid".into(), "no such task".into())]));
                };
                if key.ends_with("status") {
                    let mut v = json!({"upid": t.upid, "node": node, "pid": 1, "pstart": 1, "starttime": 1,
                        "type": "x", "id": "", "user": self.cfg.token_id.split('!').next().unwrap_or(""),
                        "tokenid": self.cfg.token_id.split('!').nth(1).unwrap_or(""),
                        "status": if t.done {"stopped"} else {"running"}});
                    if t.done {
                        v["exitstatus"] = json!(t.error.clone().unwrap_or_else(|| "OK".into()));
                    }
                    ok(v)
                } else {
                    let lines: Vec<Value> = t
                        .log
                        .iter()
                        .enumerate()
                        .map(|(i, l)| json!({"n": i + 1, "t": l}))
                        .collect();
                    Response::Json {
                        status: 200,
                        reason: "OK".into(),
                        body: json!({"data": lines, "total": lines.len()}),
                    }
                }
            }
            "GET /nodes/{node}/storage/{storage}/content" => {
                if !self.has("Datastore.Audit") {
                    return perm(&format!("/storage/{}", p["storage"]), "Datastore.Audit");
                }
                let prefix = format!("{}:", p["storage"]);
                let filter = p.get("content").cloned();
                let rows: Vec<Value> = self
                    .volumes
                    .iter()
                    .filter(|(id, _)| id.starts_with(&prefix))
                    .filter_map(|(id, v)| {
                        let content = id[prefix.len()..].split('/').next().unwrap_or("").to_owned();
                        if filter.as_ref().is_some_and(|f| *f != content) {
                            return None;
                        }
                        let format = id.rsplit('.').next().unwrap_or("raw");
                        Some(json!({"volid": id, "size": v.size, "format": format, "ctime": 1_700_000_000, "content": content}))
                    })
                    .collect();
                ok(json!(rows))
            }
            "DELETE /nodes/{node}/storage/{storage}/content/{volume}" => {
                let storage = p.get("storage").cloned().unwrap_or_default();
                if !self.has("Datastore.Allocate") {
                    return perm(&format!("/storage/{storage}"), "Datastore.Allocate");
                }
                let vol = &p["volume"];
                let volid = if vol.contains(':') {
                    vol.clone()
                } else {
                    format!("{storage}:{vol}")
                };
                if !volid.starts_with(&format!("{storage}:")) {
                    return fail(
                        400,
                        &format!(
                            "storage ID mismatch ({storage} != {})",
                            volid.split(':').next().unwrap_or("")
                        ),
                    );
                }
                if self.volumes.remove(&volid).is_none() {
                    return fail(500, &format!("volume '{volid}' does not exist"));
                }
                ok(Value::Null)
            }
            "POST /nodes/{node}/storage/{storage}/upload" => {
                let storage = p["storage"].clone();
                let content = p["content"].clone();
                let filename = normalise_filename(&p["filename"]);
                if let Some(e) = self.storage_check(&storage, &content) {
                    return e;
                }
                let lower = filename.to_ascii_lowercase();
                if content == "iso" && !(lower.ends_with(".iso") || lower.ends_with(".img")) {
                    return param_error(BTreeMap::from([(
                        "filename".into(),
                        "wrong file extension".into(),
                    )]));
                }
                let data = upload.unwrap_or_default();
                let volid = format!("{storage}:{content}/{filename}");
                let size = data.len() as u64;
                let upid =
                    self.new_task("imgcopy", "", d.upload, Effect::Volume { volid, size }, ov);
                ok(json!(upid))
            }
            "POST /nodes/{node}/storage/{storage}/download-url" => {
                let storage = p["storage"].clone();
                if !self.has("Datastore.AllocateTemplate") {
                    return perm(&format!("/storage/{storage}"), "Datastore.AllocateTemplate");
                }
                if !self.has("Sys.AccessNetwork") {
                    return perm(&format!("/nodes/{node}"), "Sys.AccessNetwork");
                }
                let content = p["content"].clone();
                if let Some(e) = self.storage_check(&storage, &content) {
                    return e;
                }
                let filename = normalise_filename(&p["filename"]);
                if content == "import" && !import_name_ok(&filename) {
                    return param_error(BTreeMap::from([(
                        "filename".into(),
                        "invalid filename or wrong extension".into(),
                    )]));
                }
                let volid = format!("{storage}:{content}/{filename}");
                let mut ov = ov;
                let size = match self.cfg.downloads.get(&p["url"]) {
                    None => {
                        ov.0.get_or_insert(format!(
                            "download failed: 404 Not Found ({})",
                            p["url"]
                        ));
                        0
                    }
                    Some((size, sha)) => {
                        if let Some(want) = p.get("checksum")
                            && !want.eq_ignore_ascii_case(sha)
                        {
                            ov.0.get_or_insert(format!(
                                "checksum mismatch: got '{sha}' != expect '{want}'"
                            ));
                        }
                        *size
                    }
                };
                let upid = self.new_task(
                    "download",
                    &filename,
                    d.download,
                    Effect::Volume { volid, size },
                    ov,
                );
                ok(json!(upid))
            }
            "GET /nodes/{node}/lxc/{vmid}/snapshot" => {
                match self.vms.get(&vmid).filter(|v| v.kind == Kind::Lxc) {
                    None => fail(
                        500,
                        &format!(
                            "Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"
                        ),
                    ),
                    Some(ct) => {
                        let mut rows: Vec<Value> = ct
                            .snapshots
                            .iter()
                            .map(|s| json!({"name": s, "description": ""}))
                            .collect();
                        rows.push(json!({"name": "current", "description": "You are here!"}));
                        ok(json!(rows))
                    }
                }
            }
            "POST /nodes/{node}/lxc/{vmid}/snapshot" => {
                if !self.has("VM.Snapshot") {
                    return perm(&format!("/vms/{vmid}"), "VM.Snapshot");
                }
                let name = p["snapname"].clone();
                match self.vms.get(&vmid).filter(|v| v.kind == Kind::Lxc) {
                    None => fail(
                        500,
                        &format!(
                            "Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist"
                        ),
                    ),
                    Some(ct) => {
                        let mut ov = ov;
                        if ct.snapshots.contains(&name) {
                            ov.0.get_or_insert(format!("snapshot name '{name}' already used"));
                        }
                        let upid = self.new_task(
                            "vzsnapshot",
                            &vmid.to_string(),
                            d.snapshot,
                            Effect::Snapshot { vmid, name },
                            ov,
                        );
                        ok(json!(upid))
                    }
                }
            }
            _ => fail(501, &format!("Method '{key}' not implemented")),
        }
    }

    fn storage_check(&self, storage: &str, content: &str) -> Option<Response> {
        match self.cfg.storages.get(storage) {
            None => Some(fail(500, &format!("storage '{storage}' does not exist"))),
            Some(c) if !c.iter().any(|c| c == content) => Some(fail(
                500,
                &format!("storage '{storage}' is not configured for content-type '{content}'"),
            )),
            _ => None,
        }
    }

    fn put_config(&mut self, vmid: u32, p: BTreeMap<String, String>) -> Response {
        let vm = match self.vm_or_err(vmid) {
            Ok(v) => v.clone(),
            Err(r) => return r,
        };
        // Privileges per key, as qemu-server checks them.
        for k in p.keys() {
            let need: &[&str] = match k.as_str() {
                "cores" => &["VM.Config.CPU"],
                "memory" => &["VM.Config.Memory"],
                "net0" => &["VM.Config.Network", "SDN.Use"],
                "ide2" => &["VM.Config.CDROM"],
                "scsi0" | "boot" => &["VM.Config.Disk"],
                "serial0" | "scsihw" | "vga" => &["VM.Config.HWType"],
                "sshkeys" => &["VM.Config.Network"],
                "name" | "tags" | "description" | "onboot" | "agent" | "ostype" | "delete" => {
                    &["VM.Config.Options"]
                }
                _ => &[],
            };
            for privilege in need {
                if !self.has(privilege) {
                    let path = if *privilege == "SDN.Use" {
                        let bridge = schema_prop(&p["net0"], "bridge").unwrap_or_default();
                        format!("/sdn/zones/localnetwork/{bridge}")
                    } else {
                        format!("/vms/{vmid}")
                    };
                    return perm(&path, privilege);
                }
            }
        }
        if let Some(l) = vm.config.get("lock") {
            return fail(500, &format!("VM is locked ({l})"));
        }
        if let Some(digest) = p.get("digest")
            && *digest != Self::digest(&vm.config)
        {
            return fail(500, "checksum mismatch (file change by other user?)");
        }
        if let Some(ide2) = p.get("ide2") {
            let file = ide2.split(',').next().unwrap_or("");
            if file.contains(':') && !self.volumes.contains_key(file) {
                return fail(500, &format!("volume '{file}' does not exist"));
            }
        }
        let vm = self.vms.get_mut(&vmid).expect("checked above");
        for (k, v) in &p {
            match k.as_str() {
                "node" | "vmid" | "digest" => {}
                "delete" => {
                    for key in v.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
                        let key = if key == "cdrom" { "ide2" } else { key };
                        vm.config.remove(key);
                    }
                }
                "tags" => {
                    let set: BTreeSet<String> = v
                        .split([';', ',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_lowercase)
                        .collect();
                    vm.config
                        .insert(k.clone(), set.into_iter().collect::<Vec<_>>().join(";"));
                }
                "net0" if !v.contains('=') || v.starts_with("virtio,") || v == "virtio" => {
                    let rest: Vec<&str> = v.split(',').skip(1).collect();
                    let mac = format!(
                        "BC:24:11:{:02X}:{:02X}:{:02X}",
                        vmid >> 16 & 255,
                        vmid >> 8 & 255,
                        vmid & 255
                    );
                    vm.config
                        .insert(k.clone(), format!("virtio={mac},{}", rest.join(",")));
                }
                _ => {
                    vm.config.insert(k.clone(), v.clone());
                }
            }
        }
        ok(Value::Null)
    }

    fn create_vm(
        &mut self,
        vmid: u32,
        p: BTreeMap<String, String>,
        ov: (Option<String>, Option<Duration>),
    ) -> Response {
        let node = self.cfg.node.clone();
        if !self.has("VM.Allocate") {
            return perm(&format!("/vms/{vmid}"), "VM.Allocate");
        }
        for (k, privilege) in [
            ("scsihw", "VM.Config.HWType"),
            ("serial0", "VM.Config.HWType"),
            ("net0", "SDN.Use"),
        ] {
            if p.contains_key(k) && !self.has(privilege) {
                return perm(&format!("/vms/{vmid}"), privilege);
            }
        }
        if self.vms.contains_key(&vmid) {
            return fail(
                500,
                &format!("unable to create VM {vmid} - VM {vmid} already exists on node '{node}'"),
            );
        }
        let mut config: BTreeMap<String, String> = p
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "node" | "vmid" | "start" | "pool"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(scsi0) = p.get("scsi0") {
            let file = scsi0.split(',').next().unwrap_or("");
            if let Some(src) = scsi0
                .split(',')
                .find_map(|x| x.strip_prefix("import-from="))
            {
                if !file.ends_with(":0") {
                    return param_error(BTreeMap::from([(
                        "scsi0".into(),
                        "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>".into(),
                    )]));
                }
                if !self.volumes.contains_key(src) {
                    return fail(500, &format!("volume '{src}' does not exist"));
                }
                let storage = file.trim_end_matches(":0");
                config.insert(
                    "scsi0".into(),
                    format!("{storage}:vm-{vmid}-disk-0,size=5G"),
                );
            }
        }
        config.insert("lock".into(), "create".into());
        self.insert_vm(Vm {
            vmid,
            kind: Kind::Qemu,
            config,
            running: false,
            created: Instant::now(),
            started_at: None,
            files: BTreeMap::new(),
            secrets_complete_at: None,
            firstboot_fail: None,
            firstboot_done: false,
            snapshots: vec![],
            node: None,
            cutover_at: None,
        });
        let (err, slow) = ov;
        let effect = if err.is_some() {
            Effect::Destroyed { vmid }
        } else {
            Effect::Created { vmid }
        };
        let upid = self.new_task(
            "qmcreate",
            &vmid.to_string(),
            self.cfg.durations.create,
            effect,
            (None, slow),
        );
        if let Some(e) = err
            && let Some(t) = self.tasks.last_mut()
        {
            t.error = Some(e);
        }
        ok(json!(upid))
    }

    fn agent(&mut self, vmid: u32, key: &str, p: BTreeMap<String, String>) -> Response {
        let (privilege, cmd) = if key.ends_with("ping") {
            ("VM.GuestAgent.Audit", "ping")
        } else if key.ends_with("file-write") {
            ("VM.GuestAgent.FileWrite", "file-write")
        } else {
            ("VM.GuestAgent.FileRead", "file-read")
        };
        if !self.has(privilege) {
            return perm(&format!("/vms/{vmid}"), privilege);
        }
        let now = Instant::now();
        let boot = self.cfg.durations.agent_boot;
        let cloud_init = self.cfg.durations.cloud_init;
        let phase_len = self.cfg.durations.firstboot_phase;
        let cutover = self.cfg.durations.cutover;
        let node = self.cfg.node.clone();
        let Some(vm) = self.vms.get_mut(&vmid) else {
            return fail(
                500,
                &format!(
                    "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
                ),
            );
        };
        let agent_on = vm.config.get("agent").is_some_and(|a| {
            let first = a.split(',').next().unwrap_or("");
            matches!(first, "1" | "enabled=1")
        });
        if !agent_on {
            return fail(500, "No QEMU guest agent configured");
        }
        if !vm.running {
            return fail(500, &format!("VM {vmid} is not running"));
        }
        let up = vm.firstboot_done || vm.started_at.is_some_and(|s| now >= s + boot);
        if !up {
            return fail(500, "QEMU guest agent is not running");
        }
        match cmd {
            "ping" => ok(json!({"result": {}})),
            "file-write" => {
                let file = p["file"].clone();
                let dir_ok = ["/etc/mms/secrets/", "/root/.ssh/", "/var/lib/mms/"]
                    .iter()
                    .any(|d| file.starts_with(d) && !file[d.len()..].contains('/'));
                if !dir_ok {
                    return fail(
                        500,
                        &format!(
                            "Agent error: Failed to open file '{file}': No such file or directory"
                        ),
                    );
                }
                if p.get("encode").is_some_and(|e| e == "0") {
                    return fail(
                        500,
                        "Agent error: Guest agent command failed, error was 'invalid base64'",
                    );
                }
                if file == SECRETS_COMPLETE && vm.secrets_complete_at.is_none() {
                    vm.secrets_complete_at = Some(now);
                    // `done` is reached after every phase before it has run.
                    let phases = PHASES.len() as u32 - 1;
                    self.server_time += phase_len * phases;
                    let vm = self.vms.get_mut(&vmid).expect("present");
                    vm.files.insert(file, p["content"].clone());
                    return ok(Value::Null);
                }
                if file == CUTOVER_TRIGGER {
                    vm.cutover_at = Some(now);
                    self.server_time += cutover;
                    let vm = self.vms.get_mut(&vmid).expect("present");
                    vm.files.insert(file, p["content"].clone());
                    return ok(Value::Null);
                }
                vm.files.insert(file, p["content"].clone());
                ok(Value::Null)
            }
            _ => {
                let file = p["file"].clone();
                let cloud_init_done = vm.firstboot_done
                    || vm.started_at.is_some_and(|s| now >= s + boot + cloud_init);
                // The guest's mms-cutover.service removes the trigger when it is done.
                if file == CUTOVER_TRIGGER && vm.cutover_at.is_some_and(|t| now >= t + cutover) {
                    vm.files.remove(&file);
                }
                let content = if file == FIRSTBOOT_STATUS {
                    cloud_init_done.then(|| firstboot_doc(vm, now, phase_len).to_string())
                } else {
                    vm.files.get(&file).cloned()
                };
                match content {
                    Some(c) => ok(json!({"content": c})),
                    None => fail(
                        500,
                        &format!(
                            "Agent error: Failed to open file '{file}': No such file or directory"
                        ),
                    ),
                }
            }
        }
    }
}

/// The status document firstboot would have written by `now`.
fn firstboot_doc(vm: &Vm, now: Instant, phase_len: Duration) -> Value {
    if vm.firstboot_done {
        return json!({"phase": "done", "steps": PHASES.iter().map(|p| json!({"phase": p, "result": "ok"})).collect::<Vec<_>>(), "error": null});
    }
    let Some(at) = vm.secrets_complete_at else {
        return json!({"phase": "wait-secrets", "steps": [], "error": null});
    };
    let elapsed = now.duration_since(at);
    let idx = usize::try_from(elapsed.as_millis() / phase_len.as_millis().max(1))
        .unwrap_or(usize::MAX)
        .min(PHASES.len() - 1);
    let mut phase = PHASES[idx];
    let mut error = Value::Null;
    if let Some(f) = &vm.firstboot_fail
        && let Some(fi) = PHASES.iter().position(|p| p == f)
        && fi <= idx
    {
        phase = PHASES[fi];
        error = json!({"message": format!("{phase} failed: simulated failure"), "next_action": "see journalctl -u mms-firstboot"});
    }
    let done: Vec<Value> = PHASES
        .iter()
        .take_while(|p| **p != phase)
        .map(|p| json!({"phase": p, "result": "ok"}))
        .collect();
    json!({"phase": phase, "steps": done, "error": error})
}

fn gib(s: &str) -> u64 {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    let g = match unit {
        "T" => n * 1024.0,
        "G" => n,
        "M" => n / 1024.0,
        "K" => n / 1024.0 / 1024.0,
        _ => n / 1024.0 / 1024.0 / 1024.0,
    };
    g.round() as u64
}

/// A key's value inside a property string.
pub fn schema_prop(s: &str, key: &str) -> Option<String> {
    s.split(',')
        .find_map(|p| p.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
}

fn normalise_filename(f: &str) -> String {
    let base = f.rsplit(['/', '\\']).next().unwrap_or(f);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn import_name_ok(f: &str) -> bool {
    let Some((stem, ext)) = f.rsplit_once('.') else {
        return false;
    };
    ["ova", "qcow2", "raw", "vmdk"].contains(&ext)
        && !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.+=_".contains(c))
}

/// Fields before the file, the file name, the file bytes.
type Multipart = (BTreeMap<String, String>, String, Vec<u8>);

/// Parses pveproxy's upload multipart: `content` (and checksum fields) first,
/// then the file part named `filename`.
fn parse_multipart(ctype: &str, body: &[u8]) -> Result<Multipart, String> {
    let boundary = ctype
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_owned())
        .ok_or("unable to parse multipart content type (no boundary)")?;
    let delim = format!("--{boundary}");
    let mut fields = BTreeMap::new();
    let mut rest = body;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut expect_order = vec!["content", "checksum-algorithm", "checksum"];
    loop {
        let start = find(rest, delim.as_bytes()).ok_or("multipart: boundary not found")?;
        rest = &rest[start + delim.len()..];
        if rest.starts_with(b"--") {
            return Err("multipart: no file part named 'filename'".into());
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("multipart: malformed part")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("multipart: malformed part header")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        rest = &rest[head_end + 4..];
        let disp = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .ok_or("multipart: part without Content-Disposition")?;
        let attr = |name: &str| {
            disp.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(&format!("{name}=\""))
                    .map(|v| v.trim_end_matches('"').to_owned())
            })
        };
        let name = attr("name").ok_or("multipart: part without name")?;
        let end =
            find(rest, format!("\r\n{delim}").as_bytes()).ok_or("multipart: unterminated part")?;
        let value = &rest[..end];
        if name == "filename" {
            let filename =
                attr("filename").ok_or("multipart: file part without filename attribute")?;
            if !fields.contains_key("content") {
                return Err("multipart: 'content' must come before the file part".into());
            }
            return Ok((fields, filename, value.to_vec()));
        }
        // Fields before the file part are only recognised in pveproxy's order.
        let pos = expect_order
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| format!("multipart: unexpected field '{name}' before the file"))?;
        expect_order.drain(..=pos);
        fields.insert(name, String::from_utf8_lossy(value).into_owned());
        rest = &rest[end + 2..];
    }
}

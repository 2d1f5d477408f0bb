//! Appliance end to end (issue 7): the rendered seed ISO boots a real VM and every part does
//! its job in it.
//!
//! A Debian 13 image (mmdebstrap, cached under `target/appliance-cache/`, rebuilt only when
//! `tests/appliance/` changes) boots under QEMU (TCG; KVM only where it really works) with the
//! seed ISO that `mms-build render` made from a variant of the example site whose containers
//! all run local stand-in images (`tests/standin`; no registry is reachable). The harness then
//! checks from inside the VM, over host-forwarded SSH: the appliance user with linger, the
//! Quadlet units and every container healthy under the user's systemd, firewalld's zones,
//! `mms-firstboot status --json` reaching `done` (Tailscale faked at its CLI), `mms-backupd`
//! archives that decrypt outside the VM with the example identity, a restore of one service
//! through real systemd, and the DESIGN §4 ownership rule.
//!
//! Needs root, QEMU, mmdebstrap, genisoimage, ssh, Go age, zstd: `scripts/setup-test-env.sh`.
//! On failure the VM's evidence (serial log, firstboot status, journal excerpts) is printed and
//! kept under `target/appliance-logs/`. Run alone:
//! `cargo test -p mms-tests --test appliance -- --nocapture`.
//! Env: `MMS_APPLIANCE_ACCEL=tcg|kvm|auto` (default tcg), `MMS_APPLIANCE_KEEP=1` (leave the VM
//! running after the test for inspection; prints how to reach it),
//! `MMS_APPLIANCE_BREAK=unit|firstboot` (deliberately break a unit / firstboot to see the
//! failure evidence; the test must then fail).

#[path = "appliance/site.rs"]
mod site;
#[path = "appliance/vm.rs"]
mod vm;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use site::TestSite;
use vm::{Vm, shell_quote};

const SETUP_HINT: &str =
    "run scripts/setup-test-env.sh (as root) to install the appliance test tools";
/// Deadline for SSH after qemu starts (TCG on 2 shared cores).
const SSH_DEADLINE: Duration = Duration::from_secs(900);
/// Deadline for firstboot to reach `done` after SSH came up.
const FIRSTBOOT_DEADLINE: Duration = Duration::from_secs(1200);

struct Paths {
    repo: PathBuf,
    target: PathBuf,
    run: PathBuf,
    logs: PathBuf,
}

fn paths() -> Paths {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    Paths {
        run: target.join("appliance-run"),
        logs: target.join("appliance-logs"),
        repo,
        target,
    }
}

fn elapsed(t0: Instant) -> String {
    format!("{:.0}s", t0.elapsed().as_secs_f64())
}

fn say(t0: Instant, msg: &str) {
    eprintln!("[appliance {:>5}] {msg}", elapsed(t0));
}

/// Everything the test needs on the host, checked before anything slow happens.
fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    for tool in [
        "qemu-system-x86_64",
        "qemu-img",
        "mmdebstrap",
        "genisoimage",
        "mkfs.ext4",
        "ssh",
        "ssh-keygen",
        "age",
        "zstd",
        "tar",
        "timeout",
        "flock",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(tool);
        }
    }
    if !missing.is_empty() {
        bail!("missing tools: {}; {SETUP_HINT}", missing.join(", "));
    }
    if !nix_is_root() {
        bail!("the appliance test needs root (mmdebstrap --mode=root, chroot); CI runs as root");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The base image (cached; built on first use, ~1-2 min).
fn image(p: &Paths) -> Result<PathBuf> {
    let out = run_ok(
        Command::new("bash")
            .arg(p.repo.join("tests/appliance/build-image.sh"))
            .arg(p.target.join("appliance-cache"))
            .stderr(Stdio::inherit()),
        "tests/appliance/build-image.sh",
    )?;
    let dir = out
        .lines()
        .last()
        .ok_or_else(|| anyhow!("build-image.sh printed no image directory"))?;
    Ok(PathBuf::from(dir))
}

/// The x86_64 binaries that go into the VM: the appliance programs (in the seed ISO, through
/// `mms-build render --appliance-bin`) and the stand-in (in the test disk). The normal debug
/// build: this host's glibc (Debian 12, 2.36) is older than the VM's (2.41), so they run there.
fn binaries(p: &Paths) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&p.repo).args([
        "build",
        "--locked",
        "-p",
        "mms-builder",
        "-p",
        "mms-firstboot",
        "-p",
        "mms-backupd",
        "-p",
        "mms-standin",
        "--bins",
    ]);
    cmd.stderr(Stdio::inherit());
    run_ok(&mut cmd, "cargo build of the appliance binaries")?;
    let dir = p.target.join("debug");
    for b in ["mms-build", "mms-firstboot", "mms-backupd", "mms-standin"] {
        if !dir.join(b).is_file() {
            bail!("{} missing after cargo build", dir.join(b).display());
        }
    }
    Ok(dir)
}

/// The harness state of one run.
struct Run {
    p: Paths,
    t0: Instant,
    site: Option<TestSite>,
    vm: Option<Vm>,
    key: PathBuf,
}

impl Run {
    fn vm(&self) -> Result<&Vm> {
        self.vm
            .as_ref()
            .ok_or_else(|| anyhow!("the VM is not running"))
    }

    fn site(&self) -> Result<&TestSite> {
        self.site.as_ref().ok_or_else(|| anyhow!("no site"))
    }

    fn user(&self) -> Result<(String, u32, u32)> {
        Ok(self.site()?.user.clone())
    }

    fn systemctl_user(&self, args: &str) -> Result<String> {
        let (name, _, _) = self.user()?;
        self.vm()?
            .sh(&format!("systemctl --user -M {name}@ {args}"))
    }

    fn podman(&self, args: &str) -> Result<String> {
        let (name, uid, _) = self.user()?;
        self.vm()?.user_sh(&name, uid, &format!("podman {args}"))
    }

    /// Prepare, boot, wait for SSH.
    fn boot(&mut self) -> Result<()> {
        let t0 = self.t0;
        preflight()?;
        let _ = fs::remove_dir_all(&self.p.run);
        fs::create_dir_all(&self.p.run)?;

        say(t0, "base image (cached unless tests/appliance/ changed)");
        let image = image(&self.p)?;
        say(t0, &format!("image {}", image.display()));
        say(t0, "building the appliance binaries and the stand-in");
        let bins = binaries(&self.p)?;

        run_ok(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "mms-appliance-test",
                    "-f",
                ])
                .arg(&self.key),
            "ssh-keygen",
        )?;
        let pubkey = fs::read_to_string(self.key.with_extension("pub"))?;

        let site = site::write(&self.p.repo, &self.p.run.join("site"), &pubkey)?;
        // The programs for the seed ISO without debug info (the same code; ~5x smaller, which
        // the VM checksums and copies under TCG).
        let appliance_bin = self.p.run.join("appliance-bin");
        fs::create_dir_all(&appliance_bin)?;
        for b in ["mms-firstboot", "mms-backupd"] {
            let out = appliance_bin.join(b);
            let stripped = Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&out)
                .arg(bins.join(b))
                .status()
                .is_ok_and(|s| s.success());
            if !stripped {
                fs::copy(bins.join(b), &out)?;
            }
        }
        let bundle = self.p.run.join("bundle");
        say(t0, "mms-build render of the test site");
        run_ok(
            Command::new(bins.join("mms-build"))
                .arg("render")
                .arg("--config")
                .arg(&site.config)
                .arg("--out")
                .arg(&bundle)
                .arg("--appliance-bin")
                .arg(&appliance_bin)
                // A first build with empty state: nothing to migrate, no backup to restore yet.
                .arg("--fresh")
                .env("MMS_IDENTITY", &site.identity),
            "mms-build render",
        )?;
        let seed = bundle.join("seed.iso");
        if !seed.is_file() {
            bail!("render wrote no {}", seed.display());
        }

        // The test disk: stand-in images (one per container), fake tailscale, root key.
        let breakage = std::env::var("MMS_APPLIANCE_BREAK").unwrap_or_default();
        let mut list = String::new();
        for c in &site.containers {
            let role = if breakage == "unit" && c.name == "radarr" {
                // A unit whose container dies at once: the VM's evidence must show it.
                "no-such-role"
            } else {
                c.role.as_str()
            };
            list.push_str(&format!("{} {role}\n", c.image));
        }
        fs::write(self.p.run.join("images.list"), list)?;
        let (user, uid, _) = site.user.clone();
        let test_iso = self.p.run.join("test.iso");
        run_ok(
            Command::new("bash")
                .arg(self.p.repo.join("tests/appliance/make-test-disk.sh"))
                .arg(&image)
                .arg(bins.join("mms-standin"))
                .arg(self.p.run.join("images.list"))
                .arg(self.key.with_extension("pub"))
                .arg(&user)
                .arg(uid.to_string())
                .arg(&test_iso)
                .env("MMS_TEST_BREAK", &breakage),
            "tests/appliance/make-test-disk.sh",
        )?;
        self.site = Some(site);

        say(t0, "booting the VM");
        let vm = Vm::boot(
            &self.p.repo,
            &image,
            &seed,
            &test_iso,
            &self.p.run.join("vm"),
            &self.key,
        )?;
        let accel = fs::read_to_string(vm.run.join("accel")).unwrap_or_default();
        say(
            t0,
            &format!("qemu running ({}), ssh port {}", accel.trim(), vm.port),
        );
        let took = vm.wait_for_ssh(SSH_DEADLINE);
        self.vm = Some(vm);
        let took = took?;
        say(t0, &format!("SSH up after {} s", took.as_secs()));
        Ok(())
    }

    /// What the builder delivers through the guest agent: each secret firstboot needs, as
    /// `/etc/mms/secrets/<name>` (0600), written atomically, over SSH stdin (never argv).
    fn deliver_secrets(&self) -> Result<()> {
        let site = self.site()?;
        let loaded = mms_builder::config::load(&site.config)
            .map_err(|e| anyhow!("load {}: {e:?}", site.config.display()))?;
        let secrets = mms_builder::secrets::load_secrets(&loaded.site, Some(&site.identity))?;
        let mut names = Vec::new();
        for name in secrets.names() {
            if name == "proxmox_token_secret" {
                continue; // the builder's own; never enters the VM
            }
            let secret = secrets
                .get(name)
                .ok_or_else(|| anyhow!("secret {name} vanished"))?;
            let out = self.vm()?.exec_with_input(
                &format!(
                    "umask 077 && mkdir -p /etc/mms/secrets && cat > /etc/mms/secrets/.{name}.tmp \
                     && mv /etc/mms/secrets/.{name}.tmp /etc/mms/secrets/{name}"
                ),
                secret.expose().as_bytes(),
            )?;
            if !out.status.success() {
                bail!(
                    "delivering secret {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            names.push(name.to_string());
        }
        say(self.t0, &format!("delivered secrets: {}", names.join(", ")));
        Ok(())
    }

    /// `mms-firstboot status --json` until `done`; a failed step ends the wait at once.
    fn wait_firstboot(&self) -> Result<Value> {
        let t = Instant::now();
        let mut last = String::new();
        loop {
            let out = self.vm()?.exec("mms-firstboot status --json")?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let phase = v["phase"].as_str().unwrap_or("?").to_string();
                if phase != last {
                    say(self.t0, &format!("firstboot phase {phase}"));
                    last = phase.clone();
                }
                if phase == "done" {
                    return Ok(v);
                }
                let failed = v["steps"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["result"] == "failed"));
                let unit_failed = self
                    .vm()?
                    .exec("systemctl is-failed --quiet mms-firstboot.service")?
                    .status
                    .success();
                if failed && unit_failed {
                    bail!(
                        "firstboot failed in phase {phase}:\n{}",
                        serde_json::to_string_pretty(&v)?
                    );
                }
            }
            if t.elapsed() > FIRSTBOOT_DEADLINE {
                bail!(
                    "firstboot did not reach done within {} s; last status: {text}{}",
                    FIRSTBOOT_DEADLINE.as_secs(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_secs(10));
        }
    }

    fn check_user(&self) -> Result<()> {
        let (name, uid, gid) = self.user()?;
        let vm = self.vm()?;
        let id = vm.sh(&format!("id -u {name}; id -g {name}"))?;
        let ids: Vec<&str> = id.split_whitespace().collect();
        if ids != [uid.to_string(), gid.to_string()] {
            bail!("user {name}: expected uid/gid {uid}/{gid}, the VM says {id:?}");
        }
        let linger = vm.sh(&format!("loginctl show-user {name} -p Linger --value"))?;
        if linger.trim() != "yes" {
            bail!("user {name} has no linger (Linger={})", linger.trim());
        }
        let subuid = vm.sh(&format!("grep -c '^{name}:' /etc/subuid /etc/subgid"))?;
        if subuid.lines().any(|l| l.ends_with(":0")) {
            bail!("user {name} lacks subordinate ids:\n{subuid}");
        }
        say(
            self.t0,
            &format!("ok: user {name} {uid}:{gid}, linger, subids"),
        );
        Ok(())
    }

    fn check_units_and_health(&self) -> Result<()> {
        let site = self.site()?;
        let (_, uid, _) = self.user()?;
        let vm = self.vm()?;
        let dir = format!("/etc/containers/systemd/users/{uid}");
        let listing = vm.sh(&format!("ls -1 {dir}"))?;
        for c in &site.containers {
            let unit = format!("{}.container", c.name);
            if !listing.lines().any(|l| l == unit) {
                bail!("{dir} lacks {unit}; it has:\n{listing}");
            }
        }
        if !listing.lines().any(|l| l.ends_with(".network")) {
            bail!("{dir} has no .network unit:\n{listing}");
        }
        // Every container: its generated unit active under the user's systemd, the container
        // healthy (those with a health command) and answering as the real app would.
        let t = Instant::now();
        loop {
            let mut bad = Vec::new();
            for c in &site.containers {
                let unit = format!("{}.service", c.name);
                let state = self
                    .systemctl_user(&format!("show -p ActiveState,SourcePath --value {unit}"))
                    .unwrap_or_default();
                let mut lines = state.lines();
                let active = lines.next().unwrap_or("");
                let source = lines.next().unwrap_or("");
                if !source.starts_with(&dir) {
                    bail!("{unit} is not generated from {dir} (SourcePath={source:?})");
                }
                if active != "active" {
                    bad.push(format!("{unit} {active}"));
                    continue;
                }
                if c.has_health {
                    let h = self
                        .podman(&format!(
                            "inspect --format '{{{{.State.Health.Status}}}}' {}",
                            c.name
                        ))
                        .unwrap_or_default();
                    if h.trim() != "healthy" {
                        bad.push(format!("{} health {}", c.name, h.trim()));
                    }
                }
            }
            if bad.is_empty() {
                break;
            }
            if t.elapsed() > Duration::from_secs(300) {
                bail!("containers not healthy after 300 s: {}", bad.join(", "));
            }
            std::thread::sleep(Duration::from_secs(10));
        }
        // The real health paths on the real ports, from the VM itself.
        for (url, expect) in [
            ("http://127.0.0.1:9696/ping", "OK"),
            ("http://127.0.0.1:7878/ping", "OK"),
            ("http://127.0.0.1:8989/ping", "OK"),
            ("http://127.0.0.1:8686/ping", "OK"),
            ("http://127.0.0.1:8080/api?mode=version", "version"),
            ("http://127.0.0.1:8096/health", "Healthy"),
            ("http://127.0.0.1:2283/api/server/ping", "pong"),
        ] {
            let body = vm.sh(&format!("curl -fsS --max-time 10 '{url}'"))?;
            if !body.contains(expect) {
                bail!("{url} answered {body:?}, expected {expect:?}");
            }
        }
        say(
            self.t0,
            &format!(
                "ok: {} Quadlet units generated, all active and healthy",
                site.containers.len()
            ),
        );
        Ok(())
    }

    fn check_firewall(&self) -> Result<()> {
        let vm = self.vm()?;
        let zone = vm.sh("firewall-cmd --get-default-zone")?;
        if zone.trim() != "drop" {
            bail!("firewalld default zone is {:?}, expected drop", zone.trim());
        }
        let trusted = vm.sh("firewall-cmd --zone=trusted --list-interfaces")?;
        if !trusted.split_whitespace().any(|i| i == "tailscale0") {
            bail!("tailscale0 is not in firewalld's trusted zone (trusted: {trusted:?})");
        }
        // The permanent configuration too, so a reboot keeps it.
        let conf = vm.sh("sed -n 's/^DefaultZone=//p' /etc/firewalld/firewalld.conf")?;
        if conf.trim() != "drop" {
            bail!(
                "firewalld.conf DefaultZone is {:?}, expected drop",
                conf.trim()
            );
        }
        let perm = vm.sh("firewall-cmd --permanent --zone=trusted --list-interfaces")?;
        if !perm.split_whitespace().any(|i| i == "tailscale0") {
            bail!("tailscale0 is not in the permanent trusted zone ({perm:?})");
        }
        say(
            self.t0,
            "ok: firewalld default zone drop, tailscale0 trusted",
        );
        Ok(())
    }

    /// DESIGN §4: every file a container writes is owned on the host by the appliance user,
    /// config dirs and NFS alike.
    fn check_ownership(&self) -> Result<()> {
        let (name, uid, gid) = self.user()?;
        let vm = self.vm()?;
        let home = vm.sh(&format!("getent passwd {name} | cut -d: -f6"))?;
        let config = format!("{}/config", home.trim());
        let probe = format!("{config}/radarr/radarr.db");
        let owner = vm.sh(&format!("stat -c %u:%g {probe}"))?;
        if owner.trim() != format!("{uid}:{gid}") {
            bail!(
                "{probe} (written by the radarr container) is owned by {}, expected {uid}:{gid}",
                owner.trim()
            );
        }
        let strays = vm.sh(&format!(
            "find {config} \\( ! -uid {uid} -o ! -gid {gid} \\) -printf '%u:%g %p\\n' | head -20"
        ))?;
        if !strays.trim().is_empty() {
            bail!("files under {config} not owned by {uid}:{gid}:\n{strays}");
        }
        // Named volumes (Immich's database lives in one).
        let volumes = self.podman("volume ls --format '{{.Mountpoint}}'")?;
        for mount in volumes.lines().filter(|l| !l.trim().is_empty()) {
            let strays = vm.sh(&format!(
                "find {mount} \\( ! -uid {uid} -o ! -gid {gid} \\) -printf '%u:%g %p\\n' | head -20"
            ))?;
            if !strays.trim().is_empty() {
                bail!("files in volume {mount} not owned by {uid}:{gid}:\n{strays}");
            }
        }
        // NFS: Immich's library markers on the photos export, seen in the VM and on the server.
        let nfs =
            vm.sh("stat -c %u:%g /data/photos/library/.immich /srv/nfs/photos/library/.immich")?;
        if nfs.lines().any(|l| l.trim() != format!("{uid}:{gid}")) {
            bail!(
                "Immich's /data/photos/library/.immich (NFS) owned by {nfs:?}, expected {uid}:{gid}"
            );
        }
        say(
            self.t0,
            &format!("ok: container-written files owned by {uid}:{gid} (local config and NFS)"),
        );
        Ok(())
    }
}

impl Run {
    /// `mms-backupd backup --all`, then every archive is copied out of the VM and opened with
    /// the standard tools and the example identity: `age -d -i ID | zstd -d | tar -x`.
    fn check_backups(&self) -> Result<()> {
        let site = self.site()?;
        let (name, uid, _) = self.user()?;
        let vm = self.vm()?;
        let home = vm.sh(&format!("getent passwd {name} | cut -d: -f6"))?;
        let db = format!("{}/config/radarr/radarr.db", home.trim());
        // A marker row the restore must bring back.
        vm.user_sh(
            &name,
            uid,
            &format!("sqlite3 {db} \"INSERT OR REPLACE INTO markers VALUES ('appliance-test', 'before-backup')\""),
        )?;
        // Bounded: a hang in the VM must fail the test with evidence, not stall CI.
        let out = vm.sh("timeout 300 mms-backupd backup --all 2>&1")?;
        say(
            self.t0,
            &format!(
                "mms-backupd backup --all: {}",
                out.lines().last().unwrap_or("")
            ),
        );
        let target = &site.backup_target;
        let listing = vm.sh(&format!(
            "find {target} -name '*.tar.zst.age' -type f | sort"
        ))?;
        let local = self.p.run.join("backups");
        fs::create_dir_all(&local)?;
        let mut opened = Vec::new();
        for service in &site.services {
            let archive = listing
                .lines()
                .rfind(|l| l.starts_with(&format!("{target}/{service}/{service}-")))
                .ok_or_else(|| {
                    anyhow!("no archive for {service} under {target}/{service}/:\n{listing}")
                })?;
            // The manifest is written last (DESIGN §7): an archive without one does not exist.
            vm.sh(&format!("test -s {archive}.manifest.json"))
                .with_context(|| format!("{archive} has no manifest"))?;
            let file = local.join(format!("{service}.tar.zst.age"));
            vm.fetch(archive, &file)?;
            let dir = local.join(service);
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir)?;
            run_ok(
                // bash: Debian's sh (dash) exits 2 on `set -o pipefail`.
                Command::new("bash").arg("-c").arg(format!(
                    "set -o pipefail; age -d -i {} {} | zstd -d | tar -x -C {}",
                    shell_quote(&site.identity.display().to_string()),
                    shell_quote(&file.display().to_string()),
                    shell_quote(&dir.display().to_string())
                )),
                &format!("decrypting {service}'s archive outside the VM (age | zstd | tar)"),
            )?;
            opened.push(service.clone());
        }
        // Radarr's database came out whole, with the marker.
        let found = find_file(&local.join("radarr"), "radarr.db")
            .ok_or_else(|| anyhow!("radarr's archive has no radarr.db"))?;
        let conn = rusqlite::Connection::open(&found)?;
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let marker: String = conn.query_row(
            "SELECT value FROM markers WHERE name = 'appliance-test'",
            [],
            |r| r.get(0),
        )?;
        if ok != "ok" || marker != "before-backup" {
            bail!("radarr.db from the archive: integrity {ok:?}, marker {marker:?}");
        }
        // Immich's database was dumped with pg_dumpall inside its container.
        if site.services.iter().any(|s| s == "immich") {
            let dump = grep_tree(&local.join("immich"), "standin_assets");
            if !dump {
                bail!("immich's archive holds no pg_dumpall output with the stand-in's table");
            }
        }
        say(
            self.t0,
            &format!(
                "ok: archives of {} decrypt outside the VM with the example identity",
                opened.join(", ")
            ),
        );
        Ok(())
    }

    /// Delete radarr's database, restore it with `mms-backupd restore`, and see systemd stop and
    /// start the unit (a new invocation) and the marker row come back.
    fn check_restore(&self) -> Result<()> {
        let site = self.site()?;
        let (name, _, _) = self.user()?;
        let vm = self.vm()?;
        let home = vm.sh(&format!("getent passwd {name} | cut -d: -f6"))?;
        let db = format!("{}/config/radarr/radarr.db", home.trim());
        let before = self.systemctl_user("show -p InvocationID --value radarr.service")?;
        vm.sh(&format!("rm -f {db}"))?;
        let identity = fs::read(&site.identity)?;
        let archive = vm.sh(&format!(
            "ls -1 {}/radarr/radarr-*.tar.zst.age | sort | tail -1",
            site.backup_target
        ))?;
        let out = vm.exec_with_input(
            &format!(
                "timeout 300 mms-backupd restore --service radarr --archive {} --identity - 2>&1",
                archive.trim()
            ),
            &identity,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "mms-backupd restore radarr failed ({}):\n{text}",
                out.status
            );
        }
        let marker = vm.sh(&format!(
            "sqlite3 {db} \"SELECT value FROM markers WHERE name = 'appliance-test'\""
        ))?;
        if marker.trim() != "before-backup" {
            bail!("after restore, {db} has marker {marker:?}");
        }
        let after = self.systemctl_user("show -p InvocationID --value radarr.service")?;
        if after.trim() == before.trim() || after.trim().is_empty() {
            bail!(
                "radarr.service was not restarted by the restore (InvocationID {before:?} → {after:?})"
            );
        }
        let journal = vm.sh(&format!("journalctl -b _UID=$(id -u {name}) --no-pager -o cat | grep -E '(Stopp|Start)(ing|ed) .*radarr' | tail -4"))?;
        self.wait_healthy("radarr")?;
        say(
            self.t0,
            &format!(
                "ok: restore brought radarr.db back; radarr.service stopped and started by systemd:\n{}",
                journal.trim_end()
            ),
        );
        Ok(())
    }

    fn wait_healthy(&self, container: &str) -> Result<()> {
        let t = Instant::now();
        loop {
            let h = self
                .podman(&format!(
                    "inspect --format '{{{{.State.Health.Status}}}}' {container}"
                ))
                .unwrap_or_default();
            if h.trim() == "healthy" {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(180) {
                bail!(
                    "{container} not healthy 180 s after the restore ({})",
                    h.trim()
                );
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }
}

impl Run {
    /// The cut-over of a rebuild of a static site (docs/configuration.md): the builder's
    /// trigger starts `mms-cutover.service`, which renames the tailnet node and moves the NIC
    /// from its temporary DHCP lease to the site's static address with the real
    /// systemd-networkd. firstboot.yml gets the `network` section a rebuild rendering carries;
    /// its address is the one slirp's DHCP gave, so the SSH forward keeps working.
    fn check_cutover(&self) -> Result<()> {
        let vm = self.vm()?;
        let nic =
            vm.sh("ip -o route show default | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p' | head -n1")?;
        let nic = nic.trim();
        if nic.is_empty() {
            bail!("the VM has no default route");
        }
        let before = vm.sh(&format!("ip -4 -o addr show dev {nic}"))?;
        if !before.contains("10.0.2.15/24") || !before.contains("dynamic") {
            bail!("expected the DHCP lease 10.0.2.15/24 on {nic} before the cut-over:\n{before}");
        }
        vm.sh(
            "printf 'network: {address: 10.0.2.15, prefix: 24, gateway: 10.0.2.2, dns: [10.0.2.3]}\\n' \
             >> /etc/mms/firstboot.yml && touch /var/lib/mms/cutover",
        )?;
        let t = Instant::now();
        // ExecStartPost removes the trigger once the cut-over succeeded.
        while vm.exec("test -e /var/lib/mms/cutover")?.status.success() {
            if t.elapsed() > Duration::from_secs(240) {
                let log = vm
                    .sh("journalctl -b -u mms-cutover --no-pager -n 40")
                    .unwrap_or_default();
                bail!("the cut-over did not finish within 240 s:\n{log}");
            }
            std::thread::sleep(Duration::from_secs(3));
        }
        let after = vm.sh(&format!("ip -4 -o addr show dev {nic}"))?;
        if !after.contains("10.0.2.15/24") || after.contains("dynamic") {
            bail!("after the cut-over {nic} should hold 10.0.2.15/24 statically:\n{after}");
        }
        let status = vm.sh(&format!("networkctl status --no-pager {nic}"))?;
        if !status.contains("/etc/systemd/network/05-mms-static.network") {
            bail!("networkd does not use the cut-over's file for {nic}:\n{status}");
        }
        let route = vm.sh("ip -o route show default")?;
        if !route.contains("via 10.0.2.2") || route.contains("dhcp") {
            bail!("the default route is not the static one:\n{route}");
        }
        say(
            self.t0,
            &format!("ok: cut-over took 10.0.2.15/24 statically on {nic} (systemd-networkd)"),
        );
        // A cut-over that fails (here: a firstboot.yml it refuses) keeps its trigger, so the
        // path unit starts it again; the start limit ends that instead of a retry forever.
        vm.sh("printf 'bogus: 1\\n' >> /etc/mms/firstboot.yml && touch /var/lib/mms/cutover")?;
        let t = Instant::now();
        loop {
            let result = vm.sh("systemctl show -p Result --value mms-cutover.path")?;
            if result.trim() == "unit-start-limit-hit" {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                let log = vm
                    .sh("systemctl status --no-pager mms-cutover.path mms-cutover.service; true")
                    .unwrap_or_default();
                bail!(
                    "a failing cut-over was not stopped by its start limit within 120 s (path unit result {:?}):\n{log}",
                    result.trim()
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        if !vm.exec("test -e /var/lib/mms/cutover")?.status.success() {
            bail!("a failed cut-over removed its trigger: mms-build could not tell it failed");
        }
        say(
            self.t0,
            "ok: a failing cut-over stops at its start limit and keeps its trigger",
        );
        Ok(())
    }
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(f) = find_file(&path, name) {
                return Some(f);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

fn grep_tree(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            grep_tree(&p, needle)
        } else {
            fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
        }
    })
}

fn run(r: &mut Run) -> Result<()> {
    r.boot()?;
    r.deliver_secrets()?;
    let status = r.wait_firstboot()?;
    say(
        r.t0,
        &format!(
            "ok: firstboot done ({} steps)",
            status["steps"].as_array().map_or(0, Vec::len)
        ),
    );
    r.check_user()?;
    r.check_units_and_health()?;
    r.check_firewall()?;
    r.check_ownership()?;
    r.check_backups()?;
    r.check_restore()?;
    r.check_cutover()?;
    Ok(())
}

/// Collects the VM's own evidence into `target/appliance-logs/` and returns a summary to print.
fn evidence(r: &Run) -> String {
    let _ = fs::create_dir_all(&r.p.logs);
    let mut summary = String::new();
    if let Some(vm) = &r.vm {
        let _ = fs::copy(vm.run.join("serial.log"), r.p.logs.join("serial.log"));
        let _ = fs::copy(vm.run.join("qemu.out"), r.p.logs.join("qemu.out"));
        summary.push_str(&format!(
            "--- serial console (last 60 lines; full log {}):\n{}\n",
            r.p.logs.join("serial.log").display(),
            vm.serial_tail(60)
        ));
        let user = r.site.as_ref().map(|s| s.user.clone());
        let (name, uid) = user.map(|u| (u.0, u.1)).unwrap_or(("mms".into(), 1100));
        let probes: Vec<(&str, String)> = vec![
            (
                "firstboot-status.json",
                "mms-firstboot status --json".into(),
            ),
            ("failed-units.txt", "systemctl --failed --no-pager".into()),
            (
                "user-units.txt",
                format!("systemctl --user -M {name}@ list-units --all --no-pager '*.service'"),
            ),
            (
                "containers.txt",
                format!(
                    "cd /tmp && runuser -u {name} -- env XDG_RUNTIME_DIR=/run/user/{uid} DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus podman ps -a"
                ),
            ),
            (
                "firstboot-journal.txt",
                "journalctl -b -u mms-firstboot --no-pager -n 150".into(),
            ),
            (
                "user-journal.txt",
                format!("journalctl -b _UID={uid} --no-pager -n 150"),
            ),
            (
                "warnings-journal.txt",
                "journalctl -b -p warning --no-pager -n 150".into(),
            ),
            ("cloud-init-status.txt", "cloud-init status --long".into()),
            (
                "cloud-init-output.txt",
                "tail -n 80 /var/log/cloud-init-output.log".into(),
            ),
            (
                "tailscale-calls.txt",
                "cat /var/log/mms-test-tailscale.log".into(),
            ),
            (
                "cutover.txt",
                "journalctl -b -u mms-cutover --no-pager -n 60; networkctl status --no-pager; ip -4 addr".into(),
            ),
        ];
        for (file, cmd) in probes {
            let text = match vm.exec(&cmd) {
                Ok(out) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => format!("(could not run: {e:#})"),
            };
            let _ = fs::write(r.p.logs.join(file), &text);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            summary.push_str(&format!("--- in the VM: {cmd}\n{tail}\n"));
        }
    }
    summary.push_str(&format!("--- evidence kept in {}\n", r.p.logs.display()));
    summary
}

#[test]
fn appliance_vm_boots_rendered_seed_and_runs_firstboot_backups_restore() {
    let p = paths();
    let key = p.run.join("id_ed25519");
    let mut r = Run {
        p,
        t0: Instant::now(),
        site: None,
        vm: None,
        key,
    };
    let result = run(&mut r);
    if let Err(e) = &result {
        let _ = fs::remove_dir_all(&r.p.logs);
        let ev = evidence(&r);
        eprintln!("{ev}");
        let _ = fs::write(r.p.logs.join("error.txt"), format!("{e:#}\n"));
    }
    if std::env::var_os("MMS_APPLIANCE_KEEP").is_some()
        && let Some(vm) = r.vm.as_mut()
    {
        eprintln!(
            "MMS_APPLIANCE_KEEP: VM left running: ssh -i {} -p {} -o StrictHostKeyChecking=no root@127.0.0.1 (qemu group {})",
            vm.key.display(),
            vm.port,
            vm.run.join("qemu.pid").display()
        );
        std::mem::forget(r.vm.take());
    }
    if let Err(e) = result {
        panic!("appliance test failed after {}: {e:#}", elapsed(r.t0));
    }
    say(r.t0, "PASS");
}

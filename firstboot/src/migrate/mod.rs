//! Migration of the services' state from an LXC host or the previous VM over SSH + rsync.
//!
//! Per service, in order, each part idempotent (markers in `<state_dir>/migrate/<service>/`):
//! 1. stop the source units (over ssh; stopping a stopped unit is a no-op);
//! 2. Immich: `pg_dumpall` on the source into `<state_dir>/migrate/<svc>/pg_dumpall.sql`
//!    (loaded into the new Postgres container by the `start` step);
//! 3. copy each source dir with `rsync --partial-dir` into `<config_dir>.mms-staging/<to>`
//!    (absolute `to`: straight into that directory); a `copied-N` marker means a re-run never
//!    copies it again, an interrupted copy resumes;
//! 4. `PRAGMA integrity_check` on every SQLite file of the copy — a corrupt one stops the
//!    migration, naming the file on the source;
//! 5. build `<config_dir>.mms-build` from the staging copy (hard links, real copies of the
//!    files that get rewritten), rewrite stored paths in it (SQLite in one transaction per
//!    database, config.xml, sabnzbd.ini, Jellyfin XML and `.mblink`), list every rewrite in
//!    `<state_dir>/migrate/<svc>/rewrites.txt` and the log, check the databases again;
//! 6. chown the tree to the service user (uid/gid from the config: the rendered units map the
//!    containers' files to it);
//! 7. swap the build into `config_dir` by rename, mark the service `done`, drop the staging copy.
//!
//! Rewrites always start from the pristine staging copy, so an interruption during 5–7 never
//! applies a rewrite twice. `--dry-run` only lists what would happen ([`plan`]); it neither
//! connects nor writes.

pub mod rewrite;
pub mod sqlite;

use crate::config::{App, Config, MigrateFrom, Rewrite, Service, SourceDir, SourceKind};
use crate::exec;
use crate::fsutil::{sibling, touch, under};
use anyhow::{Context as _, Result, anyhow, bail};
use mms_backupd::unpack::chown_tree;
use rewrite::{Change, Rewriter};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where and how to run: the filesystem root, programs, and the migration source.
#[derive(Debug, Clone)]
pub struct Migration<'a> {
    /// `/` in production, a temp dir in tests.
    pub root: &'a Path,
    /// The firstboot config.
    pub config: &'a Config,
    /// The source host.
    pub from: &'a MigrateFrom,
    /// The private key file (already joined onto `root`).
    pub key: PathBuf,
    /// `ssh` program.
    pub ssh: PathBuf,
    /// `rsync` program.
    pub rsync: PathBuf,
    /// Limit to these services (empty = every service with something to migrate).
    pub only: Vec<String>,
    /// rsync `--bwlimit` in KiB/s (slow or shared links); `None` = unlimited.
    pub bwlimit_kib: Option<u32>,
}

/// What will be done for one service (pure; see [`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    /// Service name.
    pub service: String,
    /// `user@host` of this service's source.
    pub host: String,
    /// Units stopped on the source.
    pub stop_units: Vec<String>,
    /// The shell command that stops them on the source.
    pub stop_command: Option<String>,
    /// Source dirs and their targets.
    pub sources: Vec<SourceDir>,
    /// Whose stored paths to rewrite.
    pub app: App,
    /// The rewrite rules.
    pub rewrites: Vec<Rewrite>,
    /// SQLite files named in the config (all `*.db` of the copy are checked too).
    pub sqlite: Vec<PathBuf>,
    /// Command run on the source whose stdout is a `pg_dumpall`.
    pub dump_command: Option<String>,
    /// The service's config dir.
    pub config_dir: PathBuf,
}

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The remote command that stops `units`: `systemctl stop` on an LXC, the service user's
/// manager on the previous VM; skipped with a warning when the source is not running systemd.
pub fn stop_command(
    kind: SourceKind,
    ssh_user: &str,
    service_user: &str,
    units: &[String],
) -> Option<String> {
    if units.is_empty() {
        return None;
    }
    let list: Vec<String> = units.iter().map(|u| shell_quote(u)).collect();
    let list = list.join(" ");
    Some(match kind {
        SourceKind::Lxc => format!(
            "if [ -d /run/systemd/system ]; then systemctl stop -- {list}; \
             else echo 'mms-firstboot: systemd is not running on the source; nothing stopped' >&2; fi"
        ),
        SourceKind::PreviousVm if ssh_user == "root" => format!(
            "if [ -d /run/systemd/system ]; then systemctl --user -M {}@ stop -- {list}; \
             else echo 'mms-firstboot: systemd is not running on the source; nothing stopped' >&2; fi",
            shell_quote(service_user)
        ),
        SourceKind::PreviousVm => format!(
            "if [ -d /run/systemd/system ]; then systemctl --user stop -- {list}; \
             else echo 'mms-firstboot: systemd is not running on the source; nothing stopped' >&2; fi"
        ),
    })
}

/// The plan for every selected service (pure: no I/O).
pub fn plan(config: &Config, from: &MigrateFrom, only: &[String]) -> Result<Vec<ServicePlan>> {
    for name in only {
        if config.service(name).is_none() {
            bail!(
                "unknown service {name:?}; configured: {}",
                config
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut plans = Vec::new();
    for s in &config.services {
        if !only.is_empty() && !only.contains(&s.name) {
            continue;
        }
        if let Some(p) = service_plan(config, from, s) {
            plans.push(p);
        }
    }
    Ok(plans)
}

fn service_plan(config: &Config, from: &MigrateFrom, s: &Service) -> Option<ServicePlan> {
    match from.kind {
        SourceKind::Lxc => {
            let m = s.migrate.as_ref()?;
            let dump_command = s.postgres.as_ref().map(|p| p.source_dump_command.clone());
            Some(ServicePlan {
                service: s.name.clone(),
                host: format!("{}@{}", from.user, m.host.as_deref().unwrap_or(&from.host)),
                stop_command: stop_command(
                    from.kind,
                    &from.user,
                    &config.user.name,
                    &m.source_units,
                ),
                stop_units: m.source_units.clone(),
                sources: m.sources.clone(),
                app: m.app.unwrap_or_else(|| App::for_service(&s.name)),
                rewrites: {
                    let mut r = effective_rewrites(m);
                    // SABnzbd's default download dirs (`Downloads/…` under root's home in the
                    // helper-script LXC) land in the TRaSH layout unless a rule says otherwise.
                    if m.app.unwrap_or_else(|| App::for_service(&s.name)) == App::Sabnzbd
                        && !r
                            .iter()
                            .any(|x| x.from.trim_end_matches('/') == SAB_OLD_DOWNLOADS)
                    {
                        r.push(Rewrite {
                            from: SAB_OLD_DOWNLOADS.into(),
                            to: "/data/usenet".into(),
                        });
                    }
                    r
                },
                sqlite: m.sqlite.clone(),
                dump_command,
                config_dir: s.config_dir.clone(),
            })
        }
        SourceKind::PreviousVm => {
            // Same layout on both sides: copy the config dir, rewrite nothing; /data is the
            // same NFS export, so absolute targets are not copied.
            let pg_unit = s.postgres.as_ref().map(|p| p.unit.clone());
            let stop_units: Vec<String> = s
                .units
                .iter()
                .filter(|u| Some(*u) != pg_unit.as_ref())
                .cloned()
                .collect();
            // The containers are the service user's (rootless): as root, run podman as them.
            let dump_command = s.postgres.as_ref().map(|p| {
                let podman = format!(
                    "podman exec {} pg_dumpall --clean --if-exists --username={}",
                    shell_quote(&p.container),
                    shell_quote(&p.user)
                );
                if from.user == "root" {
                    format!(
                        "cd / && runuser -u {} -- env XDG_RUNTIME_DIR=/run/user/{} {podman}",
                        shell_quote(&config.user.name),
                        config.user.uid
                    )
                } else {
                    podman
                }
            });
            Some(ServicePlan {
                service: s.name.clone(),
                host: format!("{}@{}", from.user, from.host),
                stop_command: stop_command(from.kind, &from.user, &config.user.name, &stop_units),
                stop_units,
                sources: vec![SourceDir {
                    from: s.config_dir.clone(),
                    to: PathBuf::from("."),
                }],
                app: App::Other,
                rewrites: vec![],
                sqlite: s
                    .migrate
                    .as_ref()
                    .map(|m| m.sqlite.clone())
                    .unwrap_or_default(),
                dump_command,
                config_dir: s.config_dir.clone(),
            })
        }
    }
}

/// Each configured service's container name and port on the new VM (from its health URL).
pub fn endpoints(config: &Config) -> sqlite::Endpoints {
    config
        .services
        .iter()
        .filter_map(|s| {
            crate::steps::health::parse_url(&s.health.url)
                .ok()
                .map(|u| (s.name.clone(), u.port))
        })
        .collect()
}

/// SABnzbd's default download root in a helper-script LXC (`$HOME/Downloads`, run as root).
pub const SAB_OLD_DOWNLOADS: &str = "/root/Downloads";

/// The explicit rewrites plus the layout rewrites derived from the source dirs
/// (`from` → `<container_config>/<to>` for each relative `to`); explicit ones win.
pub fn effective_rewrites(m: &crate::config::Migrate) -> Vec<Rewrite> {
    let mut out = m.rewrites.clone();
    for s in m.sources.iter().filter(|s| !s.to.is_absolute()) {
        let from = s.from.display().to_string();
        let from = from.trim_end_matches('/').to_string();
        if from.is_empty() || out.iter().any(|r| r.from.trim_end_matches('/') == from) {
            continue;
        }
        let mut to = m.container_config.trim_end_matches('/').to_string();
        for c in s.to.components() {
            if let std::path::Component::Normal(part) = c {
                to.push('/');
                to.push_str(&part.to_string_lossy());
            }
        }
        if to.is_empty() {
            to.push('/');
        }
        out.push(Rewrite { from, to });
    }
    out
}

/// A human listing of `plans` (what `migrate --dry-run` prints).
pub fn describe(plans: &[ServicePlan], config: &Config, done: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::new();
    for p in plans {
        let _ = writeln!(out, "{} (from {}):", p.service, p.host);
        if done(&p.service) {
            let _ = writeln!(out, "  already migrated (marker present); nothing to do");
            continue;
        }
        if p.stop_command.is_some() {
            let _ = writeln!(out, "  stop on source: {}", p.stop_units.join(", "));
        } else {
            let _ = writeln!(out, "  stop on source: nothing configured");
        }
        if let Some(d) = &p.dump_command {
            let _ = writeln!(out, "  dump Postgres on source: {d}");
        }
        for s in &p.sources {
            let _ = writeln!(
                out,
                "  copy {}:{}/ -> {}",
                p.host,
                s.from.display(),
                target_of(&p.config_dir, s).display()
            );
        }
        let named: Vec<String> = p.sqlite.iter().map(|s| s.display().to_string()).collect();
        let _ = writeln!(
            out,
            "  PRAGMA integrity_check: every *.db of the copy{}",
            if named.is_empty() {
                String::new()
            } else {
                format!(" (expected: {})", named.join(", "))
            }
        );
        if p.rewrites.is_empty() {
            let _ = writeln!(out, "  rewrite stored paths: none");
        } else {
            let rules: Vec<String> = p
                .rewrites
                .iter()
                .map(|r| format!("{} -> {}", r.from, r.to))
                .collect();
            let _ = writeln!(
                out,
                "  rewrite stored paths ({:?}): {}",
                p.app,
                rules.join(", ")
            );
        }
        let (uid, gid) = (config.user.uid, config.user.gid);
        if p.sources.iter().any(|s| !s.to.is_absolute()) {
            let _ = writeln!(
                out,
                "  chown -R {uid}:{gid} and install as {}",
                p.config_dir.display()
            );
        }
        for s in p.sources.iter().filter(|s| s.to.is_absolute()) {
            let _ = writeln!(out, "  chown -R {uid}:{gid} {}", s.to.display());
        }
    }
    if plans.is_empty() {
        out.push_str("nothing to migrate\n");
    }
    out
}

/// Where a source dir lands in the VM (relative `to` = inside `config_dir`).
fn target_of(config_dir: &Path, s: &SourceDir) -> PathBuf {
    if s.to.is_absolute() {
        s.to.clone()
    } else {
        under(config_dir, &s.to)
    }
}

/// `<config_dir>.<suffix>` beside the config dir (same filesystem: hard links and rename work).
/// The result of migrating one service.
#[derive(Debug, Clone, Default)]
pub struct ServiceReport {
    /// Service name.
    pub service: String,
    /// Already done before this run.
    pub already_done: bool,
    /// SQLite files checked.
    pub checked: Vec<PathBuf>,
    /// Rewrites applied (file, what).
    pub rewrites: Vec<String>,
    /// Warnings (e.g. the source had no systemd).
    pub warnings: Vec<String>,
}

impl Migration<'_> {
    fn marker_dir(&self, service: &str) -> PathBuf {
        under(self.root, &self.config.paths.state_dir)
            .join("migrate")
            .join(service)
    }

    /// Forgets every marker of `service` (copies, dump, done) so the next run migrates it
    /// again from scratch (`mms-firstboot migrate --again`).
    pub fn forget(&self, service: &str) -> Result<()> {
        let d = self.marker_dir(service);
        if d.exists() {
            fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
        Ok(())
    }

    /// True when `service` was migrated completely by an earlier run.
    pub fn is_done(&self, service: &str) -> bool {
        self.marker_dir(service).join("done").exists()
    }

    /// The ssh options (key, port, batch mode, known_hosts in the state dir).
    fn ssh_opts(&self) -> Vec<String> {
        let known = under(self.root, &self.config.paths.state_dir).join("known_hosts");
        vec![
            "-i".into(),
            self.key.display().to_string(),
            "-p".into(),
            self.from.port.to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", known.display()),
            "-o".into(),
            "ConnectTimeout=20".into(),
            "-o".into(),
            "ServerAliveInterval=15".into(),
            "-o".into(),
            "ServerAliveCountMax=4".into(),
        ]
    }

    fn ssh(&self, host: &str, remote: &str) -> Command {
        let mut c = Command::new(&self.ssh);
        c.args(self.ssh_opts()).arg(host).arg("--").arg(remote);
        c
    }

    /// Runs `remote` on `host`; error with stderr on failure.
    fn ssh_run(&self, host: &str, remote: &str, what: &str) -> Result<exec::Output> {
        exec::run(&mut self.ssh(host, remote), Duration::from_secs(600))
            .with_context(|| format!("{what} on {host}"))?
            .checked(format!("{what} on {host}"))
    }

    /// Migrates every planned service; returns one report per service.
    pub fn run(&self) -> Result<Vec<ServiceReport>> {
        let plans = plan(self.config, self.from, &self.only)?;
        let mut reports = Vec::new();
        for p in &plans {
            reports.push(
                self.service(p)
                    .with_context(|| format!("migrating {} from {}", p.service, p.host))?,
            );
        }
        Ok(reports)
    }

    fn service(&self, p: &ServicePlan) -> Result<ServiceReport> {
        let mut report = ServiceReport {
            service: p.service.clone(),
            ..Default::default()
        };
        let mdir = self.marker_dir(&p.service);
        let config_dir = under(self.root, &p.config_dir);
        let staging = sibling(&config_dir, ".mms-staging");
        let build = sibling(&config_dir, ".mms-build");
        if mdir.join("done").exists() {
            // An interruption right after `done` can leave the scratch copies behind.
            for d in [&staging, &build, &sibling(&config_dir, ".mms-old")] {
                if d.exists() {
                    fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
                }
            }
            report.already_done = true;
            return Ok(report);
        }
        fs::create_dir_all(&mdir).with_context(|| format!("creating {}", mdir.display()))?;

        // 1. stop the source units
        if let Some(cmd) = &p.stop_command {
            tracing::info!(service = %p.service, units = %p.stop_units.join(" "), "stopping on source");
            let out = self.ssh_run(&p.host, cmd, "stopping the source units")?;
            let warn = out.stderr_tail(2);
            if warn.contains("mms-firstboot:") {
                tracing::warn!(service = %p.service, "{warn}");
                report.warnings.push(warn);
            }
        }

        // 2. Postgres dump
        if let Some(cmd) = &p.dump_command
            && !mdir.join("dump.done").exists()
        {
            tracing::info!(service = %p.service, "pg_dumpall on source");
            dump_postgres(self, &p.host, cmd, &mdir)?;
            touch(&mdir.join("dump.done"))?;
        }

        // 3. copy
        for (i, src) in p.sources.iter().enumerate() {
            let marker = mdir.join(format!("copied-{i}"));
            if marker.exists() {
                continue;
            }
            let dest = if src.to.is_absolute() {
                under(self.root, &src.to)
            } else {
                under(&staging, &src.to)
            };
            if self.from.kind == SourceKind::PreviousVm {
                // A service that never wrote a config dir on the old VM has nothing to bring.
                let test = format!("test -d {}", shell_quote(&src.from.display().to_string()));
                let out = exec::run(&mut self.ssh(&p.host, &test), Duration::from_secs(120))
                    .with_context(|| format!("checking {} on {}", src.from.display(), p.host))?;
                if out.status.code() == Some(1) {
                    report.warnings.push(format!(
                        "{} does not exist on {}; nothing copied",
                        src.from.display(),
                        p.host
                    ));
                    touch(&marker)?;
                    continue;
                }
            }
            fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
            tracing::info!(service = %p.service, from = %src.from.display(), to = %dest.display(), "rsync");
            // --delete only inside our own staging dir: an absolute target (the photos
            // export) may hold files that are not on the source.
            self.rsync(&p.host, &src.from, &dest, !src.to.is_absolute())?;
            touch(&marker)?;
        }

        // 4. integrity before anything uses the copy
        let mut dbs = sqlite_files(&staging)?;
        for named in &p.sqlite {
            let f = staging.join(named);
            if !f.exists() {
                report.warnings.push(format!(
                    "{} not in the copy (older install?)",
                    named.display()
                ));
            } else if !dbs.contains(&f) {
                dbs.push(f);
            }
        }
        for db in &dbs {
            sqlite::integrity_check(db).map_err(|e| {
                let rel = db.strip_prefix(&staging).unwrap_or(db);
                anyhow!(
                    "{e} — the copy of {} from {}; fix or restore it on the source, then run \
                     `mms-firstboot migrate` again",
                    remote_name(p, rel),
                    p.host
                )
            })?;
            report
                .checked
                .push(db.strip_prefix(&staging).unwrap_or(db).to_path_buf());
        }

        // Only sources with a relative target go through the config dir; a service whose
        // sources all land elsewhere (Immich's upload tree) leaves its config dir alone.
        let into_config_dir = p.sources.iter().any(|s| !s.to.is_absolute());
        let (uid, gid) = (self.config.user.uid, self.config.user.gid);
        let old = sibling(&config_dir, ".mms-old");
        if into_config_dir {
            report.rewrites = self.build_and_install(p, &staging, &build, &config_dir, &old)?;
            let mut listing = String::new();
            for r in &report.rewrites {
                listing.push_str(r);
                listing.push('\n');
            }
            crate::fsutil::write_atomic(&mdir.join("rewrites.txt"), listing.as_bytes(), 0o600)?;
        }
        for src in p.sources.iter().filter(|s| s.to.is_absolute()) {
            chown_tree(&under(self.root, &src.to), uid, gid).map_err(|e| {
                anyhow!(
                    "{e:#} (on NFS this needs no_root_squash for the VM, or chown on the server)"
                )
            })?;
        }
        touch(&mdir.join("done"))?;
        for d in [&old, &staging] {
            if d.exists() {
                fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
        Ok(report)
    }

    /// Steps 5–7 for the config dir: build from the pristine staging copy, rewrite, re-check,
    /// chown, swap in. Returns the rewrite listing.
    fn build_and_install(
        &self,
        p: &ServicePlan,
        staging: &Path,
        build: &Path,
        config_dir: &Path,
        old: &Path,
    ) -> Result<Vec<String>> {
        if build.exists() {
            fs::remove_dir_all(build).with_context(|| format!("removing {}", build.display()))?;
        }
        if staging.exists() {
            link_tree(staging, build)?;
        } else {
            fs::create_dir_all(build)?;
        }
        let rw = Rewriter::new(&p.rewrites);
        let rewrites = rewrite_tree(
            build,
            p.app,
            &rw,
            &self.config.tailscale.hostname,
            &endpoints(self.config),
        )?;
        for r in &rewrites {
            tracing::info!(service = %p.service, "rewrite {r}");
        }
        for db in sqlite_files(build)? {
            sqlite::integrity_check(&db)?;
        }
        chown_tree(build, self.config.user.uid, self.config.user.gid)?;
        if let Some(parent) = config_dir.parent() {
            fs::create_dir_all(parent)?;
        }
        crate::fsutil::swap_in(build, config_dir, old)?;
        Ok(rewrites)
    }

    fn rsync(&self, host: &str, from: &Path, dest: &Path, delete: bool) -> Result<()> {
        let e = std::iter::once(self.ssh.display().to_string())
            .chain(self.ssh_opts())
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ");
        let mut src = from.display().to_string();
        if !src.ends_with('/') {
            src.push('/');
        }
        let mut d = dest.display().to_string();
        if !d.ends_with('/') {
            d.push('/');
        }
        let mut cmd = Command::new(&self.rsync);
        if delete {
            cmd.arg("--delete");
        }
        if let Some(kib) = self.bwlimit_kib {
            cmd.arg(format!("--bwlimit={kib}"));
        }
        exec::run(
            cmd.args([
                "-a",
                "-s",
                "--numeric-ids",
                "--partial-dir=.rsync-partial",
                "-e",
                &e,
            ])
            .arg(format!("{host}:{src}"))
            .arg(&d),
            Duration::from_secs(24 * 3600),
        )
        .with_context(|| format!("rsync {host}:{src}"))?
        .checked(format!("rsync {host}:{src} -> {d}"))?;
        Ok(())
    }
}

/// Maps a file of the staging copy back to its path on the source (for messages).
fn remote_name(p: &ServicePlan, rel: &Path) -> String {
    let mut rel_sources: Vec<(&Path, &SourceDir)> = p
        .sources
        .iter()
        .filter(|s| !s.to.is_absolute())
        .map(|s| (s.to.strip_prefix(".").unwrap_or(&s.to), s))
        .collect();
    // the deepest target first: `data` before `.`
    rel_sources.sort_by_key(|(to, _)| std::cmp::Reverse(to.components().count()));
    for (to, s) in rel_sources {
        if let Ok(r) = rel.strip_prefix(to) {
            return s.from.join(r).display().to_string();
        }
    }
    rel.display().to_string()
}

/// The search_path line of a `pg_dumpall` that Immich's restore recipe replaces.
const PG_SEARCH_PATH_OLD: &str = "SELECT pg_catalog.set_config('search_path', '', false);";
const PG_SEARCH_PATH_NEW: &str =
    "SELECT pg_catalog.set_config('search_path', 'public, pg_catalog', true);";

/// The dump file the `start` step loads into the service's Postgres container.
pub fn dump_file(root: &Path, config: &Config, service: &str) -> PathBuf {
    under(root, &config.paths.state_dir)
        .join("migrate")
        .join(service)
        .join("pg_dumpall.sql")
}

/// Copies a `pg_dumpall` stream, replacing the `search_path` line as Immich's restore recipe
/// does (otherwise the restore fails on vector types).
pub fn transform_dump(r: impl std::io::BufRead, mut w: impl std::io::Write) -> std::io::Result<()> {
    for line in r.split(b'\n') {
        let line = line?;
        if line == PG_SEARCH_PATH_OLD.as_bytes() {
            w.write_all(PG_SEARCH_PATH_NEW.as_bytes())?;
        } else {
            w.write_all(&line)?;
        }
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Makes the raw `pg_dumpall` output `src` the start step's pending dump `dest`: transformed
/// ([`transform_dump`]) into a 0600 temp file, synced, renamed; `src` is removed.
pub fn install_dump(src: &Path, dest: &Path) -> Result<()> {
    use std::io::{BufReader, BufWriter};
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = dest.parent() {
        fs::create_dir_all(d)?;
    }
    let tmp = dest.with_extension("sql.tmp");
    {
        let w = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut bw = BufWriter::new(w);
        transform_dump(BufReader::new(fs::File::open(src)?), &mut bw)?;
        bw.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    fs::rename(&tmp, dest)?;
    fs::remove_file(src)?;
    Ok(())
}

fn dump_postgres(m: &Migration<'_>, host: &str, cmd: &str, mdir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let raw = mdir.join("pg_dumpall.raw");
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&raw)?;
    exec::run_with_stdout(
        &mut m.ssh(host, cmd),
        Some(f),
        Duration::from_secs(6 * 3600),
    )
    .context("pg_dumpall on the source")?
    .checked(format!("pg_dumpall on {host}"))?;
    if fs::metadata(&raw)?.len() == 0 {
        bail!("pg_dumpall on {host} printed nothing (command: {cmd})");
    }
    install_dump(&raw, &mdir.join("pg_dumpall.sql"))
}

/// Every SQLite database under `dir` (by header; `*.db` files whatever their header).
fn sqlite_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    walk(dir, &mut |p, ft| {
        if ft.is_file()
            && !p.components().any(|c| c.as_os_str() == ".rsync-partial")
            && (p.extension().is_some_and(|e| e == "db") || sqlite::looks_like_sqlite(p))
        {
            out.push(p.to_path_buf());
        }
        Ok(())
    })?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, fs::FileType) -> Result<()>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let ft = e.file_type()?;
        let p = e.path();
        f(&p, ft)?;
        if ft.is_dir() {
            walk(&p, f)?;
        }
    }
    Ok(())
}

/// Files that are rewritten in place get real copies in the build tree; the rest hard links.
fn rewritten_in_place(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    [
        ".db",
        ".db-wal",
        ".db-shm",
        ".db-journal",
        ".xml",
        ".ini",
        ".mblink",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

/// Mirrors `src` into `dst` (created): dirs, symlinks, hard links, copies of rewritable files.
fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    fs::create_dir_all(dst)?;
    fs::set_permissions(dst, fs::metadata(src)?.permissions())?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let ft = e.file_type()?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        if e.file_name() == ".rsync-partial" {
            continue;
        }
        if ft.is_dir() {
            link_tree(&s, &d)?;
        } else if ft.is_symlink() {
            symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            if rewritten_in_place(&s) {
                fs::copy(&s, &d).with_context(|| format!("copying {}", s.display()))?;
                let mode = fs::metadata(&s)?.permissions().mode();
                fs::set_permissions(&d, fs::Permissions::from_mode(mode))?;
            } else {
                fs::hard_link(&s, &d).with_context(|| format!("linking {}", s.display()))?;
            }
        }
    }
    Ok(())
}

/// Applies the app's stored-path rewrites inside `dir`; returns one line per rewrite.
fn rewrite_tree(
    dir: &Path,
    app: App,
    rw: &Rewriter,
    ts_hostname: &str,
    eps: &sqlite::Endpoints,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut text_file =
        |rel: &Path, f: &dyn Fn(&str, &mut Vec<Change>) -> Option<String>| -> Result<()> {
            let path = dir.join(rel);
            let Ok(text) = fs::read_to_string(&path) else {
                return Ok(());
            };
            let mut changes = Vec::new();
            if let Some(new) = f(&text, &mut changes) {
                fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
                for c in changes {
                    lines.push(format!("{}: {} -> {}", rel.display(), c.old, c.new));
                }
            }
            Ok(())
        };
    match app {
        App::Radarr | App::Sonarr | App::Lidarr | App::Prowlarr => {
            text_file(Path::new("config.xml"), &|t, c| {
                let rewritten = rw.xml(t, c);
                let base = rewritten.as_deref().unwrap_or(t);
                rewrite::servarr_bind_any(base, c).or(rewritten)
            })?;
        }
        App::Sabnzbd => {
            let opts = rewrite::SabOptions {
                old_home: "/root".into(),
                port: Some(8080),
                whitelist: vec!["sabnzbd".into(), ts_hostname.to_string()],
            };
            text_file(Path::new("sabnzbd.ini"), &|t, c| {
                let mut local = Vec::new();
                let out = rewrite::sabnzbd_ini(rw, t, &opts, &mut local);
                if local.is_empty() {
                    None
                } else {
                    c.extend(local);
                    Some(out)
                }
            })?;
        }
        App::Jellyfin => {
            let mut files = Vec::new();
            for e in fs::read_dir(dir)? {
                let e = e?;
                if e.file_type()?.is_file() && e.path().extension().is_some_and(|x| x == "xml") {
                    files.push(PathBuf::from(e.file_name()));
                }
            }
            let lib = dir.join("data/root");
            if lib.exists() {
                walk(&lib, &mut |p, ft| {
                    if ft.is_file() {
                        files.push(p.strip_prefix(dir).unwrap_or(p).to_path_buf());
                    }
                    Ok(())
                })?;
            }
            files.sort();
            for rel in files {
                if rel.extension().is_some_and(|x| x == "mblink") {
                    text_file(&rel, &|t, c| rw.mblink(t, c))?;
                } else if rel.extension().is_some_and(|x| x == "xml") {
                    text_file(&rel, &|t, c| rw.xml(t, c))?;
                }
            }
        }
        App::Immich | App::Other => {}
    }
    for (db, columns) in sqlite::targets(app) {
        let path = dir.join(db);
        if !path.exists() {
            continue;
        }
        let mut changes = sqlite::rewrite_db(&path, &columns, rw)?;
        changes.extend(sqlite::rewrite_endpoints(&path, app, eps)?);
        for c in changes {
            lines.push(format!(
                "{db}: {} row {}: {} -> {}",
                c.column, c.rowid, c.change.old, c.change.new
            ));
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn plan_for_lxc_and_previous_vm() {
        let c = Config::example();
        let from = MigrateFrom {
            kind: SourceKind::Lxc,
            host: "old".into(),
            user: "root".into(),
            port: 22,
            ssh_key_secret: "k".into(),
        };
        let p = plan(&c, &from, &[]).unwrap();
        let radarr = p.iter().find(|p| p.service == "radarr").unwrap();
        assert_eq!(radarr.host, "root@old");
        assert!(
            radarr
                .stop_command
                .as_deref()
                .unwrap()
                .contains("systemctl stop -- radarr.service")
        );
        let sab = p.iter().find(|p| p.service == "sabnzbd").unwrap();
        assert_eq!(sab.host, "root@old-sabnzbd.lan");
        let vm = MigrateFrom {
            kind: SourceKind::PreviousVm,
            user: "mms".into(),
            ..from
        };
        let p = plan(&c, &vm, &["immich".into()]).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].stop_units.len(),
            3,
            "postgres keeps running for the dump"
        );
        assert!(p[0].stop_command.as_deref().unwrap().contains(
            "systemctl --user stop -- immich-redis.service immich-machine-learning.service immich-server.service;"
        ));
        assert!(
            p[0].dump_command
                .as_deref()
                .unwrap()
                .starts_with("podman exec immich_postgres pg_dumpall")
        );
        assert!(plan(&c, &vm, &["nope".into()]).is_err());
    }

    #[test]
    fn dump_search_path_is_fixed() {
        let input = format!("SET x;\n{PG_SEARCH_PATH_OLD}\nCREATE TABLE t();\n");
        let mut out = Vec::new();
        transform_dump(input.as_bytes(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("SET x;\n{PG_SEARCH_PATH_NEW}\nCREATE TABLE t();\n")
        );
    }

    #[test]
    fn layout_rewrites_are_derived_from_sources() {
        let m = crate::config::Migrate {
            app: None,
            host: None,
            source_units: vec![],
            sources: vec![
                SourceDir {
                    from: "/etc/jellyfin".into(),
                    to: ".".into(),
                },
                SourceDir {
                    from: "/var/lib/jellyfin/".into(),
                    to: "data".into(),
                },
                SourceDir {
                    from: "/opt/immich/upload".into(),
                    to: "/data/photos".into(),
                },
            ],
            sqlite: vec![],
            container_config: "/config".into(),
            rewrites: vec![Rewrite {
                from: "/etc/jellyfin/".into(),
                to: "/elsewhere".into(),
            }],
        };
        let r: Vec<(String, String)> = effective_rewrites(&m)
            .into_iter()
            .map(|r| (r.from, r.to))
            .collect();
        assert_eq!(
            r,
            [
                ("/etc/jellyfin/".to_string(), "/elsewhere".to_string()),
                ("/var/lib/jellyfin".to_string(), "/config/data".to_string()),
            ]
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("radarr.service"), "radarr.service");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
    }

    #[test]
    fn remote_names_map_back() {
        let p = ServicePlan {
            service: "jellyfin".into(),
            host: "root@h".into(),
            stop_units: vec![],
            stop_command: None,
            sources: vec![
                SourceDir {
                    from: "/etc/jellyfin".into(),
                    to: ".".into(),
                },
                SourceDir {
                    from: "/var/lib/jellyfin".into(),
                    to: "data".into(),
                },
            ],
            app: App::Jellyfin,
            rewrites: vec![],
            sqlite: vec![],
            dump_command: None,
            config_dir: "/home/mms/config/jellyfin".into(),
        };
        assert_eq!(
            remote_name(&p, Path::new("data/data/jellyfin.db")),
            "/var/lib/jellyfin/data/jellyfin.db"
        );
    }
}

//! `start`: podman secrets, the first-boot gate marker, then every unit on the service
//! user's systemd manager, in order, each waited for.
//!
//! 1. runtime podman secrets of the user (`podman secret create --replace NAME FILE`, run as
//!    the user; idempotent), then the one-time secret files used for them are deleted;
//! 2. the gate marker (`paths.gate_marker`) that the units' `ConditionPathExists=` checks, so
//!    they start by themselves on every later boot;
//! 3. wait for the user bus, `Reload`, then `StartUnit` each service's units in the config's
//!    order and wait for each job; after a service's Postgres unit, a pending `pg_dumpall` from
//!    the migration is loaded (`podman exec -i <container> psql`) once (marker `loaded`).
//!
//! A failed unit is reported with its last journal lines.

use super::{Context, NextAction, Outcome, Step, StepError};
use crate::exec;
use crate::status::Phase;
use crate::systemd::{self, ManagerProxy};
use anyhow::{Context as _, anyhow};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The `start` step.
#[derive(Debug)]
pub struct StartStep;

/// A command run as the service user with its runtime environment (`podman` needs
/// `XDG_RUNTIME_DIR` and the user's home).
pub fn user_command(ctx: &Context, program: &str) -> Command {
    let u = &ctx.config.user;
    let mut c = Command::new(program);
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin",
        )
        .env("HOME", &u.home)
        .env("USER", &u.name)
        .env("LOGNAME", &u.name)
        .env("XDG_RUNTIME_DIR", u.runtime_dir())
        .env("DBUS_SESSION_BUS_ADDRESS", bus_address(ctx))
        .current_dir(if u.home.exists() {
            u.home.as_path()
        } else {
            Path::new("/")
        });
    if ctx.env.drop_privileges {
        c.uid(u.uid).gid(u.gid);
    }
    c
}

/// The user bus address in effect.
pub fn bus_address(ctx: &Context) -> String {
    ctx.env
        .user_bus
        .clone()
        .unwrap_or_else(|| ctx.config.user.default_bus_address())
}

/// The last journal lines of a user unit (root reads the user's journal entries).
pub fn journal_tail(uid: u32, unit: &str, lines: u32) -> String {
    let out = exec::run(
        Command::new("journalctl").args([
            "--no-pager",
            "-q",
            "-o",
            "cat",
            "-n",
            &lines.to_string(),
            &format!("_UID={uid}"),
            &format!("_SYSTEMD_USER_UNIT={unit}"),
        ]),
        Duration::from_secs(30),
    );
    match out {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {
            exec::tail_lines(&o.stdout_text(), lines as usize)
        }
        Ok(o) => format!("(no journal lines: {})", o.stderr_tail(2)),
        Err(e) => format!("(journal not readable: {e})"),
    }
}

fn create_podman_secrets(ctx: &Context) -> anyhow::Result<usize> {
    let mut n = 0;
    let dir = ctx.secrets_dir();
    for s in &ctx.config.services {
        for (name, file) in &s.podman_secrets {
            let path = dir.join(file);
            if !path.exists() {
                // An interrupted earlier run may have created it and deleted the file.
                let mut cmd = user_command(ctx, "podman");
                cmd.args(["secret", "exists", name]);
                let exists = exec::run(&mut cmd, Duration::from_secs(60))
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if exists {
                    continue;
                }
                return Err(anyhow!(
                    "secret file {} is missing and podman secret {name} does not exist",
                    path.display()
                ));
            }
            // Read as root and pass on stdin: the delivery dir is root-only.
            let data = std::fs::read(&path)
                .with_context(|| format!("reading secret file {}", path.display()))?;
            let mut cmd = user_command(ctx, "podman");
            cmd.args(["secret", "create", "--replace", name, "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            let mut child = cmd
                .spawn()
                .with_context(|| format!("running podman secret create {name}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                stdin
                    .write_all(&data)
                    .with_context(|| format!("passing secret {name} to podman"))?;
            }
            let out = child.wait_with_output()?;
            if !out.status.success() {
                return Err(anyhow!(
                    "podman secret create {name} (as {}) failed ({}): {}",
                    ctx.config.user.name,
                    out.status,
                    exec::tail_lines(&String::from_utf8_lossy(&out.stderr), 3)
                ));
            }
            n += 1;
        }
    }
    // The values now live in the user's podman secret store only.
    for s in &ctx.config.services {
        for file in s.podman_secrets.values() {
            crate::fsutil::remove_if_exists(&dir.join(file))?;
        }
    }
    Ok(n)
}

fn load_postgres_dump(
    ctx: &Context,
    service: &str,
    pg: &crate::config::Postgres,
) -> anyhow::Result<bool> {
    let dump = crate::migrate::dump_file(&ctx.root, &ctx.config, service);
    let loaded = dump.with_file_name("loaded");
    if loaded.exists() || !dump.exists() {
        return Ok(false);
    }
    let f = std::fs::File::open(&dump).with_context(|| format!("opening {}", dump.display()))?;
    let mut cmd = user_command(ctx, "podman");
    cmd.args([
        "exec",
        "-i",
        &pg.container,
        "psql",
        "--quiet",
        &format!("--username={}", pg.user),
        "--dbname=postgres",
    ])
    .stdin(Stdio::from(f));
    exec::run(&mut cmd, Duration::from_secs(6 * 3600))?.checked(format!(
        "loading {} into {}",
        dump.display(),
        pg.container
    ))?;
    crate::fsutil::touch(&loaded)?;
    // The dump is a full copy of the database: keep it no longer than needed.
    std::fs::remove_file(&dump).with_context(|| format!("removing {}", dump.display()))?;
    Ok(true)
}

impl Step for StartStep {
    fn phase(&self) -> Phase {
        Phase::Start
    }

    fn run(&self, ctx: &Context) -> Result<Outcome, StepError> {
        let c = &ctx.config;
        let secrets = create_podman_secrets(ctx).next_action(format!(
            "check `podman secret ls` as {} and that the secret files were delivered; \
             then `systemctl restart mms-firstboot`",
            c.user.name
        ))?;
        crate::fsutil::touch(&ctx.path(&c.paths.gate_marker))
            .with_context(|| format!("creating the gate marker {}", c.paths.gate_marker.display()))
            .next_action("check the disk, then `systemctl restart mms-firstboot`")?;

        let address = bus_address(ctx);
        let next_bus = format!(
            "check `loginctl enable-linger {}` and `systemctl status user@{}.service`, \
             then `systemctl restart mms-firstboot`",
            c.user.name, c.user.uid
        );
        if ctx.env.user_bus.is_none() && !c.user.runtime_dir().join("bus").exists() {
            // cloud-init enables linger; doing it again is harmless and starts the manager
            // should that have been missed.
            match exec::run(
                Command::new("loginctl").args(["enable-linger", &c.user.name]),
                Duration::from_secs(60),
            ) {
                Ok(o) if o.status.success() => {}
                Ok(o) => tracing::warn!("loginctl enable-linger: {}", o.stderr_tail(2)),
                Err(e) => tracing::warn!("loginctl enable-linger: {e}"),
            }
        }
        systemd::wait_for_socket(&address, ctx.env.start_timeout, ctx.env.poll)
            .next_action(&next_bus)?;
        // The socket can exist a moment before the bus accepts on it: retry until the timeout.
        let deadline = std::time::Instant::now() + ctx.env.start_timeout;
        let conn = loop {
            let attempt = if ctx.env.drop_privileges && nix::unistd::geteuid().is_root() {
                systemd::connect_as(&address, c.user.uid, c.user.gid)
            } else {
                systemd::connect(&address)
            };
            match attempt {
                Ok(conn) => break conn,
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(e).next_action(&next_bus);
                }
                Err(e) => {
                    tracing::debug!("user bus not ready: {e:#}");
                    std::thread::sleep(ctx.env.poll);
                }
            }
        };
        let manager = ManagerProxy::new(&conn)
            .context("systemd manager proxy")
            .next_action(&next_bus)?;
        manager
            .subscribe()
            .context("Subscribe")
            .next_action(&next_bus)?;
        manager
            .reload()
            .context("Reload (daemon-reload)")
            .next_action(&next_bus)?;

        let mut started = 0;
        let mut loaded = Vec::new();
        for s in &c.services {
            for unit in &s.units {
                tracing::info!(service = %s.name, unit, "starting");
                if let Err(e) = systemd::start_unit(&manager, unit, ctx.env.start_timeout) {
                    let journal = journal_tail(c.user.uid, unit, 15);
                    return Err(
                        e.context(format!("service {}; last journal lines: {journal}", s.name))
                    )
                    .next_action(format!(
                        "read `journalctl _UID={} _SYSTEMD_USER_UNIT={unit}`, fix the cause \
                             (image, volume, port), then `systemctl restart mms-firstboot`",
                        c.user.uid
                    ));
                }
                started += 1;
                if let Some(pg) = &s.postgres
                    && &pg.unit == unit
                    && load_postgres_dump(ctx, &s.name, pg).next_action(format!(
                        "check `podman logs {}` as {}; then `systemctl restart mms-firstboot`",
                        pg.container, c.user.name
                    ))?
                {
                    loaded.push(s.name.clone());
                }
            }
        }
        Ok(Outcome::Done(format!(
            "{started} unit(s) started, {secrets} podman secret(s){}",
            if loaded.is_empty() {
                String::new()
            } else {
                format!(", database dump loaded for {}", loaded.join(", "))
            }
        )))
    }
}

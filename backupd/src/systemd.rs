//! Stopping and starting units of the service user's systemd manager over D-Bus.
//!
//! Uses `org.freedesktop.systemd1.Manager` `StopUnit`/`StartUnit` with mode `replace` and
//! waits for the matching `JobRemoved` signal (subscribed before the call, so it cannot be
//! missed), then reads the unit's `ActiveState` for the health check.
//!
//! Which bus:
//! - `MMS_BACKUPD_SYSTEMD_BUS=<D-Bus address>` (tests and special setups): a bus with a
//!   daemon, where the manager owns `org.freedesktop.systemd1`;
//! - running as the service user: its session bus `unix:path=/run/user/<uid>/bus`;
//! - running as root: the same user bus, connected and authenticated with the effective
//!   uid/gid switched to the service user, then root restored ([`connect_unix_as`]). The bus
//!   policy refuses root itself, and the manager's private socket
//!   (`/run/user/<uid>/systemd/private`) labels messages with sender names zbus rejects (seen
//!   in the appliance VM: zbus panicked in its executor and the call never returned).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use zbus::message::Type as MsgType;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, MessageStream};

/// Environment variable naming the D-Bus address of the systemd manager's bus.
pub const BUS_ENV: &str = "MMS_BACKUPD_SYSTEMD_BUS";
/// Environment variable overriding how long to wait for a job (seconds, default 300).
pub const JOB_TIMEOUT_ENV: &str = "MMS_BACKUPD_JOB_TIMEOUT";

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// A connection to one systemd manager.
#[derive(Debug)]
pub struct Systemd {
    rt: tokio::runtime::Runtime,
    conn: Connection,
    dest: Option<&'static str>,
    timeout: Duration,
}

impl Systemd {
    /// Connects to the manager of `uid`/`gid` (see the module docs for how the bus is chosen).
    pub fn connect(uid: u32, gid: u32) -> Result<Systemd> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the D-Bus runtime")?;
        let timeout = std::env::var(JOB_TIMEOUT_ENV)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(Duration::from_secs(300), Duration::from_secs);
        let user_bus = format!("unix:path=/run/user/{uid}/bus");
        let (addr, as_user) = match std::env::var(BUS_ENV) {
            Ok(a) if !a.is_empty() => (a, false),
            _ => (user_bus, nix::unistd::geteuid().as_raw() != uid),
        };
        let conn = if as_user {
            connect_unix_as(&addr, uid, gid, |stream| {
                rt.block_on(zbus::connection::Builder::async_io_unix_stream(stream).build())
                    .map_err(anyhow::Error::from)
            })
        } else {
            rt.block_on(async {
                zbus::connection::Builder::address(addr.as_str())?
                    .build()
                    .await
            })
            .map_err(anyhow::Error::from)
        }
        .with_context(|| format!("cannot connect to the systemd manager of uid {uid} at {addr}"))?;
        let s = Systemd {
            rt,
            conn,
            dest: Some(DEST),
            timeout,
        };
        s.call::<()>("Subscribe", &())
            .context("systemd Subscribe")?;
        Ok(s)
    }

    fn call<R>(
        &self,
        method: &str,
        body: &(impl serde::Serialize + zbus::zvariant::DynamicType),
    ) -> Result<R>
    where
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        self.rt.block_on(async {
            let msg = self
                .conn
                .call_method(self.dest, PATH, Some(MANAGER), method, body)
                .await?;
            msg.body().deserialize::<R>().map_err(anyhow::Error::from)
        })
    }

    /// Runs `StopUnit`/`StartUnit` and waits for the job's result; errors unless `done`.
    fn job(&self, method: &str, unit: &str) -> Result<()> {
        let verb = if method == "StopUnit" {
            "stopping"
        } else {
            "starting"
        };
        self.rt.block_on(async {
            let rule = MatchRule::builder()
                .msg_type(MsgType::Signal)
                .interface(MANAGER)?
                .member("JobRemoved")?
                .build();
            let mut stream = MessageStream::for_match_rule(rule, &self.conn, Some(64)).await?;
            let reply = self
                .conn
                .call_method(self.dest, PATH, Some(MANAGER), method, &(unit, "replace"))
                .await
                .with_context(|| format!("{verb} {unit}"))?;
            let job: OwnedObjectPath = reply.body().deserialize()?;
            let deadline = Instant::now() + self.timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let next = tokio::time::timeout(left, next_message(&mut stream))
                    .await
                    .map_err(|_| {
                        anyhow!("{verb} {unit}: no result after {}s", self.timeout.as_secs())
                    })?;
                let Some(msg) = next else {
                    bail!("{verb} {unit}: D-Bus connection closed")
                };
                let msg = msg?;
                let Ok((_id, path, _unit, result)) =
                    msg.body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if path == job {
                    if result == "done" {
                        return Ok(());
                    }
                    bail!("{verb} {unit} failed: job result {result:?}");
                }
            }
        })
    }

    /// Stops a unit and waits until the stop job finished.
    pub fn stop(&self, unit: &str) -> Result<()> {
        self.job("StopUnit", unit)
    }

    /// Starts a unit and waits until the start job finished.
    pub fn start(&self, unit: &str) -> Result<()> {
        self.job("StartUnit", unit)
    }

    /// The unit's `ActiveState` (`active`, `inactive`, `failed`, …).
    pub fn active_state(&self, unit: &str) -> Result<String> {
        let path: OwnedObjectPath = self
            .call("LoadUnit", &(unit,))
            .with_context(|| format!("loading unit {unit}"))?;
        self.rt.block_on(async {
            let msg = self
                .conn
                .call_method(
                    self.dest,
                    path.as_str(),
                    Some("org.freedesktop.DBus.Properties"),
                    "Get",
                    &("org.freedesktop.systemd1.Unit", "ActiveState"),
                )
                .await
                .with_context(|| format!("reading ActiveState of {unit}"))?;
            let v: OwnedValue = msg.body().deserialize()?;
            String::try_from(v).map_err(|e| anyhow!("ActiveState of {unit}: {e}"))
        })
    }

    /// Waits until the unit is `active` (healthy: Quadlet units with `Notify=healthy` only
    /// become active once their health check passes). Fails on `failed` or timeout.
    pub fn wait_active(&self, unit: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.active_state(unit)?;
            match state.as_str() {
                "active" => return Ok(()),
                "failed" => bail!("health check: {unit} failed after start"),
                "inactive" => bail!("health check: {unit} stopped after start"),
                _ => {}
            }
            if Instant::now() >= deadline {
                bail!(
                    "health check: {unit} still {state:?} after {}s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

async fn next_message(stream: &mut MessageStream) -> Option<zbus::Result<zbus::Message>> {
    use zbus::export::futures_core::Stream;
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

/// Stops a unit for the lifetime of the guard; [`UnitGuard::restart`] starts it again and
/// reports the result. If the guard is dropped without `restart` (early return, panic), the
/// unit is started anyway and a failure is logged.
#[derive(Debug)]
pub struct UnitGuard<'a> {
    systemd: &'a Systemd,
    unit: String,
    armed: bool,
}

impl<'a> UnitGuard<'a> {
    /// Stops `unit`. If stopping fails the unit is started again before returning the error.
    pub fn stop(systemd: &'a Systemd, unit: &str) -> Result<UnitGuard<'a>> {
        tracing::info!(unit, "stopping unit");
        if let Err(e) = systemd.stop(unit) {
            if let Err(e2) = systemd.start(unit) {
                tracing::error!(unit, "starting the unit again failed: {e2:#}");
            }
            return Err(e);
        }
        Ok(UnitGuard {
            systemd,
            unit: unit.to_string(),
            armed: true,
        })
    }

    /// Starts the unit again.
    pub fn restart(mut self) -> Result<()> {
        self.armed = false;
        tracing::info!(unit = self.unit.as_str(), "starting unit");
        self.systemd.start(&self.unit)
    }

    /// The stopped unit.
    pub fn unit(&self) -> &str {
        &self.unit
    }
}

impl Drop for UnitGuard<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self.systemd.start(&self.unit)
        {
            tracing::error!(
                unit = self.unit.as_str(),
                "starting the unit again failed: {e:#}"
            );
        }
    }
}

/// Connects to the `unix:path=` socket of `address` with the effective uid/gid switched to
/// `uid`/`gid` (from root) and runs `authenticate` on the stream before switching back: a
/// D-Bus daemon takes the peer's credentials at connect time and checks them during the
/// EXTERNAL authentication. Must run while no other thread does privileged work.
pub fn connect_unix_as<T>(
    address: &str,
    uid: u32,
    gid: u32,
    authenticate: impl FnOnce(std::os::unix::net::UnixStream) -> Result<T>,
) -> Result<T> {
    use nix::unistd::{Gid, Uid, setegid, seteuid};
    let path = address
        .strip_prefix("unix:path=")
        .map(|p| p.split(',').next().unwrap_or(p))
        .ok_or_else(|| anyhow!("bus address {address:?} is not unix:path=…"))?;
    setegid(Gid::from_raw(gid)).context("setegid to the service user")?;
    if let Err(e) = seteuid(Uid::from_raw(uid)) {
        let _ = setegid(Gid::from_raw(0));
        return Err(e).context("seteuid to the service user");
    }
    let result = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to {path}"))
        .and_then(authenticate);
    seteuid(Uid::from_raw(0)).context("seteuid back to root")?;
    setegid(Gid::from_raw(0)).context("setegid back to root")?;
    result
}

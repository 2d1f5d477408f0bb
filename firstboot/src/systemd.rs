//! D-Bus edge: the service user's systemd manager (`org.freedesktop.systemd1.Manager`).
//!
//! Only the methods firstboot uses are declared. Starting a unit follows the race-free
//! pattern of systemd's docs: `Subscribe`, listen for `JobRemoved`, `StartUnit(name,
//! "replace")`, wait for the `JobRemoved` carrying the returned job path; the job's result
//! must be `done`.
//!
//! The bus address is injectable ([`crate::steps::Env::user_bus`], `$MMS_FIRSTBOOT_USER_BUS`;
//! default `unix:path=/run/user/<uid>/bus`). A root process is refused by the user bus's
//! policy, so in production the socket is connected and authenticated with the effective
//! uid/gid switched to the service user, then switched back ([`connect_as`]).

use anyhow::{Context as _, Result, bail};
use std::time::{Duration, Instant};
use zbus::zvariant::OwnedObjectPath;

/// The systemd manager interface (subset).
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_async = false,
    blocking_name = "ManagerProxy"
)]
pub trait Manager {
    /// Enables signals (`JobRemoved`) for this client.
    fn subscribe(&self) -> zbus::Result<()>;
    /// Re-runs generators (Quadlet) and reloads unit files.
    fn reload(&self) -> zbus::Result<()>;
    /// Queues a start job; returns the job object path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// A job finished: (id, job path, unit, result).
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

/// Connects to the bus at `address` as the current process.
pub fn connect(address: &str) -> Result<zbus::blocking::Connection> {
    zbus::blocking::connection::Builder::address(address)
        .with_context(|| format!("bad D-Bus address {address:?}"))?
        .build()
        .with_context(|| format!("connecting to the user bus {address}"))
}

/// Connects to the `unix:path=` bus at `address` as uid/gid (from root): the socket is
/// connected and authenticated with the effective ids switched, then root is restored.
/// Must run while no other thread of this process does privileged work.
pub fn connect_as(address: &str, uid: u32, gid: u32) -> Result<zbus::blocking::Connection> {
    mms_backupd::systemd::connect_unix_as(address, uid, gid, |s| {
        zbus::blocking::connection::Builder::async_io_unix_stream(s)
            .build()
            .with_context(|| format!("authenticating on the user bus {address}"))
    })
}

/// Waits until the `unix:path=` socket of `address` exists (the user manager starts
/// asynchronously after linger).
pub fn wait_for_socket(address: &str, timeout: Duration, poll: Duration) -> Result<()> {
    let Some(path) = address.strip_prefix("unix:path=") else {
        return Ok(());
    };
    let path = path.split(',').next().unwrap_or(path);
    let start = Instant::now();
    while !std::path::Path::new(path).exists() {
        if start.elapsed() >= timeout {
            bail!(
                "the user bus {path} did not appear within {} s (is linger enabled: \
                 `loginctl show-user <user> -p Linger`?)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(poll);
    }
    Ok(())
}

/// A unit whose start job did not finish with `done`.
#[derive(Debug, thiserror::Error)]
#[error("starting {unit}: job result {result}")]
pub struct StartFailed {
    /// The unit.
    pub unit: String,
    /// systemd's job result (`failed`, `timeout`, `dependency`, `canceled`, `skipped`).
    pub result: String,
}

/// Starts `unit` and waits for its job to finish; `Ok` only on result `done`.
pub fn start_unit(manager: &ManagerProxy<'_>, unit: &str, timeout: Duration) -> Result<()> {
    let signals = manager
        .receive_job_removed()
        .context("subscribing to JobRemoved")?;
    // The iterator blocks; a thread forwards (job, result) so the wait can time out.
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    std::thread::spawn(move || {
        for signal in signals {
            let Ok(args) = signal.args() else { continue };
            if tx
                .send((args.job.as_str().to_string(), args.result.clone()))
                .is_err()
            {
                break;
            }
        }
    });
    let job = manager
        .start_unit(unit, "replace")
        .with_context(|| format!("StartUnit {unit}"))?;
    tracing::debug!(unit, job = %job.as_str(), "start job queued");
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (job_path, result) = match rx.recv_timeout(left) {
            Ok(v) => v,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                bail!(
                    "no result for {unit}'s start job within {} s",
                    timeout.as_secs()
                )
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if job_path != job.as_str() {
            continue;
        }
        return if result == "done" {
            Ok(())
        } else {
            Err(StartFailed {
                unit: unit.to_string(),
                result,
            }
            .into())
        };
    }
    bail!("the bus closed before {unit}'s start job finished")
}

//! The run loop: phases `wait-secrets → tailscale → state → start → health → done`.
//!
//! Each phase is one [`Step`] (a file in this directory), registered in [`registry`]. The loop
//! skips steps the status file records as finished, runs the rest in order and persists the
//! status file before and after every step, so a kill or reboot at any point continues where
//! it stopped. Steps are idempotent themselves (markers under `paths.state_dir`), because a
//! step can be interrupted half-way.

use crate::config::Config;
use crate::fsutil::under;
use crate::journal;
use crate::status::{ErrorInfo, Phase, Status, StepResult};
use anyhow::Result;
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod health;
pub mod network;
pub mod start;
pub mod state;
pub mod tailscale;
pub mod wait_secrets;

/// Everything a step may use. Filesystem paths from the config are joined onto `root`.
#[derive(Debug, Clone)]
pub struct Context {
    /// `/` in production, a temp dir in tests.
    pub root: PathBuf,
    /// The loaded `/etc/mms/firstboot.yml`.
    pub config: Config,
    /// Programs, timeouts and overrides of the environment.
    pub env: Env,
}

/// Outside-world knobs (injectable for tests; documented defaults for production).
#[derive(Debug, Clone)]
pub struct Env {
    /// The `tailscale` CLI (default `tailscale`, found on `PATH`).
    pub tailscale: PathBuf,
    /// `ssh` (default `ssh` on `PATH`).
    pub ssh: PathBuf,
    /// `rsync` (default `rsync` on `PATH`).
    pub rsync: PathBuf,
    /// D-Bus address of the service user's bus. Default `unix:path=/run/user/<uid>/bus`;
    /// overridden by `$MMS_FIRSTBOOT_USER_BUS`.
    pub user_bus: Option<String>,
    /// Run `podman` and the D-Bus client as the service user (true in production; tests that
    /// run as root against a private bus set it to false).
    pub drop_privileges: bool,
    /// Polling interval for every wait loop.
    pub poll: Duration,
    /// How long `wait-secrets` waits for the delivery.
    pub secrets_timeout: Duration,
    /// How long `start` waits for the user bus and each unit's job.
    pub start_timeout: Duration,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            tailscale: PathBuf::from("tailscale"),
            ssh: PathBuf::from("ssh"),
            rsync: PathBuf::from("rsync"),
            user_bus: std::env::var("MMS_FIRSTBOOT_USER_BUS").ok(),
            drop_privileges: true,
            poll: Duration::from_secs(2),
            secrets_timeout: Duration::from_secs(3600),
            // a little over the units' TimeoutStartSec=900, so systemd reports first
            start_timeout: Duration::from_secs(960),
        }
    }
}

impl Context {
    /// A configured absolute path inside `root`.
    pub fn path(&self, p: &Path) -> PathBuf {
        under(&self.root, p)
    }

    /// The status file inside `root`.
    pub fn status_path(&self) -> PathBuf {
        self.path(&self.config.paths.status_file)
    }

    /// The secrets delivery dir inside `root`.
    pub fn secrets_dir(&self) -> PathBuf {
        self.path(&self.config.paths.secrets_dir)
    }

    /// firstboot's bookkeeping dir inside `root`.
    pub fn state_dir(&self) -> PathBuf {
        self.path(&self.config.paths.state_dir)
    }
}

/// What a finished step reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Did its work; one line of detail.
    Done(String),
    /// Nothing to do; why.
    Skipped(String),
}

/// A failed step: the error chain and what the operator should do next.
#[derive(Debug)]
pub struct StepError {
    /// The error (with context).
    pub error: anyhow::Error,
    /// What to run or fix next.
    pub next_action: String,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#} (next: {})", self.error, self.next_action)
    }
}

impl std::error::Error for StepError {}

/// Attaches a next action to an error.
pub trait NextAction<T> {
    /// Turns the error into a [`StepError`] with `next`.
    fn next_action(self, next: impl Into<String>) -> Result<T, StepError>;
}

impl<T, E: Into<anyhow::Error>> NextAction<T> for Result<T, E> {
    fn next_action(self, next: impl Into<String>) -> Result<T, StepError> {
        self.map_err(|e| StepError {
            error: e.into(),
            next_action: next.into(),
        })
    }
}

/// One phase of firstboot.
pub trait Step {
    /// The phase this step implements (its name in the status file).
    fn phase(&self) -> Phase;

    /// Does the work. Must be idempotent: it may run again after an interruption.
    fn run(&self, ctx: &Context) -> Result<Outcome, StepError>;

    /// The step's name in the status file.
    fn name(&self) -> &'static str {
        self.phase().as_str()
    }
}

/// The steps in order. Adding a phase = adding a file and a line here.
pub fn registry() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(wait_secrets::WaitSecrets),
        Box::new(tailscale::TailscaleStep),
        Box::new(state::StateStep),
        Box::new(start::StartStep),
        Box::new(health::HealthStep),
    ]
}

/// Runs every unfinished step, persisting the status file around each one. Returns the final
/// status; on a failed step the status (with `error`) is written and the error returned.
pub fn run(ctx: &Context) -> Result<Status> {
    let path = ctx.status_path();
    let mut status = match Status::read_or_default(&path) {
        Ok(s) => s,
        Err(crate::status::StatusError::Parse { source, .. }) => {
            // Written atomically, so this is outside damage; every step is idempotent, so
            // starting the record afresh is safe. Keep the damaged file for inspection.
            let aside = path.with_extension("json.damaged");
            tracing::warn!(
                "status file {} is not valid ({source}); moved to {} and starting a new record",
                path.display(),
                aside.display()
            );
            std::fs::rename(&path, &aside)?;
            Status::default()
        }
        Err(e) => return Err(e.into()),
    };
    std::fs::create_dir_all(ctx.state_dir())?;
    let _lock = crate::fsutil::lock(&ctx.state_dir().join("lock"))?;
    for step in registry() {
        let name = step.name();
        if matches!(
            status.step(name).map(|s| s.result),
            Some(StepResult::Ok | StepResult::Skipped)
        ) {
            continue;
        }
        if status.phase != step.phase() {
            journal::phase_change(step.phase());
        }
        status.phase = step.phase();
        status.begin(name, Utc::now());
        status.write(&path)?;
        tracing::info!(step = name, "step started");
        match step.run(ctx) {
            Ok(outcome) => {
                let (result, detail) = match outcome {
                    Outcome::Done(d) => (StepResult::Ok, d),
                    Outcome::Skipped(d) => (StepResult::Skipped, d),
                };
                status.error = None;
                status.finish(name, result, &detail, Utc::now());
                if step.phase() == Phase::Health {
                    status.services = health::last_results(ctx);
                }
                status.write(&path)?;
                tracing::info!(step = name, %detail, "step finished");
            }
            Err(e) => {
                let message = format!("{:#}", e.error);
                status.finish(name, StepResult::Failed, &message, Utc::now());
                if step.phase() == Phase::Health {
                    status.services = health::last_results(ctx);
                }
                status.error = Some(ErrorInfo {
                    message: format!("{name}: {message}"),
                    next_action: e.next_action.clone(),
                });
                status.write(&path)?;
                journal::step_failed(name, &message, &e.next_action);
                return Err(anyhow::Error::new(e).context(format!("step {name} failed")));
            }
        }
    }
    finish(ctx, &mut status)?;
    Ok(status)
}

/// The `done` phase: wipe the secrets delivery dir, record done.
fn finish(ctx: &Context, status: &mut Status) -> Result<()> {
    let secrets = ctx.secrets_dir();
    if secrets.exists() {
        std::fs::remove_dir_all(&secrets)
            .map_err(|e| anyhow::anyhow!("removing {}: {e}", secrets.display()))?;
    }
    if status.phase != Phase::Done {
        journal::phase_change(Phase::Done);
    }
    status.phase = Phase::Done;
    status.error = None;
    status.updated = Some(Utc::now());
    status.write(&ctx.status_path())?;
    Ok(())
}

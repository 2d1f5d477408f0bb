//! `wait-secrets`: wait until the builder has delivered every secret file still needed.
//!
//! The builder writes each secret through the guest agent into `paths.secrets_dir` (one file
//! per secret, named like the secret, mode 0600). A file counts as delivered when it exists
//! and is not empty. Secrets already used by a finished step are not waited for (the
//! Tailscale key is deleted after enrollment), so a re-run does not wait forever.

use super::{Context, NextAction, Outcome, Step, StepError};
use crate::config::StateSource;
use crate::status::{Phase, Status, StepResult};
use std::time::Instant;

/// The `wait-secrets` step.
#[derive(Debug)]
pub struct WaitSecrets;

/// The secret file names still needed, given which steps have finished.
pub fn required(ctx: &Context, status: &Status) -> Vec<String> {
    let done = |p: Phase| {
        matches!(
            status.step(p.as_str()).map(|s| s.result),
            Some(StepResult::Ok | StepResult::Skipped)
        )
    };
    let c = &ctx.config;
    let mut need = Vec::new();
    if !done(Phase::Tailscale) {
        need.push(c.tailscale.auth_key_secret.clone());
    }
    if !done(Phase::State) {
        match &c.state {
            StateSource::Migrate(m) => need.push(m.ssh_key_secret.clone()),
            StateSource::Restore(r) => need.extend(r.identity_secret.clone()),
            StateSource::Fresh => {}
        }
    }
    if !done(Phase::Start) {
        for s in &c.services {
            need.extend(s.podman_secrets.values().cloned());
        }
    }
    need.sort();
    need.dedup();
    need
}

impl Step for WaitSecrets {
    fn phase(&self) -> Phase {
        Phase::WaitSecrets
    }

    fn run(&self, ctx: &Context) -> Result<Outcome, StepError> {
        let status = Status::read_or_default(&ctx.status_path())
            .next_action("check /var/lib/mms/firstboot.json")?;
        let need = required(ctx, &status);
        let dir = ctx.secrets_dir();
        let start = Instant::now();
        loop {
            let missing: Vec<&String> = need
                .iter()
                .filter(|n| {
                    std::fs::metadata(dir.join(n))
                        .map(|m| m.len() == 0)
                        .unwrap_or(true)
                })
                .collect();
            if missing.is_empty() {
                return Ok(Outcome::Done(format!(
                    "{} secret file(s) present",
                    need.len()
                )));
            }
            if start.elapsed() >= ctx.env.secrets_timeout {
                let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                return Err(anyhow::anyhow!(
                    "secrets not delivered to {} after {} s: missing {}",
                    ctx.config.paths.secrets_dir.display(),
                    ctx.env.secrets_timeout.as_secs(),
                    names.join(", ")
                ))
                .next_action(
                    "run `mms-build --apply` again: it delivers the secrets through the guest agent",
                );
            }
            std::thread::sleep(ctx.env.poll);
        }
    }
}

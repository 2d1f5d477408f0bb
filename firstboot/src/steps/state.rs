//! `state`: bring the services' state — migrate, restore the newest backup, or nothing.

use super::{Context, NextAction, Outcome, Step, StepError};
use crate::config::StateSource;
use crate::migrate::Migration;
use crate::status::Phase;

/// The `state` step.
#[derive(Debug)]
pub struct StateStep;

impl Step for StateStep {
    fn phase(&self) -> Phase {
        Phase::State
    }

    fn run(&self, ctx: &Context) -> Result<Outcome, StepError> {
        match &ctx.config.state {
            StateSource::Fresh => Ok(Outcome::Skipped("fresh install: no state to bring".into())),
            StateSource::Migrate(from) => {
                let m = Migration {
                    root: &ctx.root,
                    config: &ctx.config,
                    from,
                    key: ctx.secrets_dir().join(&from.ssh_key_secret),
                    ssh: ctx.env.ssh.clone(),
                    rsync: ctx.env.rsync.clone(),
                    only: vec![],
                    bwlimit_kib: None,
                };
                let reports = m.run().next_action(format!(
                    "fix the cause on the source {}@{} (or in mms.yml `migrate:`), then \
                     `systemctl restart mms-firstboot`; finished services are not copied again",
                    from.user, from.host
                ))?;
                let rewrites: usize = reports.iter().map(|r| r.rewrites.len()).sum();
                let checked: usize = reports.iter().map(|r| r.checked.len()).sum();
                let warnings: Vec<String> =
                    reports.iter().flat_map(|r| r.warnings.clone()).collect();
                Ok(Outcome::Done(format!(
                    "migrated {} service(s) from {}: {checked} SQLite file(s) checked, \
                     {rewrites} path(s) rewritten{}",
                    reports.len(),
                    from.host,
                    if warnings.is_empty() {
                        String::new()
                    } else {
                        format!("; warnings: {}", warnings.join("; "))
                    }
                )))
            }
            StateSource::Restore(r) => crate::restore::restore_newest(ctx, r).next_action(
                "check the backup target (`mms-backupd list`) and the NFS mount, then \
                 `systemctl restart mms-firstboot`",
            ),
        }
    }
}

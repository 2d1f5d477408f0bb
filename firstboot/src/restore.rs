//! Restoring the newest backup of every service (the `state` step's `restore` source)
//! through the backupd library.

use crate::config::Restore;
use crate::steps::{Context, Outcome};
use anyhow::{Result, bail};

/// Restores the newest backup of each configured service.
pub fn restore_newest(ctx: &Context, _r: &Restore) -> Result<Outcome> {
    bail!(
        "restoring backups needs the mms_backupd restore API, which this build does not have \
         yet (backupd config {}); use `state: fresh` or `migrate` for now",
        ctx.config.paths.backupd_config.display()
    )
}

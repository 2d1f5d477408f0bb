//! `mms-build rollback`: back to the retired VM.

use super::apply::{runtime, session};
use crate::apply::ops;
use crate::apply::progress::Progress;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Starts the newest retired VM, stops and retires the serving one, swaps names.
pub fn run(config_path: &Path, identity: Option<&Path>, insecure: bool) -> Result<ExitCode> {
    let s = session(config_path, identity, insecure)?;
    let site = &s.loaded.site;
    let progress = Progress::plain();
    let (back, demoted) = runtime()?.block_on(ops::rollback(
        &s.client,
        &site.proxmox.node,
        &site.vm.name,
        Duration::from_secs(1800),
        &progress,
    ))?;
    match demoted {
        Some(d) => println!(
            "rolled back: VM {back} serves as {} again; VM {d} is retired",
            site.vm.name
        ),
        None => println!("rolled back: VM {back} serves as {} again", site.vm.name),
    }
    Ok(ExitCode::SUCCESS)
}

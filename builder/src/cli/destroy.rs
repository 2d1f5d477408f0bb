//! `mms-build destroy`: delete every VM tagged `mms` and this site's seed ISOs.

use super::apply::{runtime, session};
use crate::apply::ops;
use crate::apply::progress::Progress;
use anyhow::{Context, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Deletes after a typed confirmation (or `--yes`); refuses without a TTY and without `--yes`.
pub fn run(
    config_path: &Path,
    identity: Option<&Path>,
    insecure: bool,
    yes: bool,
) -> Result<ExitCode> {
    let s = session(config_path, identity, insecure)?;
    let site = &s.loaded.site;
    let rt = runtime()?;
    let (node, name, iso) = (&site.proxmox.node, &site.vm.name, &site.proxmox.iso_storage);
    let targets = rt.block_on(ops::destroy_targets(&s.client, node, name, iso))?;
    if targets.vms.is_empty() && targets.isos.is_empty() {
        println!("nothing to destroy: no VM tagged mms, no seed ISO of {name}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("this deletes, with their disks:");
    for vm in &targets.vms {
        eprintln!(
            "  VM {} {} on node {}{}",
            vm.vmid,
            vm.name,
            vm.node,
            if vm.running { " (running)" } else { "" }
        );
    }
    for v in &targets.isos {
        eprintln!("  {v}");
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: destroy needs a confirmation: stdin is not a terminal, so pass --yes"
            );
            return Ok(ExitCode::from(1));
        }
        eprint!("type the VM name ({name}) to confirm: ");
        std::io::stderr().flush().ok();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the confirmation")?;
        if line.trim() != name {
            eprintln!("not confirmed: nothing was deleted");
            return Ok(ExitCode::from(1));
        }
    }
    rt.block_on(ops::destroy(
        &s.client,
        node,
        iso,
        &targets,
        Duration::from_secs(1800),
        &Progress::plain(),
    ))?;
    println!(
        "destroyed {} VM(s) and {} ISO(s)",
        targets.vms.len(),
        targets.isos.len()
    );
    Ok(ExitCode::SUCCESS)
}

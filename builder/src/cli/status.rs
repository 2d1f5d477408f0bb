//! `mms-build status`: the VMs MMS manages, their tags and firstboot state.

use super::apply::{runtime, session};
use crate::apply::ops;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// Prints the status (text, or JSON with `--json`).
pub fn run(
    config_path: &Path,
    identity: Option<&Path>,
    insecure: bool,
    json: bool,
) -> Result<ExitCode> {
    let s = session(config_path, identity, insecure)?;
    let site = &s.loaded.site;
    let lines = runtime()?.block_on(ops::status(&s.client, &site.vm.name))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(ExitCode::SUCCESS);
    }
    if lines.is_empty() {
        println!(
            "no VM tagged mms on {}: run `mms-build --apply` to build one",
            site.proxmox.endpoint
        );
        return Ok(ExitCode::SUCCESS);
    }
    for l in &lines {
        let fb = match (&l.firstboot_phase, &l.firstboot_error) {
            (Some(p), Some(e)) => format!("firstboot {p}: ERROR {e}"),
            (Some(p), None) if p == "done" => "firstboot done, healthy".to_owned(),
            (Some(p), None) => format!("firstboot {p}"),
            (None, _) if l.status == "running" => {
                "firstboot status unreadable (guest agent?)".to_owned()
            }
            (None, _) => String::new(),
        };
        let fb = if l.cutover_pending == Some(true) {
            format!("{fb}; cut-over pending (`journalctl -u mms-cutover` in the VM)")
        } else {
            fb
        };
        println!(
            "{:>6}  {:<16} {:<9} {:<8} {:<10} bundle {:<16}  {fb}",
            l.vmid,
            l.name,
            l.role,
            l.status,
            format!("on {}", l.node),
            l.bundle.clone().unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

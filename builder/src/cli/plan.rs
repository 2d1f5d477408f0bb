//! `mms-build` (no subcommand) and `mms-build plan`: what `--apply` would do.
//! Reads Proxmox only; changes nothing.

use super::apply::{ApplyArgs, bundles, runtime, session};
use crate::apply::flow;
use crate::apply::inputs::ApplyInputs;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// Prints the plan (text, or JSON with `--json`).
pub fn run(
    config_path: &Path,
    identity: Option<&Path>,
    insecure: bool,
    json: bool,
    args: &ApplyArgs,
) -> Result<ExitCode> {
    let s = session(config_path, identity, insecure)?;
    let (first, rebuild) = bundles(args, &s.loaded)?;
    let inputs = ApplyInputs::new(&s.loaded.site, &s.secrets, first, rebuild)?;
    let res = runtime()?.block_on(flow::plan_only(&s.client, &inputs, args.destroy_old));
    let (obs, p) = match res {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let (d, _) = flow::choose(&inputs, &obs.observed);
    let d = &d;
    let secrets: serde_json::Map<String, serde_json::Value> = inputs
        .secrets
        .iter()
        .map(|(n, _)| (n.clone(), serde_json::Value::String("(secret)".into())))
        .collect();
    if json {
        let actions: Vec<serde_json::Value> = p
            .actions
            .iter()
            .map(|a| serde_json::json!({"step": a.step(), "description": a.to_string()}))
            .collect();
        let doc = serde_json::json!({
            "vm": d.name,
            "bundle": d.hash16,
            "up_to_date": p.up_to_date,
            "serving": p.current,
            "actions": actions,
            "secrets": secrets,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    if p.up_to_date {
        println!(
            "up to date: VM {} ({}) runs bundle {} and is healthy; --apply has nothing to do",
            p.current.map(|v| v.to_string()).unwrap_or_default(),
            d.name,
            d.hash16
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "bundle {} for VM {}: `mms-build --apply` would",
        d.hash16, d.name
    );
    for (i, a) in p.actions.iter().enumerate() {
        println!("  {:>2}. {a}", i + 1);
    }
    if !secrets.is_empty() {
        let names: Vec<String> = secrets.keys().map(|n| format!("{n}=(secret)")).collect();
        println!(
            "secrets delivered through the guest agent: {}",
            names.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! `mms-build template`: create the Fedora template from `images/*.yml`.

use super::apply::{runtime, session};
use crate::apply::ops;
use crate::apply::progress::Progress;
use crate::config::TemplateRef;
use crate::images;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Options of `template`.
#[derive(Debug, Clone, clap::Args)]
pub struct TemplateArgs {
    /// A built-in image by name (`fedora-43`) [default: proxmox.template's name].
    #[arg(long, value_name = "NAME", conflicts_with = "image_file")]
    pub image: Option<String>,
    /// An image definition file (same keys as images/*.yml).
    #[arg(long, value_name = "FILE")]
    pub image_file: Option<PathBuf>,
}

/// Creates the template named by `proxmox.template` (idempotent).
pub fn run(
    config_path: &Path,
    identity: Option<&Path>,
    insecure: bool,
    args: &TemplateArgs,
) -> Result<ExitCode> {
    let s = session(config_path, identity, insecure)?;
    let site = &s.loaded.site;
    let TemplateRef::Name(template_name) = &site.proxmox.template else {
        bail!(
            "proxmox.template is a VMID: `template` creates a template by name; set proxmox.template to a name such as fedora-43"
        );
    };
    let image = match (&args.image_file, &args.image) {
        (Some(f), _) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            images::parse(f, &text).map_err(anyhow::Error::msg)?
        }
        (None, name) => {
            let want = name.clone().unwrap_or_else(|| template_name.clone());
            let all = images::builtin().map_err(anyhow::Error::msg)?;
            let names: Vec<String> = all.iter().map(|i| i.name.clone()).collect();
            all.into_iter()
                .find(|i| i.name == want)
                .with_context(|| format!("no image named {want:?} (known: {})", names.join(", ")))?
        }
    };
    let vmid = runtime()?.block_on(ops::template(
        &s.client,
        &site.proxmox.node,
        &site.proxmox.iso_storage,
        &site.proxmox.storage,
        &site.proxmox.bridge,
        &image,
        template_name,
        Duration::from_secs(3600),
        &Progress::plain(),
    ))?;
    println!("template {template_name} is VM {vmid}");
    Ok(ExitCode::SUCCESS)
}

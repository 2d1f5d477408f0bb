//! `mms-build render`: the appliance bundle of DESIGN §3 into a directory, offline.

use crate::render::{self, ApplianceBins, Arch, bundle};
use crate::write;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `mms-build render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Directory to write the bundle into (created if missing; files of an earlier bundle
    /// that this one does not contain are removed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Directory holding the appliance programs mms-firstboot and mms-backupd
    /// [default: the directory of the running mms-build].
    #[arg(long, value_name = "DIR", conflicts_with = "no_appliance_bin")]
    pub appliance_bin: Option<PathBuf>,
    /// Render without the appliance programs (a preview: the VM cannot finish first boot).
    #[arg(long)]
    pub no_appliance_bin: bool,
    /// First boot starts with empty service state: no migration and no backup restore
    /// (a brand-new site, or a test VM without a backup target).
    #[arg(long)]
    pub fresh: bool,
}

/// Reads `mms-firstboot` and `mms-backupd` from `dir` (default: beside the running
/// `mms-build`) and checks that they are x86-64 programs (Proxmox VE VMs of this project are
/// x86-64: the template images are x86_64).
pub fn load_appliance_bins(dir: Option<&Path>) -> Result<ApplianceBins> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()
            .context("locating the running mms-build")?
            .parent()
            .map(Path::to_path_buf)
            .context("the running mms-build has no parent directory")?,
    };
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "appliance program {} not found (build it with `cargo build -p {}`, pass \
                 --appliance-bin DIR, or --no-appliance-bin for a preview)",
                path.display(),
                name
            )
        })?;
        if let Err(e) = bundle::check_elf(&bytes, Arch::X86_64) {
            bail!("appliance program {}: {e}", path.display());
        }
        Ok(bytes)
    };
    Ok(ApplianceBins::Included {
        firstboot: read("mms-firstboot")?,
        backupd: read("mms-backupd")?,
    })
}

/// Runs `mms-build render`.
pub fn run(config_path: &Path, args: &RenderArgs) -> Result<ExitCode> {
    let loaded = match super::load_config(config_path, "; nothing rendered") {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let bins = if args.no_appliance_bin {
        eprintln!(
            "warning: rendering without mms-firstboot/mms-backupd (--no-appliance-bin): \
             a VM booted from this seed cannot finish first boot"
        );
        ApplianceBins::Omitted
    } else {
        load_appliance_bins(args.appliance_bin.as_deref())?
    };
    let deployment = render::Deployment {
        previous_vm: None,
        fresh: args.fresh,
    };
    let bundle = render::render_for(&loaded.site, &loaded.catalog, &bins, &deployment)
        .with_context(|| format!("rendering {}", config_path.display()))?;
    write::write_bundle(&args.out, &bundle)
        .with_context(|| format!("writing the bundle into {}", args.out.display()))?;
    println!(
        "bundle written to {}\n  sha256      {}\n  instance-id {}\n  seed ISO    {} ({} bytes)\n  files       {}",
        args.out.display(),
        bundle.hash,
        bundle.instance_id,
        args.out.join(bundle::SEED_ISO).display(),
        bundle.iso().len(),
        bundle.files.len()
    );
    Ok(ExitCode::SUCCESS)
}

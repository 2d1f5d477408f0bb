//! `mms-build --apply` / `mms-build apply`: build or rebuild the VM (DESIGN §5).

use crate::apply::flow::{self, ApplyOptions};
use crate::apply::inputs::{ApplyInputs, Bundle, client_settings};
use crate::apply::progress::Progress;
use crate::config::{self, Loaded};
use crate::proxmox::Client;
use crate::render;
use crate::secrets::{self, Secrets};
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Options of `--apply` (also accepted by `plan` where they matter).
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// Apply a bundle rendered earlier by `mms-build render --out DIR` (plan.json +
    /// seed.iso) instead of rendering now.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Directory holding mms-firstboot and mms-backupd for the seed ISO
    /// [default: the directory of the running mms-build].
    #[arg(long, value_name = "DIR", conflicts_with = "bundle")]
    pub appliance_bin: Option<PathBuf>,
    /// A first build starts with empty service state (no migration, no backup restore).
    #[arg(long, conflicts_with = "bundle")]
    pub fresh: bool,
    /// After the cut-over, delete the retired VMs instead of keeping them for rollback.
    #[arg(long)]
    pub destroy_old: bool,
    /// Seconds to wait for one Proxmox task (clone, upload, …).
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub task_timeout: u64,
    /// Seconds to wait for the new VM's guest agent after start.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub agent_timeout: u64,
    /// Seconds to wait for firstboot to report `done`.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub firstboot_timeout: u64,
}

impl ApplyArgs {
    fn options(&self) -> ApplyOptions {
        ApplyOptions {
            task_timeout: Duration::from_secs(self.task_timeout),
            agent_timeout: Duration::from_secs(self.agent_timeout),
            firstboot_timeout: Duration::from_secs(self.firstboot_timeout),
            destroy_old: self.destroy_old,
            ..ApplyOptions::default()
        }
    }
}

/// A loaded site with its secrets and an API client.
pub(crate) struct Session {
    pub loaded: Loaded,
    pub secrets: Secrets,
    pub client: Client,
}

/// Loads the site config and secrets and builds the client. Config errors are
/// printed one per line like `check` does.
pub(crate) fn session(
    config_path: &Path,
    identity: Option<&Path>,
    insecure: bool,
) -> Result<Session> {
    let loaded = match config::load(config_path) {
        Ok(l) => l,
        Err(errs) => {
            for d in &errs.0 {
                eprintln!("{d}");
            }
            bail!(
                "{}: invalid site config (see above; `mms-build check` lists every problem)",
                config_path.display()
            );
        }
    };
    let secrets = secrets::load_secrets(&loaded.site, identity)?;
    if insecure {
        eprintln!(
            "WARNING: --insecure: the certificate of {} is NOT verified; anyone on the network path can read the API token",
            loaded.site.proxmox.endpoint
        );
    }
    let settings = client_settings(&loaded.site, &secrets, insecure)?;
    let client = Client::new(&settings).map_err(|e| anyhow!("{e}"))?;
    Ok(Session {
        loaded,
        secrets,
        client,
    })
}

/// The bundles for this site: rendered now for a first build and for a rebuild
/// (which one is built depends on what runs on Proxmox), or one pre-rendered `--bundle`.
pub(crate) fn bundles(args: &ApplyArgs, loaded: &Loaded) -> Result<(Bundle, Option<Bundle>)> {
    if let Some(dir) = &args.bundle {
        return Ok((Bundle::from_dir(dir)?, None));
    }
    let bins = super::render::load_appliance_bins(args.appliance_bin.as_deref())?;
    let (site, catalog) = (&loaded.site, &loaded.catalog);
    let first = render::Deployment {
        previous_vm: None,
        fresh: args.fresh,
    };
    let rebuild = render::Deployment {
        previous_vm: Some(site.tailscale.hostname.clone()),
        fresh: false,
    };
    let to_bundle = |b: render::Bundle| Bundle {
        seed_iso: b.iso().to_vec(),
        hash: b.hash,
    };
    let a = render::render_for(site, catalog, &bins, &first)
        .context("rendering the first-build bundle")?;
    let b = render::render_for(site, catalog, &bins, &rebuild)
        .context("rendering the rebuild bundle")?;
    Ok((to_bundle(a), Some(to_bundle(b))))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `--apply`.
pub fn run(
    config_path: &Path,
    identity: Option<&Path>,
    insecure: bool,
    args: &ApplyArgs,
) -> Result<ExitCode> {
    let s = session(config_path, identity, insecure)?;
    let missing: Vec<_> = secrets::check_in(
        &s.loaded.site,
        &s.loaded.catalog,
        &s.secrets,
        secrets::Scope::EveryBuild,
    )
    .into_iter()
    .filter(|d| d.severity == crate::yaml::Severity::Error)
    .collect();
    if !missing.is_empty() {
        for d in &missing {
            eprintln!("{d}");
        }
        bail!(
            "the secrets are incomplete; nothing was changed on Proxmox (`mms-build secrets show-names`)"
        );
    }
    let (first, rebuild) = bundles(args, &s.loaded)?;
    let inputs = ApplyInputs::new(&s.loaded.site, &s.secrets, first, rebuild)?;
    let progress = Progress::auto();
    let res = runtime()?.block_on(flow::apply(&s.client, &inputs, &args.options(), &progress));
    progress.finish();
    let name = &inputs.desired.name;
    let hash = |r: &flow::ApplyReport| {
        r.bundle
            .clone()
            .unwrap_or_else(|| inputs.desired.hash16.clone())
    };
    match res {
        Ok(r) if r.up_to_date => {
            println!(
                "up to date: VM {} ({name}) runs bundle {} and is healthy",
                r.serving.map(|v| v.to_string()).unwrap_or_default(),
                hash(&r)
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            let serving = r
                .serving
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into());
            match r.retired {
                Some(old) => println!(
                    "done: VM {serving} ({name}) serves bundle {}; VM {old} is retired and stopped (`mms-build rollback` starts it again)",
                    hash(&r)
                ),
                None => println!("done: VM {serving} ({name}) serves bundle {}", hash(&r)),
            }
            for w in &r.warnings {
                println!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

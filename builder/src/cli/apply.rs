//! `mms-build --apply` / `mms-build apply`: build or rebuild the VM (DESIGN §5).

use crate::apply::flow::{self, ApplyOptions};
use crate::apply::inputs::{ApplyInputs, Bundle, client_settings};
use crate::apply::progress::Progress;
use crate::config::{self, Loaded};
use crate::proxmox::Client;
use crate::secrets::{self, Secrets};
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Options of `--apply` (also accepted by `plan` where they matter).
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// A bundle rendered by `mms-build render --out DIR` (plan.json + seed.iso).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
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

/// The rendered bundle for this site.
pub(crate) fn bundle(args: &ApplyArgs) -> Result<Bundle> {
    match &args.bundle {
        Some(dir) => Bundle::from_dir(dir),
        None => bail!(
            "no bundle: pass --bundle DIR with a bundle from `mms-build render --out DIR` \
             (this build does not render in memory yet)"
        ),
    }
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
    let inputs = ApplyInputs::new(&s.loaded.site, &s.secrets, bundle(args)?)?;
    let progress = Progress::auto();
    let res = runtime()?.block_on(flow::apply(&s.client, &inputs, &args.options(), &progress));
    progress.finish();
    let name = &inputs.desired.name;
    match res {
        Ok(r) if r.up_to_date => {
            println!(
                "up to date: VM {} ({name}) runs bundle {} and is healthy",
                r.serving.map(|v| v.to_string()).unwrap_or_default(),
                inputs.desired.hash16
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
                    inputs.desired.hash16
                ),
                None => println!(
                    "done: VM {serving} ({name}) serves bundle {}",
                    inputs.desired.hash16
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

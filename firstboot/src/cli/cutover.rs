//! `mms-firstboot cutover`: rename the tailnet node after the builder's cut-over.

use crate::config::{Config, DEFAULT_PATH};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Rename this node from `<hostname>-next` to `<hostname>` (`tailscale set --hostname`).
/// Run by `mms-build` through the guest agent once the old VM is stopped.
#[derive(Debug, Args)]
pub struct CutoverCmd {
    /// The firstboot config file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

impl CutoverCmd {
    /// Runs `tailscale set --hostname=<hostname>`.
    pub fn run(self) -> Result<ExitCode> {
        let config = Config::load(&self.config)?;
        let tailscale = crate::steps::Env::default().tailscale;
        crate::steps::tailscale::cutover(&tailscale, &config.tailscale.hostname)?;
        eprintln!("tailnet node renamed to {}", config.tailscale.hostname);
        Ok(ExitCode::SUCCESS)
    }
}

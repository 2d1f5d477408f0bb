//! `mms-firstboot cutover`: take over the old VM's identity after the builder's cut-over.

use crate::config::{Config, DEFAULT_PATH};
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Rename this node from `<hostname>-next` to `<hostname>` (`tailscale set --hostname`) and,
/// when the site has a static address, take it (the build ran on a temporary one). Run
/// through `mms-cutover.path` once `mms-build` has stopped the old VM.
#[derive(Debug, Args)]
pub struct CutoverCmd {
    /// The firstboot config file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

impl CutoverCmd {
    /// Renames the tailnet node, then moves to the static address; both are tried, and
    /// either failure fails the command.
    pub fn run(self) -> Result<ExitCode> {
        let config = Config::load(&self.config)?;
        let tailscale = crate::steps::Env::default().tailscale;
        let mut failed = Vec::new();
        match crate::steps::tailscale::cutover(&tailscale, &config.tailscale.hostname) {
            Ok(()) => eprintln!("tailnet node renamed to {}", config.tailscale.hostname),
            Err(e) => failed.push(format!("{e:#}")),
        }
        if let Some(n) = &config.network {
            match crate::steps::network::apply(n) {
                Ok(()) => eprintln!("static address {}/{} taken", n.address, n.prefix),
                Err(e) => failed.push(format!(
                    "{e:#}; the VM keeps its temporary address and stays reachable over the tailnet"
                )),
            }
        }
        if !failed.is_empty() {
            bail!("cutover incomplete: {}", failed.join("; "));
        }
        Ok(ExitCode::SUCCESS)
    }
}

//! `mms-firstboot run`: the oneshot unit's command.

use crate::config::{Config, DEFAULT_PATH};
use crate::steps::{self, Context, Env};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run first boot, or continue it after an interruption. Exit 0 when done and healthy.
#[derive(Debug, Args)]
pub struct RunCmd {
    /// The firstboot config file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Filesystem root that the config's absolute paths are joined onto (tests).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root: PathBuf,
}

impl RunCmd {
    /// Loads the config and runs the steps.
    pub fn run(self) -> Result<ExitCode> {
        let config = Config::load(&self.config)?;
        let ctx = Context {
            root: self.root,
            config,
            env: Env::default(),
        };
        let status = steps::run(&ctx)?;
        eprint!("{}", status.render_table());
        Ok(ExitCode::SUCCESS)
    }
}

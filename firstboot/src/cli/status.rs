//! `mms-firstboot status [--json]`: print the status file.

use crate::status::{Status, StatusError};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print firstboot's progress. Exit 0 when done and healthy, 3 while in progress,
/// 1 when a step failed, 4 when there is no status file yet.
#[derive(Debug, Args)]
pub struct StatusCmd {
    /// Print the file as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The status file to read.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/mms/firstboot.json"
    )]
    pub file: PathBuf,
}

impl StatusCmd {
    /// Reads and prints the file.
    pub fn run(self) -> Result<ExitCode> {
        let status = match Status::read(&self.file) {
            Ok(s) => s,
            Err(e @ StatusError::Missing(_)) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(4));
            }
            Err(e) => return Err(e.into()),
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print!("{}", status.render_table());
        }
        Ok(if status.error.is_some() {
            ExitCode::from(1)
        } else if status.is_healthy() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }
}

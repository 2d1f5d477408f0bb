//! `mms-build schema`: JSON Schemas for editors.

use anyhow::Result;
use std::process::ExitCode;

/// Which file a schema describes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// mms.yml
    Site,
    /// services/<name>.yml
    Service,
    /// images/<name>.yml
    Image,
}

pub fn run(kind: Kind) -> Result<ExitCode> {
    let schema = match kind {
        Kind::Site => crate::config::file::site_schema(),
        Kind::Service => serde_json::to_value(schemars::schema_for!(crate::catalog::ServiceDef))?,
        Kind::Image => serde_json::to_value(schemars::schema_for!(crate::images::ImageDef))?,
    };
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

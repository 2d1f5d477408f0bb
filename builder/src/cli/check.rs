//! `mms-build check`: every problem of the site config at once.

use crate::secrets;
use crate::yaml::Severity;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

pub fn run(config_path: &Path, identity: Option<&Path>) -> Result<ExitCode> {
    let loaded = match super::load_config(config_path, "") {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let mut diags = loaded.warnings.clone();
    let site = &loaded.site;
    let secrets_note = if site.secrets_file.exists() && secrets::identity_path(identity).is_none() {
        format!(
            "secrets not checked: {} is encrypted and no identity was given (--identity, MMS_IDENTITY or ~/.config/mms/identity.txt)",
            site.secrets_file.display()
        )
    } else {
        match secrets::load_secrets(site, identity) {
            Ok(s) => {
                diags.extend(secrets::check(site, &loaded.catalog, &s));
                String::from("secrets checked")
            }
            Err(e) => {
                eprintln!("{}: error: {e:#}", site.secrets_file.display());
                return Ok(ExitCode::from(1));
            }
        }
    };
    for d in &diags {
        eprintln!("{d}");
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        eprintln!(
            "{}: {errors} error{}",
            config_path.display(),
            if errors == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::from(1));
    }
    println!(
        "{}: valid — VM {} ({} cores, {} MiB), {} services: {}; {secrets_note}",
        config_path.display(),
        site.vm.name,
        site.vm.cores,
        site.vm.memory_mib,
        site.services.len(),
        site.services.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

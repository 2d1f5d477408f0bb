//! `list`, `prune` and `verify`: read-mostly operations over committed archives.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::config::Config;
use crate::report::{self, Progress};
use crate::retention::{self, Item};
use crate::store::{self, RunLock};

/// One line of `list --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Archive file name.
    pub archive: String,
    /// Full path.
    pub path: String,
    /// UTC start time (RFC 3339).
    pub created: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Regular files inside.
    pub files: u64,
    /// Encrypted with age.
    pub encrypted: bool,
}

/// Committed archives of every configured service, oldest first.
pub fn list(cfg: &Config) -> Result<BTreeMap<String, Vec<Listed>>> {
    let mut out = BTreeMap::new();
    for name in cfg.services.keys() {
        let items = store::list_service(&cfg.target, name)?
            .into_iter()
            .map(|c| Listed {
                archive: c.name.clone(),
                path: c.path.display().to_string(),
                created: c.manifest.created.clone(),
                size: c.manifest.size,
                sha256: c.manifest.sha256.clone(),
                files: c.manifest.stats.files,
                encrypted: c.manifest.encrypted,
            })
            .collect::<Vec<_>>();
        out.insert(name.clone(), items);
    }
    Ok(out)
}

/// Human-readable listing.
pub fn format_list(listing: &BTreeMap<String, Vec<Listed>>) -> String {
    let mut s = String::new();
    for (svc, items) in listing {
        if items.is_empty() {
            s.push_str(&format!("{svc}: no archives\n"));
        }
        for i in items {
            s.push_str(&format!(
                "{svc}\t{}\t{}\t{} bytes\n",
                i.archive, i.created, i.size
            ));
        }
    }
    s
}

/// `prune` output: per service with archives, names kept and deleted (newest first).
pub type PrunePlan = BTreeMap<String, retention::Plan>;

/// Computes (and unless `dry_run`, applies) retention for every configured service.
pub fn prune(cfg: &Config, dry_run: bool) -> Result<PrunePlan> {
    let _lock = if dry_run {
        None
    } else {
        Some(RunLock::acquire(&cfg.target)?)
    };
    let mut plans = BTreeMap::new();
    for name in cfg.services.keys() {
        let committed = store::list_service(&cfg.target, name)?;
        if committed.is_empty() {
            continue;
        }
        let items: Vec<Item> = committed
            .iter()
            .map(|c| Item {
                time: c.time,
                name: c.name.clone(),
            })
            .collect();
        let plan = retention::plan(&items, cfg.retention);
        if !dry_run {
            for c in committed.iter().filter(|c| plan.delete.contains(&c.name)) {
                store::remove_committed(c)
                    .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", c.path.display()))?;
            }
            if !plan.delete.is_empty() {
                tracing::info!(
                    message_id = report::MSG_PRUNED,
                    service = name.as_str(),
                    "retention removed {} archive(s) of {name}: {}",
                    plan.delete.len(),
                    plan.delete.join(", ")
                );
            }
        }
        plans.insert(name.clone(), plan);
    }
    Ok(plans)
}

/// The exact JSON of `prune --json`: `{"svc": {"keep": [...], "delete": [...]}}`.
pub fn prune_json(plans: &PrunePlan) -> String {
    #[derive(Serialize)]
    struct KeepDelete<'a> {
        keep: &'a [String],
        delete: &'a [String],
    }
    let map: BTreeMap<&String, KeepDelete<'_>> = plans
        .iter()
        .map(|(k, p)| {
            (
                k,
                KeepDelete {
                    keep: &p.keep,
                    delete: &p.delete,
                },
            )
        })
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// Re-reads every committed archive (of one service or all) and compares its SHA-256 and
/// size with the manifest. Returns the number checked; fails listing every mismatch.
pub fn verify(cfg: &Config, service: Option<&str>) -> Result<usize> {
    let names: Vec<&String> = match service {
        Some(s) => vec![cfg.service(s)?.0],
        None => cfg.services.keys().collect(),
    };
    let mut checked = 0;
    let mut bad = Vec::new();
    for name in names {
        for c in store::list_service(&cfg.target, name)? {
            let progress = Progress::new(&c.name, c.manifest.size);
            let result = store::hash_file(&c.path, &|n| progress.add(n));
            progress.finish();
            checked += 1;
            match result {
                Ok((sha, size)) if sha == c.manifest.sha256 && size == c.manifest.size => {}
                Ok((sha, size)) => bad.push(format!(
                    "{}: sha256 {sha} ({size} bytes) differs from the manifest ({} , {} bytes)",
                    c.path.display(),
                    c.manifest.sha256,
                    c.manifest.size
                )),
                Err(e) => bad.push(format!("{}: {e}", c.path.display())),
            }
        }
    }
    if !bad.is_empty() {
        tracing::error!(
            message_id = report::MSG_VERIFY,
            "verify found {} damaged archive(s)",
            bad.len()
        );
        bail!(
            "verify: {} of {checked} archive(s) damaged: {}",
            bad.len(),
            bad.join("; ")
        );
    }
    tracing::info!(
        message_id = report::MSG_VERIFY,
        "verify: {checked} archive(s) match their manifests"
    );
    Ok(checked)
}

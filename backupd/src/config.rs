//! The daemon's configuration file, `/etc/mms/backupd.yml` by default.
//!
//! This module owns the file format only: the serde types, loading with errors that name
//! `file:line:col`, semantic validation and serialisation back to YAML. The builder
//! (`mms-build render`) writes the file with these same types, so both sides agree by
//! construction. It does not own defaults for paths on the appliance beyond
//! [`DEFAULT_PATH`].
//!
//! ```yaml
//! target: /data/backups
//! recipients: ["age1…", "ssh-ed25519 AAAA…"]      # empty = unencrypted, warned on every run
//! retention: { daily: 7, weekly: 4, monthly: 6 }
//! user: { uid: 1100, gid: 1100 }
//! services:
//!   radarr: { paths: [/home/mms/config/radarr], unit: radarr.service }   # unit optional
//!   immich: { paths: [...], unit: immich-server.service,
//!             dump: { container: immich-postgres, command: pg_dumpall } }
//! photos: { source: /data/photos, target: /data/backups/photos }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the daemon reads its configuration unless `--config FILE` is given.
pub const DEFAULT_PATH: &str = "/etc/mms/backupd.yml";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding `<service>/<service>-<UTC>.tar.zst.age` archives and the run lock.
    pub target: PathBuf,
    /// age recipients: `age1…` X25519 keys and `ssh-ed25519`/`ssh-rsa` public keys.
    /// Empty means archives are written unencrypted (`.tar.zst`), with a warning on every run.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// How many archives to keep per service (restic's rule, UTC buckets).
    pub retention: Retention,
    /// Owner given to restored files (the appliance's service user).
    pub user: Owner,
    /// Services to back up, by name. The name is the archive directory and file prefix.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    /// Incremental photo library copy (`mms-backupd photos`); absent = command refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photos: Option<PhotosConfig>,
}

/// Retention counts: the newest archive of each of the last N distinct days/ISO weeks/months.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Distinct UTC days kept.
    pub daily: u32,
    /// Distinct ISO-8601 weeks (Monday–Sunday, UTC) kept.
    pub weekly: u32,
    /// Distinct UTC months kept.
    pub monthly: u32,
}

/// A numeric owner (uid/gid) for restored files and for commands run as the service user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One service's backup definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Absolute directories archived (each stored under its own file name inside the tar).
    pub paths: Vec<PathBuf>,
    /// systemd unit of the mms user's manager to stop around the backup and restore
    /// (e.g. `radarr.service`); absent = the service is archived while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Database dump taken inside a container and stored in the archive (Immich's Postgres).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpConfig>,
}

/// A database dump run with `podman exec <container> <command…>` as the service user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpConfig {
    /// Container name (podman), e.g. `immich-postgres`.
    pub container: String,
    /// Dump command, split on whitespace, e.g. `pg_dumpall --clean --if-exists --username=postgres`.
    /// Must start with `pg_dumpall`; restore feeds the dump to `psql` in the same container.
    pub command: String,
}

/// Incremental copy of the photo library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhotosConfig {
    /// Library directory copied from.
    pub source: PathBuf,
    /// Mirror directory copied to (deletions go to a dated trash beside it).
    pub target: PathBuf,
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// YAML syntax or type error, with the position when known.
    #[error("{location}: {message}")]
    Parse {
        /// `file:line:col` (or just `file`).
        location: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The YAML parsed but a value is unusable.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted field name, e.g. `services.radarr.paths[0]`.
        field: String,
        /// What was wrong and what was expected.
        message: String,
    },
}

impl Config {
    /// The configured service `name` (with its key), or an error listing the configured ones.
    pub fn service(&self, name: &str) -> anyhow::Result<(&String, &ServiceConfig)> {
        self.services.get_key_value(name).ok_or_else(|| {
            let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
            anyhow::anyhow!("unknown service {name:?}; configured: {}", known.join(", "))
        })
    }

    /// Reads and validates a configuration file. Errors name `file:line:col` for YAML
    /// problems and `file: field` for semantic ones.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates YAML text; `path` is only used in error messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| {
            let location = match e.location() {
                Some(loc) if loc.line() > 0 => {
                    format!("{}:{}:{}", path.display(), loc.line(), loc.column())
                }
                _ => path.display().to_string(),
            };
            ConfigError::Parse {
                location,
                message: plain_message(&e),
            }
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Serialises to YAML that [`Config::from_yaml`] reads back to an equal value.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_saphyr::to_string(self).map_err(|e| ConfigError::Parse {
            location: "backupd config".into(),
            message: format!("cannot serialise: {e}"),
        })
    }

    /// Checks values serde cannot: absolute paths, safe service names, recipients that parse.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        if !self.target.is_absolute() {
            return Err(invalid(
                "target".into(),
                format!("{:?} is not an absolute path", self.target),
            ));
        }
        for (i, r) in self.recipients.iter().enumerate() {
            if let Err(e) = crate::crypto::parse_recipient(r) {
                return Err(invalid(format!("recipients[{i}]"), e.to_string()));
            }
        }
        for (name, svc) in &self.services {
            if !crate::naming::valid_service_name(name) {
                return Err(invalid(
                    format!("services.{name}"),
                    "service names must be 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit".into(),
                ));
            }
            if svc.paths.is_empty() {
                return Err(invalid(
                    format!("services.{name}.paths"),
                    "expected at least one absolute directory".into(),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, p) in svc.paths.iter().enumerate() {
                let ok = p.is_absolute()
                    && p.file_name().is_some()
                    && !p
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir));
                if !ok {
                    return Err(invalid(
                        format!("services.{name}.paths[{i}]"),
                        format!("{p:?} is not an absolute path to a directory (no '..')"),
                    ));
                }
                if !seen.insert(p.file_name()) {
                    return Err(invalid(
                        format!("services.{name}.paths[{i}]"),
                        format!(
                            "{p:?}: two paths share the last component {:?}; archive members would collide",
                            p.file_name().unwrap_or_default()
                        ),
                    ));
                }
            }
            if let Some(unit) = &svc.unit
                && (unit.is_empty() || unit.contains('/') || !unit.contains('.'))
            {
                return Err(invalid(
                    format!("services.{name}.unit"),
                    format!("{unit:?} is not a systemd unit name like radarr.service"),
                ));
            }
            if let Some(dump) = &svc.dump {
                if dump.container.is_empty() {
                    return Err(invalid(
                        format!("services.{name}.dump.container"),
                        "expected a container name".into(),
                    ));
                }
                if dump.command.split_whitespace().next() != Some("pg_dumpall") {
                    return Err(invalid(
                        format!("services.{name}.dump.command"),
                        format!(
                            "{:?}: expected a command starting with pg_dumpall",
                            dump.command
                        ),
                    ));
                }
            }
        }
        if let Some(p) = &self.photos {
            for (field, v) in [("photos.source", &p.source), ("photos.target", &p.target)] {
                if !v.is_absolute() {
                    return Err(invalid(
                        field.into(),
                        format!("{v:?} is not an absolute path"),
                    ));
                }
            }
            if p.target.starts_with(&p.source) || p.source.starts_with(&p.target) {
                return Err(invalid(
                    "photos.target".into(),
                    "source and target must not contain each other".into(),
                ));
            }
        }
        Ok(())
    }
}

/// serde-saphyr's message without its rendered source snippet (we add `file:line:col`).
fn plain_message(e: &serde_saphyr::Error) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("invalid YAML").trim();
    // The first line may carry its own " at line X, column Y" suffix; keep it short.
    first
        .split(" at line ")
        .next()
        .unwrap_or(first)
        .trim_end_matches(':')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
target: /data/backups
recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKL4uWyLq/WPcUIMj58h7mVbgPtEzxvOVmD5kpBcG4Zo comment"]
retention: { daily: 7, weekly: 4, monthly: 6 }
user: { uid: 1100, gid: 1100 }
services:
  radarr: { paths: [/home/mms/config/radarr], unit: radarr.service }
  immich: { paths: [/home/mms/config/immich], unit: immich-server.service, dump: { container: immich-postgres, command: pg_dumpall } }
photos: { source: /data/photos, target: /data/backups/photos }
"#;

    #[test]
    fn sample_from_issue_parses_and_round_trips() {
        let c = Config::from_yaml(SAMPLE, Path::new("b.yml")).unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services["radarr"].unit.as_deref(), Some("radarr.service"));
        assert_eq!(c.retention.weekly, 4);
        let again = Config::from_yaml(&c.to_yaml().unwrap(), Path::new("x")).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn service_lookup_names_the_configured_ones() {
        let c = Config::from_yaml(SAMPLE, Path::new("b.yml")).unwrap();
        assert_eq!(c.service("radarr").unwrap().0, "radarr");
        let e = c.service("plex").unwrap_err().to_string();
        assert_eq!(e, "unknown service \"plex\"; configured: immich, radarr");
    }

    #[test]
    fn unknown_field_names_file_line_col() {
        let text = "target: /t\nretention: { daily: 1, weekly: 1, monthly: 1 }\nuser: { uid: 1, gid: 1 }\nbogus: 3\n";
        let e = Config::from_yaml(text, Path::new("/etc/mms/backupd.yml")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/etc/mms/backupd.yml:4:"), "{s}");
        assert!(s.contains("bogus"), "{s}");
    }

    #[test]
    fn wrong_type_names_position() {
        let text = "target: /t\nretention: { daily: x, weekly: 1, monthly: 1 }\nuser: { uid: 1, gid: 1 }\n";
        let s = Config::from_yaml(text, Path::new("c.yml"))
            .unwrap_err()
            .to_string();
        assert!(s.starts_with("c.yml:2:"), "{s}");
    }

    #[test]
    fn semantic_errors_name_field() {
        let base = "retention: { daily: 1, weekly: 1, monthly: 1 }\nuser: { uid: 1, gid: 1 }\n";
        let s = Config::from_yaml(&format!("target: rel\n{base}"), Path::new("c.yml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("c.yml: target:"), "{s}");
        let s = Config::from_yaml(
            &format!("target: /t\nrecipients: [nope]\n{base}"),
            Path::new("c.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(s.contains("recipients[0]"), "{s}");
        let s = Config::from_yaml(
            &format!("target: /t\n{base}services:\n  a: {{ paths: [x] }}\n"),
            Path::new("c.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(s.contains("services.a.paths[0]"), "{s}");
        let s = Config::from_yaml(
            &format!("target: /t\n{base}services:\n  'a/b': {{ paths: [/x] }}\n"),
            Path::new("c.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(s.contains("services.a/b"), "{s}");
    }

    #[test]
    fn missing_file_is_named() {
        let s = Config::load(Path::new("/nonexistent/b.yml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("/nonexistent/b.yml"), "{s}");
    }
}

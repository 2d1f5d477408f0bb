//! `/var/lib/mms/firstboot.json`: firstboot's progress, read by `mms-build` through the guest
//! agent and by `mms-firstboot status`.
//!
//! Format (JSON object):
//! ```json
//! {"phase": "state",
//!  "steps": [{"name": "tailscale", "result": "ok", "started": "2026-11-29T16:00:00Z",
//!             "finished": "2026-11-29T16:00:09Z", "duration_s": 9.1, "detail": "mms-next"}],
//!  "services": [{"name": "radarr", "healthy": true, "detail": "200 after 12 s"}],
//!  "error": {"message": "…", "next_action": "…"},
//!  "updated": "2026-11-29T16:00:09Z"}
//! ```
//! `phase` is one of `wait-secrets`, `tailscale`, `state`, `start`, `health`, `done`.
//! `phase: done` with `error: null` means finished and healthy. Reading is tolerant:
//! every key but `phase` may be missing and unknown keys are ignored, so
//! `{"phase": "done", "steps": [], "error": null}` is valid. Writing is atomic
//! (temp file, fsync, rename, fsync of the directory).
//!
//! This module owns the format and the file I/O; the run loop decides what goes in.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::path::Path;

/// The phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for the builder to deliver `/etc/mms/secrets/`.
    WaitSecrets,
    /// Tailscale up + serve.
    Tailscale,
    /// Migrate, restore, or nothing.
    State,
    /// Podman secrets, gate marker, starting the units.
    Start,
    /// HTTP health checks.
    Health,
    /// Finished.
    Done,
}

impl Phase {
    /// Every phase in order.
    pub const ALL: [Phase; 6] = [
        Phase::WaitSecrets,
        Phase::Tailscale,
        Phase::State,
        Phase::Start,
        Phase::Health,
        Phase::Done,
    ];

    /// The name used in the file (`wait-secrets`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::WaitSecrets => "wait-secrets",
            Phase::Tailscale => "tailscale",
            Phase::State => "state",
            Phase::Start => "start",
            Phase::Health => "health",
            Phase::Done => "done",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepResult {
    /// Started, not finished (or interrupted: a later run continues it).
    Running,
    /// Finished successfully.
    Ok,
    /// Nothing to do (e.g. a fresh install has no state step work).
    Skipped,
    /// Failed; see `error`.
    Failed,
}

impl fmt::Display for StepResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepResult::Running => "running",
            StepResult::Ok => "ok",
            StepResult::Skipped => "skipped",
            StepResult::Failed => "failed",
        })
    }
}

/// One step's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Step name (= phase name for the main steps).
    pub name: String,
    /// Outcome so far.
    pub result: StepResult,
    /// When it started (UTC).
    #[serde(default)]
    pub started: Option<DateTime<Utc>>,
    /// When it finished (UTC); absent while running.
    #[serde(default)]
    pub finished: Option<DateTime<Utc>>,
    /// Seconds between start and finish.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// One line for humans (never a secret).
    #[serde(default)]
    pub detail: String,
}

/// Health of one service after the `health` phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// Service name.
    pub name: String,
    /// Passed its HTTP check.
    pub healthy: bool,
    /// What was seen (status code, time, or the last error).
    #[serde(default)]
    pub detail: String,
}

/// What failed and what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The error chain, one line.
    pub message: String,
    /// What the operator should run or fix next.
    #[serde(default)]
    pub next_action: String,
}

/// The whole status file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The phase being worked on (or `done`).
    pub phase: Phase,
    /// Step records in the order they first ran.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Per-service health (filled by the `health` phase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceHealth>,
    /// The last failure, cleared when a run gets past it.
    #[serde(default)]
    pub error: Option<ErrorInfo>,
    /// When the file was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<DateTime<Utc>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            phase: Phase::WaitSecrets,
            steps: Vec::new(),
            services: Vec::new(),
            error: None,
            updated: None,
        }
    }
}

/// A status file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No status file yet (firstboot has not started).
    #[error("no status file at {0} (firstboot has not started yet)")]
    Missing(String),
    /// Read or write error.
    #[error("{action} status file {path}: {source}")]
    Io {
        /// `reading` / `writing`.
        action: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not the expected JSON.
    #[error("status file {path} is not valid: {source}")]
    Parse {
        /// The file.
        path: String,
        /// serde_json's error (with line and column).
        source: serde_json::Error,
    },
}

impl Status {
    /// Reads the file tolerantly (missing keys default, unknown keys ignored).
    pub fn read(path: &Path) -> Result<Status, StatusError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StatusError::Missing(path.display().to_string()));
            }
            Err(source) => {
                return Err(StatusError::Io {
                    action: "reading",
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::from_json(&text).map_err(|source| StatusError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parses JSON text.
    pub fn from_json(text: &str) -> Result<Status, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Reads the file, or a fresh status when there is none yet.
    pub fn read_or_default(path: &Path) -> Result<Status, StatusError> {
        match Self::read(path) {
            Err(StatusError::Missing(_)) => Ok(Status::default()),
            other => other,
        }
    }

    /// Writes the file atomically (temp file in the same directory, fsync, rename, fsync dir),
    /// mode 0644, creating the parent directory.
    pub fn write(&self, path: &Path) -> Result<(), StatusError> {
        let io = |source| StatusError::Io {
            action: "writing",
            path: path.display().to_string(),
            source,
        };
        let mut json = serde_json::to_string_pretty(self).map_err(|e| io(e.into()))?;
        json.push('\n');
        crate::fsutil::write_atomic(path, json.as_bytes(), 0o644).map_err(io)
    }

    /// Finished with no error: every service passed its health check.
    pub fn is_healthy(&self) -> bool {
        self.phase == Phase::Done && self.error.is_none()
    }

    /// The record of step `name`, if it ran.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Marks step `name` running (keeps its first start time when it is re-run).
    pub fn begin(&mut self, name: &str, now: DateTime<Utc>) {
        match self.steps.iter_mut().find(|s| s.name == name) {
            Some(s) => {
                s.result = StepResult::Running;
                s.finished = None;
                s.duration_s = None;
                if s.started.is_none() {
                    s.started = Some(now);
                }
            }
            None => self.steps.push(Step {
                name: name.to_string(),
                result: StepResult::Running,
                started: Some(now),
                finished: None,
                duration_s: None,
                detail: String::new(),
            }),
        }
        self.updated = Some(now);
    }

    /// Records the end of step `name`.
    pub fn finish(&mut self, name: &str, result: StepResult, detail: &str, now: DateTime<Utc>) {
        if self.step(name).is_none() {
            self.begin(name, now);
        }
        if let Some(s) = self.steps.iter_mut().find(|s| s.name == name) {
            s.result = result;
            s.finished = Some(now);
            s.duration_s = s
                .started
                .map(|st| (now - st).num_milliseconds() as f64 / 1000.0);
            s.detail = detail.to_string();
        }
        self.updated = Some(now);
    }

    /// A human table (what `mms-firstboot status` prints).
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let state = match (&self.error, self.phase) {
            (Some(_), _) => "FAILED",
            (None, Phase::Done) => "done, healthy",
            (None, _) => "in progress",
        };
        let _ = writeln!(out, "phase: {} ({state})", self.phase);
        if let Some(u) = self.updated {
            let _ = writeln!(out, "updated: {}", fmt_time(u));
        }
        if !self.steps.is_empty() {
            let w = self
                .steps
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let _ = writeln!(
                out,
                "\n{:w$}  {:8}  {:20}  {:>9}  DETAIL",
                "STEP", "RESULT", "STARTED", "DURATION"
            );
            for s in &self.steps {
                let _ = writeln!(
                    out,
                    "{:w$}  {:8}  {:20}  {:>9}  {}",
                    s.name,
                    s.result.to_string(),
                    s.started.map(fmt_time).unwrap_or_else(|| "-".into()),
                    s.duration_s
                        .map(|d| format!("{d:.1}s"))
                        .unwrap_or_else(|| "-".into()),
                    s.detail
                );
            }
        }
        if !self.services.is_empty() {
            let _ = writeln!(out, "\nservices:");
            for s in &self.services {
                let _ = writeln!(
                    out,
                    "  {:12} {:9} {}",
                    s.name,
                    if s.healthy { "healthy" } else { "UNHEALTHY" },
                    s.detail
                );
            }
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "\nerror: {}", e.message);
            if !e.next_action.is_empty() {
                let _ = writeln!(out, "next:  {}", e.next_action);
            }
        }
        out
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Flushes and fsyncs a file handle (helper for writers that share this module's rules).
pub(crate) fn sync(file: &mut std::fs::File) -> std::io::Result<()> {
    file.flush()?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_is_valid_and_healthy() {
        let s = Status::from_json(r#"{"phase": "done", "steps": [], "error": null}"#).unwrap();
        assert!(s.is_healthy());
        let s = Status::from_json(r#"{"phase": "start", "extra": 1}"#).unwrap();
        assert!(!s.is_healthy());
        assert!(Status::from_json(r#"{"phase": "dancing"}"#).is_err());
    }

    #[test]
    fn failed_is_not_healthy_and_table_shows_next_action() {
        let mut s = Status {
            phase: Phase::Done,
            ..Status::default()
        };
        s.error = Some(ErrorInfo {
            message: "radarr unhealthy".into(),
            next_action: "journalctl --user-unit radarr".into(),
        });
        assert!(!s.is_healthy());
        let t = s.render_table();
        assert!(
            t.contains("FAILED") && t.contains("next:  journalctl"),
            "{t}"
        );
    }

    #[test]
    fn begin_finish_and_atomic_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/firstboot.json");
        let t0 = DateTime::parse_from_rfc3339("2026-11-29T16:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut s = Status::default();
        s.begin("tailscale", t0);
        s.finish(
            "tailscale",
            StepResult::Ok,
            "mms-next",
            t0 + chrono::Duration::milliseconds(9100),
        );
        s.write(&path).unwrap();
        let back = Status::read(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.step("tailscale").unwrap().duration_s, Some(9.1));
        let table = back.render_table();
        assert!(table.contains("tailscale  ok"), "{table}");
        assert!(table.contains("9.1s"), "{table}");
        // no temp file left behind
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_file_is_its_own_error() {
        let e = Status::read(Path::new("/nonexistent/firstboot.json")).unwrap_err();
        assert!(matches!(e, StatusError::Missing(_)));
    }
}

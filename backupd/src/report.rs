//! Operator output: progress on a TTY, structured journal entries under systemd.
//!
//! On a terminal, long operations show a progress bar (bytes, rate, ETA) on stderr. Under
//! systemd (`JOURNAL_STREAM`/`INVOCATION_ID` set) events go to the journal through
//! tracing-journald with a stable `MESSAGE_ID` for each kind of event, so operators can
//! `journalctl MESSAGE_ID=…`; the final error line printed by `main` is the last line
//! `systemctl status` shows for a failed run.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

/// `MESSAGE_ID` of "backup of a service finished".
pub const MSG_BACKUP_DONE: &str = "ab1af000f35b4320a89e866ae06580cd";
/// `MESSAGE_ID` of "backup of a service failed".
pub const MSG_BACKUP_FAILED: &str = "726f568401024318ab17400b162f3964";
/// `MESSAGE_ID` of "archives removed by retention".
pub const MSG_PRUNED: &str = "e4da5ddd5d4340a595710723821217af";
/// `MESSAGE_ID` of "restore finished".
pub const MSG_RESTORE_DONE: &str = "9ae9e21e389f4e4cbd4c470928cd8add";
/// `MESSAGE_ID` of "restore failed".
pub const MSG_RESTORE_FAILED: &str = "1e07d0ef572f41c7b7fb3af479c35fbb";
/// `MESSAGE_ID` of "verification result".
pub const MSG_VERIFY: &str = "c737ecc892b040d3acf293a9c18b3981";
/// `MESSAGE_ID` of "photos copy finished".
pub const MSG_PHOTOS_DONE: &str = "585f14451b194083931e3b766583a379";
/// `MESSAGE_ID` of warnings operators should act on (unencrypted, changed files).
pub const MSG_WARNING: &str = "6429c6ecf28a4c66ab386766f4171cba";

/// Whether we run under systemd with the journal attached.
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some()
}

/// Installs the tracing subscriber: journald under systemd, plain stderr otherwise.
/// `verbose` raises the stderr level to debug.
pub fn init_logging(verbose: bool) {
    use tracing_subscriber::prelude::*;
    let level = if verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    if under_systemd()
        && let Ok(layer) = tracing_journald::layer()
    {
        let layer = layer
            .with_field_prefix(None)
            .with_syslog_identifier("mms-backupd".into());
        let _ = tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init();
        return;
    }
    let fmt = tracing_subscriber::fmt::layer()
        .without_time()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .try_init();
}

/// A byte-progress reporter: a bar on a TTY, silent otherwise.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A reporter for `total` bytes (0 = unknown) labelled `what`.
    pub fn new(what: &str, total: u64) -> Progress {
        if !std::io::stderr().is_terminal() || under_systemd() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        Progress { bar: Some(bar) }
    }

    /// Adds `n` bytes.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// A shareable callback adding bytes.
    pub fn callback(&self) -> Arc<dyn Fn(u64) + Send + Sync> {
        let me = self.clone();
        Arc::new(move |n| me.add(n))
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

//! Logging: journald with stable `MESSAGE_ID`s under systemd, plain stderr otherwise.
//!
//! Operators grep the journal for these IDs (`journalctl MESSAGE_ID=…`):
//! one per phase change ([`phase_message_id`]), one for a failed step ([`STEP_FAILED`]).
//! When not running under systemd (`$JOURNAL_STREAM`/`$INVOCATION_ID` unset) everything goes
//! to stderr as plain lines without timestamps.

use crate::status::Phase;
use tracing_subscriber::prelude::*;

/// `MESSAGE_ID` of "firstboot step failed".
pub const STEP_FAILED: &str = "9d1c4a7e3b2f4c0d8e6a5b4c3d2e1f07";

/// The stable `MESSAGE_ID` (128-bit hex) logged when firstboot enters `phase`.
pub fn phase_message_id(phase: Phase) -> &'static str {
    match phase {
        Phase::WaitSecrets => "9d1c4a7e3b2f4c0d8e6a5b4c3d2e1f01",
        Phase::Tailscale => "9d1c4a7e3b2f4c0d8e6a5b4c3d2e1f02",
        Phase::State => "9d1c4a7e3b2f4c0d8e6a5b4c3d2e1f03",
        Phase::Start => "9d1c4a7e3b2f4c0d8e6a5b4c3d2e1f04",
        Phase::Health => "9d1c4a7e3b2f4c0d8e6a5b4c3d2e1f05",
        Phase::Done => "9d1c4a7e3b2f4c0d8e6a5b4c3d2e1f06",
    }
}

/// Logs a phase change (with its `MESSAGE_ID` on journald).
pub fn phase_change(phase: Phase) {
    notify_status(&format!("firstboot: {phase}"));
    tracing::info!(
        message_id = phase_message_id(phase),
        phase = phase.as_str(),
        "firstboot phase {phase}"
    );
}

/// Logs a failed step (with [`STEP_FAILED`] on journald).
pub fn step_failed(step: &str, message: &str, next: &str) {
    notify_status(&format!("firstboot: {step} failed"));
    tracing::error!(
        message_id = STEP_FAILED,
        step,
        next_action = next,
        "firstboot step {step} failed: {message}"
    );
}

/// True when started by systemd with the journal as stdout/stderr or in a unit.
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some()
}

/// Installs the global subscriber: journald (fields unprefixed, so `message_id` becomes
/// `MESSAGE_ID`) under systemd, else stderr without timestamps. `RUST_LOG` overrides the level.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let journald = if under_systemd() {
        tracing_journald::layer().ok().map(|l| {
            l.with_field_prefix(None)
                .with_syslog_identifier("mms-firstboot".into())
        })
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match journald {
        Some(j) => registry.with(j).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .without_time()
                    .with_target(false)
                    .with_ansi(std::env::var_os("NO_COLOR").is_none()),
            )
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let mut ids: Vec<&str> = Phase::ALL.iter().map(|p| phase_message_id(*p)).collect();
        ids.push(STEP_FAILED);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 7);
    }
}

/// Sends `STATUS=<text>` to systemd (`sd_notify`), so `systemctl status mms-firstboot` shows
/// the phase. A no-op without `$NOTIFY_SOCKET`; a oneshot unit needs `NotifyAccess=main`.
pub fn notify_status(text: &str) {
    if let Some(sock) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(e) = notify_to(std::path::Path::new(&sock), &format!("STATUS={text}"))
    {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Sends one notification datagram to `socket` (a path, or `@name` for an abstract socket).
pub fn notify_to(socket: &std::path::Path, message: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let s = UnixDatagram::unbound()?;
    let text = socket.to_string_lossy();
    if let Some(name) = text.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        s.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        s.send_to(message.as_bytes(), socket)?;
    }
    Ok(())
}

#[cfg(test)]
mod notify_tests {
    use super::*;

    #[test]
    fn status_reaches_a_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_to(&path, "STATUS=firstboot: state").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=firstboot: state");
    }
}

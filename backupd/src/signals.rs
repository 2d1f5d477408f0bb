//! Graceful stop: SIGTERM, SIGINT and SIGHUP set a flag instead of killing the process, so
//! a backup or restore in progress stops at the next file or entry, its temp files are
//! removed and a stopped unit is started again (the guards run). A second signal is not
//! needed; systemd's SIGKILL after `TimeoutStopSec` remains the last resort, and for that
//! case the units stopped are recorded on disk and started by the next run
//! ([`crate::backup::recover_stopped_units`]).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

static STOP: AtomicBool = AtomicBool::new(false);

/// Blocks the signals in this thread (and the threads it starts) and handles them in a
/// dedicated thread. Call first thing in `main`, before other threads exist.
pub fn install() -> io::Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(io::Error::from)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = set.wait() {
                tracing::warn!("received {sig}: stopping after the current file");
                STOP.store(true, Ordering::SeqCst);
            }
        })?;
    Ok(())
}

/// Whether a stop was requested.
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// An error when a stop was requested (used at safe points of long loops).
pub fn check() -> io::Result<()> {
    if stopping() {
        Err(io::Error::other("stopped by a signal"))
    } else {
        Ok(())
    }
}

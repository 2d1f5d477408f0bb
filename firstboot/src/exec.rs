//! Running external programs (`tailscale`, `ssh`, `rsync`, `podman`, `journalctl`) with a
//! timeout.
//!
//! Each child runs in its own process group so a timeout kills the whole tree (a shell
//! script's `sleep` child included) and the output pipes close. Output is captured; callers
//! decide what of it may be shown (never secrets: no secret is ever passed on a command line,
//! only as `file:` paths).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A finished program.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last `n` non-empty lines of stderr (what error messages show).
    pub fn stderr_tail(&self, n: usize) -> String {
        tail_lines(&String::from_utf8_lossy(&self.stderr), n)
    }

    /// `self` if the program succeeded, else the error `<what> failed (<status>): <stderr
    /// tail>`.
    pub fn checked(self, what: impl std::fmt::Display) -> anyhow::Result<Output> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(anyhow::anyhow!(
                "{what} failed ({}): {}",
                self.status,
                self.stderr_tail(4)
            ))
        }
    }
}

/// The last `n` non-empty lines of `text`, joined with ` | `.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Why a program did not produce an [`Output`].
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started (not installed, not on PATH).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{program} did not finish within {secs} s and was stopped")]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        secs: u64,
    },
    /// Waiting for it failed.
    #[error("waiting for {program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs `cmd` (stdin closed unless the caller set it) and waits at most `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, ExecError> {
    run_with_stdout(cmd, None, timeout)
}

/// Like [`run`], but stdout goes to `stdout_file` when given (large outputs such as a
/// `pg_dumpall` stream); the returned `stdout` is then empty.
pub fn run_with_stdout(
    cmd: &mut Command,
    stdout_file: Option<std::fs::File>,
    timeout: Duration,
) -> Result<Output, ExecError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match stdout_file {
        Some(f) => cmd.stdout(Stdio::from(f)),
        None => cmd.stdout(Stdio::piped()),
    };
    cmd.stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut buf);
        }
        buf
    });
    let t_err = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut buf);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() >= timeout => {
                kill_group(child.id());
                let _ = child.wait();
                let _ = t_out.join();
                let _ = t_err.join();
                return Err(ExecError::Timeout {
                    program,
                    secs: timeout.as_secs(),
                });
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                kill_group(child.id());
                return Err(ExecError::Wait { program, source });
            }
        }
    };
    // The leader exited; stray members of its group could hold the pipes open.
    kill_group(child.id());
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let o = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(o.stdout_text(), "out\n");
        assert_eq!(o.stderr_tail(5), "err");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let t = Instant::now();
        let e = run(
            Command::new("sh").args(["-c", "sleep 30; echo never"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let e = run(
            &mut Command::new("/nonexistent/prog"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("cannot run /nonexistent/prog"),
            "{e}"
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_lines("a\n\nb\nc\n", 2), "b | c");
    }
}

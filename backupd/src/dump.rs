//! Database dumps taken inside a container: `podman exec <container> pg_dumpall …` run as
//! the service user, and the reverse (`psql`) for restore.
//!
//! The dump is spooled to an unnamed temporary file (`O_TMPFILE`, gone on crash) beside the
//! archives so its size is known for the tar header, then streamed into the archive as
//! [`DUMP_MEMBER`]. `MMS_BACKUPD_PODMAN` overrides the podman executable (tests run the
//! dump command directly against a local PostgreSQL through a stand-in).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::config::{DumpConfig, Owner};

/// Tar member name of the database dump.
pub const DUMP_MEMBER: &str = "pg_dumpall.sql";
/// Environment variable overriding the podman executable.
pub const PODMAN_ENV: &str = "MMS_BACKUPD_PODMAN";

fn podman() -> String {
    std::env::var(PODMAN_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "podman".into())
}

/// A `podman` command running as the service user (when we are root), with the user's
/// runtime dir and home so rootless podman finds its storage, and the user's session bus:
/// without it podman falls back to the cgroupfs manager and `podman exec` cannot join the
/// container's cgroup, which the user's systemd owns ("OCI permission denied", seen in the
/// appliance VM).
fn podman_as(owner: Owner) -> Command {
    let mut cmd = Command::new(podman());
    cmd.current_dir("/");
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 && owner.uid != 0 {
        cmd.uid(owner.uid).gid(owner.gid);
        cmd.env("XDG_RUNTIME_DIR", format!("/run/user/{}", owner.uid))
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path=/run/user/{}/bus", owner.uid),
            );
        if let Ok(Some(user)) = nix::unistd::User::from_uid(owner.uid.into()) {
            cmd.env("HOME", &user.dir)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
    }
    cmd
}

/// Runs the dump and spools its output; returns the spool (rewound) and its size.
pub fn take_dump(dump: &DumpConfig, owner: Owner, spool_dir: &Path) -> Result<(File, u64)> {
    let mut spool = tempfile::tempfile_in(spool_dir)
        .with_context(|| format!("cannot create a dump spool file in {}", spool_dir.display()))?;
    let mut cmd = podman_as(owner);
    cmd.arg("exec")
        .arg(&dump.container)
        .args(dump.command.split_whitespace());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {} exec {}", podman(), dump.container))?;
    let stderr = child.stderr.take().map(collect_stderr);
    let copied = match child.stdout.take() {
        Some(mut out) => io::copy(&mut out, &mut spool),
        None => Err(io::Error::other("no stdout")),
    };
    let status = child.wait().context("waiting for the dump command")?;
    let err_text = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let size = copied.with_context(|| format!("reading the dump of {}", dump.container))?;
    if !status.success() {
        bail!(
            "database dump `{}` in container {} failed ({status}): {}",
            dump.command,
            dump.container,
            err_text.trim()
        );
    }
    if size == 0 {
        bail!(
            "database dump `{}` in container {} produced no output",
            dump.command,
            dump.container
        );
    }
    spool.flush()?;
    spool.rewind()?;
    Ok((spool, size))
}

fn collect_stderr(mut e: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        // Keep the tail: that is where the reason is.
        let tail: Vec<&str> = s.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    })
}

/// The `--username` given to the dump command, reused for `psql`.
fn username(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if let Some(u) = w.strip_prefix("--username=") {
            return Some(u.to_string());
        }
        if (*w == "-U" || *w == "--username") && i + 1 < words.len() {
            return Some(words[i + 1].to_string());
        }
        if let Some(u) = w.strip_prefix("-U").filter(|u| !u.is_empty()) {
            return Some(u.to_string());
        }
    }
    None
}

/// Feeds a dump to `psql --dbname=postgres` in the container (Immich's documented restore,
/// including its `search_path` fix for the vector extensions).
pub fn restore_dump(dump: &DumpConfig, owner: Owner, data: impl Read) -> Result<()> {
    let mut cmd = podman_as(owner);
    cmd.arg("exec")
        .arg("-i")
        .arg(&dump.container)
        .arg("psql")
        .arg("--dbname=postgres")
        .arg("--quiet");
    if let Some(u) = username(&dump.command) {
        cmd.arg(format!("--username={u}"));
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {} exec -i {} psql", podman(), dump.container))?;
    let stderr = child.stderr.take().map(collect_stderr);
    let fed = match child.stdin.take() {
        Some(stdin) => feed_fixed(data, stdin),
        None => Err(io::Error::other("no stdin")),
    };
    let status = child.wait().context("waiting for psql")?;
    let err_text = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    fed.with_context(|| format!("streaming the dump into psql in {}", dump.container))?;
    if !status.success() {
        bail!(
            "psql restore in container {} failed ({status}): {}",
            dump.container,
            err_text.trim()
        );
    }
    Ok(())
}

const SEARCH_PATH_FROM: &str = "SELECT pg_catalog.set_config('search_path', '', false);";
const SEARCH_PATH_TO: &str =
    "SELECT pg_catalog.set_config('search_path', 'public, pg_catalog', true);";

fn feed_fixed(data: impl Read, stdin: impl Write) -> io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, data);
    let mut w = io::BufWriter::with_capacity(1 << 20, stdin);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.starts_with(SEARCH_PATH_FROM.as_bytes()) {
            w.write_all(SEARCH_PATH_TO.as_bytes())?;
            w.write_all(&line[SEARCH_PATH_FROM.len()..])?;
        } else {
            w.write_all(&line)?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_forms() {
        assert_eq!(
            username("pg_dumpall --username=postgres").as_deref(),
            Some("postgres")
        );
        assert_eq!(
            username("pg_dumpall -U immich --clean").as_deref(),
            Some("immich")
        );
        assert_eq!(username("pg_dumpall -Ux").as_deref(), Some("x"));
        assert_eq!(username("pg_dumpall"), None);
    }

    #[test]
    fn search_path_fix() {
        let input = format!("a\n{SEARCH_PATH_FROM}\nb\n");
        let mut out = Vec::new();
        feed_fixed(input.as_bytes(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("a\n{SEARCH_PATH_TO}\nb\n")
        );
    }
}

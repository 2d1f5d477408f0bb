//! The appliance VM under test: booted by `tests/appliance/run-vm.sh` (QEMU, TCG by default),
//! reached over host-forwarded SSH as root with a throw-away key, killed when dropped.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// A running test VM.
pub struct Vm {
    /// Working directory of this boot (overlay, serial log, qemu output).
    pub run: PathBuf,
    /// Host port forwarded to the VM's port 22.
    pub port: u16,
    /// The throw-away private key.
    pub key: PathBuf,
    /// Process group of `timeout qemu-system-x86_64 …`.
    pgid: i32,
}

/// A free TCP port on 127.0.0.1 (the listener is dropped before qemu binds it).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Vm {
    /// Boots `image_dir` with the seed and test ISOs; returns once qemu runs.
    pub fn boot(
        repo: &Path,
        image_dir: &Path,
        seed_iso: &Path,
        test_iso: &Path,
        run: &Path,
        key: &Path,
    ) -> Result<Vm> {
        let port = free_port()?;
        let status = Command::new("bash")
            .arg(repo.join("tests/appliance/run-vm.sh"))
            .args([image_dir, seed_iso, test_iso, run])
            .arg(port.to_string())
            .status()
            .context("run tests/appliance/run-vm.sh")?;
        if !status.success() {
            bail!("run-vm.sh failed: {status}");
        }
        let pid = fs::read_to_string(run.join("qemu.pid"))
            .context("read qemu.pid")?
            .trim()
            .parse::<i32>()
            .context("qemu.pid is not a number")?;
        Ok(Vm {
            run: run.to_path_buf(),
            port,
            key: key.to_path_buf(),
            pgid: pid,
        })
    }

    /// Whether qemu (under `timeout`) still runs.
    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pgid)).exists()
            && !fs::read_to_string(format!("/proc/{}/stat", self.pgid))
                .unwrap_or_default()
                .contains(") Z ")
    }

    /// The serial console log so far (lossy UTF-8).
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.run.join("serial.log")).unwrap_or_default())
            .into_owned()
    }

    /// The last `n` lines of the serial log, ANSI colour codes removed.
    pub fn serial_tail(&self, n: usize) -> String {
        let s = strip_ansi(&self.serial());
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn ssh_command(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=15",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=8",
            "-i",
        ])
        .arg(&self.key)
        .args(["-p", &self.port.to_string(), "root@127.0.0.1", remote]);
        c
    }

    /// Runs `remote` as root in the VM; returns its output whatever the exit code. SSH's own
    /// failures (exit 255: the VM restarting firewalld or sshd under us) are retried for a minute.
    pub fn exec(&self, remote: &str) -> Result<Output> {
        let mut tries = 0;
        loop {
            let out = self
                .ssh_command(remote)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("ssh {remote}"))?;
            tries += 1;
            if out.status.code() != Some(255) || tries >= 12 || !self.alive() {
                return Ok(out);
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }

    /// Runs `remote` as root, feeding `input` on stdin (secrets travel this way, never argv).
    /// SSH's own failures are retried like [`Vm::exec`]; `remote` must be idempotent.
    pub fn exec_with_input(&self, remote: &str, input: &[u8]) -> Result<Output> {
        let mut tries = 0;
        loop {
            let out = self.exec_with_input_once(remote, input)?;
            tries += 1;
            if out.status.code() != Some(255) || tries >= 12 || !self.alive() {
                return Ok(out);
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }

    fn exec_with_input_once(&self, remote: &str, input: &[u8]) -> Result<Output> {
        let mut child = self
            .ssh_command(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("ssh {remote}"))?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(input)?;
        Ok(child.wait_with_output()?)
    }

    /// Runs `remote` as root and returns stdout; a non-zero exit is an error carrying both streams.
    pub fn sh(&self, remote: &str) -> Result<String> {
        let out = self.exec(remote)?;
        if !out.status.success() {
            bail!(
                "in the VM: `{remote}` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `remote` as the appliance user with its runtime dir and user bus.
    pub fn user_sh(&self, user: &str, uid: u32, remote: &str) -> Result<String> {
        self.sh(&format!(
            "cd /tmp && runuser -u {user} -- env XDG_RUNTIME_DIR=/run/user/{uid} \
             DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus sh -c {}",
            shell_quote(remote)
        ))
    }

    /// Copies a file out of the VM.
    pub fn fetch(&self, remote: &str, local: &Path) -> Result<()> {
        let out = self
            .ssh_command(&format!("cat {}", shell_quote(remote)))
            .output()?;
        if !out.status.success() {
            bail!(
                "copy {remote} out of the VM: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::write(local, &out.stdout).with_context(|| format!("write {}", local.display()))
    }

    /// Waits until SSH answers, qemu dies, or `deadline` passes.
    pub fn wait_for_ssh(&self, deadline: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            if !self.alive() {
                bail!(
                    "qemu exited before SSH came up; qemu said: {}",
                    fs::read_to_string(self.run.join("qemu.out")).unwrap_or_default()
                );
            }
            if let Ok(out) = self.exec("true")
                && out.status.success()
            {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > deadline {
                bail!("SSH did not come up within {} s", deadline.as_secs());
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }

    /// Stops qemu (the whole process group).
    pub fn kill(&mut self) {
        if self.pgid > 0 {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", self.pgid)])
                .status();
            for _ in 0..50 {
                if !self.alive() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.pgid)])
                .stderr(Stdio::null())
                .status();
            self.pgid = 0;
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Removes ANSI escape sequences (the console is coloured).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

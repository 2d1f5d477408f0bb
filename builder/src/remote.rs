//! Running the appliance's `mms-backupd` over SSH on the tailnet, like the original
//! playbooks did: `ssh <admin>@<tailscale.hostname> sudo -n /usr/local/bin/mms-backupd …`.
//!
//! The restore identity is streamed on the SSH session's stdin (`--identity -`), so the
//! private key is never written on the VM. Environment overrides, for unusual setups and
//! tests: `MMS_SSH_CONFIG` (an `ssh -F` file), `MMS_SSH_USER` (login user; default: the
//! cloud image's admin account, `fedora` or `debian`), `MMS_REMOTE_BACKUPD` (the remote
//! command prefix; default `sudo -n /usr/local/bin/mms-backupd --config /etc/mms/backupd.yml`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

use crate::config::{Site, VmOs};

/// `ssh -F` file used instead of the user's default configuration.
pub const SSH_CONFIG_ENV: &str = "MMS_SSH_CONFIG";
/// Login user on the appliance.
pub const SSH_USER_ENV: &str = "MMS_SSH_USER";
/// Remote command prefix that runs mms-backupd.
pub const REMOTE_BACKUPD_ENV: &str = "MMS_REMOTE_BACKUPD";
/// The default remote command prefix.
pub const DEFAULT_REMOTE_BACKUPD: &str =
    "sudo -n /usr/local/bin/mms-backupd --config /etc/mms/backupd.yml";

/// How to reach mms-backupd on the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// SSH host (the tailnet name).
    pub host: String,
    /// Login user.
    pub user: String,
    /// `ssh -F` file, if any.
    pub ssh_config: Option<PathBuf>,
    /// Remote command prefix (already shell syntax).
    pub backupd: String,
}

impl Remote {
    /// The appliance of a site, with the environment overrides applied.
    pub fn for_site(site: &Site) -> Remote {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Remote {
            host: site.tailscale.hostname.clone(),
            user: env(SSH_USER_ENV).unwrap_or_else(|| default_user(site.vm.os).to_string()),
            ssh_config: env(SSH_CONFIG_ENV).map(PathBuf::from),
            backupd: env(REMOTE_BACKUPD_ENV).unwrap_or_else(|| DEFAULT_REMOTE_BACKUPD.to_string()),
        }
    }

    /// The ssh command for `mms-backupd ARGS…` (a TTY is requested when `tty`).
    pub fn command(&self, args: &[&str], tty: bool) -> Command {
        let mut cmd = Command::new("ssh");
        if let Some(f) = &self.ssh_config {
            cmd.arg("-F").arg(f);
        }
        cmd.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]);
        cmd.arg(if tty { "-t" } else { "-T" });
        cmd.arg("-l").arg(&self.user).arg(&self.host).arg("--");
        cmd.arg(remote_command_line(&self.backupd, args));
        cmd
    }

    /// Runs `mms-backupd ARGS…`; stdout/stderr pass through. `stdin` is streamed to the
    /// remote command's stdin (and nothing else is). Returns the remote exit status.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<ExitStatus> {
        let tty =
            stdin.is_none() && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        let mut cmd = self.command(args, tty);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else if tty {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .context("cannot run ssh (install the OpenSSH client)")?;
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().context("ssh stdin")?;
            let written = pipe.write_all(data);
            drop(pipe);
            if let Err(e) = written {
                let _ = child.wait();
                return Err(e).context("streaming to the remote mms-backupd");
            }
        }
        let status = child.wait().context("waiting for ssh")?;
        if status.code() == Some(255) {
            bail!(
                "ssh to {}@{} failed (exit 255): is the appliance up and on the tailnet?",
                self.user,
                self.host
            );
        }
        Ok(status)
    }
}

/// The cloud image's admin account, which holds `vm.ssh_authorized_keys` and may sudo.
pub fn default_user(os: VmOs) -> &'static str {
    match os {
        VmOs::Fedora => "fedora",
        VmOs::Debian => "debian",
    }
}

/// Quotes one word for the remote POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `PREFIX 'arg' …`: the command line ssh hands to the remote shell.
pub fn remote_command_line(prefix: &str, args: &[&str]) -> String {
    let mut line = prefix.to_string();
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    line
}

/// Reads an identity file for streaming (kept in memory only).
pub fn read_identity(path: &Path) -> Result<Vec<u8>> {
    let data =
        std::fs::read(path).with_context(|| format!("cannot read identity {}", path.display()))?;
    if data.len() > 1 << 20 {
        bail!(
            "identity {} is larger than 1 MiB; expected an age identity or SSH private key",
            path.display()
        );
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("radarr"), "radarr");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            remote_command_line(
                "sudo -n mms-backupd",
                &["restore", "--archive", "x; rm -rf /"]
            ),
            "sudo -n mms-backupd restore --archive 'x; rm -rf /'"
        );
    }

    /// A real sshd on 127.0.0.1 (own host key and config), a stand-in mms-backupd that
    /// records its arguments and stdin.
    #[test]
    fn runs_backupd_over_real_ssh_and_streams_the_identity() {
        use std::os::unix::fs::PermissionsExt;
        let which = |t: &str| {
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(t))
                .find(|p| p.is_file())
                .unwrap_or_else(|| {
                    panic!("`{t}` is not installed: run scripts/setup-test-env.sh (as root) first")
                })
        };
        let sshd = which("sshd");
        which("ssh");
        which("ssh-keygen");
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let keygen = |f: &str| {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(p.join(f))
                .status()
                .unwrap();
            assert!(st.success());
        };
        keygen("hostkey");
        keygen("client");
        std::fs::copy(p.join("client.pub"), p.join("authorized_keys")).unwrap();
        let port = 30000 + (std::process::id() % 20000) as u16;
        let id = |flag: &str| {
            String::from_utf8(Command::new("id").arg(flag).output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_string()
        };
        let me = id("-un");
        if id("-u") == "0" {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        std::fs::write(
            p.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 LogLevel ERROR\nAllowUsers {me}\n",
                hk = p.join("hostkey").display(),
                ak = p.join("authorized_keys").display(),
                pid = p.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let mut server = Command::new(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(p.join("sshd_config"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(st)) = server.try_wait() {
                panic!("sshd exited: {st}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _server = Kill(server);
        let hostkey = std::fs::read_to_string(p.join("hostkey.pub")).unwrap();
        std::fs::write(
            p.join("known_hosts"),
            format!("[127.0.0.1]:{port} {hostkey}"),
        )
        .unwrap();
        std::fs::write(
            p.join("ssh_config"),
            format!(
                "Host mms-test\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {id}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n  StrictHostKeyChecking yes\n",
                id = p.join("client").display(),
                kh = p.join("known_hosts").display()
            ),
        )
        .unwrap();
        // Stand-in: records argv and a hash of stdin; fails when asked to.
        let stand_in = p.join("mms-backupd");
        let log = p.join("calls.log");
        std::fs::write(
            &stand_in,
            format!(
                "#!/bin/sh\nprintf '%s|' \"$@\" >> {log}\nif [ \"$3\" = '--identity' ] || echo \"$*\" | grep -q -- '--identity -'; then printf ' stdin=%s' \"$(sha256sum | cut -c1-16)\" >> {log}; fi\necho >> {log}\ncase \"$*\" in *fail*) echo 'mms-backupd: error: failing as asked' >&2; exit 1;; esac\necho remote-ok\n",
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
        let remote = Remote {
            host: "mms-test".into(),
            user: me,
            ssh_config: Some(p.join("ssh_config")),
            backupd: format!("{} --config /etc/mms/backupd.yml", stand_in.display()),
        };
        let st = remote
            .run(&["backup", "--service", "radarr"], None)
            .unwrap();
        assert!(st.success());
        let identity = b"AGE-SECRET-KEY-1TESTTESTTEST\n";
        let st = remote
            .run(
                &[
                    "restore",
                    "--service",
                    "radarr",
                    "--archive",
                    "radarr-2025-05-15T083844Z.tar.zst.age",
                    "--identity",
                    "-",
                ],
                Some(identity),
            )
            .unwrap();
        assert!(st.success());
        let st = remote
            .run(&["backup", "--service", "fail me"], None)
            .unwrap();
        assert_eq!(st.code(), Some(1));
        let calls = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = calls.lines().collect();
        assert_eq!(
            lines[0],
            "--config|/etc/mms/backupd.yml|backup|--service|radarr|"
        );
        use sha2::Digest;
        let want = hex::encode(sha2::Sha256::digest(identity));
        assert_eq!(
            lines[1],
            format!(
                "--config|/etc/mms/backupd.yml|restore|--service|radarr|--archive|radarr-2025-05-15T083844Z.tar.zst.age|--identity|-| stdin={}",
                &want[..16]
            )
        );
        assert_eq!(
            lines[2],
            "--config|/etc/mms/backupd.yml|backup|--service|fail me|"
        );
        // Unreachable host: a clear error, not a hang.
        let bad = Remote {
            host: "mms-nowhere.invalid".into(),
            ..remote
        };
        let e = bad.run(&["list"], None).unwrap_err().to_string();
        assert!(e.contains("ssh to"), "{e}");
    }
}

//! `tailscale`: enroll with the auth key, wait for `Running`, serve each configured port.
//!
//! Only the `tailscale` CLI is used: `tailscale up --auth-key=file:<path> --hostname=<name>`
//! (`<hostname>-next` on a rebuild), `tailscale status --json` (`BackendState`),
//! `tailscale serve --bg --https=PORT TARGET` per port, then `tailscale serve status --json`
//! to confirm (serve can exit 0 without configuring anything when HTTPS certificates are off
//! in the tailnet). Every call has a timeout. Idempotent: a node that is already `Running` is
//! not enrolled again; `serve --bg` with the same mapping is a no-op. The auth key file is
//! deleted once the node is `Running`.

use super::{Context, NextAction, Outcome, Step, StepError};
use crate::exec;
use crate::status::Phase;
use anyhow::{Context as _, anyhow};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The `tailscale` step.
#[derive(Debug)]
pub struct TailscaleStep;

const CERTS_HINT: &str = "tailscale serve --https waits forever (or does nothing) when HTTPS \
certificates are not enabled for the tailnet";
const CERTS_NEXT: &str = "enable MagicDNS and HTTPS Certificates in the Tailscale admin console \
(DNS page), then `systemctl restart mms-firstboot`";

/// `BackendState` from `tailscale status --json` (e.g. `Running`, `NeedsLogin`, `Starting`).
pub fn backend_state(tailscale: &Path, timeout: Duration) -> anyhow::Result<String> {
    let out = exec::run(Command::new(tailscale).args(["status", "--json"]), timeout)?;
    // `status --json` prints JSON even when it exits non-zero (e.g. NeedsLogin on old clients).
    let text = out.stdout_text();
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "`tailscale status --json` did not print JSON ({e}); exit {}: {}",
            out.status,
            out.stderr_tail(3)
        )
    })?;
    v.get("BackendState")
        .and_then(|s| s.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("`tailscale status --json` has no BackendState"))
}

/// Polls `status --json` until tailscaled answers; returns its `BackendState`.
fn wait_answer(ctx: &Context, timeout: Duration) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        match backend_state(&ctx.env.tailscale, Duration::from_secs(30)) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() >= timeout => {
                return Err(e.context(format!(
                    "tailscaled did not answer within {} s (is tailscaled.service running?)",
                    timeout.as_secs()
                )));
            }
            Err(_) => std::thread::sleep(ctx.env.poll),
        }
    }
}

/// Polls `status --json` until `Running` or `timeout`.
fn wait_running(ctx: &Context, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last;
    loop {
        match backend_state(&ctx.env.tailscale, Duration::from_secs(30)) {
            Ok(s) if s == "Running" => return Ok(()),
            Ok(s) => last = format!("BackendState {s}"),
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= timeout {
            return Err(anyhow!(
                "tailscale did not reach BackendState Running within {} s (last: {last})",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(ctx.env.poll);
    }
}

/// The `tailscale up` arguments (no secret: the key is passed as `file:`).
pub fn up_args(key_file: &Path, hostname: &str, timeout_s: u32) -> Vec<String> {
    vec![
        "up".into(),
        format!("--auth-key=file:{}", key_file.display()),
        format!("--hostname={hostname}"),
        format!("--timeout={timeout_s}s"),
    ]
}

/// The `tailscale serve` arguments for one port.
pub fn serve_args(port: u16, target: &str) -> Vec<String> {
    vec![
        "serve".into(),
        "--bg".into(),
        format!("--https={port}"),
        target.to_string(),
    ]
}

/// Ports with an HTTPS handler in `tailscale serve status --json` (`{"TCP": {"443": {"HTTPS": true}}}`).
pub fn served_https_ports(json: &str) -> anyhow::Result<Vec<u16>> {
    let v: serde_json::Value = serde_json::from_str(json.trim().trim_start_matches('\u{feff}'))
        .or_else(|e| {
            if json.trim().is_empty() {
                Ok(serde_json::json!({}))
            } else {
                Err(e)
            }
        })
        .context("`tailscale serve status --json` did not print JSON")?;
    let mut ports: Vec<u16> = v
        .get("TCP")
        .and_then(|t| t.as_object())
        .map(|m| {
            m.iter()
                .filter(|(_, h)| h.get("HTTPS").and_then(|b| b.as_bool()) == Some(true))
                .filter_map(|(p, _)| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    Ok(ports)
}

impl Step for TailscaleStep {
    fn phase(&self) -> Phase {
        Phase::Tailscale
    }

    fn run(&self, ctx: &Context) -> Result<Outcome, StepError> {
        let ts = &ctx.config.tailscale;
        let bin = &ctx.env.tailscale;
        let hostname = ts.enroll_hostname();
        let key = ctx.secrets_dir().join(&ts.auth_key_secret);
        let up_timeout = Duration::from_secs(u64::from(ts.up_timeout_s));
        let check = "check `tailscale status` and `journalctl -u tailscaled`, then \
                     `systemctl restart mms-firstboot`";

        // tailscaled may still be starting: wait until it answers before deciding anything.
        let state = wait_answer(ctx, up_timeout).next_action(check)?;
        let already = state == "Running";
        if !already {
            // "Stopped" = logged in before (e.g. an earlier run) but down: no key needed.
            let relogin = state == "Stopped" && !key.exists();
            if !key.exists() && !relogin {
                return Err(anyhow!(
                    "tailscale is not logged in and the auth key {} is gone (used or never delivered)",
                    key.display()
                ))
                .next_action(
                    "run `mms-build --apply` again to deliver a fresh tailscale_auth_key",
                );
            }
            tracing::info!(%hostname, "tailscale up");
            let mut args = up_args(&key, &hostname, ts.up_timeout_s);
            if relogin {
                args.retain(|a| !a.starts_with("--auth-key="));
            }
            exec::run(
                Command::new(bin).args(args),
                up_timeout + Duration::from_secs(15),
            )
            .with_context(|| format!("tailscale up --hostname={hostname}"))
            .next_action(check)?
            .checked(format!("tailscale up --hostname={hostname}"))
            .next_action(
                "check that the auth key is valid, reusable or unused, and not expired \
                     (Tailscale admin console → Settings → Keys); put a new one in secrets.age \
                     and run `mms-build --apply` again",
            )?;
        }
        wait_running(ctx, up_timeout).next_action(check)?;
        crate::fsutil::remove_if_exists(&key)
            .with_context(|| format!("removing the used auth key {}", key.display()))
            .next_action(format!("remove {} by hand", key.display()))?;

        let serve_timeout = Duration::from_secs(u64::from(ts.serve_timeout_s));
        for (port, target) in &ts.serve {
            tracing::info!(port, %target, "tailscale serve");
            let out = match exec::run(
                Command::new(bin).args(serve_args(*port, target)),
                serve_timeout,
            ) {
                Ok(o) => o,
                Err(e @ exec::ExecError::Timeout { .. }) => {
                    return Err(anyhow!(
                        "tailscale serve --bg --https={port} {target}: {e}; {CERTS_HINT}"
                    ))
                    .next_action(CERTS_NEXT);
                }
                Err(e) => return Err(e).next_action(check),
            };
            out.checked(format!("tailscale serve --bg --https={port} {target}"))
                .next_action(CERTS_NEXT)?;
        }
        if !ts.serve.is_empty() {
            let out = exec::run(
                Command::new(bin).args(["serve", "status", "--json"]),
                serve_timeout,
            )
            .next_action(check)?
            .checked("tailscale serve status --json")
            .next_action(check)?;
            let served = served_https_ports(&out.stdout_text()).next_action(check)?;
            let missing: Vec<String> = ts
                .serve
                .keys()
                .filter(|p| !served.contains(p))
                .map(|p| p.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(anyhow!(
                    "tailscale serve exited but HTTPS port(s) {} are not configured; {CERTS_HINT}",
                    missing.join(", ")
                ))
                .next_action(CERTS_NEXT);
            }
        }
        Ok(Outcome::Done(format!(
            "{}{hostname}, serving {} port(s)",
            if already {
                "already enrolled as "
            } else {
                "enrolled as "
            },
            ts.serve.len()
        )))
    }
}

/// `mms-firstboot cutover`: rename the node from `<hostname>-next` to `<hostname>`.
pub fn cutover(tailscale: &Path, hostname: &str) -> anyhow::Result<()> {
    exec::run(
        Command::new(tailscale).args(["set", &format!("--hostname={hostname}")]),
        Duration::from_secs(60),
    )?
    .checked(format!("tailscale set --hostname={hostname}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_never_carry_the_key() {
        let a = up_args(
            Path::new("/etc/mms/secrets/tailscale_auth_key"),
            "mms-next",
            60,
        );
        assert_eq!(
            a,
            [
                "up",
                "--auth-key=file:/etc/mms/secrets/tailscale_auth_key",
                "--hostname=mms-next",
                "--timeout=60s"
            ]
        );
        assert_eq!(
            serve_args(443, "http://127.0.0.1:8096"),
            ["serve", "--bg", "--https=443", "http://127.0.0.1:8096"]
        );
    }

    #[test]
    fn served_ports_from_serve_status() {
        let j = r#"{"TCP":{"443":{"HTTPS":true},"22":{"TCPForward":"127.0.0.1:22"},"7878":{"HTTPS":true}},"Web":{}}"#;
        assert_eq!(served_https_ports(j).unwrap(), vec![443, 7878]);
        assert_eq!(served_https_ports("{}").unwrap(), Vec::<u16>::new());
        assert_eq!(served_https_ports("").unwrap(), Vec::<u16>::new());
        assert!(served_https_ports("nope").is_err());
    }
}

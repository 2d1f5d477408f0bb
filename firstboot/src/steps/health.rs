//! `health`: plain-HTTP checks of every service against loopback, with per-service start
//! periods and one overall deadline (`health_deadline_s`).
//!
//! A service passes on its first answer with the expected status (and body substring).
//! Failures inside its start period do not count; after it, three failures in a row or the
//! overall deadline make it unhealthy. Results land in `<state_dir>/health.json` and, through
//! the run loop, in the status file's `services`.

use super::{Context, NextAction, Outcome, Step, StepError};
use crate::config::Health;
use crate::status::{Phase, ServiceHealth};
use anyhow::{Result, anyhow, bail};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The `health` step.
#[derive(Debug)]
pub struct HealthStep;

/// Consecutive failures after the start period that make a service unhealthy.
const RETRIES: u32 = 3;

/// A parsed `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host.
    pub host: String,
    /// Port (default 80).
    pub port: u16,
    /// Path and query (default `/`).
    pub path: String,
}

/// Parses a plain `http://` URL.
pub fn parse_url(url: &str) -> Result<Url> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| anyhow!("{url:?}: port {p:?} is not a number"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        bail!("{url:?} has no host");
    }
    Ok(Url {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// One GET; returns (status, body).
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String)> {
    let u = parse_url(url)?;
    let addr = (u.host.as_str(), u.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{} does not resolve", u.host))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: mms-firstboot\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        u.path, u.host, u.port
    );
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    s.take(256 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status line from {url}"))?;
    Ok((status, body.to_string()))
}

/// Does one answer satisfy the check? `Err` says what was wrong.
pub fn judge(h: &Health, status: u16, body: &str) -> Result<(), String> {
    if status != h.expect_status {
        return Err(format!("HTTP {status}, expected {}", h.expect_status));
    }
    if let Some(want) = &h.expect_body
        && !body.contains(want.as_str())
    {
        let shown: String = body.chars().take(80).collect();
        return Err(format!("body {shown:?} lacks {want:?}"));
    }
    Ok(())
}

/// The results of the last `health` run (empty when it has not run).
pub fn last_results(ctx: &Context) -> Vec<ServiceHealth> {
    std::fs::read_to_string(ctx.state_dir().join("health.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Checks every service until each has passed or failed.
pub fn check_all(ctx: &Context) -> Vec<ServiceHealth> {
    struct S<'a> {
        name: &'a str,
        h: &'a Health,
        next: Instant,
        fails: u32,
        last: String,
        result: Option<ServiceHealth>,
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(u64::from(ctx.config.health_deadline_s));
    let mut states: Vec<S> = ctx
        .config
        .services
        .iter()
        .map(|s| S {
            name: &s.name,
            h: &s.health,
            next: start,
            fails: 0,
            last: "not checked".into(),
            result: None,
        })
        .collect();
    while states.iter().any(|s| s.result.is_none()) {
        let now = Instant::now();
        for s in states
            .iter_mut()
            .filter(|s| s.result.is_none() && s.next <= now)
        {
            let timeout = Duration::from_secs(10);
            let answer = get(&s.h.url, timeout)
                .map_err(|e| format!("{e:#}"))
                .and_then(|(st, body)| judge(s.h, st, &body).map(|_| st));
            let since = now.duration_since(start);
            match answer {
                Ok(st) => {
                    s.result = Some(ServiceHealth {
                        name: s.name.to_string(),
                        healthy: true,
                        detail: format!("HTTP {st} after {} s", since.as_secs()),
                    });
                }
                Err(why) => {
                    if since >= Duration::from_secs(u64::from(s.h.start_period_s)) {
                        s.fails += 1;
                    }
                    s.last = why;
                    if s.fails >= RETRIES || now >= deadline {
                        s.result = Some(ServiceHealth {
                            name: s.name.to_string(),
                            healthy: false,
                            detail: format!("{} ({} failed checks)", s.last, s.fails.max(1)),
                        });
                    }
                }
            }
            s.next = now + Duration::from_secs(u64::from(s.h.interval_s.max(1)));
        }
        if Instant::now() >= deadline {
            for s in states.iter_mut().filter(|s| s.result.is_none()) {
                s.result = Some(ServiceHealth {
                    name: s.name.to_string(),
                    healthy: false,
                    detail: format!("overall deadline passed; last: {}", s.last),
                });
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    states.into_iter().filter_map(|s| s.result).collect()
}

impl Step for HealthStep {
    fn phase(&self) -> Phase {
        Phase::Health
    }

    fn run(&self, ctx: &Context) -> Result<Outcome, StepError> {
        let results = check_all(ctx);
        let json = serde_json::to_string_pretty(&results).unwrap_or_else(|_| "[]".into());
        crate::fsutil::write_atomic(&ctx.state_dir().join("health.json"), json.as_bytes(), 0o644)
            .next_action("check the disk, then `systemctl restart mms-firstboot`")?;
        let bad: Vec<&ServiceHealth> = results.iter().filter(|r| !r.healthy).collect();
        if bad.is_empty() {
            return Ok(Outcome::Done(format!(
                "{} service(s) healthy",
                results.len()
            )));
        }
        let list: Vec<String> = bad
            .iter()
            .map(|r| format!("{}: {}", r.name, r.detail))
            .collect();
        Err(anyhow!("unhealthy: {}", list.join("; "))).next_action(format!(
            "look at `journalctl _UID={} _SYSTEMD_USER_UNIT=<service>.service` for {}; then \
             `systemctl restart mms-firstboot` (only the health check runs again)",
            ctx.config.user.uid,
            bad.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/sabnzbd/api?mode=version").unwrap(),
            Url {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/sabnzbd/api?mode=version".into()
            }
        );
        assert_eq!(parse_url("http://h").unwrap().port, 80);
        assert!(parse_url("https://h/").is_err());
        assert!(parse_url("http://h:x/").is_err());
    }

    #[test]
    fn judging() {
        let h = Health {
            url: "http://127.0.0.1/ping".into(),
            expect_status: 200,
            expect_body: Some("OK".into()),
            start_period_s: 0,
            interval_s: 1,
        };
        assert!(judge(&h, 200, r#"{"status":"OK"}"#).is_ok());
        assert!(
            judge(&h, 500, r#"{"status":"Error"}"#)
                .unwrap_err()
                .contains("HTTP 500")
        );
        assert!(judge(&h, 200, "nope").unwrap_err().contains("lacks"));
    }
}

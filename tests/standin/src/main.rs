//! `mms-standin`: the stand-in for every service container in the appliance VM test
//! (tests/appliance). No registry is reachable from the test machines, so each container of the
//! rendered site runs a tiny local image whose entrypoint is this program. It answers the real
//! app's health path on the real port, keeps real SQLite files under `/config`, honours the
//! linuxserver.io `PUID`/`PGID` convention, runs a real PostgreSQL for Immich's database, and is
//! also the `curl`, `redis-cli`/`valkey-cli` and `immich-healthcheck` the units' health commands
//! call (multi-call binary: the name it is invoked by picks the tool).
//!
//! ```text
//! mms-standin serve ROLE     run the stand-in app ROLE (see `mms-standin roles`)
//! mms-standin postgres       the postgres image entrypoint (initdb on first start, then exec)
//! mms-standin roles          list roles and ports
//! curl [-fsS] [-o FILE] URL  (when invoked as curl)
//! ```

mod http;
mod postgres;
mod resp;
mod roles;
mod state;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{SigSet, Signal};

use crate::roles::Kind;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("mms-standin")
        .to_string();
    let rest = args.get(1..).unwrap_or_default();
    let result = match name.as_str() {
        "curl" => return curl(rest),
        "redis-cli" | "valkey-cli" => resp::cli(rest),
        "immich-healthcheck" => immich_healthcheck(),
        _ => subcommand(rest),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn subcommand(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("serve") => {
            let role = args
                .get(1)
                .ok_or_else(|| anyhow!("usage: mms-standin serve ROLE"))?;
            serve(role)
        }
        Some("postgres") => postgres::entrypoint(),
        Some("roles") => {
            for r in roles::ROLES {
                let port = match r.kind {
                    Kind::Http { port, .. } | Kind::Resp { port } => port,
                };
                println!("{} {port}", r.name);
            }
            Ok(())
        }
        Some("curl") => match curl(&args[1..]) {
            c if c == ExitCode::SUCCESS => Ok(()),
            _ => bail!("curl failed"),
        },
        Some("redis-cli") => resp::cli(&args[1..]),
        other => bail!("unknown subcommand {other:?}; expected serve ROLE | postgres | roles"),
    }
}

/// PID 1 in a container ignores SIGTERM unless it handles it: block it in every thread and let
/// one thread wait for it, so `podman stop` / `systemctl stop` end the app at once.
fn exit_on_sigterm() -> Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().context("block SIGTERM")?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("mms-standin: {sig}, exiting");
        }
        std::process::exit(0);
    });
    Ok(())
}

fn serve(role_name: &str) -> Result<()> {
    let role = roles::find(role_name).ok_or_else(|| {
        anyhow!(
            "unknown role {role_name:?}; known: {}",
            roles::ROLES
                .iter()
                .map(|r| r.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    exit_on_sigterm()?;
    let config = Path::new("/config");
    let ids = state::lsio_ids(
        std::env::var("PUID").ok().as_deref(),
        std::env::var("PGID").ok().as_deref(),
    )?;
    if let Some((uid, gid)) = ids {
        state::drop_to(config, uid, gid)?;
    }
    eprintln!(
        "mms-standin: role {} as uid {} gid {}",
        role.name,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    match role.kind {
        Kind::Resp { port } => resp::serve(port),
        Kind::Http {
            port,
            routes,
            dbs,
            data_dirs,
            needs,
        } => {
            state::write_dbs(config, role.name, dbs)?;
            state::write_data_dirs(Path::new("/data"), data_dirs)?;
            for (var, default, port) in needs {
                let host = std::env::var(var).unwrap_or_else(|_| (*default).to_string());
                wait_for(&host, *port);
            }
            http::serve(port, routes)
        }
    }
}

/// Waits until `host:port` accepts TCP connections (Immich waits for its database and valkey).
fn wait_for(host: &str, port: u16) {
    use std::net::{TcpStream, ToSocketAddrs};
    for attempt in 1u64.. {
        let ok = (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
        if ok {
            eprintln!("mms-standin: {host}:{port} is reachable");
            return;
        }
        if attempt % 10 == 1 {
            eprintln!("mms-standin: waiting for {host}:{port}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn immich_healthcheck() -> Result<()> {
    let port = std::env::var("IMMICH_PORT").unwrap_or_else(|_| "2283".into());
    let (status, body) = http::get(
        &format!("http://127.0.0.1:{port}/api/server/ping"),
        Duration::from_secs(5),
    )?;
    if status != 200 || !body.contains("pong") {
        bail!("ping answered {status} {body:?}");
    }
    Ok(())
}

/// The subset of curl the health commands use: `-f`, `-s`, `-S`, `-L`, `-o FILE`, `-m SECS`,
/// `--fail`, `--silent`, `--show-error`, `--output`, `--max-time`, one http:// URL.
/// Exit codes as curl: 7 cannot connect, 22 HTTP error with `-f`, 2 bad usage.
fn curl(args: &[String]) -> ExitCode {
    let mut fail = false;
    let mut output: Option<String> = None;
    let mut timeout = Duration::from_secs(30);
    let mut url = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fail" => fail = true,
            "--output" | "-o" => output = it.next().cloned(),
            "--max-time" | "-m" | "--connect-timeout" => {
                if let Some(secs) = it.next().and_then(|s| s.parse::<f64>().ok()) {
                    timeout = Duration::from_secs_f64(secs.max(0.1));
                }
            }
            "-H" | "--header" | "-w" | "--write-out" | "-X" | "--request" | "-A"
            | "--user-agent" | "--retry" => {
                it.next();
            }
            s if s.starts_with("--") => {}
            s if s.starts_with('-') && s.len() > 1 => {
                fail |= s.contains('f');
                if s.ends_with('o') {
                    output = it.next().cloned();
                } else if s.ends_with('m') {
                    it.next();
                }
            }
            s => url = Some(s.to_string()),
        }
    }
    let Some(url) = url else {
        eprintln!("curl: no URL specified");
        return ExitCode::from(2);
    };
    match http::get(&url, timeout) {
        Err(e) => {
            eprintln!("curl: ({url}) {e:#}");
            ExitCode::from(7)
        }
        Ok((status, body)) => {
            if fail && status >= 400 {
                eprintln!("curl: (22) The requested URL returned error: {status}");
                return ExitCode::from(22);
            }
            match output.as_deref() {
                None | Some("-") => print!("{body}"),
                Some("/dev/null") => {}
                Some(f) => {
                    if let Err(e) = std::fs::write(f, body) {
                        eprintln!("curl: write {f}: {e}");
                        return ExitCode::from(23);
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}

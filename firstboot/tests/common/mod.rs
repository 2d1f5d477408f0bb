//! Helpers shared by firstboot's integration tests: configs, tool checks, stand-ins.
#![allow(dead_code, clippy::unwrap_used)]

use mms_firstboot::config::{Config, Health, Paths, Service, StateSource, Tailscale, User};
use mms_firstboot::steps::{Context, Env};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

/// Fails (never skips) when a tool the test needs is missing.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new(tool).is_file();
    assert!(
        found,
        "`{tool}` is not installed: run `sudo bash scripts/setup-test-env.sh` (scripts/setup/40-firstboot.sh installs it)"
    );
}

/// A minimal config: user mms 1100, fresh state, no services.
pub fn base_config() -> Config {
    Config {
        user: User {
            name: "mms".into(),
            uid: 1100,
            gid: 1100,
            home: PathBuf::from("/home/mms"),
        },
        paths: Paths::default(),
        tailscale: Tailscale {
            hostname: "mms".into(),
            rebuild: false,
            auth_key_secret: "tailscale_auth_key".into(),
            serve: BTreeMap::new(),
            up_timeout_s: 10,
            serve_timeout_s: 10,
        },
        state: StateSource::Fresh,
        services: vec![],
        health_deadline_s: 20,
        network: None,
    }
}

/// A service without migration settings.
pub fn service(name: &str, units: &[&str], health_url: &str) -> Service {
    Service {
        name: name.into(),
        units: units.iter().map(|u| u.to_string()).collect(),
        config_dir: PathBuf::from(format!("/home/mms/config/{name}")),
        health: Health {
            url: health_url.into(),
            expect_status: 200,
            expect_body: Some("OK".into()),
            start_period_s: 0,
            interval_s: 1,
        },
        migrate: None,
        podman_secrets: BTreeMap::new(),
        postgres: None,
    }
}

/// A context rooted at `root` with fast polling.
pub fn context(root: &Path, config: Config) -> Context {
    Context {
        root: root.to_path_buf(),
        config,
        env: Env {
            tailscale: PathBuf::from("tailscale"),
            ssh: PathBuf::from("ssh"),
            rsync: PathBuf::from("rsync"),
            user_bus: None,
            drop_privileges: false,
            poll: Duration::from_millis(50),
            secrets_timeout: Duration::from_secs(2),
            start_timeout: Duration::from_secs(10),
        },
    }
}

/// Writes a secret file into the context's delivery dir (0600).
pub fn deliver(ctx: &Context, name: &str, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = ctx.secrets_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The stand-in `tailscale` CLI (the only fake in these tests): records every call in
/// `<dir>/calls.log`; behaviour switches are files in `<dir>`: `up-fail`, `serve-hang`,
/// `serve-noop`. Returns the path of the executable (`<dir>/bin/tailscale`).
pub fn tailscale_standin(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = r#"#!/bin/sh
d="$(cd "$(dirname "$0")/.." && pwd)"
echo "$*" >> "$d/calls.log"
case "$1" in
status)
  printf '{"BackendState":"%s","Self":{"HostName":"%s"}}\n' "$(cat "$d/state" 2>/dev/null || echo NeedsLogin)" "$(cat "$d/hostname" 2>/dev/null)"
  ;;
up)
  if [ -f "$d/up-fail" ]; then echo "backend error: invalid key: unable to validate API key" >&2; exit 1; fi
  for a in "$@"; do
    case "$a" in
      --auth-key=file:*) k="${a#--auth-key=file:}"; [ -s "$k" ] || { echo "cannot read auth key $k" >&2; exit 1; } ;;
      --hostname=*) echo "${a#--hostname=}" > "$d/hostname" ;;
    esac
  done
  echo Running > "$d/state"
  ;;
serve)
  if [ "$2" = status ]; then
    printf '{"TCP":{'; sep=""
    for p in $(cat "$d/served" 2>/dev/null); do printf '%s"%s":{"HTTPS":true}' "$sep" "$p"; sep=","; done
    printf '}}\n'; exit 0
  fi
  if [ -f "$d/serve-hang" ]; then sleep 300; fi
  if [ -f "$d/serve-noop" ]; then echo "Serve is not enabled on your tailnet."; exit 0; fi
  for a in "$@"; do case "$a" in --https=*) echo "${a#--https=}" >> "$d/served" ;; esac; done
  ;;
set)
  for a in "$@"; do case "$a" in --hostname=*) echo "${a#--hostname=}" > "$d/hostname" ;; esac; done
  ;;
*) echo "stand-in tailscale: unexpected $*" >&2; exit 2 ;;
esac
"#;
    let p = bin.join("tailscale");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The recorded stand-in calls, one per line.
pub fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The systemd Manager stand-in: records StartUnit calls, answers with a job path and emits
/// `JobRemoved` for it afterwards (result `failed` for units in `fail`).
pub struct Manager {
    started: Arc<Mutex<Vec<String>>>,
    fail: HashSet<String>,
    conn: Arc<OnceLock<zbus::blocking::Connection>>,
    next: AtomicU32,
    subscribed: Arc<Mutex<bool>>,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn subscribe(&self) {
        *self.subscribed.lock().unwrap() = true;
    }

    fn reload(&self) {}

    fn start_unit(&self, name: String, mode: String) -> zbus::fdo::Result<OwnedObjectPath> {
        assert_eq!(mode, "replace");
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let path =
            OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}")).unwrap();
        self.started.lock().unwrap().push(name.clone());
        let result = if self.fail.contains(&name) {
            "failed"
        } else {
            "done"
        };
        let conn = self.conn.clone();
        let job = path.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // another job's signal first: the client must wait for its own
            let other = ObjectPath::try_from("/org/freedesktop/systemd1/job/999").unwrap();
            let c = conn.get().unwrap();
            c.emit_signal(
                None::<&str>,
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "JobRemoved",
                &(999u32, other, "other.service", "failed"),
            )
            .unwrap();
            c.emit_signal(
                None::<&str>,
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "JobRemoved",
                &(id, job.as_ref(), name.as_str(), result),
            )
            .unwrap();
        });
        Ok(path)
    }
}

pub struct Systemd {
    pub started: Arc<Mutex<Vec<String>>>,
    pub subscribed: Arc<Mutex<bool>>,
    _conn: Arc<OnceLock<zbus::blocking::Connection>>,
}

pub fn serve_manager(address: &str, fail: &[&str]) -> Systemd {
    let conn = zbus::blocking::connection::Builder::address(address)
        .unwrap()
        .build()
        .unwrap();
    serve_manager_on(conn, fail)
}

/// Serves the stand-in on an existing connection (e.g. one made with `connect_as`).
pub fn serve_manager_on(conn: zbus::blocking::Connection, fail: &[&str]) -> Systemd {
    let started = Arc::new(Mutex::new(Vec::new()));
    let subscribed = Arc::new(Mutex::new(false));
    let cell = Arc::new(OnceLock::new());
    let m = Manager {
        started: started.clone(),
        fail: fail.iter().map(|s| s.to_string()).collect(),
        conn: cell.clone(),
        next: AtomicU32::new(0),
        subscribed: subscribed.clone(),
    };
    conn.object_server()
        .at("/org/freedesktop/systemd1", m)
        .unwrap();
    conn.request_name("org.freedesktop.systemd1").unwrap();
    cell.set(conn).ok().unwrap();
    Systemd {
        started,
        subscribed,
        _conn: cell,
    }
}

/// Answers every request with `200 {"status":"OK"}` (or 500 when `ok` is false).
pub fn http_server(ok: bool) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let (code, body) = if ok {
                ("200 OK", r#"{"status":"OK"}"#)
            } else {
                ("500 Internal Server Error", r#"{"status":"Error"}"#)
            };
            let _ = write!(
                s,
                "HTTP/1.1 {code}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

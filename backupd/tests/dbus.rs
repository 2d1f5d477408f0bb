//! Unit stop/start around backup and restore, against a private `dbus-daemon` with a small
//! systemd-Manager stand-in served by this test (StopUnit/StartUnit/Subscribe/LoadUnit,
//! JobRemoved signals, Unit.ActiveState).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

#[derive(Default)]
struct State {
    log: Vec<String>,
    active: HashMap<String, String>,
    /// Job result StartUnit reports per unit (default "done").
    start_result: HashMap<String, String>,
    /// ActiveState after a successful start (default "active").
    after_start: HashMap<String, String>,
    jobs: u32,
    /// Directory whose archive count is recorded at each call.
    watch: Option<PathBuf>,
}

type Shared = Arc<Mutex<State>>;

fn unit_path(name: &str) -> String {
    format!(
        "/org/freedesktop/systemd1/unit/{}",
        name.replace(['.', '-'], "_")
    )
}

struct Manager {
    state: Shared,
    rt: tokio::runtime::Handle,
}

fn count_archives(dir: &Option<PathBuf>) -> usize {
    dir.as_ref().map_or(0, |d| archives(d).len())
}

impl Manager {
    fn job(&self, verb: &str, name: String, emitter: SignalEmitter<'_>) -> OwnedObjectPath {
        let mut s = self.state.lock().unwrap();
        s.jobs += 1;
        let id = s.jobs;
        let n = count_archives(&s.watch);
        s.log.push(format!("{verb} {name} archives={n}"));
        let result = if verb == "StartUnit" {
            s.start_result
                .get(&name)
                .cloned()
                .unwrap_or_else(|| "done".into())
        } else {
            "done".into()
        };
        let new_state = match (verb, result.as_str()) {
            ("StopUnit", _) => "inactive".to_string(),
            (_, "done") => s
                .after_start
                .get(&name)
                .cloned()
                .unwrap_or_else(|| "active".into()),
            _ => "failed".to_string(),
        };
        s.active.insert(name.clone(), new_state);
        let job = OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}")).unwrap();
        let emitter = emitter.into_owned();
        let j = job.clone();
        // Like systemd: the signal follows the method reply.
        self.rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Manager::job_removed(&emitter, id, j.as_ref(), &name, &result)
                .await
                .unwrap();
        });
        job
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn subscribe(&self) {
        self.state.lock().unwrap().log.push("Subscribe".into());
    }
    fn stop_unit(
        &self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] e: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        self.job("StopUnit", name, e)
    }
    fn start_unit(
        &self,
        name: String,
        _mode: String,
        #[zbus(signal_emitter)] e: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        self.job("StartUnit", name, e)
    }
    fn load_unit(&self, name: String) -> OwnedObjectPath {
        OwnedObjectPath::try_from(unit_path(&name)).unwrap()
    }
    #[zbus(signal)]
    async fn job_removed(
        e: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

struct Unit {
    name: String,
    state: Shared,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    fn active_state(&self) -> String {
        self.state
            .lock()
            .unwrap()
            .active
            .get(&self.name)
            .cloned()
            .unwrap_or_else(|| "active".into())
    }
}

struct Bus {
    daemon: Child,
    addr: String,
    state: Shared,
    _conn: zbus::Connection,
    _rt: tokio::runtime::Runtime,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn start_bus(dir: &Path, units: &[&str]) -> Bus {
    need("dbus-daemon");
    let sock = dir.join("bus");
    let addr = format!("unix:path={}", sock.display());
    let daemon = Command::new("dbus-daemon")
        .args([
            "--session",
            "--nofork",
            "--nopidfile",
            &format!("--address={addr}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state: Shared = Arc::default();
    let conn = rt.block_on(async {
        let mut b = zbus::connection::Builder::address(addr.as_str())
            .unwrap()
            .name("org.freedesktop.systemd1")
            .unwrap()
            .serve_at(
                "/org/freedesktop/systemd1",
                Manager {
                    state: state.clone(),
                    rt: tokio::runtime::Handle::current(),
                },
            )
            .unwrap();
        for u in units {
            b = b
                .serve_at(
                    unit_path(u),
                    Unit {
                        name: u.to_string(),
                        state: state.clone(),
                    },
                )
                .unwrap();
        }
        b.build().await.unwrap()
    });
    Bus {
        daemon,
        addr,
        state,
        _conn: conn,
        _rt: rt,
    }
}

fn log_of(bus: &Bus) -> Vec<String> {
    std::mem::take(&mut bus.state.lock().unwrap().log)
}

#[test]
fn backup_and_restore_stop_and_start_the_unit_on_every_path() {
    let d = tempfile::tempdir().unwrap();
    let bus = start_bus(d.path(), &["radarr.service"]);
    let env = [
        ("MMS_BACKUPD_SYSTEMD_BUS", bus.addr.as_str()),
        ("MMS_BACKUPD_HEALTH_TIMEOUT", "5"),
    ];
    let (id, r) = age_key(d.path());
    let live = d.path().join("live/radarr");
    make_tree(&live);
    let target = d.path().join("backups");
    bus.state.lock().unwrap().watch = Some(target.join("radarr"));
    let cfg = write_config(
        d.path(),
        &target,
        &[r],
        &format!(
            "  radarr: {{ paths: [{}], unit: radarr.service }}\n",
            live.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let cfg_text = fs::read_to_string(&cfg).unwrap();

    // Backup: stopped before the archive exists, started after it was committed.
    let archive = ok(
        &["--config", c, "backup", "--at", "2025-01-01T00:00:00Z"],
        &env,
        None,
    )
    .trim()
    .to_string();
    assert_eq!(
        log_of(&bus),
        [
            "Subscribe",
            "StopUnit radarr.service archives=0",
            "StartUnit radarr.service archives=1"
        ]
    );

    // Restore: stop → swap → start → health (ActiveState active).
    fs::write(live.join("after-backup.txt"), b"new").unwrap();
    ok(
        &restore_args(c, "radarr", &archive, id.to_str().unwrap(), None),
        &env,
        None,
    );
    assert!(!live.join("after-backup.txt").exists());
    assert_eq!(
        log_of(&bus)[1..],
        [
            "StopUnit radarr.service archives=1",
            "StartUnit radarr.service archives=1"
        ]
    );

    // Unhealthy after start: rolled back, the unit restarted with the previous data.
    fs::write(live.join("keep-me.txt"), b"current").unwrap();
    let before = describe(&live);
    bus.state
        .lock()
        .unwrap()
        .after_start
        .insert("radarr.service".into(), "failed".into());
    refused(
        &restore_args(c, "radarr", &archive, id.to_str().unwrap(), None),
        &env,
        None,
        "rolled back",
    );
    assert_eq!(describe(&live), before);
    let log = log_of(&bus);
    assert_eq!(
        log.iter().filter(|l| l.starts_with("StopUnit")).count(),
        2,
        "{log:?}"
    );
    assert_eq!(
        log.last().map(String::as_str),
        Some("StartUnit radarr.service archives=1"),
        "{log:?}"
    );
    bus.state.lock().unwrap().after_start.clear();

    // Start job fails after a backup: the run fails, saying so; the archive is still committed.
    bus.state
        .lock()
        .unwrap()
        .start_result
        .insert("radarr.service".into(), "failed".into());
    refused(
        &["--config", c, "backup", "--at", "2025-01-02T00:00:00Z"],
        &env,
        None,
        "did not start again",
    );
    assert_eq!(archives(&target.join("radarr")).len(), 2);
    bus.state.lock().unwrap().start_result.clear();
    log_of(&bus);

    // An error while the unit is stopped (the dump fails): the unit is started again.
    let cfg2 = write_config(
        d.path(),
        &target,
        &[],
        &format!(
            "  radarr: {{ paths: [{}], unit: radarr.service, dump: {{ container: db, command: pg_dumpall }} }}\n",
            live.display()
        ),
    );
    let env2 = [env[0], env[1], ("MMS_BACKUPD_PODMAN", "/bin/false")];
    // Times of their own: earlier backups may have taken this very second.
    refused(
        &[
            "--config",
            cfg2.to_str().unwrap(),
            "backup",
            "--at",
            "2030-01-01T00:00:00Z",
        ],
        &env2,
        None,
        "dump",
    );
    // (The first start retries the unit whose start failed in the previous run.)
    let log = log_of(&bus);
    assert_eq!(
        log[1..],
        [
            "StartUnit radarr.service archives=2",
            "StopUnit radarr.service archives=2",
            "StartUnit radarr.service archives=2"
        ],
        "{log:?}"
    );

    // No bus at all: a clear error, nothing stopped.
    refused(
        &["--config", c, "backup", "--at", "2030-01-01T00:00:01Z"],
        &[("MMS_BACKUPD_SYSTEMD_BUS", "unix:path=/nonexistent/bus")],
        None,
        "cannot connect to the systemd manager",
    );

    fs::write(&cfg, &cfg_text).unwrap();
    // SIGTERM while the unit is stopped: the run stops, removes its temp file and starts
    // the unit again; SIGKILL there: the next run starts it first.
    for i in 0..16u64 {
        fs::write(live.join(format!("big{i}")), noise(1 << 20, i + 5)).unwrap();
    }
    for (sig, at) in [
        (nix::sys::signal::Signal::SIGTERM, "2025-02-01T00:00:00Z"),
        (nix::sys::signal::Signal::SIGKILL, "2025-02-02T00:00:00Z"),
    ] {
        log_of(&bus);
        let child = Command::new(bin())
            .args(["--config", c, "backup", "--at", at])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while !bus
            .state
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.starts_with("StopUnit"))
        {
            assert!(t0.elapsed() < Duration::from_secs(30), "no StopUnit seen");
            std::thread::sleep(Duration::from_millis(2));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let names: Vec<String> = fs::read_dir(target.join("radarr"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if sig == nix::sys::signal::Signal::SIGTERM {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("stopped by a signal"), "{err}");
            assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
            assert_eq!(
                log_of(&bus)
                    .last()
                    .map(|l| l.starts_with("StartUnit radarr.service")),
                Some(true)
            );
        } else {
            assert!(log_of(&bus).iter().all(|l| !l.starts_with("StartUnit")));
            ok(&["--config", c, "list"], &env, None);
            ok(
                &["--config", c, "backup", "--at", "2025-02-03T00:00:00Z"],
                &env,
                None,
            );
            let log = log_of(&bus);
            assert!(
                log[1].starts_with("StartUnit radarr.service"),
                "recovery start missing: {log:?}"
            );
            assert!(!target.join(".stopped-radarr.service").exists());
        }
    }
}

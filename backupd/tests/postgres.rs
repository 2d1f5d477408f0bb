//! The Immich database path with a real PostgreSQL (Debian package): `pg_dumpall` streamed
//! into the archive and `psql` fed from it on restore. podman is replaced by a stand-in that
//! runs the container command directly against a postgres this test starts (as the
//! `postgres` user when we are root) on a private unix socket.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn pg_bin(tool: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.map(|e| e.unwrap().path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("PostgreSQL `{tool}` is not installed: run scripts/setup-test-env.sh (as root) first"))
}

/// (uid, gid) the database server and the dump run as.
fn pg_user() -> (u32, u32) {
    if is_root() {
        let u = nix::unistd::User::from_name("postgres").unwrap().expect(
            "the postgresql package creates the postgres user; run scripts/setup-test-env.sh",
        );
        (u.uid.as_raw(), u.gid.as_raw())
    } else {
        owner()
    }
}

fn as_pg(cmd: &mut Command) -> &mut Command {
    if is_root() {
        let (u, g) = pg_user();
        cmd.uid(u).gid(g);
    }
    cmd
}

struct Postgres {
    child: Child,
    sock: PathBuf,
    port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

fn start_postgres(dir: &Path) -> Postgres {
    let (u, g) = pg_user();
    let data = dir.join("pgdata");
    let sock = dir.join("pgsock");
    for dir in [&sock, &data] {
        fs::create_dir_all(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(dir, Some(u), Some(g)).unwrap();
    }
    let out = as_pg(
        Command::new(pg_bin("initdb"))
            .args(["--auth=trust", "--username=postgres", "-E", "UTF8", "-D"])
            .arg(&data),
    )
    .stdout(Stdio::null())
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = 20000 + (std::process::id() % 20000) as u16;
    let child = as_pg(
        Command::new(pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sock)
            .args(["-c", "listen_addresses=", "-p", &port.to_string()]),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let pg = Postgres { child, sock, port };
    for _ in 0..200 {
        let ok = Command::new(pg_bin("pg_isready"))
            .arg("-h")
            .arg(&pg.sock)
            .args(["-p", &port.to_string()])
            .output()
            .unwrap()
            .status
            .success();
        if ok {
            return pg;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("postgres did not start");
}

fn psql(pg: &Postgres, db: &str, sql: &str) -> String {
    let out = Command::new(pg_bin("psql"))
        .arg("-h")
        .arg(&pg.sock)
        .args([
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn pg_dumpall_into_the_archive_and_back() {
    need("age");
    need("zstd");
    need("tar");
    let d = tempfile::tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let pg = start_postgres(d.path());
    psql(&pg, "postgres", "CREATE DATABASE immich");
    psql(
        &pg,
        "immich",
        "CREATE TABLE assets(id serial PRIMARY KEY, path text NOT NULL); INSERT INTO assets(path) VALUES ('a.jpg'), ('b.heic')",
    );

    // podman stand-in: `podman exec [-i] CONTAINER CMD…` runs CMD here.
    let shim = d.path().join("podman");
    fs::write(&shim, "#!/bin/sh\n[ \"$1\" = exec ] || exit 64\nshift\n[ \"$1\" = -i ] && shift\n[ \"$1\" = immich-postgres ] || { echo \"no such container $1\" >&2; exit 125; }\nshift\nexec \"$@\"\n").unwrap();
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    let path_env = format!(
        "{}:{}",
        pg_bin("psql").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = pg.port.to_string();
    let sock = pg.sock.display().to_string();
    let env = [
        ("MMS_BACKUPD_PODMAN", shim.to_str().unwrap()),
        ("PGHOST", sock.as_str()),
        ("PGPORT", port.as_str()),
        ("PATH", path_env.as_str()),
    ];

    let (id, r) = age_key(d.path());
    let live = d.path().join("live/immich");
    fs::create_dir_all(live.join("library")).unwrap();
    fs::write(live.join("library/a.jpg"), noise(4096, 1)).unwrap();
    let target = d.path().join("backups");
    let (u, g) = pg_user();
    let text = format!(
        "target: {}\nrecipients: [{r:?}]\nretention: {{ daily: 7, weekly: 4, monthly: 6 }}\nuser: {{ uid: {u}, gid: {g} }}\nservices:\n  immich: {{ paths: [{}], dump: {{ container: immich-postgres, command: pg_dumpall --clean --if-exists --username=postgres }} }}\n",
        target.display(),
        live.display()
    );
    let cfg = d.path().join("backupd.yml");
    fs::write(&cfg, text).unwrap();
    let c = cfg.to_str().unwrap();

    let archive = ok(&["--config", c, "backup"], &env, None)
        .trim()
        .to_string();
    // The stock tools see the dump as a plain member.
    let dump = sh(&format!(
        "age -d -i {} {archive} | zstd -d | tar -xO pg_dumpall.sql",
        id.display()
    ));
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        dump.contains("CREATE TABLE public.assets"),
        "dump lacks the table"
    );
    assert!(dump.contains("b.heic"), "dump lacks the rows");

    // Damage the database, then restore the service: files and database come back.
    psql(
        &pg,
        "immich",
        "DELETE FROM assets; CREATE TABLE junk(x int)",
    );
    fs::write(live.join("library/new.jpg"), b"new").unwrap();
    ok(
        &restore_args(c, "immich", &archive, id.to_str().unwrap(), None),
        &env,
        None,
    );
    assert_eq!(
        psql(
            &pg,
            "immich",
            "SELECT string_agg(path, ',' ORDER BY id) FROM assets"
        ),
        "a.jpg,b.heic"
    );
    assert_eq!(
        psql(
            &pg,
            "immich",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'junk'"
        ),
        "0"
    );
    assert!(!live.join("library/new.jpg").exists());
    assert!(live.join("library/a.jpg").exists());

    // --to writes the dump as a file and leaves the database alone.
    psql(&pg, "immich", "INSERT INTO assets(path) VALUES ('c.png')");
    let to = d.path().join("to");
    ok(
        &restore_args(
            c,
            "immich",
            &archive,
            id.to_str().unwrap(),
            Some(to.to_str().unwrap()),
        ),
        &env,
        None,
    );
    assert!(
        fs::read_to_string(to.join("pg_dumpall.sql"))
            .unwrap()
            .contains("b.heic")
    );
    assert_eq!(psql(&pg, "immich", "SELECT count(*) FROM assets"), "3");

    // A failing dump (wrong container) fails the backup with the tool's reason.
    let bad = fs::read_to_string(&cfg)
        .unwrap()
        .replace("container: immich-postgres", "container: missing");
    fs::write(&cfg, bad).unwrap();
    // A time of its own: the backup above may have taken this very second.
    refused(
        &["--config", c, "backup", "--at", "2030-01-01T00:00:00Z"],
        &env,
        None,
        "no such container missing",
    );
}

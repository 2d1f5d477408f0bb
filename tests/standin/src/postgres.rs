//! The Immich database stand-in: a real PostgreSQL 17 server (Debian's binaries, copied into
//! the image) started the way the official `postgres` image's entrypoint does it, so
//! `pg_dumpall` inside the container and Immich's env contract (`POSTGRES_USER`,
//! `POSTGRES_PASSWORD[_FILE]`, `POSTGRES_DB`, `POSTGRES_INITDB_ARGS`, `PGDATA`) work for real.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use nix::unistd::{Gid, Uid, chown};

/// Where Debian installs PostgreSQL 17's programs.
pub const BIN: &str = "/usr/lib/postgresql/17/bin";
/// The `postgres` user of the image (the official image's uid/gid).
pub const PG_UID: u32 = 999;

/// The settings the entrypoint reads from the environment.
#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    /// Data directory.
    pub pgdata: PathBuf,
    /// Superuser name.
    pub user: String,
    /// Superuser password (never printed).
    pub password: Option<String>,
    /// Database created on first start.
    pub db: String,
    /// Extra `initdb` arguments.
    pub initdb_args: Vec<String>,
}

/// Reads the settings through `get` (the environment in production, a map in tests).
pub fn settings(get: impl Fn(&str) -> Option<String>) -> Result<Settings> {
    let user = get("POSTGRES_USER").unwrap_or_else(|| "postgres".into());
    let password = match (get("POSTGRES_PASSWORD"), get("POSTGRES_PASSWORD_FILE")) {
        (Some(p), _) => Some(p),
        (None, Some(file)) => Some(
            fs::read_to_string(&file)
                .with_context(|| format!("POSTGRES_PASSWORD_FILE={file}: cannot read"))?
                .trim_end_matches('\n')
                .to_string(),
        ),
        (None, None) => None,
    };
    Ok(Settings {
        pgdata: get("PGDATA")
            .unwrap_or_else(|| "/var/lib/postgresql/data".into())
            .into(),
        db: get("POSTGRES_DB").unwrap_or_else(|| user.clone()),
        user,
        password,
        initdb_args: get("POSTGRES_INITDB_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    })
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A PostgreSQL program run as the postgres user: dropped to uid 999 when the container starts
/// as root, as is when it already runs as 999 (`UserNS=keep-id:uid=999` makes that the default).
fn as_postgres(program: &str) -> Command {
    let mut c = Command::new(Path::new(BIN).join(program));
    if is_root() {
        c.uid(PG_UID).gid(PG_UID);
    }
    c.env("HOME", "/var/lib/postgresql")
        .env("PATH", format!("{BIN}:/usr/local/bin:/usr/bin:/bin"));
    c
}

fn run(mut c: Command, what: &str) -> Result<()> {
    let status = c.status().with_context(|| format!("run {what}"))?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

fn own(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    chown(
        path,
        Some(Uid::from_raw(PG_UID)),
        Some(Gid::from_raw(PG_UID)),
    )
    .with_context(|| format!("chown {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Initialises the cluster on first start, then becomes the server (exec, as uid 999).
pub fn entrypoint() -> Result<()> {
    let s = settings(|k| std::env::var(k).ok())?;
    own(&s.pgdata, 0o700)?;
    own(Path::new("/var/run/postgresql"), 0o3777)?;
    if !s.pgdata.join("PG_VERSION").exists() {
        init(&s)?;
    }
    let err = as_postgres("postgres")
        .arg("-D")
        .arg(&s.pgdata)
        .args(["-c", "listen_addresses=*", "-c", "jit=off"])
        .exec();
    Err(anyhow!("exec postgres: {err}"))
}

fn init(s: &Settings) -> Result<()> {
    let password = s.password.as_deref().ok_or_else(|| {
        anyhow!(
            "database is uninitialized and POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE is not set"
        )
    })?;
    eprintln!("mms-standin: initializing {}", s.pgdata.display());
    let pwfile = PathBuf::from("/tmp/.mms-standin-pwfile");
    fs::write(&pwfile, format!("{password}\n"))?;
    fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
    chown(
        &pwfile,
        Some(Uid::from_raw(PG_UID)),
        Some(Gid::from_raw(PG_UID)),
    )?;
    let mut initdb = as_postgres("initdb");
    initdb
        .arg("-D")
        .arg(&s.pgdata)
        .arg(format!("--username={}", s.user))
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ])
        .args(&s.initdb_args);
    let r = run(initdb, "initdb");
    let _ = fs::remove_file(&pwfile);
    r?;
    let hba = s.pgdata.join("pg_hba.conf");
    let mut text = fs::read_to_string(&hba)?;
    text.push_str("\nhost all all all scram-sha-256\n");
    fs::write(&hba, text)?;

    let mut start = as_postgres("pg_ctl");
    start
        .arg("-D")
        .arg(&s.pgdata)
        .args(["-w", "-o", "-c listen_addresses='' -c jit=off", "start"]);
    run(start, "pg_ctl start")?;
    let mut sql = String::new();
    if s.db != "postgres" {
        sql.push_str(&format!(
            "CREATE DATABASE \"{}\";\n",
            s.db.replace('"', "\"\"")
        ));
    }
    let mut create = as_postgres("psql");
    create
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "--username",
            &s.user,
            "--dbname",
            "postgres",
            "-c",
        ])
        .arg(if sql.is_empty() {
            "SELECT 1"
        } else {
            sql.trim_end()
        });
    let created = run(create, "psql CREATE DATABASE");
    let mut seed = as_postgres("psql");
    seed.args([
        "-v",
        "ON_ERROR_STOP=1",
        "--username",
        &s.user,
        "--dbname",
        &s.db,
        "-c",
    ])
    .arg(
        "CREATE TABLE standin_assets (id serial PRIMARY KEY, name text NOT NULL); \
              INSERT INTO standin_assets (name) VALUES ('created by the stand-in entrypoint');",
    );
    let seeded = created.and_then(|()| run(seed, "psql seed table"));
    let mut stop = as_postgres("pg_ctl");
    stop.arg("-D")
        .arg(&s.pgdata)
        .args(["-w", "-m", "fast", "stop"]);
    run(stop, "pg_ctl stop")?;
    seeded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn env_contract() {
        let env: BTreeMap<&str, &str> = [
            ("POSTGRES_PASSWORD", "s3cret"),
            ("POSTGRES_DB", "immich"),
            ("POSTGRES_INITDB_ARGS", "--data-checksums"),
        ]
        .into();
        let s = settings(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.user, "postgres");
        assert_eq!(s.db, "immich");
        assert_eq!(s.password.as_deref(), Some("s3cret"));
        assert_eq!(s.initdb_args, ["--data-checksums"]);
        assert_eq!(s.pgdata, PathBuf::from("/var/lib/postgresql/data"));
        let s = settings(|k| (k == "POSTGRES_USER").then(|| "u".to_string())).unwrap();
        assert_eq!((s.db.as_str(), s.password), ("u", None));
        assert!(
            settings(|k| (k == "POSTGRES_PASSWORD_FILE").then(|| "/nonexistent".into())).is_err()
        );
    }
}

//! Migration against a real "old LXC host": a network namespace joined by a veth pair
//! (10.231.x.0/30, addresses only inside the namespace this test creates) runs a real `sshd`
//! with its own host key and config; real `ssh` and `rsync` copy the helper-script layout
//! (per-test source directories holding real SQLite databases shaped like Radarr, Sonarr,
//! Lidarr and Prowlarr, a SABnzbd ini + history DB, and a Jellyfin Debian-package tree).
//!
//! When a network namespace cannot be created, sshd listens on 127.0.0.1 instead and the
//! test says so on stderr.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;
use mms_firstboot::config::{
    App, Migrate, MigrateFrom, Rewrite, SourceDir, SourceKind, StateSource,
};
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The old host: sshd in a network namespace (or on loopback as the fallback).
struct OldHost {
    ns: Option<String>,
    addr: String,
    port: u16,
    sshd: Child,
    dir: tempfile::TempDir,
}

impl OldHost {
    fn key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }
}

impl Drop for OldHost {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        if let Some(ns) = &self.ns {
            // removing the namespace removes the veth pair with it
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn old_host() -> OldHost {
    for t in ["ssh", "ssh-keygen", "rsync", "ip", "/usr/sbin/sshd"] {
        require(t);
    }
    std::fs::create_dir_all("/run/sshd").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for k in ["host_key", "client_key"] {
        assert!(sh(&[
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            d.join(k).to_str().unwrap()
        ]));
    }
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    std::fs::set_permissions(d.join("client_key"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let x = (pid.wrapping_mul(7).wrapping_add(n * 13)) % 250 + 2;
    let ns = format!("mmsfb{pid}n{n}");
    let (vh, vn) = (
        format!("fb{}h{n}", pid % 100000),
        format!("fb{}n{n}", pid % 100000),
    );
    let (host_ip, ns_ip) = (format!("10.231.{x}.1"), format!("10.231.{x}.2"));
    let netns_ok = sh(&["ip", "netns", "add", &ns])
        && sh(&[
            "ip", "link", "add", &vh, "type", "veth", "peer", "name", &vn,
        ])
        && sh(&["ip", "link", "set", &vn, "netns", &ns])
        && sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &vh])
        && sh(&["ip", "link", "set", &vh, "up"])
        && sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &vn,
        ])
        && sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &vn, "up"])
        && sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
    let (ns, addr, port) = if netns_ok {
        (Some(ns), ns_ip, 22)
    } else {
        let _ = sh(&["ip", "netns", "del", &ns]);
        let _ = sh(&["ip", "link", "del", &vh]);
        eprintln!(
            "NOTE: cannot create a network namespace here; sshd listens on 127.0.0.1 instead"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        (None, "127.0.0.1".to_string(), port)
    };
    let cfg = format!(
        "Port {port}\nListenAddress {addr}\nHostKey {hk}\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
         LogLevel ERROR\n",
        hk = d.join("host_key").display(),
        d = d.display()
    );
    std::fs::write(d.join("sshd_config"), cfg).unwrap();
    let mut cmd = match &ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "/usr/sbin/sshd"]);
            c
        }
        None => Command::new("/usr/sbin/sshd"),
    };
    let sshd = cmd
        .args(["-D", "-e", "-f", d.join("sshd_config").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect((addr.as_str(), port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sshd did not come up on {addr}:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    OldHost {
        ns,
        addr,
        port,
        sshd,
        dir,
    }
}

fn db(path: &Path, sql: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = Connection::open(path).unwrap();
    c.execute_batch(sql).unwrap();
}

fn q(path: &Path, sql: &str) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut s = c.prepare(sql).unwrap();
    s.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

const SERVARR: &str = "
CREATE TABLE VersionInfo (Version INTEGER, AppliedOn DATETIME, Description TEXT);
CREATE TABLE RootFolders (Id INTEGER PRIMARY KEY, Path TEXT NOT NULL UNIQUE);
CREATE TABLE DownloadClients (Id INTEGER PRIMARY KEY, Enable INTEGER, Name TEXT, Implementation TEXT, Settings TEXT, ConfigContract TEXT);
CREATE TABLE Config (Id INTEGER PRIMARY KEY, Key TEXT NOT NULL UNIQUE, Value TEXT NOT NULL);
CREATE TABLE RemotePathMappings (Id INTEGER PRIMARY KEY, Host TEXT, RemotePath TEXT, LocalPath TEXT);
CREATE TABLE AutoTagging (Id INTEGER PRIMARY KEY, Name TEXT, Specifications TEXT);
INSERT INTO DownloadClients (Enable, Name, Implementation, Settings, ConfigContract) VALUES
 (1, 'SABnzbd', 'Sabnzbd', '{\"host\": \"10.0.0.9\", \"port\": 7777, \"urlBase\": \"\", \"apiKey\": \"0123\"}', 'SabnzbdSettings'),
 (1, 'Blackhole', 'UsenetBlackhole', '{\"nzbFolder\": \"/downloads/nzb\", \"watchFolder\": \"/downloads/complete/\"}', 'UsenetBlackholeSettings');
INSERT INTO RemotePathMappings (Host, RemotePath, LocalPath) VALUES ('10.0.0.9', '/downloads/complete/', '/downloads/complete/');
";

/// The helper-script layout under `src`; returns the per-service source dirs.
fn make_sources(src: &Path) {
    let radarr = src.join("var/lib/radarr");
    db(&radarr.join("radarr.db"), &format!("{SERVARR}
        INSERT INTO VersionInfo VALUES (242, '2025-11-14', 'x');
        INSERT INTO RootFolders (Path) VALUES ('/movies/'), ('/movies2/');
        CREATE TABLE Movies (Id INTEGER PRIMARY KEY, Path TEXT);
        INSERT INTO Movies (Path) VALUES ('/movies/Alien (1979)'), ('/movies2/Heat (1995)');
        CREATE TABLE Collections (Id INTEGER PRIMARY KEY, RootFolderPath TEXT);
        INSERT INTO Collections (RootFolderPath) VALUES ('/movies');
        INSERT INTO Config (Key, Value) VALUES ('recyclebin', '/movies/.recycle'), ('backupfolder', 'Backups');
        INSERT INTO AutoTagging (Name, Specifications) VALUES ('kids', '[{{\"type\":\"RootFolderSpecification\",\"body\":{{\"negate\":false,\"value\":\"/movies/\"}}}}]');
        PRAGMA journal_mode=WAL;"));
    db(
        &radarr.join("logs.db"),
        "CREATE TABLE Logs (Id INTEGER PRIMARY KEY, Message TEXT); INSERT INTO Logs (Message) VALUES ('/movies/ x');",
    );
    std::fs::write(radarr.join("config.xml"), "<Config>\n  <BindAddress>10.0.0.7</BindAddress>\n  <Port>7878</Port>\n  <SslCertPath>/movies/cert.pfx</SslCertPath>\n  <ApiKey>0123456789abcdef0123456789abcdef</ApiKey>\n</Config>").unwrap();
    std::fs::create_dir_all(radarr.join("MediaCover/1")).unwrap();
    std::fs::write(radarr.join("MediaCover/1/poster.jpg"), vec![7u8; 70_000]).unwrap();

    let sonarr = src.join("var/lib/sonarr");
    db(
        &sonarr.join("sonarr.db"),
        &format!(
            "{SERVARR}
        INSERT INTO RootFolders (Path) VALUES ('/tv/'), ('/tv-anime/');
        CREATE TABLE Series (Id INTEGER PRIMARY KEY, Path TEXT);
        INSERT INTO Series (Path) VALUES ('/tv/Show'), ('/tv-anime/Other');"
        ),
    );
    std::fs::write(
        sonarr.join("config.xml"),
        "<Config><Port>8989</Port></Config>",
    )
    .unwrap();

    let lidarr = src.join("var/lib/lidarr");
    db(
        &lidarr.join("lidarr.db"),
        &format!(
            "{SERVARR}
        INSERT INTO RootFolders (Path) VALUES ('/music/');
        CREATE TABLE Artists (Id INTEGER PRIMARY KEY, Path TEXT);
        INSERT INTO Artists (Path) VALUES ('/music/Artist');
        CREATE TABLE TrackFiles (Id INTEGER PRIMARY KEY, Path TEXT NOT NULL UNIQUE);
        INSERT INTO TrackFiles (Path) VALUES ('/music/Artist/Album/01.flac');"
        ),
    );

    let prowlarr = src.join("var/lib/prowlarr");
    db(&prowlarr.join("prowlarr.db"), &format!("{SERVARR}
        CREATE TABLE Applications (Id INTEGER PRIMARY KEY, Name TEXT, Implementation TEXT, Settings TEXT);
        INSERT INTO Applications (Name, Implementation, Settings) VALUES ('Radarr', 'Radarr', '{{\"prowlarrUrl\":\"http://10.0.0.5:9696\",\"baseUrl\":\"http://10.0.0.6:7878\"}}');"));
    std::fs::create_dir_all(prowlarr.join("Definitions")).unwrap();
    std::fs::write(prowlarr.join("Definitions/x.yml"), "id: x\n").unwrap();

    let sab = src.join("root/.sabnzbd");
    std::fs::create_dir_all(&sab).unwrap();
    std::fs::write(sab.join("sabnzbd.ini"), "__version__ = 19\n[misc]\nhost = 0.0.0.0\nport = 7777\ndownload_dir = Downloads/incomplete\ncomplete_dir = /downloads/complete\nhost_whitelist = sabnzbd-lxc,\n[servers]\n[[news.example.com]]\nport = 563\n[categories]\n[[movies]]\ndir = movies\n[[tv]]\ndir = /downloads/complete/tv\n").unwrap();
    db(&sab.join("admin/history1.db"), "CREATE TABLE history (id INTEGER PRIMARY KEY, name TEXT, storage TEXT, path TEXT);
        INSERT INTO history (name, storage, path) VALUES ('Alien', '/downloads/complete/movies/Alien', '/root/Downloads/incomplete/Alien');
        PRAGMA user_version = 6;");

    let etc = src.join("etc/jellyfin");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("system.xml"), "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ServerConfiguration>\n  <MetadataPath />\n  <CachePath>/var/cache/jellyfin</CachePath>\n</ServerConfiguration>\n").unwrap();
    std::fs::write(etc.join(".jellyfin-config"), "").unwrap();
    let lib = src.join("var/lib/jellyfin");
    db(&lib.join("data/jellyfin.db"), "CREATE TABLE BaseItems (Id TEXT PRIMARY KEY, Path TEXT, Data TEXT);
        INSERT INTO BaseItems VALUES ('a', '/var/lib/jellyfin/root/default/Movies', '{\"PhysicalLocationsList\":[\"/movies\"]}'),
                                     ('b', '/movies/Alien (1979)/Alien.mkv', NULL),
                                     ('c', '%MetadataPath%/x', NULL);
        PRAGMA journal_mode=WAL;");
    let movies = lib.join("root/default/Movies");
    std::fs::create_dir_all(&movies).unwrap();
    std::fs::write(movies.join("options.xml"), "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<LibraryOptions>\n  <PathInfos>\n    <MediaPathInfo>\n      <Path>/movies</Path>\n    </MediaPathInfo>\n  </PathInfos>\n</LibraryOptions>").unwrap();
    std::fs::write(movies.join("Movies.mblink"), "/movies").unwrap();
    std::fs::write(movies.join("movies.collection"), "").unwrap();
    std::fs::write(lib.join(".jellyfin-data"), "").unwrap();

    let upload = src.join("opt/immich/upload");
    for d in ["library/admin/2024", "upload", "thumbs", "profile"] {
        std::fs::create_dir_all(upload.join(d)).unwrap();
    }
    for d in ["library", "upload", "thumbs", "profile"] {
        std::fs::write(upload.join(d).join(".immich"), "").unwrap();
    }
    std::fs::write(
        upload.join("library/admin/2024/IMG_0001.jpg"),
        vec![9u8; 50_000],
    )
    .unwrap();
}

fn rw(pairs: &[(&str, &str)]) -> Vec<Rewrite> {
    pairs
        .iter()
        .map(|(f, t)| Rewrite {
            from: (*f).into(),
            to: (*t).into(),
        })
        .collect()
}

fn migrate(
    app: App,
    units: &[&str],
    sources: Vec<(PathBuf, &str)>,
    sqlite: &[&str],
    rewrites: Vec<Rewrite>,
) -> Option<Migrate> {
    Some(Migrate {
        // radarr/sonarr/… name their app; the explicit value must agree
        app: if app == App::for_service(units[0].trim_end_matches(".service")) {
            None
        } else {
            Some(app)
        },
        host: None,
        container_config: "/config".into(),
        source_units: units.iter().map(|u| u.to_string()).collect(),
        sources: sources
            .into_iter()
            .map(|(f, t)| SourceDir {
                from: f,
                to: t.into(),
            })
            .collect(),
        sqlite: sqlite.iter().map(PathBuf::from).collect(),
        rewrites,
    })
}

/// The config: six services migrating from `host`'s per-test source dirs.
fn config(host: &OldHost, src: &Path) -> mms_firstboot::config::Config {
    let mut c = base_config();
    c.state = StateSource::Migrate(MigrateFrom {
        kind: SourceKind::Lxc,
        host: host.addr.clone(),
        user: "root".into(),
        port: host.port,
        ssh_key_secret: "migrate_ssh_key".into(),
    });
    let media = rw(&[
        ("/movies", "/data/media/movies"),
        ("/tv", "/data/media/tv"),
        ("/music", "/data/media/music"),
        ("/downloads", "/data/usenet"),
    ]);
    let svc = |name: &str, port: u16, m: Option<Migrate>| {
        let mut s = service(
            name,
            &[&format!("{name}.service")],
            &format!("http://127.0.0.1:{port}/ping"),
        );
        s.migrate = m;
        s
    };
    c.services = vec![
        svc(
            "radarr",
            7878,
            migrate(
                App::Radarr,
                &["radarr.service"],
                vec![(src.join("var/lib/radarr"), ".")],
                &["radarr.db", "logs.db"],
                media.clone(),
            ),
        ),
        svc(
            "sonarr",
            8989,
            migrate(
                App::Sonarr,
                &["sonarr.service"],
                vec![(src.join("var/lib/sonarr"), ".")],
                &["sonarr.db"],
                media.clone(),
            ),
        ),
        svc(
            "lidarr",
            8686,
            migrate(
                App::Lidarr,
                &["lidarr.service"],
                vec![(src.join("var/lib/lidarr"), ".")],
                &["lidarr.db"],
                media.clone(),
            ),
        ),
        svc(
            "prowlarr",
            9696,
            migrate(
                App::Prowlarr,
                &["prowlarr.service"],
                vec![(src.join("var/lib/prowlarr"), ".")],
                &["prowlarr.db"],
                media.clone(),
            ),
        ),
        svc(
            "sabnzbd",
            8080,
            migrate(
                App::Sabnzbd,
                &["sabnzbd.service"],
                vec![(src.join("root/.sabnzbd"), ".")],
                &["admin/history1.db"],
                rw(&[("/downloads", "/data/usenet")]),
            ),
        ),
        svc(
            "jellyfin",
            8096,
            migrate(
                App::Jellyfin,
                &["jellyfin.service"],
                vec![
                    (src.join("etc/jellyfin"), "."),
                    (src.join("var/lib/jellyfin"), "data"),
                ],
                &[],
                rw(&[
                    ("/var/lib/jellyfin", "/config/data"),
                    ("/etc/jellyfin", "/config"),
                    ("/var/cache/jellyfin", "/config/cache"),
                    ("/movies", "/data/media/movies"),
                ]),
            ),
        ),
        svc(
            "immich",
            2283,
            migrate(
                App::Immich,
                &["immich-web.service", "immich-ml.service"],
                vec![(src.join("opt/immich/upload"), "/data/photos")],
                &[],
                vec![],
            ),
        ),
    ];
    c
}

/// sha256 of every file (path, mode, content) under `dir`, for "nothing changed" checks.
fn tree_hash(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            if m.is_dir() {
                stack.push(e.path());
                out.insert(rel, format!("dir {:o}", m.mode()));
            } else {
                let h = hex::encode(Sha256::digest(std::fs::read(e.path()).unwrap()));
                out.insert(rel, format!("{:o} {} {h}", m.mode(), m.mtime()));
            }
        }
    }
    out
}

fn setup() -> (OldHost, tempfile::TempDir, mms_firstboot::steps::Context) {
    let host = old_host();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_sources(&src);
    let root = tmp.path().join("vm");
    let mut ctx = context(&root, config(&host, &src));
    ctx.env.secrets_timeout = Duration::from_secs(1);
    deliver(
        &ctx,
        "migrate_ssh_key",
        &std::fs::read_to_string(host.key()).unwrap(),
    );
    (host, tmp, ctx)
}

fn migration<'a>(
    ctx: &'a mms_firstboot::steps::Context,
    only: &[&str],
) -> mms_firstboot::migrate::Migration<'a> {
    let StateSource::Migrate(from) = &ctx.config.state else {
        panic!()
    };
    mms_firstboot::migrate::Migration {
        root: &ctx.root,
        config: &ctx.config,
        from,
        key: ctx.secrets_dir().join("migrate_ssh_key"),
        ssh: "ssh".into(),
        rsync: "rsync".into(),
        only: only.iter().map(|s| s.to_string()).collect(),
        bwlimit_kib: None,
    }
}

#[test]
fn migration_copies_checks_rewrites_and_chowns() {
    let (_host, tmp, ctx) = setup();
    let src_before = tree_hash(&tmp.path().join("src"));
    // something already on the photos export is kept (no --delete outside staging)
    std::fs::create_dir_all(ctx.root.join("data/photos")).unwrap();
    std::fs::write(ctx.root.join("data/photos/already-there.jpg"), "x").unwrap();
    let reports = migration(&ctx, &[]).run().unwrap();
    assert_eq!(reports.len(), 7);
    let cfg = ctx.root.join("home/mms/config");

    // Radarr: roots on component boundaries, trailing slash kept, JSON order kept
    let r = cfg.join("radarr/radarr.db");
    assert_eq!(
        q(&r, "SELECT Path FROM RootFolders ORDER BY Id"),
        ["/data/media/movies/", "/movies2/"]
    );
    assert_eq!(
        q(&r, "SELECT Path FROM Movies ORDER BY Id"),
        ["/data/media/movies/Alien (1979)", "/movies2/Heat (1995)"]
    );
    assert_eq!(
        q(&r, "SELECT RootFolderPath FROM Collections"),
        ["/data/media/movies"]
    );
    assert_eq!(
        q(&r, "SELECT Value FROM Config ORDER BY Id"),
        ["/data/media/movies/.recycle", "Backups"]
    );
    assert_eq!(
        q(&r, "SELECT Settings FROM DownloadClients ORDER BY Id"),
        [
            "{\"host\": \"sabnzbd\", \"port\": 8080, \"urlBase\": \"\", \"apiKey\": \"0123\"}",
            "{\"nzbFolder\": \"/data/usenet/nzb\", \"watchFolder\": \"/data/usenet/complete/\"}",
        ]
    );
    assert_eq!(
        q(&r, "SELECT Specifications FROM AutoTagging"),
        [
            "[{\"type\":\"RootFolderSpecification\",\"body\":{\"negate\":false,\"value\":\"/data/media/movies/\"}}]"
        ]
    );
    assert_eq!(
        q(
            &r,
            "SELECT Host || ' ' || RemotePath || ' ' || LocalPath FROM RemotePathMappings"
        ),
        ["sabnzbd /data/usenet/complete/ /data/usenet/complete/"]
    );
    assert_eq!(
        q(&cfg.join("radarr/logs.db"), "SELECT Message FROM Logs"),
        ["/movies/ x"],
        "logs are not rewritten"
    );
    let xml = std::fs::read_to_string(cfg.join("radarr/config.xml")).unwrap();
    assert!(
        xml.contains("<SslCertPath>/data/media/movies/cert.pfx</SslCertPath>")
            && xml.contains("<ApiKey>0123456789abcdef0123456789abcdef</ApiKey>"),
        "{xml}"
    );
    assert_eq!(
        std::fs::read(cfg.join("radarr/MediaCover/1/poster.jpg")).unwrap(),
        vec![7u8; 70_000]
    );

    // Sonarr: /tv must not touch /tv-anime
    assert_eq!(
        q(
            &cfg.join("sonarr/sonarr.db"),
            "SELECT Path FROM Series ORDER BY Id"
        ),
        ["/data/media/tv/Show", "/tv-anime/Other"]
    );
    // Lidarr: absolute TrackFiles.Path
    assert_eq!(
        q(&cfg.join("lidarr/lidarr.db"), "SELECT Path FROM TrackFiles"),
        ["/data/media/music/Artist/Album/01.flac"]
    );
    // Prowlarr: its applications point at the containers now; Definitions copied
    assert_eq!(
        q(
            &cfg.join("prowlarr/prowlarr.db"),
            "SELECT Settings FROM Applications"
        ),
        ["{\"prowlarrUrl\":\"http://prowlarr:9696\",\"baseUrl\":\"http://radarr:7878\"}"]
    );
    assert!(cfg.join("prowlarr/Definitions/x.yml").exists());

    // SABnzbd
    let ini = std::fs::read_to_string(cfg.join("sabnzbd/sabnzbd.ini")).unwrap();
    for want in [
        "[misc]\nhost = 0.0.0.0\nport = 8080\n",
        "download_dir = /data/usenet/incomplete\n",
        "complete_dir = /data/usenet/complete\n",
        "host_whitelist = sabnzbd-lxc, sabnzbd, mms\n",
        "port = 563\n",
        "dir = movies\n",
        "dir = /data/usenet/complete/tv\n",
    ] {
        assert!(ini.contains(want), "{want:?} missing in\n{ini}");
    }
    assert_eq!(
        q(
            &cfg.join("sabnzbd/admin/history1.db"),
            "SELECT storage || ' ' || path FROM history"
        ),
        ["/data/usenet/complete/movies/Alien /data/usenet/incomplete/Alien"]
    );

    // Jellyfin: Debian layout -> container layout, markers kept apart
    let jf = cfg.join("jellyfin");
    assert!(jf.join("system.xml").exists() && jf.join(".jellyfin-config").exists());
    assert!(jf.join("data/.jellyfin-data").exists() && !jf.join(".jellyfin-data").exists());
    let sys = std::fs::read_to_string(jf.join("system.xml")).unwrap();
    assert!(
        sys.contains("<CachePath>/config/cache</CachePath>"),
        "{sys}"
    );
    let lib = jf.join("data/root/default/Movies");
    assert!(
        std::fs::read_to_string(lib.join("options.xml"))
            .unwrap()
            .contains("<Path>/data/media/movies</Path>")
    );
    assert_eq!(
        std::fs::read_to_string(lib.join("Movies.mblink")).unwrap(),
        "/data/media/movies"
    );
    let jdb = jf.join("data/data/jellyfin.db");
    assert_eq!(
        q(&jdb, "SELECT Path FROM BaseItems ORDER BY Id"),
        [
            "/config/data/root/default/Movies",
            "/data/media/movies/Alien (1979)/Alien.mkv",
            "%MetadataPath%/x"
        ]
    );
    assert_eq!(
        q(&jdb, "SELECT Data FROM BaseItems WHERE Id = 'a'"),
        ["{\"PhysicalLocationsList\":[\"/data/media/movies\"]}"]
    );

    // Immich: the upload tree (with its .immich markers) lands on the photos path
    let photos = ctx.root.join("data/photos");
    assert_eq!(
        std::fs::read(photos.join("library/admin/2024/IMG_0001.jpg")).unwrap(),
        vec![9u8; 50_000]
    );
    for d in ["library", "upload", "thumbs", "profile"] {
        assert!(photos.join(d).join(".immich").exists(), "{d}/.immich");
    }
    assert!(photos.join("already-there.jpg").exists());
    assert!(
        !cfg.join("immich").exists(),
        "no config dir made for a service without config sources"
    );
    for (rel, _) in tree_hash(&photos) {
        let m = std::fs::symlink_metadata(photos.join(&rel)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1100, 1100), "{}", rel.display());
    }

    // every rewrite listed
    let listing = std::fs::read_to_string(
        ctx.root
            .join("var/lib/mms/firstboot/migrate/radarr/rewrites.txt"),
    )
    .unwrap();
    assert!(
        listing.contains("radarr.db: RootFolders.Path row 1: /movies/ -> /data/media/movies/"),
        "{listing}"
    );
    assert!(
        listing.contains("config.xml: /movies/cert.pfx -> /data/media/movies/cert.pfx"),
        "{listing}"
    );
    let radarr = reports.iter().find(|r| r.service == "radarr").unwrap();
    assert_eq!(
        radarr.checked,
        [PathBuf::from("logs.db"), PathBuf::from("radarr.db")]
    );
    assert!(
        radarr
            .warnings
            .iter()
            .any(|w| w.contains("systemd is not running on the source")),
        "{:?}",
        radarr.warnings
    );

    // ownership: everything 1100:1100 (the rootless user namespace maps it into the containers)
    for (rel, _) in tree_hash(&cfg) {
        let m = std::fs::symlink_metadata(cfg.join(&rel)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1100, 1100), "{}", rel.display());
    }
    // nothing left over, source untouched
    let left: Vec<_> = std::fs::read_dir(&cfg)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(left.iter().all(|n| !n.contains(".mms-")), "{left:?}");
    assert_eq!(tree_hash(&tmp.path().join("src")), src_before);

    // a second run does nothing
    let again = migration(&ctx, &[]).run().unwrap();
    assert!(again.iter().all(|r| r.already_done));
}

fn corrupt(path: &Path) {
    // Fill a database with enough rows for several pages, then overwrite page 2.
    let c = Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE Filler (x TEXT);")
        .unwrap();
    for i in 0..400 {
        c.execute("INSERT INTO Filler VALUES (?1)", [format!("{i:0>200}")])
            .unwrap();
    }
    drop(c);
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes[4096..8192] {
        *b = 0xA5;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn corrupt_database_stops_the_migration_naming_the_file() {
    let (_host, tmp, ctx) = setup();
    let bad = tmp.path().join("src/var/lib/sonarr/sonarr.db");
    corrupt(&bad);
    let e = migration(&ctx, &[]).run().unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("migrating sonarr"), "{msg}");
    assert!(
        msg.contains(&format!("the copy of {}", bad.display())),
        "{msg}"
    );
    assert!(msg.contains("integrity_check"), "{msg}");
    let cfg = ctx.root.join("home/mms/config");
    assert!(
        cfg.join("radarr/radarr.db").exists(),
        "radarr (before it) finished"
    );
    assert!(
        !cfg.join("sonarr").exists(),
        "nothing installed for the corrupt service"
    );
    assert!(!cfg.join("lidarr").exists(), "later services not started");

    // through the run loop: the state step fails with the file named and a next action
    let ts = tailscale_standin(&tmp.path().join("ts"));
    let mut ctx = ctx;
    ctx.env.tailscale = ts;
    deliver(&ctx, "tailscale_auth_key", "tskey-auth-TEST");
    assert!(mms_firstboot::steps::run(&ctx).is_err());
    let st = mms_firstboot::status::Status::read(&ctx.status_path()).unwrap();
    assert_eq!(st.phase, mms_firstboot::status::Phase::State);
    let err = st.error.unwrap();
    assert!(err.message.contains("sonarr.db"), "{}", err.message);
    assert!(
        err.next_action.contains("systemctl restart mms-firstboot"),
        "{}",
        err.next_action
    );
}

#[test]
fn dry_run_changes_nothing_and_lists_the_work() {
    let (_host, tmp, ctx) = setup();
    let cfg_file = tmp.path().join("firstboot.yml");
    std::fs::write(&cfg_file, ctx.config.to_yaml().unwrap()).unwrap();
    let before = (tree_hash(&tmp.path().join("src")), tree_hash(&ctx.root));
    let out = Command::new(env!("CARGO_BIN_EXE_mms-firstboot"))
        .args([
            "migrate",
            "--dry-run",
            "--service",
            "radarr",
            "--service",
            "jellyfin",
            "--config",
        ])
        .arg(&cfg_file)
        .arg("--root")
        .arg(&ctx.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("dry run, nothing changed:"), "{text}");
    assert!(text.contains("radarr (from root@"), "{text}");
    assert!(text.contains("stop on source: radarr.service"), "{text}");
    assert!(
        text.contains("/var/lib/jellyfin/ -> /home/mms/config/jellyfin/data"),
        "{text}"
    );
    assert!(text.contains("/movies -> /data/media/movies"), "{text}");
    assert!(text.contains("chown -R 1100:1100"), "{text}");
    assert!(
        !text.contains("sonarr"),
        "only the selected services: {text}"
    );
    assert_eq!(
        (tree_hash(&tmp.path().join("src")), tree_hash(&ctx.root)),
        before
    );
}

/// Every descendant of `pid` (via /proc), deepest last.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(p) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

#[test]
fn killed_mid_copy_then_rerun_finishes_without_redoing_finished_work() {
    let (_host, tmp, ctx) = setup();
    // a big file so the copy can be caught in flight
    let big: Vec<u8> = (0..24u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(tmp.path().join("src/var/lib/lidarr/big.bin"), &big).unwrap();
    let cfg_file = tmp.path().join("firstboot.yml");
    std::fs::write(&cfg_file, ctx.config.to_yaml().unwrap()).unwrap();
    let bin = env!("CARGO_BIN_EXE_mms-firstboot");
    let args = |extra: &[&str]| {
        let mut c = Command::new(bin);
        c.args([
            "migrate",
            "--service",
            "radarr",
            "--service",
            "lidarr",
            "--config",
        ])
        .arg(&cfg_file)
        .arg("--root")
        .arg(&ctx.root)
        .args(extra);
        c
    };
    let mut child = args(&["--bwlimit", "3000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = ctx.root.join("home/mms/config/lidarr.mms-staging");
    let radarr_done = ctx.root.join("var/lib/mms/firstboot/migrate/radarr/done");
    let start = Instant::now();
    // wait until lidarr's big file is partly transferred
    loop {
        let partial = std::fs::read_dir(&staging).map(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().contains("big.bin")
                    && e.metadata().map(|m| m.len() > 0).unwrap_or(false)
            })
        });
        if partial.unwrap_or(false) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "copy never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "migrate finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // what a reboot or `systemctl stop` does: TERM to the whole tree, then KILL
    let mut tree = descendants(child.id());
    tree.push(child.id());
    for p in &tree {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for p in &tree {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.wait();
    assert!(radarr_done.exists(), "radarr finished before the kill");
    assert!(
        !ctx.root
            .join("var/lib/mms/firstboot/migrate/lidarr/copied-0")
            .exists()
    );
    let radarr_ino = std::fs::metadata(ctx.root.join("home/mms/config/radarr/radarr.db"))
        .unwrap()
        .ino();

    let out = args(&[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("radarr: already migrated"), "{text}");
    assert!(text.contains("lidarr: copied"), "{text}");
    let copied = std::fs::read(ctx.root.join("home/mms/config/lidarr/big.bin")).unwrap();
    assert!(copied == big, "big.bin differs after the resumed copy");
    assert_eq!(
        q(
            &ctx.root.join("home/mms/config/lidarr/lidarr.db"),
            "SELECT Path FROM TrackFiles"
        ),
        ["/data/media/music/Artist/Album/01.flac"]
    );
    assert_eq!(
        std::fs::metadata(ctx.root.join("home/mms/config/radarr/radarr.db"))
            .unwrap()
            .ino(),
        radarr_ino,
        "radarr not redone"
    );
    assert!(!staging.exists());

    // --again migrates a finished service anew
    let out = args(&["--again", "--service", "radarr"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("radarr: copied"));
    assert_ne!(
        std::fs::metadata(ctx.root.join("home/mms/config/radarr/radarr.db"))
            .unwrap()
            .ino(),
        radarr_ino
    );
}

/// A real PostgreSQL server (the old host's native Immich database), run as `postgres` on a
/// private socket directory; stopped on drop.
struct Pg {
    child: Child,
    sock: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("PostgreSQL `{name}` missing: run `sudo bash scripts/setup-test-env.sh` (40-firstboot.sh installs postgresql)"))
}

fn postgres() -> Pg {
    use std::os::unix::process::CommandExt;
    let pw = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("user postgres (package postgresql)");
    let (uid, gid) = (pw.uid.as_raw(), pw.gid.as_raw());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, sock) = (dir.path().join("data"), dir.path().join("sock"));
    for d in [&data, &sock] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    }
    let st = Command::new(pg_bin("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "initdb failed");
    let port = 20000 + (std::process::id() % 20000) as u16;
    let child = Command::new(pg_bin("postgres"))
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&sock)
        .args(["-c", "listen_addresses=", "-p", &port.to_string()])
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("pg.log")).unwrap())
        .spawn()
        .unwrap();
    let pg = Pg {
        child,
        sock,
        port,
        _dir: dir,
    };
    let start = Instant::now();
    loop {
        let ok = Command::new(pg_bin("psql"))
            .args([
                "-h",
                pg.sock.to_str().unwrap(),
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-c",
                "SELECT 1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "postgres did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg
}

#[test]
fn immich_database_is_dumped_over_ssh_for_the_start_step() {
    let pg = postgres();
    let psql = |sql: &str| {
        let st = Command::new(pg_bin("psql"))
            .args([
                "-q",
                "-h",
                pg.sock.to_str().unwrap(),
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "{sql}");
    };
    psql("CREATE DATABASE immich");
    let st = Command::new(pg_bin("psql"))
        .args(["-q", "-h", pg.sock.to_str().unwrap(), "-p", &pg.port.to_string(), "-U", "postgres", "-d", "immich", "-v", "ON_ERROR_STOP=1",
               "-c", "CREATE TABLE asset (id int, \"originalPath\" text); INSERT INTO asset VALUES (1, '/opt/immich/upload/library/admin/IMG_0001.jpg');"])
        .status()
        .unwrap();
    assert!(st.success());

    let (_host, tmp, mut ctx) = setup();
    let mut immich = ctx
        .config
        .services
        .iter()
        .find(|s| s.name == "immich")
        .unwrap()
        .clone();
    immich.units = vec![
        "immich-postgres.service".into(),
        "immich-server.service".into(),
    ];
    immich.postgres = Some(mms_firstboot::config::Postgres {
        container: "immich-postgres".into(),
        unit: "immich-postgres.service".into(),
        user: "postgres".into(),
        // the default runs pg_dumpall as postgres on its default socket; this server has its own
        source_dump_command: format!(
            "cd / && runuser -u postgres -- {} --clean --if-exists -h {} -p {}",
            pg_bin("pg_dumpall").display(),
            pg.sock.display(),
            pg.port
        ),
    });
    ctx.config.services = vec![immich];
    let reports = migration(&ctx, &[]).run().unwrap();
    assert_eq!(reports.len(), 1);
    let dump = mms_firstboot::migrate::dump_file(&ctx.root, &ctx.config, "immich");
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(
        text.contains("CREATE DATABASE immich"),
        "{}",
        &text[..text.len().min(500)]
    );
    assert!(text.contains("/opt/immich/upload/library/admin/IMG_0001.jpg"));
    assert!(
        text.contains("SELECT pg_catalog.set_config('search_path', 'public, pg_catalog', true);")
    );
    assert!(!text.contains("SELECT pg_catalog.set_config('search_path', '', false);"));
    assert_eq!(
        std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!dump.with_file_name("pg_dumpall.raw").exists());
    assert!(
        tmp.path()
            .join("vm/data/photos/library/admin/2024/IMG_0001.jpg")
            .exists()
    );
}

#[test]
fn previous_vm_copies_config_dirs_as_they_are() {
    let host = old_host();
    let tmp = tempfile::tempdir().unwrap();
    // The old VM's layout: config dirs at the same absolute paths as on the new VM (here
    // under the test dir, since both "machines" share this filesystem).
    let prev = tmp.path().join("prev/config");
    make_sources(&tmp.path().join("src"));
    std::fs::create_dir_all(&prev).unwrap();
    assert!(sh(&[
        "cp",
        "-a",
        tmp.path().join("src/var/lib/radarr").to_str().unwrap(),
        prev.join("radarr").to_str().unwrap()
    ]));
    let mut cfg = base_config();
    cfg.state = StateSource::Migrate(MigrateFrom {
        kind: SourceKind::PreviousVm,
        host: host.addr.clone(),
        user: "root".into(),
        port: host.port,
        ssh_key_secret: "migrate_ssh_key".into(),
    });
    for name in ["radarr", "sonarr"] {
        let mut s = service(
            name,
            &[&format!("{name}.service")],
            "http://127.0.0.1:1/ping",
        );
        s.config_dir = prev.join(name);
        cfg.services.push(s);
    }
    let ctx = context(&tmp.path().join("vm"), cfg);
    deliver(
        &ctx,
        "migrate_ssh_key",
        &std::fs::read_to_string(host.key()).unwrap(),
    );
    let reports = migration(&ctx, &[]).run().unwrap();
    let new_radarr = mms_firstboot::fsutil::under(&ctx.root, &prev.join("radarr"));
    // same layout: nothing rewritten
    assert_eq!(
        q(
            &new_radarr.join("radarr.db"),
            "SELECT Path FROM RootFolders ORDER BY Id"
        ),
        ["/movies/", "/movies2/"]
    );
    assert!(reports[0].rewrites.is_empty(), "{:?}", reports[0].rewrites);
    assert_eq!(
        std::fs::metadata(new_radarr.join("radarr.db"))
            .unwrap()
            .uid(),
        1100
    );
    assert!(
        reports[1]
            .warnings
            .iter()
            .any(|w| w.contains("does not exist")),
        "{:?}",
        reports[1].warnings
    );
    assert!(
        reports[0]
            .warnings
            .iter()
            .any(|w| w.contains("systemd is not running")),
        "{:?}",
        reports[0].warnings
    );
}

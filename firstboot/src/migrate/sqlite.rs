//! SQLite edge of the migration: `PRAGMA integrity_check` and the per-app stored-path
//! rewrite, one transaction per database.
//!
//! Where each app stores absolute paths comes from reference arr-state.md §1–6; tables or
//! columns missing in an older schema are skipped.

use super::rewrite::{Change, Rewriter};
use crate::config::App;
use anyhow::{Context as _, Result, anyhow};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// How a column stores paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The value is a path.
    Path,
    /// The value is a JSON document with paths in string values.
    Json,
    /// Jellyfin 10.10 `TypedBaseItems.Images`: `path*ticks*type*w*h[*blurhash]|…`.
    ImageList,
}

use Kind::{ImageList, Json, Path as P};

/// Rewrites the path field of each `|`-separated image entry.
pub fn rewrite_image_list(rw: &Rewriter, value: &str, changes: &mut Vec<Change>) -> Option<String> {
    let mut changed = false;
    let parts: Vec<String> = value
        .split('|')
        .map(|entry| {
            let (path, rest) = entry.split_once('*').unwrap_or((entry, ""));
            match rw.path(path) {
                Some(new) => {
                    changed = true;
                    changes.push(Change {
                        old: path.to_string(),
                        new: new.clone(),
                    });
                    if entry.contains('*') {
                        format!("{new}*{rest}")
                    } else {
                        new
                    }
                }
                None => entry.to_string(),
            }
        })
        .collect();
    changed.then(|| parts.join("|"))
}

/// A path-bearing column.
pub type Column = (&'static str, &'static str, Kind);

const SERVARR_COMMON: &[Column] = &[
    ("RootFolders", "Path", P),
    ("ImportLists", "RootFolderPath", P),
    ("ImportLists", "Settings", Json),
    ("AutoTagging", "Specifications", Json),
    ("RemotePathMappings", "RemotePath", P),
    ("RemotePathMappings", "LocalPath", P),
    ("DownloadClients", "Settings", Json),
    ("Notifications", "Settings", Json),
    ("Config", "Value", P),
    ("History", "Data", Json),
    ("DownloadHistory", "Data", Json),
];

/// The databases (relative to the service's config dir, LSIO layout) and their
/// path-bearing columns for `app`.
pub fn targets(app: App) -> Vec<(&'static str, Vec<Column>)> {
    let with = |extra: &[Column]| {
        let mut v = SERVARR_COMMON.to_vec();
        v.extend_from_slice(extra);
        v
    };
    match app {
        App::Radarr => vec![(
            "radarr.db",
            with(&[("Movies", "Path", P), ("Collections", "RootFolderPath", P)]),
        )],
        App::Sonarr => vec![("sonarr.db", with(&[("Series", "Path", P)]))],
        App::Lidarr => vec![(
            "lidarr.db",
            with(&[("Artists", "Path", P), ("TrackFiles", "Path", P)]),
        )],
        App::Prowlarr => vec![(
            "prowlarr.db",
            vec![
                ("DownloadClients", "Settings", Json),
                ("Notifications", "Settings", Json),
                ("Config", "Value", P),
            ],
        )],
        App::Sabnzbd => vec![(
            "admin/history1.db",
            vec![("history", "storage", P), ("history", "path", P)],
        )],
        App::Jellyfin => vec![
            (
                "data/data/jellyfin.db",
                vec![
                    ("BaseItems", "Path", P),
                    ("BaseItems", "Data", Json),
                    ("BaseItemImageInfos", "Path", P),
                    ("MediaStreamInfos", "Path", P),
                    ("Chapters", "ImagePath", P),
                    ("ImageInfos", "Path", P),
                ],
            ),
            (
                "data/data/library.db",
                vec![
                    ("TypedBaseItems", "Path", P),
                    ("TypedBaseItems", "data", Json),
                    ("TypedBaseItems", "Images", ImageList),
                    ("mediastreams", "Path", P),
                    ("Chapters2", "ImagePath", P),
                ],
            ),
        ],
        App::Immich | App::Other => vec![],
    }
}

/// A failed integrity check: the file and what SQLite said.
#[derive(Debug, thiserror::Error)]
#[error("SQLite database {path} failed PRAGMA integrity_check: {detail}")]
pub struct Corrupt {
    /// The database file.
    pub path: PathBuf,
    /// SQLite's answer (first lines) or the open error.
    pub detail: String,
}

/// Runs `PRAGMA integrity_check` on `path` (read-write so a leftover WAL is applied).
pub fn integrity_check(path: &Path) -> Result<(), Corrupt> {
    let corrupt = |detail: String| Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| corrupt(e.to_string()))?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| corrupt(e.to_string()))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|it| it.collect())
        .map_err(|e| corrupt(e.to_string()))?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(corrupt(
            rows.into_iter().take(3).collect::<Vec<_>>().join("; "),
        ))
    }
}

/// Is this file an SQLite database (by its 16-byte header)?
pub fn looks_like_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head == b"SQLite format 3\0")
        .unwrap_or(false)
}

/// One rewritten value, for the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbChange {
    /// `table.column`.
    pub column: String,
    /// The row.
    pub rowid: i64,
    /// What changed in it.
    pub change: Change,
}

/// Applies `rw` to `columns` of the database at `path` in one transaction; returns every
/// change. On any error (e.g. a UNIQUE collision when two old roots map to one new root)
/// nothing is changed.
pub fn rewrite_db(path: &Path, columns: &[Column], rw: &Rewriter) -> Result<Vec<DbChange>> {
    let mut conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    let tx = conn.transaction()?;
    let mut all = Vec::new();
    for (table, column, kind) in columns {
        if !has_column(&tx, table, column)? {
            continue;
        }
        let rows: Vec<(i64, String)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT rowid, \"{column}\" FROM \"{table}\" WHERE typeof(\"{column}\") = 'text'"
            ))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (rowid, value) in rows {
            let mut changes = Vec::new();
            let new = match kind {
                Kind::Path => rw.path(&value).inspect(|n| {
                    changes.push(Change {
                        old: value.clone(),
                        new: n.clone(),
                    })
                }),
                Kind::Json => rw.json(&value, &mut changes),
                Kind::ImageList => rewrite_image_list(rw, &value, &mut changes),
            };
            let Some(new) = new else { continue };
            tx.execute(
                &format!("UPDATE \"{table}\" SET \"{column}\" = ?1 WHERE rowid = ?2"),
                rusqlite::params![new, rowid],
            )
            .map_err(|e| {
                anyhow!(
                    "{}: rewriting {table}.{column} row {rowid} from {value:?} to {new:?}: {e}",
                    path.display()
                )
            })?;
            for change in changes {
                all.push(DbChange {
                    column: format!("{table}.{column}"),
                    rowid,
                    change,
                });
            }
        }
    }
    tx.commit()
        .with_context(|| format!("committing rewrites in {}", path.display()))?;
    // Fold the WAL back so the copied files are self-contained.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    Ok(all)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names: Vec<String> = stmt
        .query_map([table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names.iter().any(|n| n == column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rewrite;

    #[test]
    fn rewrites_radarr_shaped_db_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("radarr.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE RootFolders (Id INTEGER PRIMARY KEY, Path TEXT NOT NULL UNIQUE);
             INSERT INTO RootFolders (Path) VALUES ('/movies/'), ('/movies2/');
             CREATE TABLE DownloadClients (Id INTEGER PRIMARY KEY, Settings TEXT);
             INSERT INTO DownloadClients (Settings) VALUES ('{\"host\":\"10.0.0.5\",\"nzbFolder\":\"/downloads/nzb\"}');
             CREATE TABLE Config (Id INTEGER PRIMARY KEY, Key TEXT, Value TEXT);
             INSERT INTO Config (Key, Value) VALUES ('recyclebin', '/movies/.trash'), ('downloadclientworkingfolders', '_UNPACK_|_FAILED_');",
        )
        .unwrap();
        drop(c);
        let rw = Rewriter::new(&[
            Rewrite {
                from: "/movies".into(),
                to: "/data/media/movies".into(),
            },
            Rewrite {
                from: "/downloads".into(),
                to: "/data/usenet".into(),
            },
        ]);
        let changes = rewrite_db(&db, &targets(App::Radarr)[0].1, &rw).unwrap();
        assert_eq!(changes.len(), 3, "{changes:#?}");
        let c = Connection::open(&db).unwrap();
        let roots: Vec<String> = c
            .prepare("SELECT Path FROM RootFolders ORDER BY Id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(roots, ["/data/media/movies/", "/movies2/"]);
        integrity_check(&db).unwrap();
    }

    #[test]
    fn unique_collision_rolls_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sonarr.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE Series (Id INTEGER PRIMARY KEY, Path TEXT);
             INSERT INTO Series (Path) VALUES ('/tv/A');
             CREATE TABLE RootFolders (Id INTEGER PRIMARY KEY, Path TEXT NOT NULL UNIQUE);
             INSERT INTO RootFolders (Path) VALUES ('/tv'), ('/anime');",
        )
        .unwrap();
        drop(c);
        let rw = Rewriter::new(&[
            Rewrite {
                from: "/tv".into(),
                to: "/data/media/tv".into(),
            },
            Rewrite {
                from: "/anime".into(),
                to: "/data/media/tv".into(),
            },
        ]);
        let e = rewrite_db(&db, &targets(App::Sonarr)[0].1, &rw).unwrap_err();
        assert!(format!("{e:#}").contains("RootFolders.Path"), "{e:#}");
        let c = Connection::open(&db).unwrap();
        let p: String = c
            .query_row("SELECT Path FROM Series", [], |r| r.get(0))
            .unwrap();
        assert_eq!(p, "/tv/A");
    }

    #[test]
    fn jellyfin_10_10_image_lists() {
        let rw = Rewriter::new(&[Rewrite {
            from: "/movies".into(),
            to: "/data/media/movies".into(),
        }]);
        let mut ch = vec![];
        let v = "/movies/A/poster.jpg*637000000000000000*Primary*1000*1500*abc|/movies2/x.jpg*1*Backdrop*1*1";
        assert_eq!(
            rewrite_image_list(&rw, v, &mut ch).unwrap(),
            "/data/media/movies/A/poster.jpg*637000000000000000*Primary*1000*1500*abc|/movies2/x.jpg*1*Backdrop*1*1"
        );
        assert_eq!(rewrite_image_list(&rw, "/tv/x*1*P*1*1", &mut ch), None);
    }

    #[test]
    fn corrupt_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lidarr.db");
        std::fs::write(&db, b"SQLite format 3\0garbage garbage garbage").unwrap();
        let e = integrity_check(&db).unwrap_err();
        assert!(e.to_string().contains("lidarr.db"), "{e}");
    }
}

/// Where the services answer each other on the new VM's podman network: container name
/// (= service name) → port.
pub type Endpoints = std::collections::BTreeMap<String, u16>;

/// Given a row's `Implementation` and `Settings`, the members to set: (key, JSON literal).
type SettingsEdit = Box<dyn Fn(&str, &str) -> Vec<(&'static str, String)>>;

/// Sets `host`/`port` of the rows whose `Implementation` is `implementation`.
fn host_port(implementation: &'static str, host: &'static str, port: u16) -> SettingsEdit {
    Box::new(move |imp, _| {
        if imp == implementation {
            vec![("host", format!("{host:?}")), ("port", port.to_string())]
        } else {
            vec![]
        }
    })
}

/// Points stored endpoints at the new containers (arr-state.md §0 "network endpoints"):
/// Servarr download clients of type SABnzbd → `sabnzbd:<port>` (the LXC used its own IP and
/// port 7777), the Jellyfin ("MediaBrowser") connection → `jellyfin:<port>`, Prowlarr
/// applications → `http://<app>:<port>` with `prowlarrUrl`
/// `http://prowlarr:<port>`. Only for services that run on the new VM. One transaction.
pub fn rewrite_endpoints(path: &Path, app: App, eps: &Endpoints) -> Result<Vec<DbChange>> {
    use super::rewrite::json_set_member;
    let mut edits: Vec<(&str, SettingsEdit)> = Vec::new();
    if matches!(app, App::Radarr | App::Sonarr | App::Lidarr | App::Prowlarr)
        && let Some(port) = eps.get("sabnzbd").copied()
    {
        edits.push(("DownloadClients", host_port("Sabnzbd", "sabnzbd", port)));
    }
    if matches!(app, App::Radarr | App::Sonarr | App::Lidarr)
        && let Some(port) = eps.get("jellyfin").copied()
    {
        // The "Emby / Jellyfin" connection (library refresh after imports).
        edits.push(("Notifications", host_port("MediaBrowser", "jellyfin", port)));
    }
    if app == App::Prowlarr {
        let eps = eps.clone();
        edits.push((
            "Applications",
            Box::new(move |imp, _| {
                let name = imp.to_ascii_lowercase();
                let mut v = Vec::new();
                if let Some(port) = eps.get(&name) {
                    v.push(("baseUrl", format!("\"http://{name}:{port}\"")));
                    if let Some(pp) = eps.get("prowlarr") {
                        v.push(("prowlarrUrl", format!("\"http://prowlarr:{pp}\"")));
                    }
                }
                v
            }),
        ));
    }
    if edits.is_empty() {
        return Ok(vec![]);
    }
    let mut conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    let tx = conn.transaction()?;
    let mut all = Vec::new();
    let mut old_sab_hosts: Vec<String> = Vec::new();
    for (table, edit) in &edits {
        if !has_column(&tx, table, "Implementation")? || !has_column(&tx, table, "Settings")? {
            continue;
        }
        let rows: Vec<(i64, String, String)> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT rowid, Implementation, Settings FROM \"{table}\" \
                 WHERE typeof(Settings) = 'text' AND typeof(Implementation) = 'text'"
            ))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (rowid, imp, settings) in rows {
            if *table == "DownloadClients"
                && imp == "Sabnzbd"
                && let Some(h) = serde_json::from_str::<serde_json::Value>(&settings)
                    .ok()
                    .and_then(|v| v.get("host").and_then(|h| h.as_str()).map(str::to_string))
                && h != "sabnzbd"
            {
                old_sab_hosts.push(h);
            }
            let mut text = settings.clone();
            let mut changes = Vec::new();
            for (key, literal) in edit(&imp, &settings) {
                if let Some(new) = json_set_member(&text, key, &literal) {
                    let old = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get(key).map(|x| x.to_string()))
                        .unwrap_or_default();
                    changes.push(Change {
                        old: format!("{key} {old}"),
                        new: format!("{key} {literal}"),
                    });
                    text = new;
                }
            }
            if text != settings {
                tx.execute(
                    &format!("UPDATE \"{table}\" SET Settings = ?1 WHERE rowid = ?2"),
                    rusqlite::params![text, rowid],
                )?;
                for change in changes {
                    all.push(DbChange {
                        column: format!("{table}.Settings"),
                        rowid,
                        change,
                    });
                }
            }
        }
    }
    // RemotePathMappings.Host must equal the client's host string exactly.
    if !old_sab_hosts.is_empty() && has_column(&tx, "RemotePathMappings", "Host")? {
        for h in &old_sab_hosts {
            let ids: Vec<i64> = tx
                .prepare("SELECT rowid FROM RemotePathMappings WHERE Host = ?1")?
                .query_map([h], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for rowid in ids {
                tx.execute(
                    "UPDATE RemotePathMappings SET Host = 'sabnzbd' WHERE rowid = ?1",
                    [rowid],
                )?;
                all.push(DbChange {
                    column: "RemotePathMappings.Host".into(),
                    rowid,
                    change: Change {
                        old: h.clone(),
                        new: "sabnzbd".into(),
                    },
                });
            }
        }
    }
    tx.commit()?;
    Ok(all)
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn jellyfin_connection_points_at_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("radarr.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE Notifications (Id INTEGER PRIMARY KEY, Implementation TEXT, Settings TEXT);
             INSERT INTO Notifications (Implementation, Settings) VALUES
               ('MediaBrowser', '{\"host\": \"10.0.0.4\", \"port\": 8096, \"useSsl\": false, \"mapFrom\": \"/movies\"}'),
               ('CustomScript', '{\"path\": \"/opt/x.sh\"}');",
        )
        .unwrap();
        drop(c);
        let eps: Endpoints = [("jellyfin".to_string(), 8096)].into_iter().collect();
        let ch = rewrite_endpoints(&db, App::Radarr, &eps).unwrap();
        assert_eq!(ch.len(), 1, "{ch:#?}");
        let c = Connection::open(&db).unwrap();
        let v: String = c
            .query_row("SELECT Settings FROM Notifications WHERE Id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            v,
            "{\"host\": \"jellyfin\", \"port\": 8096, \"useSsl\": false, \"mapFrom\": \"/movies\"}"
        );
    }

    #[test]
    fn sabnzbd_client_and_prowlarr_apps_point_at_containers() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("prowlarr.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE DownloadClients (Id INTEGER PRIMARY KEY, Implementation TEXT, Settings TEXT);
             INSERT INTO DownloadClients (Implementation, Settings) VALUES
               ('Sabnzbd', '{\"host\": \"10.0.0.9\", \"port\": 7777, \"apiKey\": \"k\"}'),
               ('QBittorrent', '{\"host\": \"10.0.0.8\", \"port\": 8080}');
             CREATE TABLE Applications (Id INTEGER PRIMARY KEY, Name TEXT, Implementation TEXT, Settings TEXT);
             INSERT INTO Applications (Name, Implementation, Settings) VALUES
               ('Radarr', 'Radarr', '{\"prowlarrUrl\": \"http://10.0.0.5:9696\", \"baseUrl\": \"http://10.0.0.6:7878\", \"apiKey\": \"a\"}'),
               ('Readarr', 'Readarr', '{\"prowlarrUrl\": \"http://10.0.0.5:9696\", \"baseUrl\": \"http://10.0.0.7:8787\"}');",
        )
        .unwrap();
        drop(c);
        let eps: Endpoints = [("sabnzbd", 8080), ("radarr", 7878), ("prowlarr", 9696)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let ch = rewrite_endpoints(&db, App::Prowlarr, &eps).unwrap();
        assert_eq!(ch.len(), 4, "{ch:#?}");
        let c = Connection::open(&db).unwrap();
        let s: Vec<String> = c
            .prepare("SELECT Settings FROM DownloadClients ORDER BY Id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            s[0],
            "{\"host\": \"sabnzbd\", \"port\": 8080, \"apiKey\": \"k\"}"
        );
        assert_eq!(s[1], "{\"host\": \"10.0.0.8\", \"port\": 8080}");
        let a: Vec<String> = c
            .prepare("SELECT Settings FROM Applications ORDER BY Id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            a[0],
            "{\"prowlarrUrl\": \"http://prowlarr:9696\", \"baseUrl\": \"http://radarr:7878\", \"apiKey\": \"a\"}"
        );
        assert!(
            a[1].contains("10.0.0.7:8787"),
            "an app not on the new VM is left alone"
        );
        // idempotent
        assert!(
            rewrite_endpoints(&db, App::Prowlarr, &eps)
                .unwrap()
                .is_empty()
        );
    }
}

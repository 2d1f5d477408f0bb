//! What each stand-in answers: the real apps' health endpoints on their real ports and the
//! state files they keep. Pure data, no I/O.
//!
//! Sources: Servarr `GET /ping` → `{"status": "OK"}` (Radarr/Sonarr/Lidarr/Prowlarr v5+),
//! SABnzbd `GET /api?mode=version` → `{"version": "…"}`, Jellyfin `GET /health` → `Healthy`
//! (text/plain), Immich server `GET /api/server/ping` → `{"res":"pong"}`, Immich machine
//! learning `GET /ping` → `pong` (reference/appliance.md §4, reference/arr-state.md).

/// One HTTP answer of a stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Request path without the query string.
    pub path: &'static str,
    /// A query parameter (`name`, `value`) the request must carry, e.g. SABnzbd's `mode=version`.
    pub query: Option<(&'static str, &'static str)>,
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// Response body.
    pub body: &'static str,
}

/// A SQLite database the app keeps under its config directory, relative to `/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Db {
    /// Path relative to the config root, e.g. `radarr.db`.
    pub path: &'static str,
}

/// How a stand-in behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP app: listens on `port`, answers `routes`, keeps `dbs` under `/config`, and
    /// creates `marker_dirs` (each with a `.immich`-style marker file) under `/data`.
    Http {
        /// TCP port, the app's real one.
        port: u16,
        /// Health and version endpoints.
        routes: &'static [Route],
        /// SQLite files written under `/config` (real data for backups and restores).
        dbs: &'static [Db],
        /// Directories created under `/data` with a marker file inside, like Immich's library.
        data_dirs: &'static [&'static str],
        /// `(host env var, default host, port)` the app needs reachable before it listens
        /// (Immich waits for its database and valkey by their network aliases).
        needs: &'static [(&'static str, &'static str, u16)],
    },
    /// A Redis-protocol server answering `PING` (valkey).
    Resp {
        /// TCP port.
        port: u16,
    },
}

/// A named stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// Role name, given on the command line (`mms-standin serve radarr`).
    pub name: &'static str,
    /// Behaviour.
    pub kind: Kind,
}

const SERVARR_PING: &[Route] = &[Route {
    path: "/ping",
    query: None,
    status: 200,
    content_type: "application/json",
    body: "{\n  \"status\": \"OK\"\n}",
}];

/// Every stand-in role.
pub const ROLES: &[Role] = &[
    servarr(
        "prowlarr",
        9696,
        &[
            Db {
                path: "prowlarr.db",
            },
            Db { path: "logs.db" },
        ],
    ),
    servarr(
        "radarr",
        7878,
        &[Db { path: "radarr.db" }, Db { path: "logs.db" }],
    ),
    servarr(
        "sonarr",
        8989,
        &[Db { path: "sonarr.db" }, Db { path: "logs.db" }],
    ),
    servarr(
        "lidarr",
        8686,
        &[Db { path: "lidarr.db" }, Db { path: "logs.db" }],
    ),
    Role {
        name: "sabnzbd",
        kind: Kind::Http {
            port: 8080,
            routes: &[Route {
                path: "/api",
                query: Some(("mode", "version")),
                status: 200,
                content_type: "application/json",
                body: "{\"version\": \"4.5.3\"}",
            }],
            dbs: &[Db {
                path: "admin/history1.db",
            }],
            data_dirs: &[],
            needs: &[],
        },
    },
    Role {
        name: "jellyfin",
        kind: Kind::Http {
            port: 8096,
            routes: &[Route {
                path: "/health",
                query: None,
                status: 200,
                content_type: "text/plain",
                body: "Healthy",
            }],
            dbs: &[Db {
                path: "data/jellyfin.db",
            }],
            data_dirs: &[],
            needs: &[],
        },
    },
    Role {
        name: "immich-server",
        kind: Kind::Http {
            port: 2283,
            routes: &[Route {
                path: "/api/server/ping",
                query: None,
                status: 200,
                content_type: "application/json",
                body: "{\"res\":\"pong\"}",
            }],
            dbs: &[],
            data_dirs: &[
                "library",
                "upload",
                "thumbs",
                "encoded-video",
                "profile",
                "backups",
            ],
            needs: &[
                ("DB_HOSTNAME", "database", 5432),
                ("REDIS_HOSTNAME", "redis", 6379),
            ],
        },
    },
    Role {
        name: "immich-machine-learning",
        kind: Kind::Http {
            port: 3003,
            routes: &[Route {
                path: "/ping",
                query: None,
                status: 200,
                content_type: "text/plain",
                body: "pong",
            }],
            dbs: &[],
            data_dirs: &[],
            needs: &[],
        },
    },
    Role {
        name: "valkey",
        kind: Kind::Resp { port: 6379 },
    },
];

const fn servarr(name: &'static str, port: u16, dbs: &'static [Db]) -> Role {
    Role {
        name,
        kind: Kind::Http {
            port,
            routes: SERVARR_PING,
            dbs,
            data_dirs: &[],
            needs: &[],
        },
    }
}

/// The role called `name`.
pub fn find(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.name == name)
}

/// The answer to `GET path?query` (`None`: 404).
pub fn answer(routes: &'static [Route], path: &str, query: &str) -> Option<&'static Route> {
    routes.iter().find(|r| {
        r.path == path
            && r.query.is_none_or(|(k, v)| {
                query
                    .split('&')
                    .any(|pair| pair.split_once('=') == Some((k, v)))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servarr_ping_and_real_ports() {
        for (name, port) in [
            ("prowlarr", 9696),
            ("radarr", 7878),
            ("sonarr", 8989),
            ("lidarr", 8686),
        ] {
            let role = find(name).unwrap();
            let Kind::Http {
                port: p, routes, ..
            } = role.kind
            else {
                panic!("{name} is not http")
            };
            assert_eq!(p, port);
            let r = answer(routes, "/ping", "").unwrap();
            assert_eq!(
                (r.status, r.body.replace([' ', '\n'], "")),
                (200, "{\"status\":\"OK\"}".into())
            );
            assert!(answer(routes, "/", "").is_none());
        }
    }

    #[test]
    fn sabnzbd_needs_mode_version() {
        let Kind::Http { routes, port, .. } = find("sabnzbd").unwrap().kind else {
            panic!()
        };
        assert_eq!(port, 8080);
        assert!(answer(routes, "/api", "mode=version").is_some());
        assert!(answer(routes, "/api", "output=json&mode=version").is_some());
        assert!(answer(routes, "/api", "mode=queue").is_none());
        assert!(answer(routes, "/api", "").is_none());
    }

    #[test]
    fn jellyfin_and_immich() {
        let Kind::Http { routes, .. } = find("jellyfin").unwrap().kind else {
            panic!()
        };
        assert_eq!(answer(routes, "/health", "").unwrap().body, "Healthy");
        let Kind::Http { routes, port, .. } = find("immich-server").unwrap().kind else {
            panic!()
        };
        assert_eq!(port, 2283);
        assert_eq!(
            answer(routes, "/api/server/ping", "").unwrap().body,
            "{\"res\":\"pong\"}"
        );
        assert!(find("nope").is_none());
    }
}

//! Typed systemd and Quadlet unit files: one struct per section, serialized through [`ini`].
//!
//! Owns which keys exist and how each is quoted (raw text or word list, plain or command-line
//! context); the escaping itself is in [`ini`]. Field conventions: `Option` = key omitted when
//! `None`, `Vec` = key repeated once per element. Every `section()` destructures `Self`, so a
//! new field does not compile until it is written out.
//!
//! References: systemd.unit(5), systemd.service(5), systemd.timer(5), systemd.mount(5),
//! podman-systemd.unit(5) (podman 5.4: the lowest podman the appliance runs).

use super::ini::{self, Ctx, IniError, Section, Value};
use std::collections::BTreeMap;

/// `[Unit]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    /// `Description=`.
    pub description: Option<String>,
    /// `Wants=`.
    pub wants: Vec<String>,
    /// `After=`.
    pub after: Vec<String>,
    /// `RequiresMountsFor=`.
    pub requires_mounts_for: Vec<String>,
    /// `ConditionPathExists=` (prefix `!` to negate).
    pub condition_path_exists: Vec<String>,
    /// `(StartLimitIntervalSec=, StartLimitBurst=)`: at most `burst` starts within
    /// `interval` seconds.
    pub start_limit: Option<(u32, u32)>,
}

impl Unit {
    /// The `[Unit]` section.
    pub fn section(&self) -> Section {
        let Unit {
            description,
            wants,
            after,
            requires_mounts_for,
            condition_path_exists,
            start_limit,
        } = self;
        let mut s = Section::new("Unit");
        s.opt_text("Description", description, Ctx::Plain);
        s.all_text("Wants", wants, Ctx::Plain);
        s.all_text("After", after, Ctx::Plain);
        s.all_text("RequiresMountsFor", requires_mounts_for, Ctx::Plain);
        s.all_text("ConditionPathExists", condition_path_exists, Ctx::Plain);
        if let Some((interval, burst)) = start_limit {
            s.opt_text(
                "StartLimitIntervalSec",
                &Some(interval.to_string()),
                Ctx::Plain,
            );
            s.opt_text("StartLimitBurst", &Some(burst.to_string()), Ctx::Plain);
        }
        s
    }
}

/// `[Service]` (for a plain `.service` and the pass-through section of a `.container`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// `Type=`.
    pub kind: Option<String>,
    /// `RemainAfterExit=`.
    pub remain_after_exit: Option<bool>,
    /// `ExecStart=` command lines.
    pub exec_start: Vec<Vec<String>>,
    /// `ExecStartPost=` command lines.
    pub exec_start_post: Vec<Vec<String>>,
    /// `Restart=`.
    pub restart: Option<String>,
    /// `RestartSec=`.
    pub restart_sec: Option<String>,
    /// `TimeoutStartSec=`.
    pub timeout_start_sec: Option<String>,
    /// `Nice=`.
    pub nice: Option<i32>,
    /// `IOSchedulingClass=`.
    pub io_scheduling_class: Option<String>,
}

impl Service {
    /// The `[Service]` section.
    pub fn section(&self) -> Section {
        let Service {
            kind,
            remain_after_exit,
            exec_start,
            exec_start_post,
            restart,
            restart_sec,
            timeout_start_sec,
            nice,
            io_scheduling_class,
        } = self;
        let mut s = Section::new("Service");
        s.opt_text("Type", kind, Ctx::Plain);
        s.opt_bool("RemainAfterExit", *remain_after_exit, "yes", "no");
        for cmd in exec_start {
            s.entries
                .push(("ExecStart", Value::Words(cmd.clone()), Ctx::Exec));
        }
        for cmd in exec_start_post {
            s.entries
                .push(("ExecStartPost", Value::Words(cmd.clone()), Ctx::Exec));
        }
        s.opt_text("Restart", restart, Ctx::Plain);
        s.opt_text("RestartSec", restart_sec, Ctx::Plain);
        s.opt_text("TimeoutStartSec", timeout_start_sec, Ctx::Plain);
        s.opt_text("Nice", &nice.map(|n| n.to_string()), Ctx::Plain);
        s.opt_text("IOSchedulingClass", io_scheduling_class, Ctx::Plain);
        s
    }
}

/// `[Install]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    /// `WantedBy=`.
    pub wanted_by: Vec<String>,
}

impl Install {
    /// The `[Install]` section.
    pub fn section(&self) -> Section {
        let Install { wanted_by } = self;
        let mut s = Section::new("Install");
        s.all_text("WantedBy", wanted_by, Ctx::Plain);
        s
    }
}

/// `[Timer]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timer {
    /// `OnCalendar=`.
    pub on_calendar: Vec<String>,
    /// `Persistent=`.
    pub persistent: Option<bool>,
    /// `RandomizedDelaySec=`.
    pub randomized_delay_sec: Option<String>,
    /// `Unit=`.
    pub unit: Option<String>,
}

impl Timer {
    /// The `[Timer]` section.
    pub fn section(&self) -> Section {
        let Timer {
            on_calendar,
            persistent,
            randomized_delay_sec,
            unit,
        } = self;
        let mut s = Section::new("Timer");
        s.all_text("OnCalendar", on_calendar, Ctx::Plain);
        s.opt_bool("Persistent", *persistent, "true", "false");
        s.opt_text("RandomizedDelaySec", randomized_delay_sec, Ctx::Plain);
        s.opt_text("Unit", unit, Ctx::Plain);
        s
    }
}

/// `[Path]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathUnit {
    /// `PathExists=`.
    pub path_exists: Vec<String>,
    /// `Unit=`.
    pub unit: Option<String>,
}

impl PathUnit {
    /// The `[Path]` section.
    pub fn section(&self) -> Section {
        let PathUnit { path_exists, unit } = self;
        let mut s = Section::new("Path");
        s.all_text("PathExists", path_exists, Ctx::Plain);
        s.opt_text("Unit", unit, Ctx::Plain);
        s
    }
}

/// `[Mount]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    /// `What=`.
    pub what: String,
    /// `Where=` (must match the unit name, systemd-escaped).
    pub r#where: String,
    /// `Type=`.
    pub kind: Option<String>,
    /// `Options=`.
    pub options: Option<String>,
    /// `TimeoutSec=`.
    pub timeout_sec: Option<String>,
}

impl Mount {
    /// The `[Mount]` section.
    pub fn section(&self) -> Section {
        let Mount {
            what,
            r#where,
            kind,
            options,
            timeout_sec,
        } = self;
        let mut s = Section::new("Mount");
        s.entries
            .push(("What", Value::Text(what.clone()), Ctx::Plain));
        s.entries
            .push(("Where", Value::Text(r#where.clone()), Ctx::Plain));
        s.opt_text("Type", kind, Ctx::Plain);
        s.opt_text("Options", options, Ctx::Plain);
        s.opt_text("TimeoutSec", timeout_sec, Ctx::Plain);
        s
    }
}

/// Quadlet `[Container]`. Every value lands in the generated `ExecStart=`, hence [`Ctx::Exec`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// `Image=` (fully qualified).
    pub image: String,
    /// `ContainerName=`.
    pub container_name: Option<String>,
    /// `Network=`.
    pub network: Vec<String>,
    /// `NetworkAlias=`.
    pub network_alias: Vec<String>,
    /// `PublishPort=`.
    pub publish_port: Vec<String>,
    /// `Volume=`.
    pub volume: Vec<String>,
    /// `UserNS=`.
    pub user_ns: Option<String>,
    /// `User=` (in-container uid the process starts as).
    pub user: Option<String>,
    /// `Group=`.
    pub group: Option<String>,
    /// `Environment=` (one line per variable).
    pub environment: BTreeMap<String, String>,
    /// `Secret=`.
    pub secret: Vec<String>,
    /// `ShmSize=`.
    pub shm_size: Option<String>,
    /// `HealthCmd=` (podman reads a leading `[` as a JSON exec array).
    pub health_cmd: Option<String>,
    /// `HealthInterval=`.
    pub health_interval: Option<String>,
    /// `HealthStartPeriod=`.
    pub health_start_period: Option<String>,
    /// `HealthRetries=`.
    pub health_retries: Option<u32>,
    /// `HealthTimeout=`.
    pub health_timeout: Option<String>,
    /// `Notify=` (`healthy`: READY only once the health check passes).
    pub notify: Option<String>,
    /// `AutoUpdate=`.
    pub auto_update: Option<String>,
    /// `Label=`.
    pub label: Vec<String>,
    /// `Exec=` (command and arguments).
    pub exec: Option<Vec<String>>,
}

impl Container {
    /// The `[Container]` section.
    pub fn section(&self) -> Section {
        let Container {
            image,
            container_name,
            network,
            network_alias,
            publish_port,
            volume,
            user_ns,
            user,
            group,
            environment,
            secret,
            shm_size,
            health_cmd,
            health_interval,
            health_start_period,
            health_retries,
            health_timeout,
            notify,
            auto_update,
            label,
            exec,
        } = self;
        let x = Ctx::Exec;
        let mut s = Section::new("Container");
        s.entries.push(("Image", Value::Text(image.clone()), x));
        s.opt_text("ContainerName", container_name, x);
        s.all_text("Network", network, x);
        s.all_text("NetworkAlias", network_alias, x);
        s.all_text("PublishPort", publish_port, x);
        s.all_text("Volume", volume, x);
        s.opt_text("UserNS", user_ns, x);
        s.opt_text("User", user, x);
        s.opt_text("Group", group, x);
        for (k, v) in environment {
            s.entries
                .push(("Environment", Value::Words(vec![format!("{k}={v}")]), x));
        }
        s.all_text("Secret", secret, x);
        s.opt_text("ShmSize", shm_size, x);
        s.opt_text("HealthCmd", health_cmd, x);
        s.opt_text("HealthInterval", health_interval, x);
        s.opt_text("HealthStartPeriod", health_start_period, x);
        s.opt_text("HealthRetries", &health_retries.map(|n| n.to_string()), x);
        s.opt_text("HealthTimeout", health_timeout, x);
        s.opt_text("Notify", notify, x);
        s.opt_text("AutoUpdate", auto_update, x);
        s.all_text("Label", label, x);
        s.opt_words("Exec", exec, x);
        s
    }
}

/// Quadlet `[Network]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// `NetworkName=`.
    pub network_name: Option<String>,
    /// `Driver=`.
    pub driver: Option<String>,
}

impl Network {
    /// The `[Network]` section.
    pub fn section(&self) -> Section {
        let Network {
            network_name,
            driver,
        } = self;
        let mut s = Section::new("Network");
        s.opt_text("NetworkName", network_name, Ctx::Exec);
        s.opt_text("Driver", driver, Ctx::Exec);
        s
    }
}

/// Quadlet `[Volume]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    /// `VolumeName=`.
    pub volume_name: Option<String>,
}

impl Volume {
    /// The `[Volume]` section.
    pub fn section(&self) -> Section {
        let Volume { volume_name } = self;
        let mut s = Section::new("Volume");
        s.opt_text("VolumeName", volume_name, Ctx::Exec);
        s
    }
}

/// The type-specific body of a unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `.service`.
    Service(Service),
    /// `.timer`.
    Timer(Timer),
    /// `.path`.
    Path(PathUnit),
    /// `.mount`.
    Mount(Mount),
    /// Quadlet `.container` (+ pass-through `[Service]`).
    Container(Box<Container>, Service),
    /// Quadlet `.network`.
    Network(Network),
    /// Quadlet `.volume`.
    Volume(Volume),
}

/// A whole unit file: `[Unit]`, the body, `[Install]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// `[Unit]`.
    pub unit: Unit,
    /// The type-specific section(s).
    pub body: Body,
    /// `[Install]`.
    pub install: Install,
}

/// The comment written at the top of every generated unit.
pub const HEADER: &str = "Generated by mms-build; the appliance is rebuilt, never edited.";

impl UnitFile {
    /// The file name suffix this unit needs (`service`, `container`, …).
    pub fn suffix(&self) -> &'static str {
        match self.body {
            Body::Service(_) => "service",
            Body::Timer(_) => "timer",
            Body::Path(_) => "path",
            Body::Mount(_) => "mount",
            Body::Container(..) => "container",
            Body::Network(_) => "network",
            Body::Volume(_) => "volume",
        }
    }

    /// Serializes the unit file.
    pub fn render(&self) -> Result<String, IniError> {
        let mut sections = vec![self.unit.section()];
        match &self.body {
            Body::Service(s) => sections.push(s.section()),
            Body::Timer(t) => sections.push(t.section()),
            Body::Path(p) => sections.push(p.section()),
            Body::Mount(m) => sections.push(m.section()),
            Body::Container(c, s) => {
                sections.push(c.section());
                sections.push(s.section());
            }
            Body::Network(n) => sections.push(n.section()),
            Body::Volume(v) => sections.push(v.section()),
        }
        sections.push(self.install.section());
        ini::to_string(&[HEADER], &sections)
    }
}

/// systemd's path escaping (`systemd-escape --path`): the unit name for a mount point.
/// `/data/photos` → `data-photos`, `/` → `-`; `-` and unsafe bytes become `\xNN`.
pub fn escape_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return "-".to_string();
    }
    let mut out = String::new();
    // Collapse duplicate slashes like systemd's path_simplify.
    let parts: Vec<&str> = trimmed.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, b) in part.bytes().enumerate() {
            // Like unit_name_escape(): '.' is escaped only as the very first character.
            let ok = b.is_ascii_alphanumeric()
                || b == b':'
                || b == b'_'
                || (b == b'.' && (i, j) != (0, 0));
            if ok {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_path_matches_systemd() {
        assert_eq!(escape_path("/data"), "data");
        assert_eq!(escape_path("/data/photos"), "data-photos");
        assert_eq!(escape_path("/"), "-");
        assert_eq!(escape_path("/data/my-stuff"), "data-my\\x2dstuff");
        assert_eq!(escape_path("/data/.hidden"), "data-.hidden");
        assert_eq!(escape_path("/.x"), "\\x2ex");
        assert_eq!(escape_path("/data/a b"), "data-a\\x20b");
    }

    #[test]
    fn container_unit_exact() {
        let f = UnitFile {
            unit: Unit {
                description: Some("Radarr".into()),
                ..Unit::default()
            },
            body: Body::Container(
                Box::new(Container {
                    image: "lscr.io/linuxserver/radarr:5".into(),
                    container_name: Some("radarr".into()),
                    environment: [("TZ".to_string(), "Europe/Berlin".to_string())].into(),
                    ..Container::default()
                }),
                Service {
                    restart: Some("on-failure".into()),
                    ..Service::default()
                },
            ),
            install: Install {
                wanted_by: vec!["default.target".into()],
            },
        };
        assert_eq!(
            f.render().unwrap(),
            format!(
                "# {HEADER}\n\n[Unit]\nDescription=Radarr\n\n[Container]\n\
                 Image=lscr.io/linuxserver/radarr:5\nContainerName=radarr\n\
                 Environment=\"TZ=Europe/Berlin\"\n\n[Service]\nRestart=on-failure\n\n\
                 [Install]\nWantedBy=default.target\n"
            )
        );
        assert_eq!(f.suffix(), "container");
    }
}

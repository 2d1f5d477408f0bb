//! Decoding `mms.yml` from the span-aware tree into [`Site`], collecting every
//! problem with its line and column. Pure: the catalog is passed in.

use super::file::{
    BackupFile, MigrateFile, MigrateFromFile, NetworkFile, NfsFile, ProxmoxFile, RetentionFile,
    ScheduleFile, SiteFile, SiteSectionFile, TailscaleFile, UserFile, VmFile, keys_of,
};
use super::net::{self, is_clean_abs_path, path_within};
use super::{
    BackupConfig, BackupSchedule, MigrateConfig, MigrateFrom, NfsConfig, NfsMount, ProxmoxConfig,
    Retention, ServePort, Site, SiteConfig, TailscaleConfig, TemplateRef, TlsTrust, UserConfig,
    VmConfig, VmNetwork, VmOs, calendar,
};
use crate::catalog::{Catalog, VolumeSource, check_image_ref};
use crate::yaml::{self, Diagnostic, Diags, Node, Obj, Value};
use schemars::JsonSchema;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// Ports the VM itself uses; a service may not publish them.
const RESERVED_PORTS: &[(u16, &str)] = &[(22, "sshd")];

/// Decodes and validates a site config. Returns the settings only when there
/// are no errors; the diagnostics hold every error and warning found.
pub fn decode(path: &Path, text: &str, catalog: &Catalog) -> (Option<Site>, Vec<Diagnostic>) {
    let root = match yaml::parse(path, text) {
        Ok(n) => n,
        Err(d) => return (None, vec![d]),
    };
    let mut d = Diags::new(path);
    let site = Decoder {
        d: &mut d,
        catalog,
        dir: path.parent().unwrap_or(Path::new(".")),
    }
    .site(&root, path);
    let ok = !d.has_errors();
    let mut items = d.items;
    items.sort_by_key(|d| (d.loc.line, d.loc.col));
    (site.filter(|_| ok), items)
}

struct Decoder<'a> {
    d: &'a mut Diags,
    catalog: &'a Catalog,
    dir: &'a Path,
}

fn obj<'n, T: JsonSchema>(node: &'n Node, path: &str, d: &mut Diags) -> Option<Obj<'n>> {
    let k = keys_of::<T>();
    let k: Vec<&str> = k.iter().map(String::as_str).collect();
    Obj::new(node, path, &k, d)
}

impl Decoder<'_> {
    fn site(&mut self, root: &Node, path: &Path) -> Option<Site> {
        if root.is_null() {
            self.d.error_at(
                root.loc,
                "",
                "the file is empty; expected the site config (see examples/homelab/mms.yml)",
            );
            return None;
        }
        let top = obj::<SiteFile>(root, "", self.d)?;
        let proxmox = top
            .require(
                "proxmox",
                "Proxmox endpoint, node, token and storage",
                self.d,
            )
            .and_then(|n| self.proxmox(n));
        let vm = top
            .require("vm", "the VM's name and size", self.d)
            .and_then(|n| self.vm(n));
        let site = match top.get("site") {
            Some(n) => self.site_section(n),
            None => Some(default_site()),
        };
        let (nfs_valid_part, nfs) = match top.get("nfs") {
            Some(n) => match self.nfs(n) {
                Some((cfg, ok)) => (Some(cfg.clone()), ok.then_some(cfg)),
                None => (None, None),
            },
            None => (Some(NfsConfig::default()), Some(NfsConfig::default())),
        };
        // The known, distinct services are used for the cross-field checks even
        // when the list has other problems, so those checks still report.
        let (known_services, services) =
            match top.require("services", "the list of services to run", self.d) {
                Some(n) => match self.services(n) {
                    Some((known, ok)) => (Some(known.clone()), ok.then_some(known)),
                    None => (None, None),
                },
                None => (None, None),
            };
        let tailscale = top
            .require("tailscale", "the tailnet hostname", self.d)
            .and_then(|n| self.tailscale(n, known_services.as_deref()));
        let backup = match top.get("backup") {
            Some(n) => self.backup(n),
            None => Some(default_backup()),
        };
        let migrate = match top.get("migrate") {
            Some(n) => self.migrate(n, known_services.as_deref()).map(Some),
            None => Some(None),
        };
        let images = match top.get("images") {
            Some(n) => self.images(n, known_services.as_deref()),
            None => Some(BTreeMap::new()),
        };
        let secrets_file = match top.get("secrets_file") {
            Some(n) => {
                yaml::string(n, "secrets_file", "a file path", self.d).map(|s| self.dir.join(s))
            }
            None => Some(self.dir.join("secrets.age")),
        };

        if let Some(services) = &known_services {
            let ts_serve = top
                .get("tailscale")
                .map(|n| self.serve_entries(n))
                .unwrap_or_default();
            self.check_ports(&top, services, &ts_serve);
            if let Some(nfs) = &nfs_valid_part {
                self.check_hardlinks(&top, services, nfs);
            }
        }

        Some(Site {
            path: path.to_path_buf(),
            proxmox: proxmox?,
            vm: vm?,
            site: site?,
            nfs: nfs?,
            services: services?,
            tailscale: tailscale?,
            backup: backup?,
            migrate: migrate?,
            images: images?,
            secrets_file: secrets_file?,
        })
    }

    // ---- small typed getters -------------------------------------------------

    fn req_string(&mut self, o: &Obj, key: &str, expected: &str) -> Option<String> {
        let n = o.require(key, expected, self.d)?;
        yaml::string(n, &o.key_path(key), expected, self.d)
    }

    /// `Ok(None)` when absent, `Err(())` when present but wrong.
    fn opt_string(&mut self, o: &Obj, key: &str, expected: &str) -> Result<Option<String>, ()> {
        match o.get(key) {
            None => Ok(None),
            Some(n) => yaml::string(n, &o.key_path(key), expected, self.d)
                .map(Some)
                .ok_or(()),
        }
    }

    fn opt_int(&mut self, o: &Obj, key: &str, min: i128, max: i128, default: u32) -> Option<u32> {
        match o.get(key) {
            None => Some(default),
            Some(n) => yaml::integer(n, &o.key_path(key), min, max, self.d).map(|v| v as u32),
        }
    }

    fn checked(
        &mut self,
        o: &Obj,
        key: &str,
        value: Option<String>,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<String> {
        let v = value?;
        match check(&v) {
            Ok(()) => Some(v),
            Err(msg) => {
                let loc = o.get(key).map(|n| n.loc).unwrap_or(o.node.loc);
                self.d
                    .error_at(loc, &o.key_path(key), format!("{v:?}: {msg}"));
                None
            }
        }
    }

    fn string_list(&mut self, n: &Node, path: &str, expected: &str) -> Option<Vec<(String, Node)>> {
        yaml::list(n, path, self.d, |item, p, d| {
            yaml::string(item, p, expected, d).map(|s| (s, item.clone()))
        })
    }

    // ---- sections --------------------------------------------------------------

    fn proxmox(&mut self, n: &Node) -> Option<ProxmoxConfig> {
        let o = obj::<ProxmoxFile>(n, "proxmox", self.d)?;
        let endpoint = self.req_string(&o, "endpoint", "the API URL, e.g. https://pve.lan:8006");
        let endpoint = self.checked(&o, "endpoint", endpoint, check_endpoint);
        let node = self.req_string(&o, "node", "the Proxmox node name, e.g. pve");
        let node = self.checked(&o, "node", node, |s| {
            if net::is_hostname(s) && !s.contains('.') {
                Ok(())
            } else {
                Err("expected a node name (letters, digits, dashes)".into())
            }
        });
        let token_id = self.req_string(&o, "token_id", "an API token id like mms@pve!build");
        let token_id = self.checked(&o, "token_id", token_id, check_token_id);
        let fp = self.opt_string(&o, "tls_fingerprint", "a SHA-256 fingerprint");
        let ca = self.opt_string(&o, "ca_file", "a file path");
        let tls = match (fp, ca) {
            (Ok(Some(fp)), Ok(None)) => match net::parse_fingerprint(&fp) {
                Ok(b) => Some(TlsTrust::Fingerprint(b)),
                Err(msg) => {
                    let loc = o.get("tls_fingerprint").map(|n| n.loc).unwrap_or_default();
                    self.d
                        .error_at(loc, "proxmox.tls_fingerprint", format!("{fp:?}: {msg}"));
                    None
                }
            },
            (Ok(None), Ok(Some(ca))) => Some(TlsTrust::CaFile(self.dir.join(ca))),
            (Ok(Some(_)), Ok(Some(_))) => {
                self.d.error_at(
                    o.node.loc,
                    "proxmox",
                    "give either tls_fingerprint or ca_file, not both",
                );
                None
            }
            (Ok(None), Ok(None)) => {
                self.d.error_at(
                    o.node.loc,
                    "proxmox",
                    "missing key `tls_fingerprint` (the API certificate's SHA-256) or `ca_file`; \
                     MMS never trusts the API certificate blindly",
                );
                None
            }
            _ => None,
        };
        let template = o
            .require("template", "the template VM's name or VMID", self.d)
            .and_then(|t| match &t.value {
                Value::Int(i) if (100..=999_999_999).contains(i) => {
                    Some(TemplateRef::Vmid(*i as u32))
                }
                Value::Str(s) if net::is_hostname(s) => Some(TemplateRef::Name(s.clone())),
                _ => {
                    self.d.error_at(
                        t.loc,
                        "proxmox.template",
                        format!(
                            "expected a template VM name or a VMID from 100 to 999999999, found {}",
                            t.describe()
                        ),
                    );
                    None
                }
            });
        let ident = |me: &mut Self, key: &str, what: &str| {
            let v = me.req_string(&o, key, what);
            me.checked(&o, key, v, check_pve_id)
        };
        let storage = ident(self, "storage", "a storage id, e.g. local-lvm");
        let iso_storage = ident(
            self,
            "iso_storage",
            "a storage id with content type iso, e.g. local",
        );
        let bridge = ident(self, "bridge", "a bridge, e.g. vmbr0");
        let pool = match self.opt_string(&o, "pool", "a resource pool id") {
            Ok(None) => Some(None),
            Ok(Some(p)) => self.checked(&o, "pool", Some(p), check_pve_id).map(Some),
            Err(()) => None,
        };
        Some(ProxmoxConfig {
            endpoint: endpoint?.trim_end_matches('/').to_owned(),
            node: node?,
            token_id: token_id?,
            tls: tls?,
            template: template?,
            storage: storage?,
            iso_storage: iso_storage?,
            bridge: bridge?,
            pool: pool?,
        })
    }

    fn vm(&mut self, n: &Node) -> Option<VmConfig> {
        let o = obj::<VmFile>(n, "vm", self.d)?;
        let name = self.req_string(&o, "name", "the VM name, e.g. mms");
        let name = self.checked(&o, "name", name, |s| {
            if net::is_label(s) && s.len() <= 58 {
                Ok(())
            } else {
                Err("expected a DNS label (letters, digits, dashes; at most 58 characters, since `-next` is appended during a rebuild)".into())
            }
        });
        let os = match self.opt_string(&o, "os", "fedora or debian") {
            Ok(None) => Some(VmOs::Fedora),
            Ok(Some(s)) => match s.as_str() {
                "fedora" => Some(VmOs::Fedora),
                "debian" => Some(VmOs::Debian),
                _ => {
                    let loc = o.get("os").map(|n| n.loc).unwrap_or_default();
                    self.d.error_at(
                        loc,
                        "vm.os",
                        format!("expected fedora or debian, found {s:?}"),
                    );
                    None
                }
            },
            Err(()) => None,
        };
        let cores = self.opt_int(&o, "cores", 1, 128, 4);
        let memory_mib = self.opt_int(&o, "memory_mib", 2048, 1_048_576, 8192);
        let disk_gib = self.opt_int(&o, "disk_gib", 16, 65536, 64);
        let network = match o.get("network") {
            None => Some(VmNetwork::Dhcp),
            Some(n) => self.network(n),
        };
        let keys = match o.get("ssh_authorized_keys") {
            None => Some(Vec::new()),
            Some(n) => self
                .string_list(n, "vm.ssh_authorized_keys", "an SSH public key")
                .and_then(|items| {
                    let mut ok = true;
                    for (i, (k, node)) in items.iter().enumerate() {
                        if let Err(msg) = net::check_ssh_public_key(k) {
                            self.d
                                .error_at(node.loc, &format!("vm.ssh_authorized_keys[{i}]"), msg);
                            ok = false;
                        }
                    }
                    ok.then(|| items.into_iter().map(|(k, _)| k).collect())
                }),
        };
        Some(VmConfig {
            name: name?,
            os: os?,
            cores: cores?,
            memory_mib: memory_mib?,
            disk_gib: disk_gib?,
            network: network?,
            ssh_authorized_keys: keys?,
        })
    }

    fn network(&mut self, n: &Node) -> Option<VmNetwork> {
        let o = obj::<NetworkFile>(n, "vm.network", self.d)?;
        let ipv4 = self.req_string(&o, "ipv4", "dhcp or an address like 192.168.1.50/24")?;
        let at = |key: &str| o.get(key).map(|n| n.loc).unwrap_or(o.node.loc);
        if ipv4 == "dhcp" {
            for key in ["gateway", "dns", "rebuild_ipv4"] {
                if o.get(key).is_some() {
                    self.d.error_at(
                        at(key),
                        &o.key_path(key),
                        "only allowed with a static ipv4 address",
                    );
                }
            }
            return Some(VmNetwork::Dhcp);
        }
        let (address, prefix) = match net::parse_cidr(&ipv4) {
            Ok(v) => v,
            Err(msg) => {
                self.d.error_at(
                    at("ipv4"),
                    "vm.network.ipv4",
                    format!("{ipv4:?}: {msg}; or dhcp"),
                );
                return None;
            }
        };
        let gateway = self.req_string(&o, "gateway", "the default gateway for a static address")?;
        let gateway = match gateway.parse::<Ipv4Addr>() {
            Ok(g) if g == address => {
                self.d.error_at(
                    at("gateway"),
                    "vm.network.gateway",
                    format!("{gateway:?} is the VM's own address"),
                );
                return None;
            }
            Ok(g) if net::in_subnet(g, address, prefix) => g,
            Ok(_) => {
                self.d.error_at(
                    at("gateway"),
                    "vm.network.gateway",
                    format!("{gateway:?} is outside the VM's subnet {address}/{prefix}"),
                );
                return None;
            }
            Err(_) => {
                self.d.error_at(
                    at("gateway"),
                    "vm.network.gateway",
                    format!("{gateway:?} is not an IPv4 address"),
                );
                return None;
            }
        };
        let dns = match o.get("dns") {
            None => vec![IpAddr::V4(gateway)],
            Some(n) => {
                let items = self.string_list(n, "vm.network.dns", "an IP address")?;
                let mut out = Vec::new();
                for (i, (s, node)) in items.iter().enumerate() {
                    match s.parse::<IpAddr>() {
                        Ok(ip) => out.push(ip),
                        Err(_) => self.d.error_at(
                            node.loc,
                            &format!("vm.network.dns[{i}]"),
                            format!("{s:?} is not an IP address"),
                        ),
                    }
                }
                if out.len() != items.len() {
                    return None;
                }
                out
            }
        };
        let rebuild = match self.opt_string(
            &o,
            "rebuild_ipv4",
            "dhcp or another address of the VM's subnet",
        ) {
            Err(()) => return None,
            Ok(None) => None,
            Ok(Some(r)) if r == "dhcp" => None,
            Ok(Some(r)) => match net::rebuild_address(&r, address, prefix, gateway) {
                Ok(a) => Some(a),
                Err(msg) => {
                    self.d.error_at(
                        at("rebuild_ipv4"),
                        "vm.network.rebuild_ipv4",
                        format!("{r:?}: {msg}; or dhcp"),
                    );
                    return None;
                }
            },
        };
        Some(VmNetwork::Static {
            address,
            prefix,
            gateway,
            dns,
            rebuild,
        })
    }

    fn site_section(&mut self, n: &Node) -> Option<SiteConfig> {
        let o = obj::<SiteSectionFile>(n, "site", self.d)?;
        let def = default_site();
        let timezone = match self.opt_string(&o, "timezone", "an IANA time zone like Europe/Berlin")
        {
            Ok(None) => Some(def.timezone),
            Ok(Some(tz)) => self.checked(&o, "timezone", Some(tz), check_timezone),
            Err(()) => None,
        };
        let user = match o.get("user") {
            None => Some(def.user),
            Some(n) => self.user(n),
        };
        let lan_ssh = match o.get("lan_ssh") {
            None => Some(false),
            Some(n) => yaml::boolean(n, "site.lan_ssh", self.d),
        };
        Some(SiteConfig {
            timezone: timezone?,
            user: user?,
            lan_ssh: lan_ssh?,
        })
    }

    fn user(&mut self, n: &Node) -> Option<UserConfig> {
        let o = obj::<UserFile>(n, "site.user", self.d)?;
        let name = self.req_string(&o, "name", "a user name like mms");
        let name = self.checked(&o, "name", name, |s| {
            let ok = s.len() <= 32
                && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !ok {
                return Err("expected a user name (lower-case letters, digits, - and _, starting with a letter)".into());
            }
            if ["root", "nobody", "daemon", "bin", "sys"].contains(&s) {
                return Err("must not be a system account".into());
            }
            Ok(())
        });
        let id = |me: &mut Self, key: &str| {
            let n = o.require(key, "a number from 1000 to 60000", me.d)?;
            match &n.value {
                Value::Int(i) if (1000..=60000).contains(i) => Some(*i as u32),
                _ => {
                    me.d.error_at(
                        n.loc,
                        &o.key_path(key),
                        format!(
                            "expected a number from 1000 to 60000 (a regular account: rootless podman needs subordinate id ranges), found {}",
                            n.describe()
                        ),
                    );
                    None
                }
            }
        };
        let uid = id(self, "uid");
        let gid = id(self, "gid");
        Some(UserConfig {
            name: name?,
            uid: uid?,
            gid: gid?,
        })
    }

    /// The mounts that are valid, and whether the whole section was valid.
    fn nfs(&mut self, n: &Node) -> Option<(NfsConfig, bool)> {
        let o = obj::<NfsFile>(n, "nfs", self.d)?;
        let server = self.req_string(&o, "server", "the NAS host name or IPv4 address");
        let server = self.checked(&o, "server", server, |s| {
            if net::is_host(s) {
                Ok(())
            } else {
                Err("expected an RFC 1123 host name or an IPv4 address".into())
            }
        });
        let mounts_node = o.require("mounts", "mount point → export path", self.d)?;
        let entries = yaml::map(mounts_node, "nfs.mounts", "mount point → export", self.d)?;
        let mut mounts = Vec::new();
        let mut ok = true;
        for (knode, vnode) in entries {
            let Some(mp) = yaml::string(knode, "nfs.mounts", "a mount point", self.d) else {
                ok = false;
                continue;
            };
            let mp = mp.as_str();
            let path = format!("nfs.mounts.{mp}");
            let mut this_ok = true;
            if !is_clean_abs_path(mp) || !path_within(mp, "/data") {
                self.d.error_at(
                    knode.loc,
                    &path,
                    "mount point must be an absolute path at or below /data, without `..`, `.` or a trailing /",
                );
                this_ok = false;
            }
            let Some(export) = yaml::string(vnode, &path, "an export path on the NAS", self.d)
            else {
                ok = false;
                continue;
            };
            if !is_clean_abs_path(&export) {
                self.d.error_at(
                    vnode.loc,
                    &path,
                    format!("export {export:?} must be an absolute path on the NAS"),
                );
                this_ok = false;
            }
            if !this_ok {
                ok = false;
                continue;
            }
            mounts.push(NfsMount {
                mount_point: mp.to_owned(),
                export,
            });
        }
        if entries.is_empty() {
            self.d.error_at(
                mounts_node.loc,
                "nfs.mounts",
                "at least one mount is needed (e.g. /data: /mnt/tank/data)",
            );
            ok = false;
        }
        mounts.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
        let ok = ok && server.is_some();
        Some((
            NfsConfig {
                server: server.unwrap_or_default(),
                mounts,
            },
            ok,
        ))
    }

    /// The known, distinct service names, and whether the whole list was valid.
    fn services(&mut self, n: &Node) -> Option<(Vec<String>, bool)> {
        let items = self.string_list(n, "services", "a service name")?;
        let mut seen = BTreeSet::new();
        let mut ok = true;
        if items.is_empty() {
            self.d.error_at(
                n.loc,
                "services",
                format!(
                    "enable at least one service: {}",
                    self.catalog.names().join(", ")
                ),
            );
            ok = false;
        }
        for (i, (s, node)) in items.iter().enumerate() {
            if self.catalog.get(s).is_none() {
                self.d.error_at(
                    node.loc,
                    &format!("services[{i}]"),
                    format!(
                        "unknown service {s:?}; known: {}",
                        self.catalog.names().join(", ")
                    ),
                );
                ok = false;
            } else if !seen.insert(s.clone()) {
                self.d.error_at(
                    node.loc,
                    &format!("services[{i}]"),
                    format!("{s:?} is listed twice"),
                );
                ok = false;
            }
        }
        let known = seen.into_iter().collect::<BTreeSet<_>>();
        let ordered = items
            .into_iter()
            .map(|(s, _)| s)
            .filter(|s| known.contains(s))
            .fold(Vec::new(), |mut acc: Vec<String>, s| {
                if !acc.contains(&s) {
                    acc.push(s);
                }
                acc
            });
        Some((ordered, ok))
    }

    fn tailscale(&mut self, n: &Node, services: Option<&[String]>) -> Option<TailscaleConfig> {
        let o = obj::<TailscaleFile>(n, "tailscale", self.d)?;
        let hostname = self.req_string(&o, "hostname", "the machine name on the tailnet");
        let hostname = self.checked(&o, "hostname", hostname, |s| {
            if net::is_label(s) && s.len() <= 58 {
                Ok(())
            } else {
                Err("expected an RFC 1123 label (letters, digits, dashes; at most 58 characters, since `-next` is appended during a rebuild)".into())
            }
        });
        let mut serve = Vec::new();
        let mut ok = true;
        if let Some(sn) = o.get("serve") {
            let entries = yaml::map(sn, "tailscale.serve", "service → HTTPS port", self.d)?;
            let mut by_port: BTreeMap<u16, String> = BTreeMap::new();
            for (k, v) in entries {
                let Some(svc) = yaml::string(k, "tailscale.serve", "a service name", self.d) else {
                    ok = false;
                    continue;
                };
                let path = format!("tailscale.serve.{svc}");
                if let Some(list) = services
                    && !list.contains(&svc)
                {
                    self.d.error_at(
                        k.loc,
                        &path,
                        format!("{svc:?} is not in `services`; serve only enabled services"),
                    );
                    ok = false;
                }
                let Some(port) = yaml::integer(v, &path, 1, 65535, self.d) else {
                    ok = false;
                    continue;
                };
                let port = port as u16;
                if let Some(other) = by_port.insert(port, svc.clone()) {
                    self.d.error_at(v.loc, &path, format!("port {port} is also served for {other:?}; each service needs its own port"));
                    ok = false;
                }
                serve.push(ServePort { service: svc, port });
            }
        }
        let hostname = hostname?;
        ok.then_some(TailscaleConfig { hostname, serve })
    }

    fn backup(&mut self, n: &Node) -> Option<BackupConfig> {
        let o = obj::<BackupFile>(n, "backup", self.d)?;
        let def = default_backup();
        let recipients = match o.get("recipients") {
            None => Some(Vec::new()),
            Some(rn) => self
                .string_list(
                    rn,
                    "backup.recipients",
                    "an age recipient or SSH public key",
                )
                .and_then(|items| {
                    let mut ok = true;
                    for (i, (r, node)) in items.iter().enumerate() {
                        if let Err(msg) = crate::secrets::parse_recipient(r) {
                            self.d
                                .error_at(node.loc, &format!("backup.recipients[{i}]"), msg);
                            ok = false;
                        }
                    }
                    ok.then(|| items.into_iter().map(|(r, _)| r).collect::<Vec<_>>())
                }),
        };
        if let Some(r) = &recipients
            && r.is_empty()
        {
            self.d.warn_at(
                o.get("recipients").map(|n| n.loc).unwrap_or(o.node.loc),
                "backup.recipients",
                "no recipients: backups are NOT encrypted; add an age or SSH public key",
            );
        }
        let target = match self.opt_string(&o, "target", "an absolute path in the VM") {
            Ok(None) => Some(def.target),
            Ok(Some(t)) => self.checked(&o, "target", Some(t), |s| {
                if is_clean_abs_path(s) && s != "/" {
                    Ok(())
                } else {
                    Err("expected an absolute path in the VM, e.g. /data/backups".into())
                }
            }),
            Err(()) => None,
        };
        let schedule = match o.get("schedule") {
            None => Some(def.schedule),
            Some(sn) => (|| {
                let so = obj::<ScheduleFile>(sn, "backup.schedule", self.d)?;
                let cal = |me: &mut Self, key: &str, default: String| match me.opt_string(
                    &so,
                    key,
                    "a systemd OnCalendar expression",
                ) {
                    Ok(None) => Some(default),
                    Ok(Some(s)) => me.checked(&so, key, Some(s), |s| {
                        calendar::check(s).map_err(|e| {
                            format!("{e} (systemd OnCalendar syntax, see systemd.time(7))")
                        })
                    }),
                    Err(()) => None,
                };
                let config = cal(self, "config", def.schedule.config.clone());
                let photos = cal(self, "photos", def.schedule.photos.clone());
                Some(BackupSchedule {
                    config: config?,
                    photos: photos?,
                })
            })(),
        };
        let retention = match o.get("retention") {
            None => Some(def.retention),
            Some(rn) => (|| {
                let ro = obj::<RetentionFile>(rn, "backup.retention", self.d)?;
                let daily = self.opt_int(&ro, "daily", 0, 1000, def.retention.daily);
                let weekly = self.opt_int(&ro, "weekly", 0, 1000, def.retention.weekly);
                let monthly = self.opt_int(&ro, "monthly", 0, 1000, def.retention.monthly);
                let r = Retention {
                    daily: daily?,
                    weekly: weekly?,
                    monthly: monthly?,
                };
                if r.daily + r.weekly + r.monthly == 0 {
                    self.d.error_at(rn.loc, "backup.retention", "all counts are 0: every backup would be deleted except the newest; keep at least one daily, weekly or monthly archive");
                    return None;
                }
                Some(r)
            })(),
        };
        Some(BackupConfig {
            recipients: recipients?,
            target: target?,
            schedule: schedule?,
            retention: retention?,
        })
    }

    fn migrate(&mut self, n: &Node, services: Option<&[String]>) -> Option<MigrateConfig> {
        let o = obj::<MigrateFile>(n, "migrate", self.d)?;
        let from = o.require("from", "the old host", self.d).and_then(|fnode| {
            let fo = obj::<MigrateFromFile>(fnode, "migrate.from", self.d)?;
            let host = self.req_string(&fo, "host", "the old host's name or IPv4 address");
            let host = self.checked(&fo, "host", host, |s| {
                if net::is_host(s) {
                    Ok(())
                } else {
                    Err("expected an RFC 1123 host name or an IPv4 address".into())
                }
            });
            let user = match self.opt_string(&fo, "user", "a user name") {
                Ok(u) => Some(u.unwrap_or_else(|| "root".into())),
                Err(()) => None,
            };
            let port = self.opt_int(&fo, "port", 1, 65535, 22).map(|p| p as u16);
            let vmid = match fo.get("proxmox_vmid") {
                None => Some(None),
                Some(v) => yaml::integer(v, "migrate.from.proxmox_vmid", 100, 999_999_999, self.d)
                    .map(|i| Some(i as u32)),
            };
            Some(MigrateFrom {
                host: host?,
                user: user?,
                port: port?,
                proxmox_vmid: vmid?,
            })
        });
        let mut sources = BTreeMap::new();
        let mut ok = true;
        if let Some(sn) = o.get("sources") {
            let entries = yaml::map(sn, "migrate.sources", "service → path(s)", self.d)?;
            for (k, v) in entries {
                let Some(svc) = yaml::string(k, "migrate.sources", "a service name", self.d) else {
                    ok = false;
                    continue;
                };
                let path = format!("migrate.sources.{svc}");
                if let Some(list) = services
                    && !list.contains(&svc)
                {
                    self.d
                        .error_at(k.loc, &path, format!("{svc:?} is not in `services`"));
                    ok = false;
                }
                let paths = match &v.value {
                    Value::Str(s) => Some(vec![(s.clone(), v.clone())]),
                    _ => self.string_list(v, &path, "an absolute path on the old host"),
                };
                let Some(paths) = paths else {
                    ok = false;
                    continue;
                };
                for (p, node) in &paths {
                    if !is_clean_abs_path(p) {
                        self.d.error_at(
                            node.loc,
                            &path,
                            format!("{p:?} must be an absolute path on the old host"),
                        );
                        ok = false;
                    }
                }
                sources.insert(svc, paths.into_iter().map(|(p, _)| p).collect());
            }
        }
        let mut path_map = BTreeMap::new();
        if let Some(pn) = o.get("path_map") {
            let entries = yaml::map(pn, "migrate.path_map", "old path → new path", self.d)?;
            for (k, v) in entries {
                let (Some(old), Some(new)) = (
                    yaml::string(k, "migrate.path_map", "an old absolute path", self.d),
                    yaml::string(v, "migrate.path_map", "a new path under /data", self.d),
                ) else {
                    ok = false;
                    continue;
                };
                let path = format!("migrate.path_map.{old}");
                if !is_clean_abs_path(&old) {
                    self.d
                        .error_at(k.loc, &path, "the old path must be absolute");
                    ok = false;
                }
                if !is_clean_abs_path(&new) || !path_within(&new, "/data") {
                    self.d.error_at(
                        v.loc,
                        &path,
                        format!("{new:?}: the new path must be absolute and at or below /data"),
                    );
                    ok = false;
                }
                path_map.insert(old, new);
            }
        }
        let from = from?;
        ok.then_some(MigrateConfig {
            from,
            sources,
            path_map,
        })
    }

    fn images(
        &mut self,
        n: &Node,
        services: Option<&[String]>,
    ) -> Option<BTreeMap<String, String>> {
        let entries = yaml::map(n, "images", "container name → image", self.d)?;
        let containers: BTreeSet<&str> = services
            .unwrap_or_default()
            .iter()
            .filter_map(|s| self.catalog.get(s))
            .flat_map(|s| s.containers.iter().map(|c| c.name.as_str()))
            .collect();
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in entries {
            let (Some(name), Some(image)) = (
                yaml::string(k, "images", "a container name", self.d),
                yaml::string(v, "images", "an image reference", self.d),
            ) else {
                ok = false;
                continue;
            };
            let path = format!("images.{name}");
            if services.is_some() && !containers.contains(name.as_str()) {
                let known: Vec<&str> = containers.iter().copied().collect();
                self.d.error_at(
                    k.loc,
                    &path,
                    format!(
                        "no enabled service has a container {name:?}; containers: {}",
                        known.join(", ")
                    ),
                );
                ok = false;
            }
            if let Err(msg) = check_image_ref(&image) {
                self.d.error_at(v.loc, &path, format!("{image:?}: {msg}"));
                ok = false;
            }
            out.insert(name, image);
        }
        ok.then_some(out)
    }

    // ---- cross-field rules -------------------------------------------------------

    /// `(service, port, location)` of each well-formed `tailscale.serve` entry.
    fn serve_entries(&mut self, ts: &Node) -> Vec<(String, u16, yaml::Loc)> {
        let Value::Map(m) = &ts.value else {
            return Vec::new();
        };
        let Some((_, serve)) = m
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == "serve"))
        else {
            return Vec::new();
        };
        let Value::Map(entries) = &serve.value else {
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(k, v)| match (&k.value, &v.value) {
                (Value::Str(svc), Value::Int(p)) => {
                    u16::try_from(*p).ok().map(|p| (svc.clone(), p, v.loc))
                }
                _ => None,
            })
            .collect()
    }

    /// Published ports must be unique across services, and a tailscale serve
    /// port must not be another service's port.
    fn check_ports(&mut self, top: &Obj, services: &[String], serve: &[(String, u16, yaml::Loc)]) {
        let loc = top.get("services").map(|n| n.loc).unwrap_or_default();
        let mut owner: BTreeMap<u16, &str> = RESERVED_PORTS.iter().copied().collect();
        for s in services.iter().filter_map(|s| self.catalog.get(s)) {
            for c in &s.containers {
                for p in &c.ports {
                    if let Some(other) = owner.insert(*p, &s.name)
                        && other != s.name
                    {
                        self.d.error_at(
                            loc,
                            "services",
                            format!("{} and {other} both publish port {p}; remove one or change its services/*.yml", s.name),
                        );
                    }
                }
            }
        }
        for (svc, port, at) in serve {
            if let Some(other) = owner.get(port)
                && other != svc
            {
                self.d.error_at(
                    *at,
                    &format!("tailscale.serve.{svc}"),
                    format!(
                        "port {port} clashes with {other}'s port {port}; pick another HTTPS port"
                    ),
                );
            }
        }
    }

    /// The *arr apps import by hardlink or rename: `/data/media` and
    /// `/data/usenet` must be on one filesystem (one NFS export).
    fn check_hardlinks(&mut self, top: &Obj, services: &[String], nfs: &NfsConfig) {
        let uses_data = services
            .iter()
            .filter_map(|s| self.catalog.get(s))
            .any(|s| {
                s.containers.iter().any(|c| {
                    c.volumes
                        .iter()
                        .any(|v| matches!(v.source(), Some(VolumeSource::Data("/data"))))
                })
            });
        if !uses_data {
            return;
        }
        let media = nfs.mount_for("/data/media").map(|m| m.mount_point.as_str());
        let usenet = nfs
            .mount_for("/data/usenet")
            .map(|m| m.mount_point.as_str());
        if media != usenet {
            let loc = top.get("nfs").map(|n| n.loc).unwrap_or_default();
            let show = |m: Option<&str>| {
                m.map_or("the VM's local disk".to_string(), |m| {
                    format!("the mount {m}")
                })
            };
            self.d.warn_at(
                loc,
                "nfs.mounts",
                format!(
                    "/data/media is on {} but /data/usenet is on {}: hardlinks and atomic moves cannot cross mounts, \
                     so every import becomes a full copy. Export one share holding media/ and usenet/ and mount it at /data",
                    show(media),
                    show(usenet)
                ),
            );
        }
    }
}

fn default_backup() -> BackupConfig {
    BackupConfig {
        recipients: Vec::new(),
        target: "/data/backups".into(),
        schedule: BackupSchedule {
            config: "*-*-* 03:00:00".into(),
            photos: "Sun *-*-* 04:00:00".into(),
        },
        retention: Retention {
            daily: 7,
            weekly: 4,
            monthly: 6,
        },
    }
}

fn default_site() -> SiteConfig {
    SiteConfig {
        timezone: "UTC".into(),
        user: UserConfig {
            name: "mms".into(),
            uid: 1100,
            gid: 1100,
        },
        lan_ssh: false,
    }
}

fn check_endpoint(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .ok_or("expected an https:// URL such as https://pve.lan:8006 (the API is never used over plain http)")?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err("give only scheme, host and port, e.g. https://pve.lan:8006".into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    if !net::is_host(host) {
        return Err(format!("{host:?} is not a host name or IPv4 address"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("port {p:?} must be a number from 1 to 65535"));
    }
    Ok(())
}

fn check_token_id(s: &str) -> Result<(), String> {
    let err = || {
        "expected USER@REALM!TOKEN, e.g. mms@pve!build (the secret part goes in secrets.age)"
            .to_string()
    };
    let (user, token) = s.split_once('!').ok_or_else(err)?;
    let (name, realm) = user.split_once('@').ok_or_else(err)?;
    let ok_id = |x: &str| {
        !x.is_empty()
            && x.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if name.is_empty() || name.contains(char::is_whitespace) || !ok_id(realm) || !ok_id(token) {
        return Err(err());
    }
    Ok(())
}

fn check_pve_id(s: &str) -> Result<(), String> {
    let ok = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err("expected a Proxmox id (a letter, then letters, digits, -, _ or .)".into())
    }
}

fn check_timezone(s: &str) -> Result<(), String> {
    let ok = s == "UTC"
        || (!s.starts_with('/')
            && !s.ends_with('/')
            && s.split('/').all(|p| {
                !p.is_empty()
                    && p != ".."
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
            })
            && s.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
    if ok {
        Ok(())
    } else {
        Err("expected an IANA time zone name like Europe/Berlin or UTC".into())
    }
}

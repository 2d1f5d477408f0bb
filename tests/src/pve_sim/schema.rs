//! The simulator's parameter table: for every endpoint the MMS flow calls, the
//! parameters Proxmox VE 9 accepts (name, type, format, enum, bounds), written
//! as Rust data and checked against the official schema subset
//! (`../shared/proxmox/pve-api-subset.json`) by the conformance test.
//!
//! The table may be *narrower* than Proxmox (property-string keys the flow never
//! sends are left out, so the simulator rejects them); it must never be wider:
//! every name, type, bound and enum here must match the schema exactly.

use std::collections::BTreeMap;

/// A parameter (or property-string key) type.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// JSON-schema `integer`.
    Integer {
        /// `minimum`.
        min: Option<i64>,
        /// `maximum`.
        max: Option<i64>,
    },
    /// JSON-schema `boolean` (`0`/`1` on the wire).
    Boolean,
    /// JSON-schema `string`.
    Str {
        /// Named format or property-string keys.
        format: Option<Format>,
        /// `pattern` (anchored by Proxmox).
        pattern: Option<&'static str>,
        /// `maxLength`.
        max_len: Option<usize>,
        /// `enum`.
        enumeration: Option<Vec<&'static str>>,
    },
}

/// A string format.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// A named format validated by code (`pve-vmid`, `dns-name`, …).
    Named(&'static str),
    /// A named format that is a property string, with the keys we accept.
    NamedProps(&'static str, Vec<Param>),
    /// An inline property-string format with the keys we accept.
    Props(Vec<Param>),
}

/// One parameter or property-string key.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Name.
    pub name: &'static str,
    /// Type.
    pub ty: Ty,
    /// `optional: 1`.
    pub optional: bool,
    /// `requires`.
    pub requires: Option<&'static str>,
    /// Property strings: the key may be given without `name=`.
    pub default_key: bool,
}

/// One endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// HTTP method.
    pub method: &'static str,
    /// Path template, e.g. `/nodes/{node}/qemu/{vmid}/clone`.
    pub path: &'static str,
    /// Every accepted parameter, path parameters included.
    pub params: Vec<Param>,
}

impl Endpoint {
    /// `"METHOD /path"`, the key in the schema file.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

// ---- small constructors -------------------------------------------------------

fn p(name: &'static str, ty: Ty) -> Param {
    Param {
        name,
        ty,
        optional: false,
        requires: None,
        default_key: false,
    }
}
fn int(name: &'static str, min: Option<i64>, max: Option<i64>) -> Param {
    p(name, Ty::Integer { min, max })
}
fn boolean(name: &'static str) -> Param {
    p(name, Ty::Boolean)
}
fn string(name: &'static str) -> Param {
    p(name, str_ty(None, None, None, None))
}
fn named(name: &'static str, format: &'static str) -> Param {
    p(name, str_ty(Some(Format::Named(format)), None, None, None))
}
fn enumer(name: &'static str, values: &[&'static str]) -> Param {
    p(name, str_ty(None, None, None, Some(values.to_vec())))
}
fn props(name: &'static str, keys: Vec<Param>) -> Param {
    p(name, str_ty(Some(Format::Props(keys)), None, None, None))
}
fn str_ty(
    format: Option<Format>,
    pattern: Option<&'static str>,
    max_len: Option<usize>,
    enumeration: Option<Vec<&'static str>>,
) -> Ty {
    Ty::Str {
        format,
        pattern,
        max_len,
        enumeration,
    }
}

impl Param {
    fn opt(mut self) -> Self {
        self.optional = true;
        self
    }
    fn default_key(mut self) -> Self {
        self.default_key = true;
        self
    }
    fn requires(mut self, other: &'static str) -> Self {
        self.requires = Some(other);
        self
    }
    fn max_len(mut self, n: usize) -> Self {
        if let Ty::Str { max_len, .. } = &mut self.ty {
            *max_len = Some(n);
        }
        self
    }
    fn pattern(mut self, re: &'static str) -> Self {
        if let Ty::Str { pattern, .. } = &mut self.ty {
            *pattern = Some(re);
        }
        self
    }
    fn format(mut self, f: &'static str) -> Self {
        if let Ty::Str { format, .. } = &mut self.ty {
            *format = Some(Format::Named(f));
        }
        self
    }
}

fn node() -> Param {
    named("node", "pve-node")
}
fn vmid() -> Param {
    int("vmid", Some(100), Some(999_999_999))
}
fn storage() -> Param {
    named("storage", "pve-storage-id")
}

/// Disk names of the resize/template `disk` enum.
pub fn disk_enum() -> Vec<&'static str> {
    const D: &[&str] = &[
        "ide0",
        "ide1",
        "ide2",
        "ide3",
        "scsi0",
        "scsi1",
        "scsi2",
        "scsi3",
        "scsi4",
        "scsi5",
        "scsi6",
        "scsi7",
        "scsi8",
        "scsi9",
        "scsi10",
        "scsi11",
        "scsi12",
        "scsi13",
        "scsi14",
        "scsi15",
        "scsi16",
        "scsi17",
        "scsi18",
        "scsi19",
        "scsi20",
        "scsi21",
        "scsi22",
        "scsi23",
        "scsi24",
        "scsi25",
        "scsi26",
        "scsi27",
        "scsi28",
        "scsi29",
        "scsi30",
        "virtio0",
        "virtio1",
        "virtio2",
        "virtio3",
        "virtio4",
        "virtio5",
        "virtio6",
        "virtio7",
        "virtio8",
        "virtio9",
        "virtio10",
        "virtio11",
        "virtio12",
        "virtio13",
        "virtio14",
        "virtio15",
        "sata0",
        "sata1",
        "sata2",
        "sata3",
        "sata4",
        "sata5",
        "efidisk0",
        "tpmstate0",
    ];
    D.to_vec()
}

const NET_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

fn net_keys() -> Vec<Param> {
    vec![
        enumer("model", NET_MODELS).default_key(),
        named("macaddr", "mac-addr").opt(),
        named("bridge", "pve-bridge-id").opt(),
        boolean("firewall").opt(),
        int("tag", Some(1), Some(4094)).opt(),
        boolean("link_down").opt(),
    ]
}

fn drive_keys(with_import: bool) -> Vec<Param> {
    let mut keys = vec![
        named("file", "pve-volume-id-or-qm-path").default_key(),
        enumer("media", &["cdrom", "disk"]).opt(),
        named("size", "disk-size").opt(),
        enumer("format", &["raw", "qcow", "qed", "qcow2", "vmdk", "cloop"]).opt(),
    ];
    if with_import {
        keys.push(named("import-from", "pve-volume-id-or-absolute-path").opt());
    }
    keys
}

fn agent_keys() -> Vec<Param> {
    vec![
        boolean("enabled").default_key(),
        boolean("fstrim_cloned_disks").opt(),
        boolean("guest-fsfreeze").opt(),
        enumer("type", &["virtio", "isa"]).opt(),
    ]
}

/// The VM options the flow sets (config PUT and create POST share them).
fn vm_options(create: bool) -> Vec<Param> {
    vec![
        int("cores", Some(1), None).opt(),
        props("memory", vec![int("current", Some(16), None).default_key()]).opt(),
        props("net0", net_keys()).opt(),
        props("agent", agent_keys()).opt(),
        string("serial0").pattern("(/dev/.+|socket)").opt(),
        props("ide2", drive_keys(create)).opt(),
        props("scsi0", drive_keys(create)).opt(),
        named("name", "dns-name").opt(),
        named("tags", "pve-tag-list").opt(),
        string("description").max_len(8192).opt(),
        boolean("onboot").opt(),
        enumer(
            "ostype",
            &[
                "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
                "l24", "l26", "solaris",
            ],
        )
        .opt(),
        enumer(
            "scsihw",
            &[
                "lsi",
                "lsi53c810",
                "virtio-scsi-pci",
                "virtio-scsi-single",
                "megasas",
                "pvscsi",
            ],
        )
        .opt(),
        p(
            "boot",
            str_ty(
                Some(Format::NamedProps(
                    "pve-qm-boot",
                    vec![named("order", "pve-qm-bootdev-list").opt()],
                )),
                None,
                None,
                None,
            ),
        )
        .opt(),
        named("sshkeys", "urlencoded").opt(),
    ]
}

/// The endpoint table.
pub fn endpoints() -> Vec<Endpoint> {
    let ep = |method, path, params| Endpoint {
        method,
        path,
        params,
    };
    let mut put_config = vec![node(), vmid()];
    put_config.extend(vm_options(false));
    put_config.push(named("delete", "pve-configid-list").opt());
    put_config.push(string("digest").max_len(40).opt());
    let mut create = vec![node(), vmid()];
    create.extend(vm_options(true));
    create.push(named("pool", "pve-poolid").opt());
    create.push(boolean("start").opt());
    vec![
        ep("GET", "/version", vec![]),
        ep("GET", "/cluster/nextid", vec![vmid().opt()]),
        ep(
            "GET",
            "/cluster/resources",
            vec![enumer("type", &["vm", "storage", "node", "sdn"]).opt()],
        ),
        ep(
            "GET",
            "/nodes/{node}/qemu/{vmid}/config",
            vec![node(), vmid(), boolean("current").opt()],
        ),
        ep("PUT", "/nodes/{node}/qemu/{vmid}/config", put_config),
        ep(
            "POST",
            "/nodes/{node}/qemu/{vmid}/clone",
            vec![
                node(),
                vmid(),
                int("newid", Some(100), Some(999_999_999)),
                named("name", "dns-name").opt(),
                boolean("full").opt(),
                named("storage", "pve-storage-id").opt(),
                named("pool", "pve-poolid").opt(),
                string("description").opt(),
            ],
        ),
        ep(
            "PUT",
            "/nodes/{node}/qemu/{vmid}/resize",
            vec![
                node(),
                vmid(),
                enumer("disk", &disk_enum()),
                string("size").pattern("\\+?\\d+(\\.\\d+)?[KMGT]?"),
            ],
        ),
        ep(
            "POST",
            "/nodes/{node}/qemu/{vmid}/status/start",
            vec![node(), vmid(), int("timeout", Some(0), None).opt()],
        ),
        ep(
            "POST",
            "/nodes/{node}/qemu/{vmid}/status/stop",
            vec![
                node(),
                vmid(),
                int("timeout", Some(0), None).opt(),
                boolean("overrule-shutdown").opt(),
            ],
        ),
        ep(
            "GET",
            "/nodes/{node}/qemu/{vmid}/status/current",
            vec![node(), vmid()],
        ),
        ep(
            "DELETE",
            "/nodes/{node}/qemu/{vmid}",
            vec![
                node(),
                vmid(),
                boolean("purge").opt(),
                boolean("destroy-unreferenced-disks").opt(),
            ],
        ),
        ep("POST", "/nodes/{node}/qemu", create),
        ep(
            "POST",
            "/nodes/{node}/qemu/{vmid}/template",
            vec![node(), vmid(), enumer("disk", &disk_enum()).opt()],
        ),
        ep(
            "POST",
            "/nodes/{node}/qemu/{vmid}/agent/ping",
            vec![node(), vmid()],
        ),
        ep(
            "POST",
            "/nodes/{node}/qemu/{vmid}/agent/file-write",
            vec![
                node(),
                vmid(),
                string("file"),
                string("content").max_len(61440),
                boolean("encode").opt(),
            ],
        ),
        ep(
            "GET",
            "/nodes/{node}/qemu/{vmid}/agent/file-read",
            vec![
                node(),
                vmid(),
                string("file"),
                int("offset", Some(0), None).opt(),
                boolean("decode").opt(),
            ],
        ),
        ep(
            "GET",
            "/nodes/{node}/tasks/{upid}/status",
            vec![node(), string("upid")],
        ),
        ep(
            "GET",
            "/nodes/{node}/tasks/{upid}/log",
            vec![
                node(),
                string("upid"),
                int("start", Some(0), None).opt(),
                int("limit", Some(0), None).opt(),
            ],
        ),
        ep(
            "GET",
            "/nodes/{node}/storage/{storage}/content",
            vec![
                node(),
                storage(),
                named("content", "pve-storage-content").opt(),
            ],
        ),
        ep(
            "DELETE",
            "/nodes/{node}/storage/{storage}/content/{volume}",
            vec![
                node(),
                storage().opt(),
                string("volume"),
                int("delay", Some(1), Some(30)).opt(),
            ],
        ),
        ep(
            "POST",
            "/nodes/{node}/storage/{storage}/upload",
            vec![
                node(),
                storage(),
                enumer("content", &["iso", "vztmpl", "import"]).format("pve-storage-content"),
                string("filename").max_len(255),
            ],
        ),
        ep(
            "POST",
            "/nodes/{node}/storage/{storage}/download-url",
            vec![
                node(),
                storage(),
                string("url").pattern("https?://.*"),
                enumer("content", &["iso", "vztmpl", "import"]).format("pve-storage-content"),
                string("filename").max_len(255),
                string("checksum").opt().requires("checksum-algorithm"),
                enumer(
                    "checksum-algorithm",
                    &["md5", "sha1", "sha224", "sha256", "sha384", "sha512"],
                )
                .opt()
                .requires("checksum"),
                boolean("verify-certificates").opt(),
            ],
        ),
        ep(
            "GET",
            "/nodes/{node}/lxc/{vmid}/snapshot",
            vec![node(), vmid()],
        ),
        ep(
            "POST",
            "/nodes/{node}/lxc/{vmid}/snapshot",
            vec![
                node(),
                vmid(),
                named("snapname", "pve-configid").max_len(40),
                string("description").opt(),
            ],
        ),
    ]
}

// ---- validation ----------------------------------------------------------------

/// Validates `params` against `ep` like pve-common's JSONSchema: returns the
/// `errors` map of a 400 answer, or `Ok` with nothing to report.
pub fn validate(
    ep: &Endpoint,
    params: &BTreeMap<String, String>,
) -> Result<(), BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    for name in params.keys() {
        if !ep.params.iter().any(|p| p.name == name) {
            errors.insert(
                name.clone(),
                "property is not defined in schema and the schema does not allow additional properties".into(),
            );
        }
    }
    for spec in &ep.params {
        match params.get(spec.name) {
            None if !spec.optional => {
                errors.insert(
                    spec.name.into(),
                    "property is missing and it is not optional".into(),
                );
            }
            None => {}
            Some(v) => {
                if let Err(e) = check_value(&spec.ty, spec.name, v) {
                    errors.insert(spec.name.into(), e);
                } else if let Some(req) = spec.requires
                    && !params.contains_key(req)
                {
                    errors.insert(
                        req.into(),
                        format!("missing property required by '{}'", spec.name),
                    );
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_value(ty: &Ty, name: &str, v: &str) -> Result<(), String> {
    match ty {
        Ty::Integer { min, max } => {
            let n: i64 = v
                .parse()
                .ok()
                .filter(|_| !v.starts_with('+'))
                .ok_or_else(|| format!("type check ('integer') failed - got '{v}'"))?;
            if let Some(m) = min
                && n < *m
            {
                return Err(format!("value must have a minimum value of {m}"));
            }
            if let Some(m) = max
                && n > *m
            {
                return Err(format!("value must have a maximum value of {m}"));
            }
            Ok(())
        }
        Ty::Boolean => match v {
            "0" | "1" => Ok(()),
            _ => Err(format!("type check ('boolean') failed - got '{v}'")),
        },
        Ty::Str {
            format,
            pattern,
            max_len,
            enumeration,
        } => {
            if let Some(m) = max_len
                && v.chars().count() > *m
            {
                return Err(format!("value may only be {m} characters long"));
            }
            if let Some(re) = pattern
                && !pattern_matches(re, v)
            {
                return Err("value does not match the regex pattern".into());
            }
            if let Some(values) = enumeration
                && !values.contains(&v)
            {
                return Err(format!(
                    "value '{v}' does not have a value in the enumeration '{}'",
                    values.join(", ")
                ));
            }
            match format {
                None => Ok(()),
                Some(Format::Named(f)) => {
                    check_named(f, v).map_err(|e| format!("invalid format - {e}"))
                }
                Some(Format::NamedProps(_, keys)) | Some(Format::Props(keys)) => {
                    check_props(name, keys, v)
                        .map_err(|e| format!("invalid format - format error\n{e}"))
                }
            }
        }
    }
}

/// Parses a property string into key → value (the default key filled in).
pub fn parse_props(keys: &[Param], v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in v.split(',') {
        if part.is_empty() {
            continue;
        }
        let (k, val) = match part.split_once('=') {
            Some((k, val)) => (k.to_owned(), val.to_owned()),
            None => match keys.iter().find(|p| p.default_key) {
                Some(d) => (d.name.to_owned(), part.to_owned()),
                None => {
                    return Err(format!(
                        "value without key, but schema does not define a default key: {part}"
                    ));
                }
            },
        };
        // net0: `virtio=MAC` is model=virtio,macaddr=MAC.
        if k != "model"
            && NET_MODELS.contains(&k.as_str())
            && keys.iter().any(|p| p.name == "model")
        {
            out.insert("model".into(), k);
            out.insert("macaddr".into(), val);
            continue;
        }
        if out.insert(k.clone(), val).is_some() {
            return Err(format!(
                "duplicate key in comma-separated list property: {k}"
            ));
        }
    }
    Ok(out)
}

fn check_props(name: &str, keys: &[Param], v: &str) -> Result<(), String> {
    let map = parse_props(keys, v)?;
    let mut errs = Vec::new();
    for (k, val) in &map {
        match keys.iter().find(|p| p.name == k) {
            None => errs.push(format!("{name}.{k}: property is not defined in schema and the schema does not allow additional properties")),
            Some(spec) => {
                let ok = match &spec.ty {
                    // Inside property strings Proxmox accepts on/off/yes/no/true/false too.
                    Ty::Boolean => matches!(val.to_ascii_lowercase().as_str(), "0" | "1" | "on" | "off" | "yes" | "no" | "true" | "false")
                        .then_some(())
                        .ok_or(format!("type check ('boolean') failed - got '{val}'")),
                    ty => check_value(ty, k, val),
                };
                if let Err(e) = ok {
                    errs.push(format!("{name}.{k}: {e}"));
                }
            }
        }
    }
    for spec in keys {
        if !spec.optional && !map.contains_key(spec.name) {
            errs.push(format!(
                "{name}.{}: property is missing and it is not optional",
                spec.name
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

fn is_dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn check_named(format: &str, v: &str) -> Result<(), String> {
    let ok = match format {
        "pve-node" => is_dns_label(v),
        "dns-name" => v.split('.').all(is_dns_label),
        "pve-storage-id" => {
            let b = v.as_bytes();
            b.len() >= 2
                && b[0].is_ascii_alphabetic()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
                && b[b.len() - 1].is_ascii_alphanumeric()
        }
        "pve-tag-list" => {
            let tags: Vec<&str> = v.split([';', ',', ' ']).filter(|t| !t.is_empty()).collect();
            !tags.is_empty()
                && tags.iter().all(|t| {
                    let b = t.as_bytes();
                    (b[0].is_ascii_alphanumeric() || b[0] == b'_')
                        && b.iter().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.')
                        })
                })
        }
        "pve-configid-list" => v
            .split([',', ';', ' '])
            .filter(|t| !t.is_empty())
            .all(|id| {
                let b = id.as_bytes();
                b.len() >= 2
                    && b[0].is_ascii_alphabetic()
                    && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
            }),
        "pve-configid" => {
            let b = v.as_bytes();
            b.len() >= 2
                && b[0].is_ascii_alphabetic()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
        }
        "pve-poolid" => {
            !v.is_empty()
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/'))
        }
        "pve-bridge-id" => {
            !v.is_empty()
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
        }
        "mac-addr" => {
            let parts: Vec<&str> = v.split(':').collect();
            parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "pve-storage-content" => [
            "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none",
        ]
        .contains(&v),
        "urlencoded" => {
            v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-%_.!~*'()".contains(&c))
                && mms_builder::proxmox::form::percent_decode(v, false).is_some()
        }
        "disk-size" => {
            let num = v.trim_end_matches(['K', 'M', 'G', 'T']);
            !num.is_empty() && num.parse::<f64>().is_ok()
        }
        "pve-volume-id-or-qm-path" | "pve-volume-id-or-absolute-path" => {
            v == "none" || v == "cdrom" || v.starts_with('/') || volume_id(v)
        }
        "pve-qm-bootdev-list" => v
            .split(';')
            .all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric())),
        other => return Err(format!("simulator has no validator for format '{other}'")),
    };
    if ok {
        Ok(())
    } else {
        Err(match format {
            "pve-storage-id" => format!("storage ID '{v}' contains illegal characters"),
            "urlencoded" => format!("invalid urlencoded string: {v}"),
            "dns-name" => "value does not look like a valid DNS name".to_owned(),
            "pve-node" => "value does not look like a valid node name".to_owned(),
            "pve-tag-list" => format!("invalid tag '{v}'"),
            _ => format!("value does not look like a valid {format}"),
        })
    }
}

/// `storage:path` with a valid storage id.
pub fn volume_id(v: &str) -> bool {
    match v.split_once(':') {
        Some((s, rest)) => check_named("pve-storage-id", s).is_ok() && !rest.is_empty(),
        None => false,
    }
}

/// The handful of patterns in the table, matched as Perl's `^(?:pattern)$`.
fn pattern_matches(re: &str, v: &str) -> bool {
    match re {
        "(/dev/.+|socket)" => v == "socket" || (v.starts_with("/dev/") && v.len() > 5),
        "https?://.*" => v.starts_with("http://") || v.starts_with("https://"),
        "\\+?\\d+(\\.\\d+)?[KMGT]?" => {
            let s = v.strip_prefix('+').unwrap_or(v);
            let s = s.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(s);
            let (a, b) = match s.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (s, None),
            };
            !a.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.is_none_or(|b| !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(key: &str) -> Endpoint {
        endpoints().into_iter().find(|e| e.key() == key).unwrap()
    }

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rejects_like_proxmox() {
        let clone = ep("POST /nodes/{node}/qemu/{vmid}/clone");
        let base = [("node", "pve"), ("vmid", "9000")];
        let mut ok = params(&base);
        ok.insert("newid".into(), "101".into());
        ok.insert("full".into(), "1".into());
        assert!(validate(&clone, &ok).is_ok());
        let mut bad = ok.clone();
        bad.insert("full".into(), "true".into());
        bad.insert("newid".into(), "99".into());
        bad.insert("linked".into(), "1".into());
        let errs = validate(&clone, &bad).unwrap_err();
        assert_eq!(errs["full"], "type check ('boolean') failed - got 'true'");
        assert_eq!(errs["newid"], "value must have a minimum value of 100");
        assert!(errs["linked"].contains("not defined in schema"));
        let resize = ep("PUT /nodes/{node}/qemu/{vmid}/resize");
        let mut r = params(&base);
        r.insert("disk".into(), "scsi0".into());
        r.insert("size".into(), "+59G".into());
        assert!(validate(&resize, &r).is_ok());
        r.insert("size".into(), " 59G".into());
        assert!(validate(&resize, &r).is_err());
    }

    #[test]
    fn property_strings() {
        let put = ep("PUT /nodes/{node}/qemu/{vmid}/config");
        let good = params(&[
            ("node", "pve"),
            ("vmid", "101"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
            ("agent", "enabled=1"),
            ("ide2", "local:iso/mms-0123.iso,media=cdrom"),
            ("memory", "8192"),
            ("tags", "mms;mms-0123456789abcdef"),
        ]);
        assert!(validate(&put, &good).is_ok(), "{:?}", validate(&put, &good));
        let bad = params(&[
            ("node", "pve"),
            ("vmid", "101"),
            ("net0", "virtio,bridge=vmbr0,bogus=1"),
            ("tags", "Bad Tag!"),
        ]);
        let errs = validate(&put, &bad).unwrap_err();
        assert!(errs["net0"].contains("net0.bogus"));
        assert!(errs.contains_key("tags"));
    }
}

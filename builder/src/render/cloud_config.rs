//! Typed NoCloud files: `#cloud-config` user-data, `meta-data`, `network-config` (v2).
//!
//! Owns the shape of the YAML cloud-init reads (schema: cloud-init 25.1
//! `schema-cloud-config-v1.json`, `network-config` v2); not what goes into it (that is
//! [`super::appliance`]). Serialized with serde-saphyr; keys are emitted in struct order.
//! Commands are written in list form (`[prog, arg, …]`), so no shell re-parses our values,
//! except the few explicit `sh -c` scripts whose arguments are positional parameters.

use serde::Serialize;
use std::collections::BTreeMap;

/// The user-data document.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CloudConfig {
    /// Commands run early on every boot (init stage, before users exist).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootcmd: Vec<Vec<String>>,
    /// Users to create.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserEntry>,
    /// Keys for the distribution's default user.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// `ssh_pwauth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_pwauth: Option<bool>,
    /// `timezone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `yum_repos` (Fedora): repo id → options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub yum_repos: BTreeMap<String, YumRepo>,
    /// `package_update`.
    pub package_update: bool,
    /// `package_upgrade`.
    pub package_upgrade: bool,
    /// `packages`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// `write_files`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub write_files: Vec<WriteFile>,
    /// `runcmd` (final stage, after packages and deferred files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runcmd: Vec<Vec<String>>,
}

/// An element of `users`: the distribution's `default` user or an explicit one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEntry {
    /// The literal `default`.
    Default,
    /// A user definition.
    User(User),
}

impl Serialize for UserEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UserEntry::Default => s.serialize_str("default"),
            UserEntry::User(u) => u.serialize(s),
        }
    }
}

/// One entry of `users`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric uid (1000..60000 so useradd allocates subuids).
    pub uid: u32,
    /// Primary group (created beforehand in bootcmd: `users` has no gid key).
    pub primary_group: String,
    /// Do not create a group named after the user.
    pub no_user_group: bool,
    /// Login shell.
    pub shell: String,
    /// Lock the password.
    pub lock_passwd: bool,
    /// Home directory.
    pub homedir: String,
    /// Authorized SSH keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// Supplementary groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
    /// `sudo` rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sudo: Option<String>,
}

/// A `yum_repos` entry (written to `/etc/yum.repos.d/<id>.repo`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct YumRepo {
    /// `name`.
    pub name: String,
    /// `baseurl`.
    pub baseurl: String,
    /// `enabled`.
    pub enabled: bool,
    /// `gpgcheck`.
    pub gpgcheck: bool,
    /// `repo_gpgcheck`.
    pub repo_gpgcheck: bool,
    /// `gpgkey`.
    pub gpgkey: String,
}

/// A `write_files` entry.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute path in the VM.
    pub path: String,
    /// File contents (UTF-8 text).
    pub content: String,
    /// `user:group`.
    pub owner: String,
    /// Octal mode as a string, e.g. `'0644'`.
    pub permissions: String,
    /// Write in the final stage, after users and packages exist.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub defer: bool,
}

/// NoCloud `meta-data`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MetaData {
    /// Changes whenever the bundle changes, so per-instance modules rerun.
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    /// Hostname.
    #[serde(rename = "local-hostname")]
    pub local_hostname: String,
}

/// Network config version 2 (netplan-like) of the VM's one NIC.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Always 2.
    pub version: u32,
    /// Interface id → settings.
    pub ethernets: BTreeMap<String, Ethernet>,
}

/// One `ethernets` entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ethernet {
    /// Which NIC (by name glob).
    #[serde(rename = "match")]
    pub matches: MatchName,
    /// `false`: static.
    pub dhcp4: bool,
    /// `addr/prefix` (static only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Default route (static only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS servers (static only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Nameservers>,
}

/// `match:` by name.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MatchName {
    /// Glob on the kernel name.
    pub name: String,
}

/// A route.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub to: String,
    /// Gateway.
    pub via: String,
}

/// `nameservers:`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Nameservers {
    /// Server addresses.
    pub addresses: Vec<String>,
}

/// Serializer options: literal blocks for multi-line text (readable unit files in user-data),
/// never folded scalars (folding is easy to get subtly wrong for file contents).
fn options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        prefer_block_scalars: true,
        folded_wrap_chars: usize::MAX,
    }
}

/// Serializes any of the NoCloud documents to YAML.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string_with_options(value, options())
}

/// Serializes user-data with the mandatory `#cloud-config` first line.
pub fn user_data(config: &CloudConfig) -> Result<String, serde_saphyr::ser::Error> {
    Ok(format!("#cloud-config\n{}", to_yaml(config)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_list_commands() {
        let cc = CloudConfig {
            bootcmd: vec![vec!["groupadd".into(), "-g".into(), "1100".into()]],
            write_files: vec![WriteFile {
                path: "/etc/x".into(),
                content: "a: b\n  indented\n# not a comment\n".into(),
                owner: "root:root".into(),
                permissions: "0644".into(),
                defer: true,
            }],
            ..CloudConfig::default()
        };
        let y = user_data(&cc).unwrap();
        assert!(y.starts_with("#cloud-config\n"), "{y}");
        #[derive(serde::Deserialize)]
        struct Back {
            write_files: Vec<BackFile>,
            bootcmd: Vec<Vec<String>>,
        }
        #[derive(serde::Deserialize)]
        struct BackFile {
            content: String,
            defer: bool,
            permissions: String,
        }
        let back: Back = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(back.write_files[0].content, cc.write_files[0].content);
        assert!(back.write_files[0].defer);
        assert_eq!(back.write_files[0].permissions, "0644");
        assert_eq!(back.bootcmd, cc.bootcmd);
    }
}

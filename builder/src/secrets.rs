//! Secrets: an age-encrypted YAML file of `name: value` pairs.
//!
//! The file (`secrets.age` beside `mms.yml`) is decrypted in memory with an
//! identity from `--identity`, `$MMS_IDENTITY` or `~/.config/mms/identity.txt`
//! (a native age identity or an unencrypted SSH private key). `MMS_SECRET_<NAME>`
//! overrides one secret. A [`Secret`] never prints its value: Debug and
//! Display show `(secret)`.

use crate::catalog::Catalog;
use crate::config::Site;
use crate::yaml::{Diagnostic, Severity};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A secret value. Printing it shows `(secret)`; use [`Secret::expose`] to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself: only for writing it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

/// Where a secret's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Env,
}

/// The site's secrets by name.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    map: BTreeMap<String, (Secret, Source)>,
}

impl Secrets {
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.map.get(name).map(|(s, _)| s)
    }
    pub fn source(&self, name: &str) -> Option<Source> {
        self.map.get(name).map(|(_, s)| *s)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
    /// Builds from file values, then applies `MMS_SECRET_<NAME>` overrides from `env`.
    pub fn from_parts(
        file: BTreeMap<String, String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut map: BTreeMap<String, (Secret, Source)> = file
            .into_iter()
            .map(|(k, v)| (k, (Secret(v), Source::File)))
            .collect();
        for (k, v) in env {
            if let Some(name) = k.strip_prefix("MMS_SECRET_")
                && !name.is_empty()
            {
                map.insert(name.to_ascii_lowercase(), (Secret(v), Source::Env));
            }
        }
        Secrets { map }
    }
}

/// Secrets every site needs, and why.
pub const ALWAYS: &[(&str, &str)] = &[
    ("proxmox_token_secret", "the Proxmox API token's secret"),
    ("tailscale_auth_key", "Tailscale enrollment"),
];

/// Known secret names: the always-needed ones, `migrate_ssh_key`, and any a
/// catalog service names.
pub fn known_names(catalog: &Catalog) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ALWAYS.iter().map(|(n, _)| n.to_string()).collect();
    names.insert("migrate_ssh_key".into());
    names.insert("backup_identity".into());
    for s in catalog.iter() {
        names.extend(s.secrets.iter().cloned());
    }
    names
}

/// Which secrets a check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything any build of this site may need (`check`, `secrets`).
    All,
    /// Only what every build needs: the token, Tailscale, the services' own secrets
    /// (`--apply` checks these before it changes anything; a rebuild brings its own
    /// one-time migration key and needs no backup identity).
    EveryBuild,
}

/// The secrets this site needs: `(name, why)`.
pub fn required(site: &Site, catalog: &Catalog) -> Vec<(String, String)> {
    required_in(site, catalog, Scope::All)
}

fn required_in(site: &Site, catalog: &Catalog, scope: Scope) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ALWAYS
        .iter()
        .map(|(n, why)| (n.to_string(), why.to_string()))
        .collect();
    for s in site.services.iter().filter_map(|s| catalog.get(s)) {
        for sec in &s.secrets {
            if !out.iter().any(|(n, _)| n == sec) {
                out.push((sec.clone(), format!("service {}", s.name)));
            }
        }
    }
    if scope == Scope::EveryBuild {
        return out;
    }
    if site.migrate.is_some() {
        out.push((
            "migrate_ssh_key".into(),
            "migrate.from (SSH private key for the old host)".into(),
        ));
    } else if !site.backup.recipients.is_empty() {
        // A first build without `migrate:` restores the newest backup; the VM
        // gets this age identity once, to decrypt it, and deletes it.
        out.push((
            "backup_identity".into(),
            "a first-build restore of the encrypted backups (an age identity matching backup.recipients)".into(),
        ));
    }
    out
}

/// Checks the secrets against the site: missing names, unknown names, and
/// values with rules of their own (Immich's DB password). Pure.
pub fn check(site: &Site, catalog: &Catalog, secrets: &Secrets) -> Vec<Diagnostic> {
    check_in(site, catalog, secrets, Scope::All)
}

/// [`check`] limited to `scope`.
pub fn check_in(
    site: &Site,
    catalog: &Catalog,
    secrets: &Secrets,
    scope: Scope,
) -> Vec<Diagnostic> {
    let diag = |severity, path: &str, message: String| Diagnostic {
        severity,
        file: site.secrets_file.clone(),
        loc: Default::default(),
        path: path.to_owned(),
        message,
    };
    let mut out = Vec::new();
    for (name, why) in required_in(site, catalog, scope) {
        match secrets.get(&name) {
            None => out.push(diag(
                Severity::Error,
                &name,
                format!(
                    "missing secret (needed for {why}); add it with `mms-build secrets edit` or set MMS_SECRET_{}",
                    name.to_ascii_uppercase()
                ),
            )),
            Some(v) if v.expose().is_empty() => {
                out.push(diag(Severity::Error, &name, "empty secret".into()))
            }
            Some(_) => {}
        }
    }
    if let Some(pw) = secrets.get("immich_db_password")
        && site.services.iter().any(|s| s == "immich")
        && !pw.expose().chars().all(|c| c.is_ascii_alphanumeric())
    {
        out.push(diag(
            Severity::Error,
            "immich_db_password",
            "Immich accepts only the characters A-Za-z0-9 in its database password".into(),
        ));
    }
    let known = known_names(catalog);
    for name in secrets.names() {
        if !known.contains(name) {
            out.push(diag(
                Severity::Warning,
                name,
                format!(
                    "unknown secret name; known: {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    out
}

/// Parses the decrypted YAML: a mapping of names to string values.
pub fn parse_plaintext(file: &Path, text: &str) -> Result<BTreeMap<String, String>> {
    use crate::yaml::Value;
    let root = crate::yaml::parse(file, text).map_err(|d| anyhow!("{d}"))?;
    let mut out = BTreeMap::new();
    let entries = match root.value {
        Value::Null => return Ok(out),
        Value::Map(m) => m,
        _ => bail!(
            "{}: expected a mapping of secret names to values",
            file.display()
        ),
    };
    for (k, v) in entries {
        let Value::Str(name) = k.value else {
            bail!(
                "{}:{}:{}: secret names must be strings",
                file.display(),
                k.loc.line,
                k.loc.col
            );
        };
        let value = match v.value {
            Value::Str(s) => s,
            Value::Null => String::new(),
            // Never echo the value: it is a secret.
            _ => bail!(
                "{}:{}:{}: {name}: secret values must be strings (quote them, e.g. \"0123\")",
                file.display(),
                v.loc.line,
                v.loc.col
            ),
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bail!(
                "{}:{}:{}: {name:?}: secret names are lower-case letters, digits and _",
                file.display(),
                k.loc.line,
                k.loc.col
            );
        }
        out.insert(name, value);
    }
    Ok(out)
}

/// Serializes secrets as YAML (for re-encryption); values are always quoted.
pub fn to_plaintext(values: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in values {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Parses one recipient: an age X25519 key or an SSH public key.
pub fn parse_recipient(s: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    if s.starts_with("age1") {
        age::x25519::Recipient::from_str(s)
            .map(|r| Box::new(r) as _)
            .map_err(|e| format!("{s:?} is not a valid age recipient: {e}"))
    } else if s.starts_with("ssh-") {
        age::ssh::Recipient::from_str(s)
            .map(|r| Box::new(r) as _)
            .map_err(|e| format!("not a usable SSH public key for age: {e:?}"))
    } else {
        Err(format!(
            "{s:?} is neither an age recipient (age1…) nor an SSH public key (ssh-ed25519 …, ssh-rsa …)"
        ))
    }
}

/// Where the identity is taken from: the flag, then `$MMS_IDENTITY`, then
/// `~/.config/mms/identity.txt` when it exists.
pub fn identity_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("MMS_IDENTITY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".config/mms/identity.txt");
    p.exists().then_some(p)
}

/// An identity read from a file, with the recipients it implies (native age only).
pub struct LoadedIdentity {
    pub identities: Vec<Box<dyn age::Identity>>,
    pub recipients: Vec<String>,
}

impl fmt::Debug for LoadedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedIdentity({} keys)", self.identities.len())
    }
}

/// Parses identity file contents: native age identities or an SSH private key.
pub fn parse_identity(path: &Path, text: &str) -> Result<LoadedIdentity> {
    if text.contains("-----BEGIN") {
        let id = age::ssh::Identity::from_buffer(
            BufReader::new(text.as_bytes()),
            Some(path.display().to_string()),
        )
        .with_context(|| format!("{}: not a readable SSH private key", path.display()))?;
        return match id {
            age::ssh::Identity::Unencrypted(_) => Ok(LoadedIdentity {
                identities: vec![Box::new(id)],
                recipients: Vec::new(),
            }),
            age::ssh::Identity::Encrypted(_) => bail!(
                "{}: the SSH key is passphrase-protected; use an unencrypted key or a native age identity (age-keygen)",
                path.display()
            ),
            age::ssh::Identity::Unsupported(_) => bail!(
                "{}: this SSH key type is not supported by age (use ssh-ed25519 or ssh-rsa)",
                path.display()
            ),
        };
    }
    let mut identities: Vec<Box<dyn age::Identity>> = Vec::new();
    let mut recipients = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = age::x25519::Identity::from_str(line).map_err(|_| {
            anyhow!(
                "{}:{}: not an age identity (AGE-SECRET-KEY-1…) or SSH private key",
                path.display(),
                i + 1
            )
        })?;
        recipients.push(id.to_public().to_string());
        identities.push(Box::new(id));
    }
    if identities.is_empty() {
        bail!("{}: no identity in the file", path.display());
    }
    Ok(LoadedIdentity {
        identities,
        recipients,
    })
}

/// Reads an identity file.
pub fn read_identity(path: &Path) -> Result<LoadedIdentity> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the identity {}", path.display()))?;
    parse_identity(path, &text)
}

/// Decrypts an age file (binary or ASCII-armored) in memory.
pub fn decrypt(ciphertext: &[u8], identity: &LoadedIdentity) -> Result<Vec<u8>> {
    let reader = age::armor::ArmoredReader::new(ciphertext);
    let decryptor = age::Decryptor::new(reader).context("not an age file")?;
    let mut out = Vec::new();
    decryptor
        .decrypt(identity.identities.iter().map(|i| i.as_ref()))
        .map_err(|e| anyhow!("cannot decrypt: {e}"))?
        .read_to_end(&mut out)
        .context("reading the decrypted stream")?;
    Ok(out)
}

/// Encrypts to the recipients, ASCII-armored (a text file, like an Ansible vault).
pub fn encrypt(plaintext: &[u8], recipients: &[String]) -> Result<Vec<u8>> {
    let parsed: Vec<Box<dyn age::Recipient + Send>> = recipients
        .iter()
        .map(|r| parse_recipient(r).map_err(|e| anyhow!(e)))
        .collect::<Result<_>>()?;
    if parsed.is_empty() {
        bail!("no recipients to encrypt the secrets to");
    }
    let enc =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r.as_ref() as &dyn age::Recipient))
            .map_err(|e| anyhow!("cannot encrypt: {e}"))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)?;
    let mut w = enc.wrap_output(armor)?;
    w.write_all(plaintext)?;
    w.finish()?.finish()?;
    Ok(out)
}

/// Loads the site's secrets: decrypts the file when it exists (an identity is
/// then required) and applies `MMS_SECRET_*` overrides from the environment.
pub fn load_secrets(site: &Site, identity: Option<&Path>) -> Result<Secrets> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("MMS_SECRET_"))
        .collect();
    let file = &site.secrets_file;
    if !file.exists() {
        return Ok(Secrets::from_parts(BTreeMap::new(), env));
    }
    let (text, _) = decrypt_file(file, identity)?;
    let values = parse_plaintext(file, &text)?;
    Ok(Secrets::from_parts(values, env))
}

/// Decrypts the secrets file with the identity (`--identity`, `MMS_IDENTITY` or the default
/// path); returns the plaintext and the identity (its recipients re-encrypt an edit).
pub fn decrypt_file(file: &Path, identity: Option<&Path>) -> Result<(String, LoadedIdentity)> {
    let Some(id_path) = identity_path(identity) else {
        bail!(
            "{} is encrypted and no identity was given: pass --identity FILE, set MMS_IDENTITY, or create ~/.config/mms/identity.txt",
            file.display()
        );
    };
    let id = read_identity(&id_path)?;
    let ct = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let pt = decrypt(&ct, &id)
        .with_context(|| format!("decrypting {} with {}", file.display(), id_path.display()))?;
    let text = String::from_utf8(pt)
        .map_err(|_| anyhow!("{}: decrypted content is not UTF-8 text", file.display()))?;
    Ok((text, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "(secret) (secret)");
        let all = Secrets::from_parts([("a".into(), "hunter2".into())].into(), []);
        assert!(!format!("{all:?}").contains("hunter2"));
    }

    #[test]
    fn env_overrides_file_values() {
        let s = Secrets::from_parts(
            [("tailscale_auth_key".into(), "from-file".into())].into(),
            [
                ("MMS_SECRET_TAILSCALE_AUTH_KEY".into(), "from-env".into()),
                ("MMS_SECRET_".into(), "ignored".into()),
                ("OTHER".into(), "x".into()),
            ],
        );
        assert_eq!(s.get("tailscale_auth_key").unwrap().expose(), "from-env");
        assert_eq!(s.source("tailscale_auth_key"), Some(Source::Env));
        assert_eq!(s.names().count(), 1);
    }

    #[test]
    fn roundtrip_with_a_native_identity() {
        let id = age::x25519::Identity::generate();
        let text = format!("# test\n{}\n", id.to_string().expose_secret_str());
        let loaded = parse_identity(Path::new("id.txt"), &text).unwrap();
        let values: BTreeMap<String, String> = [
            ("a".into(), "x: \"y\"\n".into()),
            ("b".into(), "0123".into()),
        ]
        .into();
        let ct = encrypt(to_plaintext(&values).as_bytes(), &loaded.recipients).unwrap();
        assert!(ct.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
        let pt = decrypt(&ct, &loaded).unwrap();
        let back = parse_plaintext(Path::new("s"), std::str::from_utf8(&pt).unwrap()).unwrap();
        assert_eq!(back, values);
        let other = age::x25519::Identity::generate();
        let other =
            parse_identity(Path::new("o.txt"), other.to_string().expose_secret_str()).unwrap();
        assert!(decrypt(&ct, &other).is_err());
    }

    #[test]
    fn plaintext_rules_do_not_echo_values() {
        let e = parse_plaintext(Path::new("s"), "pw: 12345\n").unwrap_err();
        assert!(e.to_string().contains("quote"));
        assert!(!e.to_string().contains("12345"));
        assert!(parse_plaintext(Path::new("s"), "Bad-Name: x\n").is_err());
        assert!(parse_plaintext(Path::new("s"), "- a\n").is_err());
    }

    #[test]
    fn recipients_are_checked() {
        assert!(parse_recipient("age1xyz").is_err());
        assert!(parse_recipient("hello").is_err());
        let id = age::x25519::Identity::generate();
        assert!(parse_recipient(&id.to_public().to_string()).is_ok());
    }

    trait ExposeStr {
        fn expose_secret_str(&self) -> &str;
    }
    impl ExposeStr for age::secrecy::SecretString {
        fn expose_secret_str(&self) -> &str {
            use age::secrecy::ExposeSecret;
            self.expose_secret()
        }
    }
}

//! age recipients and identities: parsing the configured public keys and the restore key.
//!
//! Identities are parsed from bytes held in memory (read from a file or stdin by the
//! caller) and never written anywhere. Supports native `AGE-SECRET-KEY-1…` files and
//! unencrypted OpenSSH `ssh-ed25519`/`ssh-rsa` private keys.

use std::io::BufReader;

/// A recipient or identity could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A configured recipient string is not an age or SSH public key.
    #[error("{0}")]
    Recipient(String),
    /// The identity is not usable.
    #[error("{0}")]
    Identity(String),
}

/// Parses one recipient: `age1…` (X25519) or `ssh-ed25519 …`/`ssh-rsa …`.
pub fn parse_recipient(s: &str) -> Result<Box<dyn age::Recipient + Send>, KeyError> {
    let s = s.trim();
    if s.starts_with("age1") {
        return s
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
            .map_err(|e| {
                KeyError::Recipient(format!("{s:?} is not a valid age1 X25519 recipient: {e}"))
            });
    }
    if s.starts_with("ssh-") {
        use age::ssh::ParseRecipientKeyError as E;
        return s
            .parse::<age::ssh::Recipient>()
            .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
            .map_err(|e| {
                let why = match e {
                    E::Ignore => "ignored key type".to_string(),
                    E::Invalid(m) => m.to_string(),
                    E::RsaModulusTooLarge => "RSA modulus larger than 4096 bits".to_string(),
                    E::RsaModulusTooSmall => "RSA modulus smaller than 2048 bits".to_string(),
                    E::Unsupported(t) => format!("unsupported key type {t}"),
                };
                KeyError::Recipient(format!("{:?}: not a usable SSH recipient: {why}", short(s)))
            });
    }
    Err(KeyError::Recipient(format!(
        "{:?}: expected an age1… X25519 key or an ssh-ed25519/ssh-rsa public key",
        short(s)
    )))
}

/// Parses every configured recipient.
pub fn parse_recipients(list: &[String]) -> Result<Vec<Box<dyn age::Recipient + Send>>, KeyError> {
    list.iter().map(|s| parse_recipient(s)).collect()
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Parses identity bytes: an age identity file or an unencrypted OpenSSH private key.
pub fn parse_identities(
    bytes: &[u8],
    origin: &str,
) -> Result<Vec<Box<dyn age::Identity>>, KeyError> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("AGE-SECRET-KEY-") {
        let file = age::IdentityFile::from_buffer(BufReader::new(bytes)).map_err(|e| {
            KeyError::Identity(format!(
                "identity {origin}: cannot parse age identity file: {e}"
            ))
        })?;
        let ids = file
            .into_identities()
            .map_err(|e| KeyError::Identity(format!("identity {origin}: {e}")))?;
        if ids.is_empty() {
            return Err(KeyError::Identity(format!(
                "identity {origin}: no AGE-SECRET-KEY found"
            )));
        }
        return Ok(ids);
    }
    if text.contains("PRIVATE KEY-----") {
        let id = age::ssh::Identity::from_buffer(BufReader::new(bytes), Some(origin.to_string()))
            .map_err(|e| {
            KeyError::Identity(format!(
                "identity {origin}: cannot parse SSH private key: {e}"
            ))
        })?;
        return match id {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(id)]),
            age::ssh::Identity::Encrypted(_) => Err(KeyError::Identity(format!(
                "identity {origin}: the SSH key is passphrase-protected; decrypt a copy in memory \
                 (e.g. `ssh-keygen -p -N '' -f COPY` on the workstation) or use an age identity"
            ))),
            age::ssh::Identity::Unsupported(k) => Err(KeyError::Identity(format!(
                "identity {origin}: unsupported SSH key: {k:?}"
            ))),
        };
    }
    Err(KeyError::Identity(format!(
        "identity {origin}: expected an age identity (AGE-SECRET-KEY-1…) or an OpenSSH private key"
    )))
}

//! One-time Ed25519 SSH key pairs for the old→new state pull (DESIGN §5 step 5).
//!
//! Generated in memory with `ring` and encoded in OpenSSH's formats; the private
//! half only ever travels to the new VM through the guest agent and is never
//! written on the workstation.

use ring::rand::SecureRandom;
use ring::signature::KeyPair;

/// A generated key pair. `Debug` does not show the private key.
pub struct SshKeyPair {
    /// `ssh-ed25519 AAAA… <comment>`.
    pub public: String,
    private_pem: String,
}

impl std::fmt::Debug for SshKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKeyPair")
            .field("public", &self.public)
            .field("private", &"(secret)")
            .finish()
    }
}

impl SshKeyPair {
    /// Generates a fresh key pair with `comment`.
    pub fn generate(comment: &str) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let mut seed = [0u8; 32];
        rng.fill(&mut seed)
            .map_err(|_| "no system randomness".to_owned())?;
        let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| format!("ed25519 key: {e}"))?;
        let pk: [u8; 32] = kp
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "ed25519 public key length".to_owned())?;

        let mut pub_blob = Vec::new();
        put_str(&mut pub_blob, b"ssh-ed25519");
        put_str(&mut pub_blob, &pk);
        let public = format!("ssh-ed25519 {} {comment}", base64(&pub_blob));

        let mut check = [0u8; 4];
        rng.fill(&mut check)
            .map_err(|_| "no system randomness".to_owned())?;
        let mut private = Vec::new();
        private.extend_from_slice(&check);
        private.extend_from_slice(&check);
        put_str(&mut private, b"ssh-ed25519");
        put_str(&mut private, &pk);
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(&seed);
        secret.extend_from_slice(&pk);
        put_str(&mut private, &secret);
        put_str(&mut private, comment.as_bytes());
        let mut pad = 1u8;
        while private.len() % 8 != 0 {
            private.push(pad);
            pad += 1;
        }

        let mut blob = Vec::new();
        blob.extend_from_slice(b"openssh-key-v1\0");
        put_str(&mut blob, b"none");
        put_str(&mut blob, b"none");
        put_str(&mut blob, b"");
        blob.extend_from_slice(&1u32.to_be_bytes());
        put_str(&mut blob, &pub_blob);
        put_str(&mut blob, &private);
        let b64 = base64(&blob);
        let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(70) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
        Ok(SshKeyPair {
            public,
            private_pem: pem,
        })
    }

    /// The private key in OpenSSH format. Handle as a secret.
    pub fn private_openssh(&self) -> &str {
        &self.private_pem
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Lengths here are tiny (keys, comments); saturate rather than panic.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    /// `ssh-keygen -y` derives the same public key from the private key: the
    /// format is what OpenSSH reads. Needs openssh-client (scripts/setup-test-env.sh).
    #[test]
    fn openssh_reads_the_private_key() {
        let kp = SshKeyPair::generate("mms-rebuild-test").unwrap();
        assert!(!format!("{kp:?}").contains("PRIVATE"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, kp.private_openssh()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ssh-keygen missing: run scripts/setup-test-env.sh (openssh-client)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let derived = String::from_utf8(out.stdout).unwrap();
        let mut want = kp.public.split(' ').take(2).collect::<Vec<_>>().join(" ");
        want.push(' ');
        assert!(derived.starts_with(&want), "{derived} vs {}", kp.public);
    }
}

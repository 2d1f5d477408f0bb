//! TLS trust for the Proxmox endpoint: a SHA-256 fingerprint pin checked in a
//! custom verifier, a CA file, or (loudly) no verification at all.
//!
//! Proxmox nodes usually run a self-signed certificate, so the pin is the
//! normal case; `pvenode cert info` or `GET /nodes` (`ssl_fingerprint`) shows it.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How the server certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The SHA-256 of the leaf certificate (DER) must equal this.
    Fingerprint([u8; 32]),
    /// Verify the chain and host name against the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Accept any certificate (`--insecure`); signatures are still checked.
    Insecure,
}

/// Parses `AB:CD:…` (32 colon-separated bytes) or 64 plain hex digits.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hexstr: String = s.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hexstr)
        .map_err(|_| format!("fingerprint {s:?} is not hex (expected 32 bytes as AB:CD:…)"))?;
    bytes
        .try_into()
        .map_err(|_| format!("fingerprint {s:?} is not 32 bytes long (expected a SHA-256)"))
}

/// Formats a fingerprint as `AB:CD:…`.
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// SHA-256 of a DER certificate.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Remembers the fingerprint of a refused certificate for the error message.
pub(crate) type Presented = Arc<Mutex<Option<[u8; 32]>>>;

/// Builds the rustls configuration (ring provider) for `trust`.
pub(crate) fn client_config(
    trust: &Trust,
    presented: Presented,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match trust {
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: Some(*pin),
                provider,
                presented,
            }))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: None,
                provider,
                presented,
            }))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("proxmox.ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("proxmox.ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("proxmox.ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "proxmox.ca_file {}: no PEM certificate found",
                    path.display()
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

#[derive(Debug)]
struct PinVerifier {
    /// `None` = insecure mode.
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
    presented: Presented,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = cert_fingerprint(end_entity.as_ref());
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if pin == fp => Ok(ServerCertVerified::assertion()),
            Some(_) => {
                if let Ok(mut p) = self.presented.lock() {
                    *p = Some(fp);
                }
                Err(rustls::Error::General(
                    "certificate fingerprint does not match the pinned proxmox.tls_fingerprint"
                        .into(),
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trip() {
        let fp = [0xABu8; 32];
        let s = format_fingerprint(&fp);
        assert_eq!(s.len(), 32 * 3 - 1);
        assert_eq!(parse_fingerprint(&s).unwrap(), fp);
        assert_eq!(parse_fingerprint(&hex::encode(fp)).unwrap(), fp);
        assert!(parse_fingerprint("AB:CD").unwrap_err().contains("32 bytes"));
        assert!(parse_fingerprint("zz").unwrap_err().contains("not hex"));
    }
}

//! Proxmox VE HTTP API client (issue 4; DESIGN §5).
//!
//! Owns the wire: TLS trust (fingerprint pin, CA file, or a loud `--insecure`),
//! the API-token header, Proxmox's form encoding, the `{"data"}` envelope,
//! typed errors, UPIDs and task polling, bounded retries, the ISO upload and the
//! guest-agent calls. It knows nothing about MMS's plan; `crate::apply` drives it.
//!
//! Reference: `reference/proxmox-api.md` (wire facts with sources) and the
//! official schema subset `proxmox/pve-api-subset.json`.

pub mod api;
pub mod client;
pub mod error;
pub mod form;
pub mod sshkey;
pub mod tasks;
pub mod tls;
pub mod upid;

pub use client::{Client, ClientSettings, RetryPolicy};
pub use error::{ErrorKind, ProxmoxError};
pub use form::Form;
pub use tls::Trust;
pub use upid::Upid;

//! Typed Proxmox errors: callers branch on [`ProxmoxError::kind`].

use std::collections::BTreeMap;

/// What kind of failure a [`ProxmoxError`] is; stable labels for callers and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// TCP/TLS/HTTP transport failure (retried with backoff).
    Connection,
    /// The server certificate did not match the pinned fingerprint / CA.
    Tls,
    /// 401: the token id or secret was refused.
    Auth,
    /// 403: a privilege is missing.
    Permission,
    /// 400: the server rejected parameters (`errors` map).
    Parameter,
    /// A VM lock (`VM is locked (clone)`) or lock contention (`got timeout`).
    Lock,
    /// The VM, volume or task does not exist.
    NotFound,
    /// An async task ended with an error exit status.
    TaskFailed,
    /// Waiting for a task or a guest state took longer than allowed.
    Timeout,
    /// Any other server-side failure (5xx, 500 handler errors).
    Server,
    /// The server answered something this client cannot understand.
    Protocol,
}

impl ErrorKind {
    /// A short lowercase label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Tls => "tls",
            ErrorKind::Auth => "auth",
            ErrorKind::Permission => "permission",
            ErrorKind::Parameter => "parameter",
            ErrorKind::Lock => "lock",
            ErrorKind::NotFound => "not-found",
            ErrorKind::TaskFailed => "task-failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Server => "server",
            ErrorKind::Protocol => "protocol",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the Proxmox API, with enough detail to tell the user what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProxmoxError {
    /// Transport failure talking to `endpoint`.
    #[error("cannot reach Proxmox at {endpoint}: {detail}")]
    Connection {
        /// The API endpoint.
        endpoint: String,
        /// The transport error chain.
        detail: String,
    },
    /// The server certificate was refused.
    #[error(
        "TLS: the certificate of {endpoint} does not match proxmox.tls_fingerprint \
         (server presented {presented}); nothing was sent. Check the fingerprint with \
         `pvenode cert info` on the node, or GET /nodes -> ssl_fingerprint"
    )]
    TlsPin {
        /// The API endpoint.
        endpoint: String,
        /// The SHA-256 fingerprint the server presented (colon hex).
        presented: String,
    },
    /// The server certificate failed CA verification.
    #[error("TLS: cannot verify the certificate of {endpoint}: {detail}")]
    Tls {
        /// The API endpoint.
        endpoint: String,
        /// The verification error.
        detail: String,
    },
    /// 401 from the server.
    #[error(
        "authentication failed for API token {token_id} at {endpoint}: check proxmox.token_id \
         and the secret proxmox_token_secret (the server does not say which part is wrong)"
    )]
    Auth {
        /// The API endpoint.
        endpoint: String,
        /// The token id that was sent (never the secret).
        token_id: String,
    },
    /// 403 from the server.
    #[error("permission denied for {method} {path}: {message}{}", privilege_hint(.privilege.as_deref()))]
    Permission {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// The missing privilege, when the server named it.
        privilege: Option<String>,
        /// The server's text.
        message: String,
    },
    /// 400 parameter verification failure.
    #[error("{method} {path} rejected parameters: {}", format_errors(.message, .errors))]
    Parameter {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// The server's message.
        message: String,
        /// Parameter name → reason.
        errors: BTreeMap<String, String>,
    },
    /// Lock held or lock contention.
    #[error("{method} {path}: {message}")]
    Lock {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// The server's text.
        message: String,
    },
    /// The object does not exist.
    #[error("{method} {path}: {message}")]
    NotFound {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// The server's text.
        message: String,
    },
    /// Other server failure.
    #[error("{method} {path} failed with HTTP {status}: {message}")]
    Server {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// The server's text.
        message: String,
    },
    /// An async task failed.
    #[error("task {upid} failed: {exitstatus}{}", format_log(.log_tail))]
    TaskFailed {
        /// The task's UPID.
        upid: String,
        /// The task's exit status text.
        exitstatus: String,
        /// The last lines of the task log.
        log_tail: Vec<String>,
    },
    /// Waiting took too long.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        seconds: u64,
    },
    /// Unexpected response.
    #[error("{method} {path}: unexpected response: {detail}")]
    Protocol {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

fn privilege_hint(privilege: Option<&str>) -> String {
    match privilege {
        Some(p) => {
            format!(" — grant {p} to the API token's role (docs/proxmox.md lists every privilege)")
        }
        None => String::new(),
    }
}

fn format_errors(message: &str, errors: &BTreeMap<String, String>) -> String {
    let mut s = message.trim().to_owned();
    for (k, v) in errors {
        s.push_str(&format!("\n  {k}: {}", v.trim()));
    }
    s
}

fn format_log(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n  task log (last lines):");
    for l in lines {
        s.push_str("\n    ");
        s.push_str(l);
    }
    s
}

impl ProxmoxError {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProxmoxError::Connection { .. } => ErrorKind::Connection,
            ProxmoxError::TlsPin { .. } | ProxmoxError::Tls { .. } => ErrorKind::Tls,
            ProxmoxError::Auth { .. } => ErrorKind::Auth,
            ProxmoxError::Permission { .. } => ErrorKind::Permission,
            ProxmoxError::Parameter { .. } => ErrorKind::Parameter,
            ProxmoxError::Lock { .. } => ErrorKind::Lock,
            ProxmoxError::NotFound { .. } => ErrorKind::NotFound,
            ProxmoxError::Server { .. } => ErrorKind::Server,
            ProxmoxError::TaskFailed { .. } => ErrorKind::TaskFailed,
            ProxmoxError::Timeout { .. } => ErrorKind::Timeout,
            ProxmoxError::Protocol { .. } => ErrorKind::Protocol,
        }
    }

    /// The server's message text, where there is one.
    pub fn message(&self) -> String {
        match self {
            ProxmoxError::Permission { message, .. }
            | ProxmoxError::Parameter { message, .. }
            | ProxmoxError::Lock { message, .. }
            | ProxmoxError::NotFound { message, .. }
            | ProxmoxError::Server { message, .. } => message.clone(),
            ProxmoxError::TaskFailed { exitstatus, .. } => exitstatus.clone(),
            other => other.to_string(),
        }
    }

    /// Whether a retry with backoff may succeed: transport errors, 5xx other
    /// than handler errors, and `got timeout` lock contention. Never a 4xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ProxmoxError::Connection { .. } => true,
            ProxmoxError::Lock { message, .. } => message.contains("got timeout"),
            ProxmoxError::Server {
                status, message, ..
            } => *status >= 502 || message.contains("got no worker upid"),
            _ => false,
        }
    }

    /// Builds the error for a non-2xx answer (not 401, which has no body).
    pub(crate) fn from_status(
        method: &str,
        path: &str,
        status: u16,
        message: String,
        errors: BTreeMap<String, String>,
    ) -> Self {
        let method = method.to_owned();
        let path = path.to_owned();
        let message = message.trim().to_owned();
        match status {
            400 => ProxmoxError::Parameter {
                method,
                path,
                message,
                errors,
            },
            403 => ProxmoxError::Permission {
                privilege: privilege_from_message(&message),
                method,
                path,
                message,
            },
            404 => ProxmoxError::NotFound {
                method,
                path,
                message,
            },
            _ if message.contains("does not exist") || message.contains("No such") => {
                ProxmoxError::NotFound {
                    method,
                    path,
                    message,
                }
            }
            _ if message.contains("got timeout") || message.contains("is locked") => {
                ProxmoxError::Lock {
                    method,
                    path,
                    message,
                }
            }
            _ => ProxmoxError::Server {
                method,
                path,
                status,
                message,
            },
        }
    }
}

/// Extracts the privilege from `Permission check failed (/vms/100, VM.Allocate)`.
pub fn privilege_from_message(message: &str) -> Option<String> {
    let start = message.find("Permission check failed (")? + "Permission check failed (".len();
    let inner = &message[start..];
    let inner = &inner[..inner.find(')')?];
    let (_, privs) = inner.split_once(',')?;
    let privs = privs.trim();
    (!privs.is_empty()).then(|| privs.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_is_named() {
        assert_eq!(
            privilege_from_message("Permission check failed (/vms/100, VM.Allocate)").as_deref(),
            Some("VM.Allocate")
        );
        assert_eq!(privilege_from_message("Permission check failed"), None);
        let e = ProxmoxError::from_status(
            "POST",
            "/nodes/pve/qemu/100/clone",
            403,
            "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)\n".into(),
            BTreeMap::new(),
        );
        assert_eq!(e.kind(), ErrorKind::Permission);
        assert!(e.to_string().contains("grant SDN.Use"));
    }

    #[test]
    fn classification() {
        let lock = ProxmoxError::from_status(
            "PUT",
            "/x",
            500,
            "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout".into(),
            BTreeMap::new(),
        );
        assert_eq!(lock.kind(), ErrorKind::Lock);
        assert!(lock.is_transient());
        let locked = ProxmoxError::from_status(
            "PUT",
            "/x",
            500,
            "VM is locked (clone)".into(),
            BTreeMap::new(),
        );
        assert_eq!(locked.kind(), ErrorKind::Lock);
        assert!(!locked.is_transient());
        let nf = ProxmoxError::from_status(
            "GET",
            "/x",
            500,
            "Configuration file 'nodes/pve/qemu-server/9.conf' does not exist".into(),
            BTreeMap::new(),
        );
        assert_eq!(nf.kind(), ErrorKind::NotFound);
        let p = ProxmoxError::from_status(
            "POST",
            "/x",
            400,
            "Parameter verification failed.".into(),
            BTreeMap::from([(
                "vmid".into(),
                "value must have a minimum value of 100".into(),
            )]),
        );
        assert_eq!(p.kind(), ErrorKind::Parameter);
        assert!(!p.is_transient());
        assert!(
            p.to_string()
                .contains("vmid: value must have a minimum value of 100")
        );
        let s = ProxmoxError::from_status("GET", "/x", 503, "busy".into(), BTreeMap::new());
        assert!(s.is_transient());
        let exists = ProxmoxError::from_status(
            "POST",
            "/x",
            500,
            "VM 100 already exists on node 'pve'".into(),
            BTreeMap::new(),
        );
        assert!(!exists.is_transient());
    }
}

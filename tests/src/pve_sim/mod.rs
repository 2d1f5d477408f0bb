//! A wire-faithful Proxmox VE 9 simulator for tests and benchmarks.
//!
//! An HTTPS server on 127.0.0.1 with a self-signed certificate (tests pin its
//! SHA-256), speaking pveproxy's wire format: form bodies, the `{"data"}`
//! envelope, UPIDs with task status and log, the delayed bodiless 401, 403 texts
//! naming privileges, 400 with `errors`, 500 with the real lock/exists texts,
//! `lock: clone` during clones, keep-alive closing. Every parameter is validated
//! against [`schema`] (the project's own table, checked against the official
//! schema by `tests/tests/proxmox_conformance.rs`). The guest agent plays
//! firstboot by advancing `/var/lib/mms/firstboot.json`. Faults can be injected
//! per call ([`Fault`]).

pub mod harness;
pub mod http;
pub mod schema;
pub mod state;

pub use state::{Durations, Fault, FaultKind, Kind, Logged, SimConfig, State, Vm};

use http::{Handler, RawRequest, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What cloud-init's `disable_root` leaves in root's authorized keys of an appliance.
pub const CLOUD_INIT_ROOT_KEYS: &str = "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"fedora\\\" rather than the user \\\"root\\\".';echo;sleep 10;exit 142\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAhrZMeIiJ6eTj9QloR5oLJ7E2vroCxmzvv2RkVIOa4+ admin@laptop\n";

struct Inner {
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Handler for Inner {
    async fn handle(&self, req: RawRequest) -> Response {
        let (resp, reset_after) = self.lock().handle(&req);
        let status = match &resp {
            Response::Json { status, .. }
            | Response::Bare { status, .. }
            | Response::Plain { status, .. } => *status,
            Response::Unauthorized => 401,
            Response::Reset => 0,
        };
        let path = req
            .target
            .split('?')
            .next()
            .unwrap_or("")
            .trim_start_matches("/api2/json")
            .to_owned();
        self.lock().log.push(Logged {
            method: req.method.clone(),
            path: mms_builder::proxmox::form::percent_decode(&path, false).unwrap_or(path),
            status: if reset_after { 0 } else { status },
        });
        if reset_after { Response::Reset } else { resp }
    }

    fn auth_delay(&self) -> Duration {
        self.lock().cfg.auth_delay
    }

    fn idle_timeout(&self) -> Duration {
        self.lock().cfg.idle_timeout
    }
}

/// A running simulator. Dropping it stops the server thread's runtime.
pub struct PveSim {
    inner: Arc<Inner>,
    url: String,
    fingerprint: [u8; 32],
    _shutdown: std::sync::mpsc::Sender<()>,
}

impl std::fmt::Debug for PveSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveSim").field("url", &self.url).finish()
    }
}

impl PveSim {
    /// Starts a simulator on a free loopback port, on its own thread and runtime.
    pub fn start(cfg: SimConfig) -> PveSim {
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".into(),
            "localhost".into(),
            "pve".into(),
        ])
        .expect("rcgen self-signed certificate");
        let cert_der = cert.cert.der().clone();
        let fingerprint = mms_builder::proxmox::tls::cert_fingerprint(cert_der.as_ref());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key)
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("local addr").port();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(cfg)),
        });
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let server_inner = inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("simulator runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let server = tokio::spawn(http::serve(listener, acceptor, server_inner));
                // Stop when the handle is dropped.
                let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
                server.abort();
            });
        });
        PveSim {
            inner,
            url: format!("https://127.0.0.1:{port}"),
            fingerprint,
            _shutdown: tx,
        }
    }

    /// `https://127.0.0.1:PORT` (no `/api2/json`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// SHA-256 of the server certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// `AB:CD:…` form of [`PveSim::fingerprint`].
    pub fn fingerprint_hex(&self) -> String {
        mms_builder::proxmox::tls::format_fingerprint(&self.fingerprint)
    }

    /// Locks the simulated cluster for inspection or setup.
    pub fn state(&self) -> MutexGuard<'_, State> {
        let mut s = self.inner.lock();
        s.tick();
        s
    }

    /// Moves a guest to another cluster node (as `qm migrate` would): from then on it
    /// answers only requests addressed to that node.
    pub fn move_to_node(&self, vmid: u32, node: &str) {
        if let Some(vm) = self.inner.lock().vms.get_mut(&vmid) {
            vm.node = Some(node.to_owned());
        }
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.inner.lock().faults.push(fault);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    /// The request log.
    pub fn requests(&self) -> Vec<Logged> {
        self.inner.lock().log.clone()
    }

    /// Clears the request log.
    pub fn clear_requests(&self) {
        self.inner.lock().log.clear();
    }

    /// Adds a template VM (as `template: fedora-43` would find it).
    pub fn add_template(&self, vmid: u32, name: &str) {
        let config = BTreeMap::from([
            ("name".to_owned(), name.to_owned()),
            ("template".to_owned(), "1".to_owned()),
            ("memory".to_owned(), "2048".to_owned()),
            ("cores".to_owned(), "2".to_owned()),
            ("ostype".to_owned(), "l26".to_owned()),
            ("scsihw".to_owned(), "virtio-scsi-pci".to_owned()),
            (
                "scsi0".to_owned(),
                format!("local-lvm:base-{vmid}-disk-0,size=5G"),
            ),
            (
                "net0".to_owned(),
                "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0".to_owned(),
            ),
            ("boot".to_owned(), "order=scsi0".to_owned()),
            ("serial0".to_owned(), "socket".to_owned()),
            ("vga".to_owned(), "serial0".to_owned()),
            ("agent".to_owned(), "enabled=1".to_owned()),
        ]);
        self.add_vm(vmid, Kind::Qemu, config, false, false);
    }

    /// Adds a running, healthy appliance VM built earlier (an "old" VM).
    pub fn add_appliance(&self, vmid: u32, name: &str, tags: &str) {
        let config = BTreeMap::from([
            ("name".to_owned(), name.to_owned()),
            ("tags".to_owned(), tags.to_owned()),
            ("memory".to_owned(), "4096".to_owned()),
            ("cores".to_owned(), "2".to_owned()),
            (
                "scsi0".to_owned(),
                format!("local-lvm:vm-{vmid}-disk-0,size=32G"),
            ),
            (
                "net0".to_owned(),
                "virtio=BC:24:11:00:00:01,bridge=vmbr0".to_owned(),
            ),
            ("agent".to_owned(), "enabled=1".to_owned()),
            ("serial0".to_owned(), "socket".to_owned()),
            ("ide2".to_owned(), "none,media=cdrom".to_owned()),
        ]);
        self.add_vm(vmid, Kind::Qemu, config, true, true);
        self.inner.lock().vms.get_mut(&vmid).map(|vm| {
            vm.files.insert(
                "/root/.ssh/authorized_keys".into(),
                CLOUD_INIT_ROOT_KEYS.into(),
            )
        });
    }

    /// Adds an LXC container (a migration source).
    pub fn add_container(&self, vmid: u32, name: &str) {
        let config = BTreeMap::from([
            ("hostname".to_owned(), name.to_owned()),
            ("name".to_owned(), name.to_owned()),
        ]);
        self.add_vm(vmid, Kind::Lxc, config, true, false);
    }

    fn add_vm(
        &self,
        vmid: u32,
        kind: Kind,
        config: BTreeMap<String, String>,
        running: bool,
        done: bool,
    ) {
        self.inner.lock().insert_vm(Vm {
            vmid,
            kind,
            config,
            running,
            created: Instant::now() - Duration::from_secs(3600),
            started_at: running.then(|| Instant::now() - Duration::from_secs(3600)),
            files: BTreeMap::new(),
            secrets_complete_at: None,
            firstboot_fail: None,
            firstboot_done: done,
            snapshots: Vec::new(),
            node: None,
            cutover_at: None,
        });
    }
}

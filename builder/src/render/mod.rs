//! Pure rendering of the appliance bundle (issue 3): settings in, in-memory files out.
//!
//! Nothing here touches the filesystem or the network; [`crate::write`] puts a bundle on disk.
//! Entry points: [`render`] (a first build) and [`render_for`] (first build or rebuild, see
//! [`Deployment`]); both return a [`Bundle`] holding every file of DESIGN §3, the bundle hash,
//! the instance-id and the seed ISO.
//!
//! Layers: [`ini`] (systemd quoting) ← [`units`] (one type per section) and
//! [`cloud_config`] (typed NoCloud YAML) ← [`appliance`] + [`configs`] (what the VM is) →
//! [`bundle`] (hash, meta-data, [`iso`], plan.json).
//!
//! Decisions other parts rely on (also in the module docs where they are made):
//! - **Ownership** (DESIGN §4): each container's writer uid/gid (catalog `writes_as`) is mapped
//!   onto the site user with `UserNS=keep-id:uid=…,gid=…`; linuxserver images run their s6 init
//!   as container root (`User=0`, `Group=0`) with `PUID`/`PGID` = the site uid/gid; root images
//!   use podman's default rootless mapping (container root = the user). So every file a
//!   container writes, local or NFS, is owned by the user on the host.
//! - **First-boot gate**: every container unit has
//!   `ConditionPathExists=/var/lib/mms/services-enabled` (firstboot's `paths.gate_marker`); so do
//!   the two backup services (no backup of half-restored state). `/var/lib/mms` is created 0755
//!   so the user manager can evaluate it.
//! - **Ports** are published on 127.0.0.1 only; `tailscale serve` proxies to them.
//! - **NFS**: one `.mount` unit per mount (`_netdev,noatime`, `WantedBy=remote-fs.target`),
//!   written in the init stage but enabled in `runcmd`, after the packages step installed the
//!   NFS client; nested mount points are created on the parent export by the user;
//!   `user@UID.service` is ordered after `remote-fs.target` on every boot.
//! - **SSH keys** (`vm.ssh_authorized_keys`) go to the distribution's default (sudo) user; the
//!   service account has none and a locked password.
//! - **Appliance programs** are installed from the seed ISO by
//!   `/usr/local/lib/mms/install-appliance-bins` into `/usr/local/bin` after
//!   `sha256sum -c mms/SHA256SUMS`; units run `/usr/local/bin/mms-firstboot run --config
//!   /etc/mms/firstboot.yml` and `/usr/local/bin/mms-backupd --config /etc/mms/backupd.yml
//!   backup --all` / `prune` / `photos`.
//! - **Secret files** firstboot waits for in `/etc/mms/secrets/`: `tailscale_auth_key`, each
//!   catalog secret (e.g. `immich_db_password`, also the podman secret name),
//!   `migrate_ssh_key` for a migration or rebuild, and `backup_identity` for a first-build
//!   restore when backups are encrypted ([`configs::secret_files`]).
//! - **Hash** (see [`bundle`]): covers every rendered file and the appliance binaries, plus
//!   `/etc/mms/build.json` (VM shape, Proxmox placement, template, images, migrate), so any
//!   setting that changes the VM changes the hash and the instance-id. Proxmox connection
//!   details (endpoint, token id, TLS trust) do not.

pub mod appliance;
pub mod bundle;
pub mod cloud_config;
pub mod configs;
pub mod ini;
pub mod iso;
pub mod units;

pub use appliance::{RenderError, render, render_for};
pub use bundle::{ApplianceBins, Arch, Bundle, FileSpec};
pub use configs::Deployment;

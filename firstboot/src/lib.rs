//! `mms-firstboot`: the MMS appliance's one-time first-boot agent.
//!
//! Runs once per VM as a root oneshot (`mms-firstboot.service`): waits for the secrets the
//! builder delivers, enrolls in Tailscale, brings the services' state (migration from an LXC
//! host or the previous VM, a backup restore, or nothing), starts the rootless units on the
//! service user's systemd manager, health-checks them and records every step in the status
//! file (DESIGN §6).
//!
//! The builder writes this crate's [`config::Config`] to `/etc/mms/firstboot.yml` and reads
//! its [`status::Status`] back from `/var/lib/mms/firstboot.json`.
//!
//! Layout: [`config`] and [`status`] (file formats), [`steps`] (the run loop and one module
//! per phase), [`migrate`] (SSH + rsync migration; `migrate::rewrite` is pure), [`restore`],
//! the I/O edges [`exec`] (programs with timeouts), [`systemd`] (D-Bus), [`journal`]
//! (logging), [`fsutil`] (root-relative paths, atomic writes), and [`cli`].

pub mod cli;
pub mod config;
pub mod exec;
pub mod fsutil;
pub mod journal;
pub mod migrate;
pub mod restore;
pub mod status;
pub mod steps;
pub mod systemd;

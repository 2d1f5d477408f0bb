//! mms-backupd: encrypted, crash-safe backups of the MMS appliance's service data.
//!
//! Archives are `tar → zstd → age` streams that the stock tools restore
//! (`age -d -i key | zstd -d | tar -x`). The library holds all logic; `main.rs` only parses
//! the command line and prints errors.
//!
//! Layers: [`config`] (file format), [`naming`] and [`retention`] (pure), [`archive`]
//! (directory walk into tar), [`pipeline`] (tar→zstd→age writer and reader), [`store`]
//! (committed archives on disk, manifests, lock), [`unpack`] (strict extraction), [`restore`],
//! [`systemd`] (D-Bus unit control), [`dump`] (pg_dumpall through podman), [`photos`],
//! [`cli`].

pub mod archive;
pub mod backup;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dump;
pub mod naming;
pub mod ops;
pub mod photos;
pub mod pipeline;
pub mod report;
pub mod restore;
pub mod retention;
pub mod signals;
pub mod store;
pub mod systemd;
pub mod unpack;

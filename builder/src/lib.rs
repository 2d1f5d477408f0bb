//! `mms-build`: reads the site config, renders the appliance, drives Proxmox.
//!
//! Pure logic (config, validation, rendering, plans) does no I/O; the I/O sits
//! at the edges (Proxmox client, guest agent, filesystem writer).

pub mod apply;
pub mod cli;
pub mod proxmox;
pub mod render;
pub mod write;

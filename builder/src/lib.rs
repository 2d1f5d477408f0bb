//! `mms-build`: reads the site config, renders the appliance, drives Proxmox.
//!
//! Pure logic (config, validation, rendering, plans) does no I/O; the I/O sits
//! at the edges (Proxmox client, guest agent, filesystem writer).

pub mod apply;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod images;
pub mod proxmox;
pub mod remote;
pub mod render;
pub mod secrets;
pub mod write;
pub mod yaml;

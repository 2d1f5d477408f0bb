//! Cross-crate test helpers.

pub mod pve_sim;

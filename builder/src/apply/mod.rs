//! The `apply` flow: plan, blue/green rebuild, resume, rollback, destroy,
//! status and template (issue 4; DESIGN §5).
//!
//! [`plan`] is pure (observed VMs/tags/config vs desired → actions, resume
//! rules, the "up to date" test); [`flow`] does the I/O through
//! [`crate::proxmox`]; [`ops`] holds the other commands. Inputs come through the
//! narrow [`inputs::ApplyInputs`] seam (bundle hash + seed ISO, VM settings,
//! secrets), filled from the site config by the CLI.

pub mod flow;
pub mod inputs;
pub mod ops;
pub mod plan;
pub mod progress;

//! Pure rendering of the appliance bundle (issue 3): settings in, in-memory files out.
//!
//! Nothing here touches the filesystem or the network; [`crate::write`] puts a bundle on disk.

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

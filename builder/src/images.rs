//! Fedora (and Debian) cloud image definitions: `images/*.yml`, the input of
//! `mms-build template`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One cloud image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageDef {
    /// Name; equals the file name without `.yml` and is the template's default name.
    pub name: String,
    /// Distribution release, e.g. `43`.
    pub release: String,
    /// CPU architecture, `x86_64` or `aarch64`.
    pub arch: String,
    /// Download URL of the qcow2 cloud image.
    pub url: String,
    /// The distribution's signed checksum list for `url`.
    pub checksum_url: String,
    /// SHA-256 of the file at `url` (64 hex digits); `null` = not confirmed yet
    /// (then `template` refuses the image).
    pub sha256: Option<String>,
}

/// The image files compiled into this build.
pub const BUILTIN: &[(&str, &str)] = &[
    ("fedora-42.yml", include_str!("../../images/fedora-42.yml")),
    ("fedora-43.yml", include_str!("../../images/fedora-43.yml")),
];

/// Parses and checks one image file.
pub fn parse(path: &Path, text: &str) -> Result<ImageDef, String> {
    let def: ImageDef =
        serde_saphyr::from_str(text).map_err(|e| crate::yaml::format_serde_error(path, &e))?;
    let at = path.display();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != def.name {
        return Err(format!(
            "{at}: name: {:?} must equal the file name {stem:?}",
            def.name
        ));
    }
    if !def.url.starts_with("https://") {
        return Err(format!("{at}: url: {:?} must be an https:// URL", def.url));
    }
    if let Some(h) = &def.sha256
        && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(format!("{at}: sha256: expected 64 hex digits or null"));
    }
    if !["x86_64", "aarch64"].contains(&def.arch.as_str()) {
        return Err(format!(
            "{at}: arch: {:?} must be x86_64 or aarch64",
            def.arch
        ));
    }
    Ok(def)
}

/// All built-in images.
pub fn builtin() -> Result<Vec<ImageDef>, String> {
    BUILTIN
        .iter()
        .map(|(name, text)| parse(Path::new(&format!("images/{name}")), text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_images_parse() {
        let imgs = builtin().unwrap();
        assert_eq!(imgs.len(), 2);
        assert!(imgs.iter().all(|i| i.url.ends_with(".qcow2")));
    }

    #[test]
    fn bad_checksum_is_named() {
        let text = BUILTIN[1].1.replace("sha256: null", "sha256: abc");
        let e = parse(Path::new("images/fedora-43.yml"), &text).unwrap_err();
        assert!(e.contains("sha256"), "{e}");
    }
}

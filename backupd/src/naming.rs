//! Archive file names: `<service>-<yyyy-mm-ddTHHMMSSZ>.tar.zst[.age]` and their manifests.
//!
//! Pure functions only. The timestamp is the backup's UTC start second and is the single
//! source of truth for retention buckets; nothing here looks at the local time zone.

use chrono::{DateTime, NaiveDateTime, Utc};

/// Suffix of encrypted archives.
pub const ENCRYPTED_SUFFIX: &str = ".tar.zst.age";
/// Suffix of unencrypted archives (written when no recipients are configured).
pub const PLAIN_SUFFIX: &str = ".tar.zst";
/// Suffix appended to an archive's file name to name its manifest.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Marker inside temporary file names (`.<archive>.tmp-<random>`).
pub const TMP_MARKER: &str = ".tmp-";

const STAMP_FORMAT: &str = "%Y-%m-%dT%H%M%SZ";
const STAMP_LEN: usize = "2025-05-15T083844Z".len();

/// Whether `name` may be used as a service name (and thus a directory and file prefix).
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Formats the timestamp part of an archive name, e.g. `2025-05-15T083844Z`.
pub fn format_stamp(t: DateTime<Utc>) -> String {
    t.format(STAMP_FORMAT).to_string()
}

/// Parses the timestamp part of an archive name (fixed width, UTC).
pub fn parse_stamp(s: &str) -> Option<DateTime<Utc>> {
    if s.len() != STAMP_LEN || !s.ends_with('Z') {
        return None;
    }
    NaiveDateTime::parse_from_str(s, STAMP_FORMAT)
        .ok()
        .map(|n| n.and_utc())
}

/// The archive file name for a service and start time.
pub fn archive_name(service: &str, t: DateTime<Utc>, encrypted: bool) -> String {
    let suffix = if encrypted {
        ENCRYPTED_SUFFIX
    } else {
        PLAIN_SUFFIX
    };
    format!("{service}-{}{suffix}", format_stamp(t))
}

/// A parsed archive file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ArchiveName {
    /// Service prefix.
    pub service: String,
    /// UTC start second.
    pub time: DateTime<Utc>,
    /// `.age` suffix present.
    pub encrypted: bool,
}

/// Parses `<service>-<stamp>.tar.zst[.age]`, splitting at the last `-` before the stamp.
pub fn parse_archive_name(name: &str) -> Option<ArchiveName> {
    let (stem, encrypted) = if let Some(s) = name.strip_suffix(ENCRYPTED_SUFFIX) {
        (s, true)
    } else {
        (name.strip_suffix(PLAIN_SUFFIX)?, false)
    };
    if stem.len() < STAMP_LEN + 2 || !stem.is_char_boundary(stem.len() - STAMP_LEN) {
        return None;
    }
    let (head, stamp) = stem.split_at(stem.len() - STAMP_LEN);
    let service = head.strip_suffix('-')?;
    if !valid_service_name(service) {
        return None;
    }
    Some(ArchiveName {
        service: service.to_string(),
        time: parse_stamp(stamp)?,
        encrypted,
    })
}

/// The manifest file name of an archive file name.
pub fn manifest_name(archive: &str) -> String {
    format!("{archive}{MANIFEST_SUFFIX}")
}

/// Parses an RFC 3339 UTC timestamp as given to `--at` (`2025-05-15T08:38:44Z`).
/// Offsets other than `Z`/`+00:00` are refused so nothing depends on a time zone;
/// fractional seconds are truncated to the second.
pub fn parse_at(s: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(s).map_err(|e| {
        format!("--at {s:?}: expected an RFC 3339 UTC timestamp like 2025-05-15T08:38:44Z ({e})")
    })?;
    if t.offset().local_minus_utc() != 0 {
        return Err(format!(
            "--at {s:?}: expected UTC (suffix Z), got offset {}",
            t.offset()
        ));
    }
    let utc = t.with_timezone(&Utc);
    Ok(DateTime::from_timestamp(utc.timestamp(), 0).unwrap_or(utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let t = parse_at("2025-05-15T08:38:44Z").unwrap();
        assert_eq!(
            archive_name("radarr", t, true),
            "radarr-2025-05-15T083844Z.tar.zst.age"
        );
        let p = parse_archive_name("immich-server-2025-05-15T083844Z.tar.zst").unwrap();
        assert_eq!(p.service, "immich-server");
        assert!(!p.encrypted);
        assert!(
            parse_archive_name("radarr-2025-05-15T083844Z.tar.zst.age.manifest.json").is_none()
        );
        assert!(parse_archive_name(".radarr-2025-05-15T083844Z.tar.zst.age.tmp-abc").is_none());
        assert!(parse_archive_name("radarr-2025-13-15T083844Z.tar.zst.age").is_none());
        assert!(parse_at("2025-05-15T08:38:44+02:00").is_err());
        assert!(parse_at("yesterday").is_err());
        assert_eq!(parse_at("2025-05-15T08:38:44.9Z").unwrap(), t);
    }

    proptest! {
        #[test]
        fn name_round_trip(svc in "[a-z0-9][a-z0-9_-]{0,20}", secs in 0i64..4_102_444_800, enc: bool) {
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            let n = archive_name(&svc, t, enc);
            let p = parse_archive_name(&n).unwrap();
            prop_assert_eq!(p, ArchiveName { service: svc, time: t, encrypted: enc });
        }
    }
}

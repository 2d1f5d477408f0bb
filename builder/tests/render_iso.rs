//! The ISO writer against the real readers: random file sets (names Joliet allows, sizes
//! around sector boundaries, nested directories) come back byte-equal from `isoinfo -J -x`
//! and are listed by xorriso under their exact names.

#![allow(clippy::unwrap_used)]

mod render_common;

use proptest::prelude::*;
use render_common::{check_iso, run};

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}"
}

fn contents() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 1..64),
        (2040usize..2060).prop_map(|n| vec![0xa5; n]),
        (4090usize..4100).prop_map(|n| (0..n).map(|i| i as u8).collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn random_trees_read_back(
        files in proptest::collection::btree_map(
            (proptest::option::of(name()), name()),
            contents(),
            1..12,
        )
    ) {
        // A name cannot be both a directory and a file in the same parent.
        let dirs: std::collections::BTreeSet<String> =
            files.keys().filter_map(|(d, _)| d.clone()).collect();
        let list: Vec<(String, Vec<u8>)> = files
            .into_iter()
            .filter(|((d, f), _)| d.is_some() || !dirs.contains(f))
            .map(|((d, f), c)| (d.map_or(f.clone(), |d| format!("{d}/{f}")), c))
            .collect();
        let img = mms_builder::render::iso::build("cidata", &list).unwrap();
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.iso");
        std::fs::write(&p, &img).unwrap();
        check_iso(&p, &list).map_err(TestCaseError::fail)?;
        let o = run(std::process::Command::new("isoinfo").args(["-i"]).arg(&p).arg("-d"));
        prop_assert!(o.status.success());
    }
}

/// Directories whose records span several sectors (records never cross a sector boundary).
#[test]
fn large_directories_span_sectors() {
    let mut list: Vec<(String, Vec<u8>)> = (0..150)
        .map(|i| {
            (
                format!("file-with-a-long-name-{i:03}.txt"),
                vec![i as u8; i],
            )
        })
        .collect();
    list.extend((0..60).map(|i| (format!("sub/nested-{i:02}"), vec![b'x'; 3000 + i])));
    let img = mms_builder::render::iso::build("cidata", &list).unwrap();
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("big.iso");
    std::fs::write(&p, &img).unwrap();
    check_iso(&p, &list).unwrap();
}

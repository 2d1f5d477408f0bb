//! A small, reproducible ISO 9660 + Joliet writer for the NoCloud seed ISO.
//!
//! Owns the on-disk format only (ECMA-119 with the Joliet supplementary volume descriptor,
//! UCS-2 level 3); not which files go in (see [`super::Bundle`]). Output is a pure function of
//! the input: fixed timestamps, names sorted, no padding garbage. Why not a crate: none of the
//! maintained ISO crates writes Joliet reproducibly without pulling a large dependency tree,
//! and the subset needed here (a few small files, one directory level) is ~300 lines.
//!
//! Primary-volume names are ISO level 1 (`USER_DAT.;1`); Joliet carries the real names
//! (`user-data`), which Linux's isofs (and so cloud-init) and `isoinfo -J`/xorriso use.

use std::collections::BTreeMap;

const SECTOR: usize = 2048;
/// Fixed recording time: 2000-01-01 00:00:00 UTC (no build-time timestamps).
const DATE7: [u8; 7] = [100, 1, 1, 0, 0, 0, 0];
const DATE17: &[u8; 16] = b"2000010100000000";

/// Why an ISO could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    /// A path is empty, absolute, or has an empty or unsupported component.
    #[error(
        "seed ISO: invalid path {0:?} (expected relative names of 1-64 characters without * / : ; ? \\)"
    )]
    BadPath(String),
    /// Two entries clash (a file where a directory is needed, or a duplicate).
    #[error("seed ISO: {0:?} is given twice or is both a file and a directory")]
    Conflict(String),
    /// A file is larger than ISO 9660 allows in one extent.
    #[error("seed ISO: {0:?} is larger than 4 GiB")]
    TooLarge(String),
    /// The volume label is not 1-16 ASCII letters, digits or `_`.
    #[error("seed ISO: invalid volume label {0:?}")]
    BadLabel(String),
}

#[derive(Debug, Default)]
struct Dir {
    dirs: BTreeMap<String, Dir>,
    files: BTreeMap<String, usize>, // name -> index into file list
}

struct DirInfo {
    parent: usize, // 1-based directory number, path-table style
    name: String,
}

/// Builds an ISO image with volume label `label` holding `files` (`"dir/name"` → bytes).
pub fn build(label: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, IsoError> {
    if label.is_empty()
        || label.len() > 16
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(IsoError::BadLabel(label.to_string()));
    }
    // 1. The tree.
    let mut root = Dir::default();
    for (i, (path, data)) in files.iter().enumerate() {
        if data.len() > u32::MAX as usize {
            return Err(IsoError::TooLarge(path.clone()));
        }
        let parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| !valid_name(p)) {
            return Err(IsoError::BadPath(path.clone()));
        }
        let (file, dirs) = parts
            .split_last()
            .ok_or_else(|| IsoError::BadPath(path.clone()))?;
        let mut d = &mut root;
        for part in dirs {
            if d.files.contains_key(*part) {
                return Err(IsoError::Conflict(path.clone()));
            }
            d = d.dirs.entry((*part).to_string()).or_default();
        }
        if d.dirs.contains_key(*file) || d.files.insert((*file).to_string(), i).is_some() {
            return Err(IsoError::Conflict(path.clone()));
        }
    }

    // 2. Directories in path-table order (breadth first, children sorted by name).
    let mut dirs: Vec<DirInfo> = vec![DirInfo {
        parent: 1,
        name: String::new(),
    }];
    let mut i = 0;
    while i < dirs.len() {
        let names: Vec<String> = dir_at(&root, &dirs, i).dirs.keys().cloned().collect();
        dirs.extend(names.into_iter().map(|name| DirInfo {
            parent: i + 1,
            name,
        }));
        i += 1;
    }

    // Primary (level 1) names per directory, made unique.
    let primary_names: Vec<(BTreeMap<String, String>, BTreeMap<String, String>)> = (0..dirs.len())
        .map(|i| {
            let node = dir_at(&root, &dirs, i);
            let mut used = std::collections::BTreeSet::new();
            let dn = node
                .dirs
                .keys()
                .map(|n| (n.clone(), unique(&mut used, level1_dir(n), true)))
                .collect();
            let fnm = node
                .files
                .keys()
                .map(|n| (n.clone(), unique(&mut used, level1_file(n), false)))
                .collect();
            (dn, fnm)
        })
        .collect();

    // 3. Sizes: directory extents for both trees.
    let rec_len = |id_len: usize| 33 + id_len + (1 - id_len % 2);
    let dir_size = |i: usize, joliet: bool| -> usize {
        let node = dir_at(&root, &dirs, i);
        let mut lens = vec![34, 34];
        if joliet {
            lens.extend(node.dirs.keys().map(|n| rec_len(ucs2(n).len())));
            lens.extend(node.files.keys().map(|n| rec_len(ucs2(n).len())));
        } else {
            let (dn, fnm) = &primary_names[i];
            lens.extend(dn.values().map(|n| rec_len(n.len())));
            lens.extend(fnm.values().map(|n| rec_len(n.len())));
        }
        sectors_for_records(&lens) * SECTOR
    };
    let path_table = |joliet: bool| -> usize {
        dirs.iter()
            .map(|d| {
                let l = if d.name.is_empty() {
                    1
                } else if joliet {
                    ucs2(&d.name).len()
                } else {
                    level1_dir(&d.name).len()
                };
                8 + l + l % 2
            })
            .sum()
    };
    let pt_size = [path_table(false), path_table(true)];
    let pt_sectors = [pt_size[0].div_ceil(SECTOR), pt_size[1].div_ceil(SECTOR)];

    // 4. Allocation.
    let mut next = 19; // 16 PVD, 17 SVD, 18 terminator
    let mut pt_loc = [[0usize; 2]; 2]; // [tree][L, M]
    for (locs, sectors) in pt_loc.iter_mut().zip(pt_sectors) {
        for loc in locs.iter_mut() {
            *loc = next;
            next += sectors;
        }
    }
    let mut dir_loc = [vec![0usize; dirs.len()], vec![0usize; dirs.len()]];
    let mut dir_len = [vec![0usize; dirs.len()], vec![0usize; dirs.len()]];
    for (t, joliet) in [(0, false), (1, true)] {
        for i in 0..dirs.len() {
            dir_loc[t][i] = next;
            dir_len[t][i] = dir_size(i, joliet);
            next += dir_len[t][i] / SECTOR;
        }
    }
    let mut file_loc = vec![0usize; files.len()];
    for (i, (_, data)) in files.iter().enumerate() {
        file_loc[i] = next;
        next += data.len().div_ceil(SECTOR);
    }
    let total = next;

    // 5. Write.
    let mut img = vec![0u8; total * SECTOR];
    for (t, joliet) in [(0usize, false), (1usize, true)] {
        // Directory extents.
        for i in 0..dirs.len() {
            let node = dir_at(&root, &dirs, i);
            let parent = dirs[i].parent - 1;
            let mut recs: Vec<Vec<u8>> = vec![
                record(&[0], dir_loc[t][i], dir_len[t][i], true),
                record(&[1], dir_loc[t][parent], dir_len[t][parent], true),
            ];
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let children: BTreeMap<&str, usize> = dirs
                .iter()
                .enumerate()
                .filter(|(j, d)| *j != 0 && d.parent == i + 1)
                .map(|(j, d)| (d.name.as_str(), j))
                .collect();
            for (name, &j) in &children {
                let id = if joliet {
                    ucs2(name)
                } else {
                    primary_names[i].0[*name].as_bytes().to_vec()
                };
                entries.push((
                    sort_key(&id, joliet),
                    record(&id, dir_loc[t][j], dir_len[t][j], true),
                ));
            }
            for (name, &fi) in &node.files {
                let id = if joliet {
                    ucs2(name)
                } else {
                    primary_names[i].1[name].as_bytes().to_vec()
                };
                entries.push((
                    sort_key(&id, joliet),
                    record(&id, file_loc[fi], files[fi].1.len(), false),
                ));
            }
            entries.sort();
            recs.extend(entries.into_iter().map(|(_, r)| r));
            let mut off = dir_loc[t][i] * SECTOR;
            let end = off + dir_len[t][i];
            for r in recs {
                if off % SECTOR + r.len() > SECTOR {
                    off = off.div_ceil(SECTOR) * SECTOR;
                }
                debug_assert!(off + r.len() <= end);
                img[off..off + r.len()].copy_from_slice(&r);
                off += r.len();
            }
        }
        // Path tables (L = little endian, M = big endian).
        for (e, big) in [(0usize, false), (1usize, true)] {
            let mut off = pt_loc[t][e] * SECTOR;
            for (i, d) in dirs.iter().enumerate() {
                let id: Vec<u8> = if d.name.is_empty() {
                    vec![0]
                } else if joliet {
                    ucs2(&d.name)
                } else {
                    let parent_names = &primary_names[d.parent - 1].0;
                    parent_names[&d.name].as_bytes().to_vec()
                };
                img[off] = id.len() as u8;
                let loc = dir_loc[t][i] as u32;
                let par = d.parent as u16;
                if big {
                    img[off + 2..off + 6].copy_from_slice(&loc.to_be_bytes());
                    img[off + 6..off + 8].copy_from_slice(&par.to_be_bytes());
                } else {
                    img[off + 2..off + 6].copy_from_slice(&loc.to_le_bytes());
                    img[off + 6..off + 8].copy_from_slice(&par.to_le_bytes());
                }
                img[off + 8..off + 8 + id.len()].copy_from_slice(&id);
                off += 8 + id.len() + id.len() % 2;
            }
        }
        // Volume descriptor.
        let vd = descriptor(
            joliet,
            label,
            total,
            pt_size[t],
            pt_loc[t],
            record(&[0], dir_loc[t][0], dir_len[t][0], true),
        );
        let at = (16 + t) * SECTOR;
        img[at..at + SECTOR].copy_from_slice(&vd);
    }
    // Terminator.
    let at = 18 * SECTOR;
    img[at] = 255;
    img[at + 1..at + 6].copy_from_slice(b"CD001");
    img[at + 6] = 1;
    // File data.
    for (i, (_, data)) in files.iter().enumerate() {
        let off = file_loc[i] * SECTOR;
        img[off..off + data.len()].copy_from_slice(data);
    }
    Ok(img)
}

fn dir_at<'a>(root: &'a Dir, dirs: &[DirInfo], i: usize) -> &'a Dir {
    // Walk from the root by names: keeps everything in safe Rust.
    let mut chain = Vec::new();
    let mut j = i;
    while j != 0 {
        chain.push(dirs[j].name.as_str());
        j = dirs[j].parent - 1;
    }
    let mut d = root;
    for name in chain.iter().rev() {
        d = &d.dirs[*name];
    }
    d
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n != "."
        && n != ".."
        && n.chars().count() <= 64
        && n.chars()
            .all(|c| (c as u32) >= 0x20 && (c as u32) < 0x10000 && !"*/:;?\\".contains(c))
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

fn d_chars(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(max)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

fn level1_dir(n: &str) -> String {
    d_chars(n, 8)
}

fn level1_file(n: &str) -> String {
    let (base, ext) = match n.rsplit_once('.') {
        Some((b, e)) if !b.is_empty() => (b, e),
        _ => (n, ""),
    };
    let ext = if ext.is_empty() {
        String::new()
    } else {
        d_chars(ext, 3)
    };
    format!("{}.{};1", d_chars(base, 8), ext)
}

/// Makes `name` unique within a directory by replacing its tail with a counter.
fn unique(used: &mut std::collections::BTreeSet<String>, name: String, dir: bool) -> String {
    let mut candidate = name.clone();
    let mut n = 1u32;
    while used.contains(&candidate) {
        let tag = n.to_string();
        candidate = if dir {
            let keep = 8usize.saturating_sub(tag.len()).min(name.len());
            format!("{}{tag}", &name[..keep])
        } else {
            let (base, rest) = name.split_once('.').unwrap_or((&name, ";1"));
            let keep = 8usize.saturating_sub(tag.len()).min(base.len());
            format!("{}{tag}.{rest}", &base[..keep])
        };
        n += 1;
    }
    used.insert(candidate.clone());
    candidate
}

/// ECMA-119 9.3 ordering: name and extension compared as if padded with spaces.
fn sort_key(id: &[u8], joliet: bool) -> Vec<u8> {
    if joliet {
        return id.to_vec();
    }
    let s = String::from_utf8_lossy(id);
    let (name, rest) = s.split_once('.').unwrap_or((&s, ""));
    let ext = rest.split(';').next().unwrap_or("");
    let mut key = format!("{name:<8}").into_bytes();
    key.extend(format!("{ext:<3}").bytes());
    key
}

fn both32(v: usize) -> [u8; 8] {
    let v = v as u32;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

fn both16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

fn record(id: &[u8], loc: usize, len: usize, dir: bool) -> Vec<u8> {
    let total = 33 + id.len() + (1 - id.len() % 2);
    let mut r = vec![0u8; total];
    r[0] = total as u8;
    r[2..10].copy_from_slice(&both32(loc));
    r[10..18].copy_from_slice(&both32(len));
    r[18..25].copy_from_slice(&DATE7);
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = id.len() as u8;
    r[33..33 + id.len()].copy_from_slice(id);
    r
}

fn sectors_for_records(lens: &[usize]) -> usize {
    let mut off = 0usize;
    for &l in lens {
        if off % SECTOR + l > SECTOR {
            off = off.div_ceil(SECTOR) * SECTOR;
        }
        off += l;
    }
    off.div_ceil(SECTOR).max(1)
}

fn text_field(buf: &mut [u8], s: &str, joliet: bool) {
    if joliet {
        for pair in buf.chunks_mut(2) {
            if let [hi, lo] = pair {
                (*hi, *lo) = (0, b' ');
            }
        }
        let u = ucs2(s);
        let n = u.len().min(buf.len());
        buf[..n].copy_from_slice(&u[..n]);
    } else {
        buf.fill(b' ');
        let n = s.len().min(buf.len());
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    }
}

fn descriptor(
    joliet: bool,
    label: &str,
    total: usize,
    pt_size: usize,
    pt_loc: [usize; 2],
    root: Vec<u8>,
) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR];
    d[0] = if joliet { 2 } else { 1 };
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    text_field(&mut d[8..40], "LINUX", joliet);
    text_field(&mut d[40..72], label, joliet);
    d[80..88].copy_from_slice(&both32(total));
    if joliet {
        d[88..91].copy_from_slice(b"%/E"); // UCS-2 level 3
    }
    d[120..124].copy_from_slice(&both16(1));
    d[124..128].copy_from_slice(&both16(1));
    d[128..132].copy_from_slice(&both16(SECTOR as u16));
    d[132..140].copy_from_slice(&both32(pt_size));
    d[140..144].copy_from_slice(&(pt_loc[0] as u32).to_le_bytes());
    d[148..152].copy_from_slice(&(pt_loc[1] as u32).to_be_bytes());
    d[156..190].copy_from_slice(&root);
    for (a, b) in [(190, 318), (318, 446), (446, 574)] {
        text_field(&mut d[a..b], "", joliet);
    }
    text_field(&mut d[574..702], "MMS-BUILD", joliet);
    for (a, b) in [(702, 739), (739, 776), (776, 813)] {
        text_field(&mut d[a..b], "", joliet);
    }
    for at in [813, 830] {
        d[at..at + 16].copy_from_slice(DATE17);
    }
    for at in [847, 864] {
        d[at..at + 16].copy_from_slice(b"0000000000000000");
    }
    d[881] = 1;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Vec<u8>)> {
        vec![
            ("user-data".into(), b"#cloud-config\n".to_vec()),
            ("meta-data".into(), b"instance-id: x\n".to_vec()),
            ("mms/SHA256SUMS".into(), vec![b'a'; 5000]),
            ("mms/mms-firstboot".into(), vec![]),
        ]
    }

    #[test]
    fn header_fields() {
        let img = build("cidata", &sample()).unwrap();
        assert_eq!(img.len() % SECTOR, 0);
        assert_eq!(&img[16 * SECTOR + 1..16 * SECTOR + 6], b"CD001");
        assert_eq!(&img[16 * SECTOR + 40..16 * SECTOR + 46], b"cidata");
        assert_eq!(img[17 * SECTOR], 2);
        assert_eq!(&img[17 * SECTOR + 88..17 * SECTOR + 91], b"%/E");
        assert_eq!(img[18 * SECTOR], 255);
        let total = u32::from_le_bytes(img[16 * SECTOR + 80..16 * SECTOR + 84].try_into().unwrap());
        assert_eq!(total as usize * SECTOR, img.len());
    }

    #[test]
    fn reproducible_and_input_sensitive() {
        let a = build("cidata", &sample()).unwrap();
        assert_eq!(a, build("cidata", &sample()).unwrap());
        let mut s = sample();
        s[0].1.push(b'x');
        assert_ne!(a, build("cidata", &s).unwrap());
    }

    #[test]
    fn level1_names() {
        assert_eq!(level1_file("user-data"), "USER_DAT.;1");
        assert_eq!(level1_file("a.tar.gz"), "A_TAR.GZ;1");
        assert_eq!(level1_dir("mms"), "MMS");
        let mut used = Default::default();
        assert_eq!(unique(&mut used, "AB.;1".into(), false), "AB.;1");
        assert_eq!(unique(&mut used, "AB.;1".into(), false), "AB1.;1");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            build("cidata", &[("/abs".into(), vec![])]),
            Err(IsoError::BadPath(_))
        ));
        assert!(matches!(
            build("cidata", &[("a".into(), vec![]), ("a/b".into(), vec![])]),
            Err(IsoError::Conflict(_))
        ));
        assert!(matches!(build("ci data", &[]), Err(IsoError::BadLabel(_))));
    }
}

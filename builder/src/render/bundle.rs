//! The rendered bundle: every output file in memory, its hash, the instance-id, the seed ISO.
//!
//! Owns the bundle layout of DESIGN §3 (`user-data`, `meta-data`, `network-config`,
//! `seed.iso`, `rootfs/…`, `plan.json`) and how the bundle hash is defined; not what the
//! user-data does (that is [`super::appliance`]).
//!
//! Hash: SHA-256 over a canonical list of `(path, sha256, mode)` of every input-derived file
//! (user-data, network-config, the rootfs files and the appliance binaries with their
//! SHA256SUMS). `meta-data` (which holds the instance-id derived from the hash), the ISO
//! (which holds meta-data) and `plan.json` are computed from it afterwards.

use super::iso;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Unix permission bits.
    pub mode: u32,
    /// Contents.
    pub contents: Vec<u8>,
}

/// The whole bundle, keyed by path relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Every file of the bundle, including `seed.iso` and `plan.json`.
    pub files: BTreeMap<String, FileSpec>,
    /// Hex SHA-256 of the bundle (see the module docs).
    pub hash: String,
    /// `mms-` + the first 16 hex digits of [`Bundle::hash`].
    pub instance_id: String,
}

impl Bundle {
    /// The seed ISO bytes.
    pub fn iso(&self) -> &[u8] {
        self.files
            .get(SEED_ISO)
            .map(|f| f.contents.as_slice())
            .unwrap_or_default()
    }
}

/// Name of the ISO in the bundle directory.
pub const SEED_ISO: &str = "seed.iso";
/// Name of the plan in the bundle directory.
pub const PLAN: &str = "plan.json";

/// The two appliance programs shipped on the seed ISO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplianceBins {
    /// The binaries (already checked for the VM's architecture).
    Included {
        /// `mms-firstboot`.
        firstboot: Vec<u8>,
        /// `mms-backupd`.
        backupd: Vec<u8>,
    },
    /// A preview bundle without them (`--no-appliance-bin`); the VM cannot finish first boot.
    Omitted,
}

/// CPU architecture of the VM, as recorded in an ELF header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64 (`e_machine` 62).
    X86_64,
    /// AArch64 (`e_machine` 183).
    Aarch64,
}

impl Arch {
    fn machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Why a file is not a usable appliance binary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Not an ELF file at all.
    #[error("not an ELF executable (no \\x7fELF header)")]
    NotElf,
    /// 32-bit or big-endian.
    #[error("not a 64-bit little-endian ELF file")]
    WrongClass,
    /// Built for another CPU.
    #[error("built for {found} but the VM is {expected}")]
    WrongArch {
        /// What the header says.
        found: String,
        /// What the VM runs.
        expected: &'static str,
    },
}

/// Checks the ELF header of `bytes` against `arch`.
pub fn check_elf(bytes: &[u8], arch: Arch) -> Result<(), ElfError> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(ElfError::WrongClass);
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != arch.machine() {
        let found = match machine {
            3 => "i386".to_string(),
            40 => "arm".to_string(),
            62 => "x86_64".to_string(),
            183 => "aarch64".to_string(),
            243 => "riscv".to_string(),
            m => format!("ELF machine {m}"),
        };
        return Err(ElfError::WrongArch {
            found,
            expected: arch.name(),
        });
    }
    Ok(())
}

/// The input-derived part of a bundle, before hashing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    /// `#cloud-config` user-data.
    pub user_data: String,
    /// `network-config` (static addressing only).
    pub network_config: Option<String>,
    /// Hostname for meta-data.
    pub hostname: String,
    /// Files the user-data writes, by absolute path in the VM (for `rootfs/`).
    pub rootfs: BTreeMap<String, FileSpec>,
}

/// Errors assembling a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The ISO writer refused the file set.
    #[error(transparent)]
    Iso(#[from] iso::IsoError),
    /// YAML serialization failed.
    #[error("serializing {what}: {message}")]
    Yaml {
        /// Which document.
        what: &'static str,
        /// The serializer's message.
        message: String,
    },
}

#[derive(Serialize)]
struct Plan<'a> {
    bundle_sha256: &'a str,
    instance_id: &'a str,
    files: Vec<PlanFile<'a>>,
}

#[derive(Serialize)]
struct PlanFile<'a> {
    path: &'a str,
    sha256: String,
    mode: String,
    size: usize,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hashes the parts, derives meta-data, builds the ISO and the plan.
pub fn assemble(parts: Parts, bins: &ApplianceBins) -> Result<Bundle, BundleError> {
    let mut files: BTreeMap<String, FileSpec> = BTreeMap::new();
    let text = |s: &str| FileSpec {
        mode: 0o644,
        contents: s.as_bytes().to_vec(),
    };
    files.insert("user-data".into(), text(&parts.user_data));
    if let Some(nc) = &parts.network_config {
        files.insert("network-config".into(), text(nc));
    }
    for (path, spec) in &parts.rootfs {
        files.insert(format!("rootfs{path}"), spec.clone());
    }

    // Appliance binaries for the ISO, with their checksums.
    let mut iso_mms: Vec<(String, Vec<u8>)> = Vec::new();
    let mut sums = String::new();
    if let ApplianceBins::Included { firstboot, backupd } = bins {
        for (name, data) in [("mms-backupd", backupd), ("mms-firstboot", firstboot)] {
            sums.push_str(&format!("{}  {name}\n", sha256_hex(data)));
            iso_mms.push((format!("mms/{name}"), data.clone()));
        }
    }
    iso_mms.push(("mms/SHA256SUMS".into(), sums.clone().into_bytes()));

    // Bundle hash over everything input-derived (binaries included via SHA256SUMS).
    let mut h = Sha256::new();
    for (path, spec) in &files {
        h.update(format!(
            "{path}\0{:o}\0{}\n",
            spec.mode,
            sha256_hex(&spec.contents)
        ));
    }
    h.update(format!("mms/SHA256SUMS\0{}\n", sha256_hex(sums.as_bytes())));
    let hash = hex::encode(h.finalize());
    let instance_id = format!("mms-{}", &hash[..16]);

    let meta = super::cloud_config::MetaData {
        instance_id: instance_id.clone(),
        local_hostname: parts.hostname.clone(),
    };
    let meta_yaml = super::cloud_config::to_yaml(&meta).map_err(|e| BundleError::Yaml {
        what: "meta-data",
        message: e.to_string(),
    })?;
    files.insert("meta-data".into(), text(&meta_yaml));

    let mut iso_files = vec![
        ("user-data".to_string(), parts.user_data.into_bytes()),
        ("meta-data".to_string(), meta_yaml.into_bytes()),
    ];
    if let Some(nc) = parts.network_config {
        iso_files.push(("network-config".to_string(), nc.into_bytes()));
    }
    iso_files.extend(iso_mms);
    let iso = iso::build("cidata", &iso_files)?;
    files.insert(
        SEED_ISO.into(),
        FileSpec {
            mode: 0o644,
            contents: iso,
        },
    );

    let plan = Plan {
        bundle_sha256: &hash,
        instance_id: &instance_id,
        files: files
            .iter()
            .map(|(path, spec)| PlanFile {
                path,
                sha256: sha256_hex(&spec.contents),
                mode: format!("{:04o}", spec.mode),
                size: spec.contents.len(),
            })
            .collect(),
    };
    let mut plan_json = serde_json::to_string_pretty(&plan).map_err(|e| BundleError::Yaml {
        what: "plan.json",
        message: e.to_string(),
    })?;
    plan_json.push('\n');
    files.insert(PLAN.into(), text(&plan_json));

    Ok(Bundle {
        files,
        hash,
        instance_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(class: u8, machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = class;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    #[test]
    fn elf_checks() {
        assert_eq!(check_elf(&elf(2, 62), Arch::X86_64), Ok(()));
        assert_eq!(check_elf(&elf(2, 183), Arch::Aarch64), Ok(()));
        assert_eq!(
            check_elf(&elf(2, 183), Arch::X86_64)
                .unwrap_err()
                .to_string(),
            "built for aarch64 but the VM is x86_64"
        );
        assert_eq!(
            check_elf(&elf(1, 62), Arch::X86_64),
            Err(ElfError::WrongClass)
        );
        assert_eq!(
            check_elf(b"#!/bin/sh\n", Arch::X86_64),
            Err(ElfError::NotElf)
        );
    }

    fn parts() -> Parts {
        Parts {
            user_data: "#cloud-config\n{}\n".into(),
            network_config: None,
            hostname: "mms".into(),
            rootfs: [(
                "/etc/x".to_string(),
                FileSpec {
                    mode: 0o600,
                    contents: b"x".to_vec(),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn hash_covers_inputs_and_binaries() {
        let bins = ApplianceBins::Included {
            firstboot: elf(2, 62),
            backupd: elf(2, 62),
        };
        let a = assemble(parts(), &bins).unwrap();
        assert_eq!(a, assemble(parts(), &bins).unwrap());
        assert_eq!(a.instance_id, format!("mms-{}", &a.hash[..16]));
        assert!(a.files.contains_key("rootfs/etc/x"));
        assert!(String::from_utf8_lossy(&a.files["meta-data"].contents).contains(&a.instance_id));
        let mut p = parts();
        p.rootfs.get_mut("/etc/x").unwrap().mode = 0o644;
        assert_ne!(a.hash, assemble(p, &bins).unwrap().hash);
        let mut fb = elf(2, 62);
        fb.push(0);
        let other = ApplianceBins::Included {
            firstboot: fb,
            backupd: elf(2, 62),
        };
        assert_ne!(a.hash, assemble(parts(), &other).unwrap().hash);
        assert_ne!(
            a.hash,
            assemble(parts(), &ApplianceBins::Omitted).unwrap().hash
        );
    }
}

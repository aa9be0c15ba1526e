//! `manifest.json`: every input and output with its sha256, the partition table, the verity parameters
//! and the measurements the build predicts (README.md lists its contents).
//!
//! Paths are relative to the spec's directory and guest binaries are named by package, so the manifest
//! is byte-identical wherever the build ran.

use crate::boot::{EspImage, Initrd, Uki};
use crate::fetch::Fetched;
use crate::gpt::DiskLayout;
use crate::guest::GuestBinaries;
use crate::pcr_prediction::PcrPrediction;
use crate::spec::Spec;
use crate::verity_image::VerityImage;
use crate::{ids, uki};
use anyhow::{Context, Result};
use cvm_measure::workload::WORKLOAD_PCR;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub generator: String,
    pub image: ImageInfo,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    pub disk: DiskInfo,
    pub partitions: Vec<Partition>,
    pub verity: VeritySet,
    pub kernel: KernelInfo,
    pub initramfs: InitramfsInfo,
    pub uki: UkiInfo,
    pub measurements: Measurements,
    /// Present when the build signed the UKI and enrolled the owner's keys (`build --keys`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub secure_boot: Option<crate::secureboot::SecureBootInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageInfo {
    pub name: String,
    pub version: String,
    pub source_date_epoch: u64,
    /// The spec's `[image] security_version`; absent when the spec sets none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub security_version: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    /// "package", "file", "tree" or "binary".
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub suite: Option<String>,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Output {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskInfo {
    pub guid: String,
    pub size_bytes: u64,
    pub sector_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partition {
    pub number: u32,
    pub name: String,
    pub type_guid: String,
    pub uuid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub size_bytes: u64,
    pub attributes: u64,
    /// sha256 of the content written (the image, not the zero padding after it).
    pub content_sha256: String,
    pub content_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VeritySet {
    pub root: VerityEntry,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workload: Option<VerityEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerityEntry {
    pub data_partition: String,
    pub hash_partition: String,
    pub root_hash: String,
    pub salt: String,
    pub superblock_uuid: String,
    pub hash_algorithm: String,
    pub data_block_size: u64,
    pub hash_block_size: u64,
    pub data_blocks: u64,
    pub hash_blocks: u64,
    pub hash_start_block: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelInfo {
    pub package: String,
    pub release: String,
    pub cmdline: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitramfsInfo {
    pub sha256: String,
    pub size: u64,
    pub modules: Vec<String>,
    pub builtin_modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UkiInfo {
    pub sha256: String,
    pub size: u64,
    pub stub_version: String,
    pub sections: Vec<uki::SectionInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurements {
    pub pcr11: PcrPrediction,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pcr23: Option<PcrPrediction>,
}

/// Everything the manifest is assembled from.
pub struct Parts<'a> {
    pub spec: &'a Spec,
    pub inputs: &'a Fetched,
    pub guest: &'a GuestBinaries,
    pub layout: &'a DiskLayout,
    pub root: &'a VerityImage,
    pub workload: Option<&'a VerityImage>,
    pub initrd: &'a Initrd,
    pub uki: &'a Uki,
    pub esp: &'a EspImage,
    pub disk: &'a Path,
    /// (final name, temporary path) of each CSP/VMM artifact and other extra output.
    pub artifacts: &'a [(String, std::path::PathBuf)],
    /// Secure Boot certificates and PCR 7, when signing was on.
    pub secure_boot: Option<&'a crate::secureboot::SecureBootInfo>,
    /// The predicted boot of the golden file, whose PCR 11 and 23 the manifest records.
    pub predicted: &'a [cvm_measure::eventlog::ExpectedEvent],
}

impl Manifest {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }
}

/// A path as the manifest shows it: relative to the spec directory when inside it.
fn rel(spec: &Spec, p: &Path) -> String {
    p.strip_prefix(&spec.dir).unwrap_or(p).display().to_string()
}

fn file_input(spec: &Spec, kind: &str, p: &Path) -> Result<Input> {
    Ok(Input {
        kind: kind.into(),
        name: rel(spec, p),
        version: None,
        suite: None,
        sha256: hex::encode(ids::sha256_file(p)?),
    })
}

fn inputs(p: &Parts) -> Result<Vec<Input>> {
    let spec = p.spec;
    let mut v: Vec<Input> = p
        .inputs
        .packages
        .iter()
        .map(|pkg| Input {
            kind: "package".into(),
            name: pkg.name.clone(),
            version: Some(pkg.version.clone()),
            suite: Some(pkg.suite.clone()),
            sha256: pkg.sha256.clone(),
        })
        .collect();
    v.push(file_input(spec, "file", &spec.path)?);
    v.push(file_input(spec, "file", &spec.kernel_profile)?);
    v.push(file_input(spec, "file", &spec.uki.os_release)?);
    if let Some(c) = &spec.uki.cmdline {
        v.push(file_input(spec, "file", c)?);
    }
    v.push(Input {
        kind: "tree".into(),
        name: rel(spec, &spec.rootfs.overlay),
        version: None,
        suite: None,
        sha256: hex::encode(p.root.tree_digest),
    });
    if let (Some(w), Some(img)) = (&spec.workload, p.workload) {
        v.push(Input {
            kind: "tree".into(),
            name: rel(spec, &w.dir),
            version: None,
            suite: None,
            sha256: hex::encode(img.tree_digest),
        });
    }
    let mut bins = vec![
        ("cvm-init".to_string(), p.guest.init.clone()),
        ("cvm-agent".to_string(), p.guest.agent.clone()),
    ];
    for ((pkg, bin), path) in &p.guest.extra {
        bins.push((format!("{pkg}/{bin}"), path.clone()));
    }
    for (name, path) in bins {
        v.push(Input {
            kind: "binary".into(),
            name,
            version: None,
            suite: None,
            sha256: hex::encode(ids::sha256_file(&path)?),
        });
    }
    Ok(v)
}

fn verity_entry(img: &VerityImage, data: &str, hash: &str) -> VerityEntry {
    VerityEntry {
        data_partition: data.into(),
        hash_partition: hash.into(),
        root_hash: hex::encode(img.info.root_hash),
        salt: hex::encode(img.info.salt),
        superblock_uuid: uuid::Uuid::from_bytes(img.info.uuid).to_string(),
        hash_algorithm: "sha256".into(),
        data_block_size: crate::verity::BLOCK_SIZE,
        hash_block_size: crate::verity::BLOCK_SIZE,
        data_blocks: img.info.data_blocks,
        hash_blocks: img.info.hash_blocks,
        hash_start_block: 1,
    }
}

pub fn assemble(p: Parts) -> Result<Manifest> {
    let spec = p.spec;
    let partitions = p
        .layout
        .partitions
        .iter()
        .map(|part| {
            let (sha, bytes) = content_of(&p, &part.name)?;
            Ok(Partition {
                number: part.number,
                name: part.name.clone(),
                type_guid: part.type_guid.to_string(),
                uuid: part.uuid.to_string(),
                first_lba: part.first_lba,
                last_lba: part.last_lba,
                size_bytes: part.size_bytes,
                attributes: part.attributes,
                content_sha256: sha,
                content_bytes: bytes,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let disk_sha = hex::encode(ids::sha256_file(p.disk)?);
    Ok(Manifest {
        format: FORMAT,
        generator: format!("cvm-image {}", env!("CARGO_PKG_VERSION")),
        image: ImageInfo {
            name: spec.image.name.clone(),
            version: spec.image.version.clone(),
            source_date_epoch: spec.image.source_date_epoch,
            security_version: spec.image.security_version,
        },
        inputs: inputs(&p)?,
        outputs: outputs(&p, disk_sha)?,
        disk: DiskInfo {
            guid: p.layout.disk_guid.to_string(),
            size_bytes: p.layout.size_bytes,
            sector_size: crate::gpt::SECTOR,
        },
        partitions,
        verity: VeritySet {
            root: verity_entry(p.root, "root-x86-64", "root-x86-64-verity"),
            workload: p
                .workload
                .map(|w| verity_entry(w, "workload", "workload-verity")),
        },
        kernel: KernelInfo {
            package: spec.kernel.package.clone(),
            release: p.initrd.meta.kernel_version.clone(),
            cmdline: p.uki.meta.cmdline.clone(),
        },
        initramfs: InitramfsInfo {
            sha256: p.initrd.meta.sha256.clone(),
            size: p.initrd.meta.size,
            modules: p.initrd.meta.modules.clone(),
            builtin_modules: p.initrd.meta.builtin.clone(),
        },
        uki: UkiInfo {
            sha256: p.uki.meta.sha256.clone(),
            size: p.uki.meta.size,
            stub_version: p.uki.meta.stub_version.clone(),
            sections: p.uki.meta.sections.clone(),
        },
        measurements: Measurements {
            pcr11: PcrPrediction::from_events(p.predicted, 11)?,
            pcr23: match p.workload {
                Some(_) => Some(PcrPrediction::from_events(p.predicted, WORKLOAD_PCR)?),
                None => None,
            },
        },
        secure_boot: p.secure_boot.cloned(),
    })
}

fn outputs(p: &Parts, disk_sha: String) -> Result<Vec<Output>> {
    let mut v = vec![
        Output {
            path: "disk.raw".into(),
            sha256: disk_sha,
            size: p.layout.size_bytes,
        },
        Output {
            path: "uki.efi".into(),
            sha256: p.uki.meta.sha256.clone(),
            size: p.uki.meta.size,
        },
    ];
    for (name, path) in p.artifacts {
        let size = std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        v.push(Output {
            path: name.clone(),
            sha256: hex::encode(ids::sha256_file(path)?),
            size,
        });
    }
    Ok(v)
}

/// sha256 and length of what was written into a partition, from the stage metadata.
fn content_of(p: &Parts, name: &str) -> Result<(String, u64)> {
    let pair = |img: &VerityImage, hash: bool| {
        if hash {
            (img.meta.hash_sha256.clone(), img.meta.hash_bytes)
        } else {
            (img.meta.data_sha256.clone(), img.meta.data_bytes)
        }
    };
    Ok(match name {
        "esp" => (hex::encode(p.esp.sha256), p.esp.size),
        "root-x86-64" => pair(p.root, false),
        "root-x86-64-verity" => pair(p.root, true),
        "workload" => pair(
            p.workload
                .context("workload partition without workload image")?,
            false,
        ),
        "workload-verity" => pair(
            p.workload
                .context("workload partition without workload image")?,
            true,
        ),
        other => anyhow::bail!("unknown partition {other} in the layout"),
    })
}

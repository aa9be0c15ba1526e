//! Cloud and QEMU disk artifacts written from `disk.raw` by our own code (issue 7).
//!
//! | Target | Artifact | Writer | Size rule for `disk.raw` |
//! |---|---|---|---|
//! | `gcp` | `gcp-disk.tar.gz` | [`gcp::write_tar_gz`] | whole GiB |
//! | `aws` | `aws-disk.vmdk` | [`vmdk::write_stream_optimized`] | 1 MiB |
//! | `azure` | `azure-disk.vhd` | [`vhd::write_fixed`] | whole MiB |
//! | `qemu` | `disk.qcow2` | [`qcow2::write`] | 1 MiB |
//!
//! Every writer streams the raw disk (never holding it in memory), skips what is zero (see `scan`),
//! and is reproducible: timestamps come from SOURCE_DATE_EPOCH, identifiers from the caller's seed.
//! Compression (gzip, VMDK grains) runs on every core with results written in input order.

mod compress;
pub mod gcp;
mod parallel;
pub mod qcow2;
mod scan;
pub mod vhd;
pub mod vmdk;

#[cfg(test)]
pub(crate) mod testutil;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Where an image is meant to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Qemu,
    Gcp,
    Aws,
    Azure,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Qemu, Target::Gcp, Target::Aws, Target::Azure];

    /// The artifact's file name in `out/`.
    pub fn artifact_name(self) -> &'static str {
        match self {
            Target::Qemu => "disk.qcow2",
            Target::Gcp => "gcp-disk.tar.gz",
            Target::Aws => "aws-disk.vmdk",
            Target::Azure => "azure-disk.vhd",
        }
    }

    /// The multiple the raw disk size must be for this target.
    /// GCP sizes disks in whole GB and rejects images that are not whole GiB; Azure page blobs for
    /// VHDs must be whole MiB; AWS and QEMU take any size, 1 MiB keeps partitions aligned.
    pub fn size_multiple(self) -> u64 {
        match self {
            Target::Gcp => GIB,
            Target::Azure | Target::Aws | Target::Qemu => MIB,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Qemu => "qemu",
            Target::Gcp => "gcp",
            Target::Aws => "aws",
            Target::Azure => "azure",
        })
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Target::ALL
            .into_iter()
            .find(|t| t.to_string().eq_ignore_ascii_case(s))
            .with_context(|| format!("unknown target {s:?}: expected one of qemu, gcp, aws, azure"))
    }
}

/// The size multiple that satisfies every requested target (all rules are powers of two, so the
/// largest one is their least common multiple). With no target, 1 MiB.
pub fn size_multiple(targets: &[Target]) -> u64 {
    targets
        .iter()
        .map(|t| t.size_multiple())
        .max()
        .unwrap_or(MIB)
}

/// Writes the artifact of each target (duplicates ignored) into `out_dir` under the temporary name
/// `.NAME.tmp`, and returns `(NAME, temporary path)` pairs in the order asked; the pipeline renames
/// them once all succeeded. `epoch` is SOURCE_DATE_EPOCH; `seed` derives the VMDK CID and the VHD
/// unique id (use a hash of the disk content or of the spec).
pub fn write_artifacts(
    targets: &[Target],
    raw: &Path,
    out_dir: &Path,
    epoch: u64,
    seed: &[u8; 32],
) -> Result<Vec<(String, PathBuf)>> {
    let size = std::fs::metadata(raw)
        .with_context(|| format!("reading {}", raw.display()))?
        .len();
    let multiple = size_multiple(targets);
    ensure!(
        size > 0 && size % multiple == 0,
        "{} is {size} bytes, not a multiple of {multiple} as targets {targets:?} require; \
         the disk must be sized (GPT backup header at the real end) before artifacts are written",
        raw.display()
    );
    let mut written = Vec::new();
    for (i, &target) in targets.iter().enumerate() {
        if targets[..i].contains(&target) {
            continue;
        }
        let name = target.artifact_name();
        let tmp = out_dir.join(format!(".{name}.tmp"));
        write_one(target, raw, &tmp, epoch, seed).with_context(|| {
            format!(
                "writing the {target} artifact {name} from {}",
                raw.display()
            )
        })?;
        written.push((name.to_string(), tmp));
    }
    Ok(written)
}

fn write_one(target: Target, raw: &Path, out: &Path, epoch: u64, seed: &[u8; 32]) -> Result<()> {
    match target {
        Target::Gcp => gcp::write_tar_gz(raw, out, epoch),
        Target::Aws => vmdk::write_stream_optimized_named(
            raw,
            out,
            vmdk_cid(seed),
            Target::Aws.artifact_name(),
        ),
        Target::Azure => vhd::write_fixed(raw, out, epoch, vhd_unique_id(seed)),
        Target::Qemu => qcow2::write(raw, out),
    }
}

/// Namespace for the UUIDs this module derives (v5 of the URL below; fixed forever).
fn id_namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://cvm-image/formats")
}

/// VHD `Unique Id`: UUID v5 of the seed under the module namespace, labelled by purpose.
pub fn vhd_unique_id(seed: &[u8; 32]) -> Uuid {
    let mut name = b"azure-vhd-unique-id:".to_vec();
    name.extend_from_slice(seed);
    Uuid::new_v5(&id_namespace(), &name)
}

/// VMDK `CID`: first 4 bytes of SHA-256("aws-vmdk-cid:" ‖ seed); never 0xffffffff, which means
/// "no parent" in `parentCID` and is best not to see in `CID`.
pub fn vmdk_cid(seed: &[u8; 32]) -> u32 {
    let digest = Sha256::new()
        .chain_update(b"aws-vmdk-cid:")
        .chain_update(seed)
        .finalize();
    let cid = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    if cid == u32::MAX {
        cid - 1
    } else {
        cid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testutil::{make_test_disk, run, scratch_dir};

    #[test]
    fn target_names_round_trip_and_unknown_ones_are_refused() {
        for t in Target::ALL {
            assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        }
        assert_eq!("GCP".parse::<Target>().unwrap(), Target::Gcp);
        let err = "ec2".parse::<Target>().unwrap_err();
        assert!(err.to_string().contains("expected one of"));
    }

    #[test]
    fn size_rules() {
        assert_eq!(size_multiple(&[]), MIB);
        assert_eq!(size_multiple(&[Target::Qemu]), MIB);
        assert_eq!(size_multiple(&[Target::Aws, Target::Azure]), MIB);
        assert_eq!(size_multiple(&[Target::Azure, Target::Gcp]), GIB);
    }

    #[test]
    fn derived_ids_depend_on_the_seed_only() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(vmdk_cid(&a), vmdk_cid(&a));
        assert_ne!(vmdk_cid(&a), vmdk_cid(&b));
        assert_eq!(vhd_unique_id(&a), vhd_unique_id(&a));
        assert_ne!(vhd_unique_id(&a), vhd_unique_id(&b));
        assert_eq!(vhd_unique_id(&a).get_version_num(), 5);
    }

    #[test]
    fn all_artifacts_for_one_gib_disk_are_written_under_temporary_names() -> Result<()> {
        let dir = scratch_dir("artifacts")?;
        let raw = make_test_disk(&dir, GIB)?;
        let targets = [
            Target::Gcp,
            Target::Aws,
            Target::Azure,
            Target::Qemu,
            Target::Gcp,
        ];
        let written = write_artifacts(&targets, &raw, &dir, 1_700_000_000, &[9; 32])?;
        let names: Vec<&str> = written.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "gcp-disk.tar.gz",
                "aws-disk.vmdk",
                "azure-disk.vhd",
                "disk.qcow2"
            ]
        );
        for (name, tmp) in &written {
            assert_eq!(
                tmp.file_name().unwrap().to_str().unwrap(),
                format!(".{name}.tmp")
            );
        }
        let vmdk = &written[1].1;
        let info = run(
            "qemu-img",
            &[
                "info",
                "--output=json",
                "-f",
                "vmdk",
                vmdk.to_str().unwrap(),
            ],
        )?;
        let info: serde_json::Value = serde_json::from_str(&info)?;
        assert_eq!(info["format-specific"]["data"]["cid"], vmdk_cid(&[9; 32]));
        let descriptor = std::fs::read(vmdk)?[512..1024].to_vec();
        let descriptor = String::from_utf8_lossy(&descriptor);
        assert!(
            descriptor.contains("RW 2097152 SPARSE \"aws-disk.vmdk\""),
            "{descriptor}"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_disk_of_the_wrong_size_is_refused_for_gcp() -> Result<()> {
        let dir = scratch_dir("artifacts-size")?;
        let raw = dir.join("disk.raw");
        std::fs::File::create(&raw)?.set_len(GIB + MIB)?;
        let err = write_artifacts(&[Target::Gcp], &raw, &dir, 0, &[0; 32]).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a multiple of 1073741824"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

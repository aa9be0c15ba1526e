//! Stage: a file tree → squashfs image → dm-verity hash tree, cached by the tree's content.
//!
//! The verity salt and superblock UUID are derived from the squashfs image itself, so the root hash is
//! a pure function of the content. The partition UUIDs of the pair are the two halves of the root hash
//! (systemd-repart's convention): the workload's root hash travels in its partition table entries, and
//! the base image never needs to know it.

use crate::fstree::FsTree;
use crate::gpt::PartitionPlan;
use crate::ids;
use crate::spec::{FsCompression, Spec};
use crate::squashfs::{self, Compression};
use crate::stages::StageCache;
use crate::verity::{self, VerityInfo, VerityParams};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const DATA_FILE: &str = "data.img";
pub const HASH_FILE: &str = "hash.img";

/// A squashfs image and its verity hash area.
#[derive(Debug, Clone)]
pub struct VerityImage {
    pub data: PathBuf,
    pub hash: PathBuf,
    pub meta: VerityMeta,
    pub info: VerityInfo,
    /// Content digest of the tree the image was made from (the stage key).
    pub tree_digest: [u8; 32],
}

/// What the stage cache keeps beside the images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerityMeta {
    pub data_bytes: u64,
    pub hash_bytes: u64,
    pub data_sha256: String,
    pub hash_sha256: String,
    pub root_hash: String,
    pub salt: String,
    pub uuid: String,
    pub data_blocks: u64,
    pub hash_blocks: u64,
}

fn compression(spec: &Spec) -> Compression {
    match spec.rootfs.compression {
        FsCompression::Zstd => Compression::default(),
        FsCompression::Gzip => Compression::Gzip,
    }
}

pub fn build(stages: &StageCache, name: &str, tree: &FsTree, spec: &Spec) -> Result<VerityImage> {
    let digest = tree.digest()?;
    let epoch = spec.image.source_date_epoch;
    let comp = compression(spec);
    let comp_id = format!("{comp:?}");
    let (dir, meta) = stages.get_or_build(
        &format!("{name}-squashfs-verity"),
        &[&digest, &epoch.to_le_bytes(), comp_id.as_bytes()],
        |dir| {
            eprintln!("cvm-image: {name}: writing squashfs");
            let data = dir.join(DATA_FILE);
            let data_bytes = squashfs::write_squashfs(tree, &data, clamp_u32(epoch), comp)?;
            let data_sha = ids::sha256_file(&data)?;
            let params = VerityParams {
                salt: ids::derive("verity-salt", &[&data_sha]),
                uuid: *ids::uuid("verity-uuid", &[&data_sha]).as_bytes(),
            };
            eprintln!("cvm-image: {name}: hashing dm-verity tree");
            let hash = dir.join(HASH_FILE);
            let info = verity::format(&data, &hash, &params)?;
            Ok(VerityMeta {
                data_bytes,
                hash_bytes: std::fs::metadata(&hash)?.len(),
                data_sha256: hex::encode(data_sha),
                hash_sha256: hex::encode(ids::sha256_file(&hash)?),
                root_hash: hex::encode(info.root_hash),
                salt: hex::encode(info.salt),
                uuid: hex::encode(info.uuid),
                data_blocks: info.data_blocks,
                hash_blocks: info.hash_blocks,
            })
        },
    )?;
    let info = VerityInfo {
        root_hash: from_hex(&meta.root_hash)?,
        salt: from_hex(&meta.salt)?,
        uuid: from_hex(&meta.uuid)?,
        data_blocks: meta.data_blocks,
        hash_blocks: meta.hash_blocks,
    };
    Ok(VerityImage {
        data: dir.join(DATA_FILE),
        hash: dir.join(HASH_FILE),
        meta,
        info,
        tree_digest: digest,
    })
}

fn from_hex<const N: usize>(s: &str) -> Result<[u8; N]> {
    let v = hex::decode(s)?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("cached stage metadata is corrupt (bad hex length)"))
}

/// FAT/squashfs store 32-bit times; an epoch past 2106 cannot be represented.
fn clamp_u32(epoch: u64) -> u32 {
    u32::try_from(epoch).unwrap_or(u32::MAX)
}

impl VerityImage {
    /// The pair's partition UUIDs, the root hash's halves (`cvm_disk::verity_pair`).
    pub fn partition_uuids(&self) -> (uuid::Uuid, uuid::Uuid) {
        let (data, hash) = cvm_disk::verity_pair::partition_uuids(&self.info.root_hash)
            .expect("a SHA-256 root hash is 32 bytes");
        (uuid::Uuid::from_bytes(data), uuid::Uuid::from_bytes(hash))
    }

    /// The data and hash partitions, sized by `size_of(data bytes)`; the hash partition always fits.
    pub fn partitions(
        &self,
        _spec: &Spec,
        data: (&str, uuid::Uuid),
        hash: (&str, uuid::Uuid),
        size_of: impl Fn(u64) -> Result<u64>,
    ) -> Result<Vec<PartitionPlan>> {
        let (data_uuid, hash_uuid) = self.partition_uuids();
        let align = crate::gpt::ALIGN;
        Ok(vec![
            PartitionPlan {
                name: data.0.into(),
                type_guid: data.1,
                uuid: data_uuid,
                source: self.data.clone(),
                size: size_of(self.meta.data_bytes)?,
                attributes: crate::gpt::ATTR_READ_ONLY,
            },
            PartitionPlan {
                name: hash.0.into(),
                type_guid: hash.1,
                uuid: hash_uuid,
                source: self.hash.clone(),
                size: self.meta.hash_bytes.div_ceil(align) * align,
                attributes: crate::gpt::ATTR_READ_ONLY,
            },
        ])
    }
}

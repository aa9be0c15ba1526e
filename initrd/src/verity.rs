//! dm-verity parameters: the superblock `veritysetup format` writes (cryptsetup `struct verity_sb`)
//! and the kernel table line (`Documentation/admin-guide/device-mapper/verity.rst`).

use anyhow::{ensure, Result};
use cvm_disk::verity_superblock;

/// `hash_type` 1: the normal (non-Chrome-OS) format, salt prepended.
pub const VERITY_HASH_TYPE: u32 = verity_superblock::HASH_TYPE_NORMAL;
/// Data and hash block size used by every image this project builds.
pub const VERITY_BLOCK_SIZE: u32 = 4096;
/// 512-byte sectors per verity block.
pub const SECTORS_PER_BLOCK: u64 = VERITY_BLOCK_SIZE as u64 / 512;
/// The only hash algorithm used.
pub const VERITY_ALGORITHM: &str = "sha256";
/// Superblock length on disk (the rest of the first hash block is zero).
pub const SUPERBLOCK_LEN: usize = verity_superblock::SIZE;

/// What the init needs of a verity superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

/// Parses the superblock at the start of a hash device. Only the layout this project produces is
/// accepted (format 1, sha256, 4096-byte blocks): anything else is an image we did not build.
///
/// The superblock is not itself authenticated; that is fine because every value taken from it
/// (salt, data_blocks) feeds the hash tree whose root must equal the measured root hash — a forged
/// salt or size yields a different root and the kernel refuses every read.
pub fn parse_superblock(b: &[u8]) -> Result<Superblock> {
    let sb = verity_superblock::parse(b)?;
    ensure!(
        sb.hash_type == VERITY_HASH_TYPE,
        "verity hash_type {} (expected {VERITY_HASH_TYPE}, veritysetup --format=1)",
        sb.hash_type
    );
    ensure!(
        sb.algorithm == VERITY_ALGORITHM,
        "verity algorithm {:?} (expected {VERITY_ALGORITHM})",
        sb.algorithm
    );
    let (dbs, hbs) = (sb.data_block_size, sb.hash_block_size);
    ensure!(
        dbs == VERITY_BLOCK_SIZE && hbs == VERITY_BLOCK_SIZE,
        "verity block sizes {dbs}/{hbs} (expected {VERITY_BLOCK_SIZE}/{VERITY_BLOCK_SIZE})"
    );
    ensure!(sb.data_blocks > 0, "verity superblock has 0 data blocks");
    Ok(Superblock {
        data_blocks: sb.data_blocks,
        salt: sb.salt,
    })
}

/// Everything a verity table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    /// Data device as "major:minor".
    pub data_dev: String,
    /// Hash device as "major:minor".
    pub hash_dev: String,
    pub data_blocks: u64,
    /// First hash block (1 = superblock at block 0).
    pub hash_start_block: u64,
    pub root_hash: [u8; 32],
    pub salt: Vec<u8>,
}

impl VerityParams {
    /// Length of the mapped device in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * SECTORS_PER_BLOCK
    }

    /// The target parameters (table line without "start length verity").
    ///
    /// No optional arguments: on a hash mismatch the read fails with EIO (the corrupted data is
    /// never returned), the init's mount or exec fails, and the init powers the VM off.
    pub fn target_params(&self) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&self.salt)
        };
        format!(
            "{VERITY_HASH_TYPE} {} {} {VERITY_BLOCK_SIZE} {VERITY_BLOCK_SIZE} {} {} {VERITY_ALGORITHM} {} {salt}",
            self.data_dev,
            self.hash_dev,
            self.data_blocks,
            self.hash_start_block,
            hex::encode(self.root_hash),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `veritysetup format` (the reference tool) writes a superblock we read back exactly.
    #[test]
    fn parses_veritysetup_superblock() {
        let dir = std::env::temp_dir().join(format!("cvm-init-verity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (data, hash) = (dir.join("data"), dir.join("hash"));
        std::fs::write(&data, vec![0xA5u8; 74 * 4096]).unwrap();
        let salt = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let out = Command::new("veritysetup")
            .args(["format", "--hash=sha256", "--data-block-size=4096"])
            .args(["--hash-block-size=4096", "--format=1"])
            .arg(format!("--salt={salt}"))
            .arg("--uuid=12345678-1234-1234-1234-123456789abc")
            .arg(&data)
            .arg(&hash)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run veritysetup ({e}); apt-get install cryptsetup-bin")
            });
        assert!(out.status.success(), "veritysetup: {out:?}");
        let sb = std::fs::read(&hash).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let parsed = parse_superblock(&sb[..4096]).unwrap();
        assert_eq!(parsed.data_blocks, 74);
        assert_eq!(hex::encode(&parsed.salt), salt);

        let mut wrong = sb[..512].to_vec();
        wrong[12] = 0; // hash_type 0 (Chrome OS)
        assert!(parse_superblock(&wrong)
            .unwrap_err()
            .to_string()
            .contains("hash_type 0"));
        assert!(parse_superblock(&[0u8; 512]).is_err());
    }

    #[test]
    fn table_line_matches_kernel_doc_form() {
        let p = VerityParams {
            data_dev: "254:2".into(),
            hash_dev: "254:3".into(),
            data_blocks: 74,
            hash_start_block: 1,
            root_hash: [0xab; 32],
            salt: vec![0x01, 0x02],
        };
        assert_eq!(p.sectors(), 592);
        assert_eq!(
            p.target_params(),
            format!(
                "1 254:2 254:3 4096 4096 74 1 sha256 {} 0102",
                "ab".repeat(32)
            )
        );
        let nosalt = VerityParams { salt: vec![], ..p };
        assert!(nosalt.target_params().ends_with(" -"));
    }
}

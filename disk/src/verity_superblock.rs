//! The dm-verity superblock: cryptsetup's `struct verity_sb` (`lib/verity/verity.c`), the first 512
//! bytes of a hash device that `veritysetup format` (without `--no-superblock`) writes. Little-endian;
//! the rest of the first hash block is zero.
//!
//! The builder writes it (its verity module, from these offsets) and reads it back for `inspect`;
//! the init reads it to open the workload partition. The superblock is not authenticated: every value
//! the init takes from it (salt, data block count) feeds the hash tree whose root must equal the
//! measured root hash, so a host that rewrites it only makes every read fail.

/// Bytes of the superblock.
pub const SIZE: usize = 512;
pub const SIGNATURE: &[u8; 8] = b"verity\0\0";
/// The only on-disk format version.
pub const VERSION: u32 = 1;
/// Hash type 1 = normal (salt first, entries padded to a power of two); 0 = Chrome OS.
pub const HASH_TYPE_NORMAL: u32 = 1;
/// Largest salt the superblock holds.
pub const MAX_SALT_SIZE: usize = 256;
/// The NUL-padded hash algorithm name field.
pub const ALGORITHM_SIZE: usize = 32;

pub const OFF_SIGNATURE: usize = 0;
pub const OFF_VERSION: usize = 8;
pub const OFF_HASH_TYPE: usize = 12;
pub const OFF_UUID: usize = 16;
pub const OFF_ALGORITHM: usize = 32;
pub const OFF_DATA_BLOCK_SIZE: usize = 64;
pub const OFF_HASH_BLOCK_SIZE: usize = 68;
pub const OFF_DATA_BLOCKS: usize = 72;
pub const OFF_SALT_SIZE: usize = 80;
pub const OFF_SALT: usize = 88;

/// A superblock's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub hash_type: u32,
    /// Bytes in textual (RFC 4122) order, as veritysetup's `--uuid` gives them.
    pub uuid: [u8; 16],
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

/// Why bytes are not a verity superblock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("verity superblock needs {SIZE} bytes, got {0}")]
    Truncated(usize),
    #[error(
        "no verity superblock: signature is not \"verity\" (was the hash area formatted with \
         --no-superblock, or is this the data device?)"
    )]
    Signature,
    #[error("unsupported verity superblock version {0} (only {VERSION} exists)")]
    Version(u32),
    #[error("corrupt verity superblock: salt_size {0} exceeds {MAX_SALT_SIZE}")]
    SaltSize(usize),
    #[error("corrupt verity superblock: algorithm name is not text")]
    Algorithm,
}

/// Parses the superblock at the start of `bytes` (the first bytes of a hash device).
pub fn parse(bytes: &[u8]) -> Result<Superblock, Error> {
    let b = bytes.get(..SIZE).ok_or(Error::Truncated(bytes.len()))?;
    if &b[OFF_SIGNATURE..OFF_SIGNATURE + SIGNATURE.len()] != SIGNATURE {
        return Err(Error::Signature);
    }
    let version = le32(b, OFF_VERSION);
    if version != VERSION {
        return Err(Error::Version(version));
    }
    let salt_size = usize::from(u16::from_le_bytes([b[OFF_SALT_SIZE], b[OFF_SALT_SIZE + 1]]));
    if salt_size > MAX_SALT_SIZE {
        return Err(Error::SaltSize(salt_size));
    }
    let field = &b[OFF_ALGORITHM..OFF_ALGORITHM + ALGORITHM_SIZE];
    let len = field.iter().position(|&c| c == 0).unwrap_or(ALGORITHM_SIZE);
    let algorithm = std::str::from_utf8(&field[..len])
        .map_err(|_| Error::Algorithm)?
        .to_owned();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&b[OFF_UUID..OFF_UUID + 16]);
    let mut data_blocks = [0u8; 8];
    data_blocks.copy_from_slice(&b[OFF_DATA_BLOCKS..OFF_DATA_BLOCKS + 8]);
    Ok(Superblock {
        version,
        hash_type: le32(b, OFF_HASH_TYPE),
        uuid,
        algorithm,
        data_block_size: le32(b, OFF_DATA_BLOCK_SIZE),
        hash_block_size: le32(b, OFF_HASH_BLOCK_SIZE),
        data_blocks: u64::from_le_bytes(data_blocks),
        salt: b[OFF_SALT..OFF_SALT + salt_size].to_vec(),
    })
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_superblock() {
        assert_eq!(parse(&[0u8; 100]), Err(Error::Truncated(100)));
        assert_eq!(parse(&[0u8; 512]), Err(Error::Signature));
        let mut sb = [0u8; 512];
        sb[..8].copy_from_slice(SIGNATURE);
        sb[8] = 2;
        assert!(parse(&sb).unwrap_err().to_string().contains("version 2"));
        sb[8] = 1;
        sb[80..82].copy_from_slice(&300u16.to_le_bytes());
        assert!(parse(&sb)
            .unwrap_err()
            .to_string()
            .contains("salt_size 300"));
        sb[80..82].copy_from_slice(&0u16.to_le_bytes());
        sb[32] = 0xff;
        assert_eq!(parse(&sb), Err(Error::Algorithm));
    }

    /// A host controls the disk bytes: no superblock, however corrupt, may panic the reader.
    #[test]
    fn every_single_byte_corruption_is_an_error_or_a_value() {
        let mut sb = [0u8; 512];
        sb[..8].copy_from_slice(SIGNATURE);
        sb[8] = 1;
        sb[32..38].copy_from_slice(b"sha256");
        for at in 0..SIZE {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = sb;
                b[at] = v;
                let _ = parse(&b);
                let _ = parse(&b[..at]);
            }
        }
    }
}

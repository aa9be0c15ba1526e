//! dm-verity hash tree and superblock, byte-identical to
//! `veritysetup format --hash=sha256 --data-block-size=4096 --hash-block-size=4096 --format=1`
//! (cryptsetup 2.6.1).
//!
//! Layout of the hash area (hash offset 0, see docs/formats.md §1):
//! superblock block, then the top tree level, …, level 0 last.
//! Every tree entry is `SHA-256(salt ‖ block)` (hash type 1); 128 entries fill a hash block and the
//! unused tail of a hash block is zero. Level 0 hashes the data blocks, each higher level hashes
//! the blocks of the level below, until a level has one block; the root hash is the entry of that
//! block. With a single data block there is no tree at all (cryptsetup and the kernel both compute
//! zero levels) and the root hash is the entry of the data block itself.
//!
//! Level 0 dominates the cost (it reads all the data), so it is computed by several threads, each
//! streaming its own contiguous range of the data file; the upper levels are 1/128 of that and stay
//! single-threaded. Memory use is the tree itself (≈ 1/128 of the data), never the data.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
// `struct verity_sb`: its layout is defined once, with its reader, in cvm-disk.
use cvm_disk::verity_superblock::{self as sb, Superblock};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Data and hash block size in bytes (`data_block_size` = `hash_block_size`).
pub const BLOCK_SIZE: u64 = 4096;
/// SHA-256 digest size: one tree entry.
pub const DIGEST_SIZE: usize = 32;
/// Tree entries per hash block (4096 / 32).
pub const HASHES_PER_BLOCK: u64 = BLOCK_SIZE / DIGEST_SIZE as u64;
/// Device-mapper tables count 512-byte sectors.
pub const SECTOR_SIZE: u64 = 512;
/// Hash algorithm name as stored in the superblock and the kernel table.
pub const HASH_ALGORITHM: &str = "sha256";
/// Hash blocks before the tree: the superblock block (table field `hash_start_block`).
pub const HASH_START_BLOCK: u64 = 1;

/// Bytes read per `read_at` call in level 0. The copy out of the page cache costs about a fifth
/// of the hashing; 256 KiB chunks copy fastest here (measured 64 KiB–2 MiB: 6.9 vs 6.0–6.6 GB/s)
/// because the buffer stays in the core's L2 cache, where the hashing then finds it.
const READ_CHUNK_BYTES: usize = 256 << 10;
/// Below this many data blocks per thread (4 MiB) another thread costs more than it saves.
const MIN_BLOCKS_PER_THREAD: u64 = 1024;

/// Bytes of the verity superblock at the start of the hash area.
pub const SUPERBLOCK_SIZE: usize = sb::SIZE;

/// Inputs that make the output reproducible (veritysetup picks both at random otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    pub salt: [u8; 32],
    /// Superblock UUID, bytes in textual (RFC 4122) order.
    pub uuid: [u8; 16],
}

/// Result of [`format`]: everything needed for the kernel table, `roothash=` and the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerityInfo {
    #[serde(serialize_with = "serialize_hex")]
    pub root_hash: [u8; 32],
    #[serde(serialize_with = "serialize_hex")]
    pub salt: [u8; 32],
    #[serde(serialize_with = "serialize_uuid")]
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    /// Blocks of the hash area, including the superblock block.
    pub hash_blocks: u64,
}

impl VerityInfo {
    /// Size of the hash file / hash partition contents in bytes.
    pub fn hash_area_bytes(&self) -> u64 {
        self.hash_blocks * BLOCK_SIZE
    }

    /// Size of the data area in 512-byte sectors (length of the device-mapper target).
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * BLOCK_SIZE / SECTOR_SIZE
    }

    /// The verity target parameters after the two devices:
    /// `4096 4096 <data_blocks> 1 sha256 <root_hex> <salt_hex>`.
    pub fn table_params(&self) -> String {
        format!(
            "{BLOCK_SIZE} {BLOCK_SIZE} {} {HASH_START_BLOCK} {HASH_ALGORITHM} {} {}",
            self.data_blocks,
            hex::encode(self.root_hash),
            hex::encode(self.salt)
        )
    }

    /// The full device-mapper table line (docs/formats.md §1.4), hash area at the start of
    /// `hash_dev` behind the superblock: `0 <sectors> verity 1 <data_dev> <hash_dev> 4096 4096 …`.
    pub fn table_line(&self, data_dev: &str, hash_dev: &str) -> String {
        format!(
            "0 {} verity {} {data_dev} {hash_dev} {}",
            self.data_sectors(),
            sb::HASH_TYPE_NORMAL,
            self.table_params()
        )
    }
}

/// The superblock [`format`] writes for these parameters (its reader is [`sb::parse`]).
fn superblock_for(params: &VerityParams, data_blocks: u64) -> Superblock {
    Superblock {
        version: sb::VERSION,
        hash_type: sb::HASH_TYPE_NORMAL,
        uuid: params.uuid,
        algorithm: HASH_ALGORITHM.to_owned(),
        data_block_size: BLOCK_SIZE as u32,
        hash_block_size: BLOCK_SIZE as u32,
        data_blocks,
        salt: params.salt.to_vec(),
    }
}

/// The 512 on-disk bytes of `sb` (`struct verity_sb`, little-endian, zero padding).
fn superblock_bytes(s: &Superblock) -> Result<[u8; sb::SIZE]> {
    ensure!(
        s.salt.len() <= sb::MAX_SALT_SIZE,
        "verity salt is {} bytes; the superblock holds at most {}",
        s.salt.len(),
        sb::MAX_SALT_SIZE
    );
    ensure!(
        s.algorithm.len() < sb::ALGORITHM_SIZE,
        "hash algorithm name {:?} does not fit the superblock",
        s.algorithm
    );
    let mut b = [0u8; sb::SIZE];
    put(&mut b, sb::OFF_SIGNATURE, sb::SIGNATURE);
    put(&mut b, sb::OFF_VERSION, &s.version.to_le_bytes());
    put(&mut b, sb::OFF_HASH_TYPE, &s.hash_type.to_le_bytes());
    put(&mut b, sb::OFF_UUID, &s.uuid);
    put(&mut b, sb::OFF_ALGORITHM, s.algorithm.as_bytes());
    put(
        &mut b,
        sb::OFF_DATA_BLOCK_SIZE,
        &s.data_block_size.to_le_bytes(),
    );
    put(
        &mut b,
        sb::OFF_HASH_BLOCK_SIZE,
        &s.hash_block_size.to_le_bytes(),
    );
    put(&mut b, sb::OFF_DATA_BLOCKS, &s.data_blocks.to_le_bytes());
    put(
        &mut b,
        sb::OFF_SALT_SIZE,
        &(s.salt.len() as u16).to_le_bytes(),
    );
    put(&mut b, sb::OFF_SALT, &s.salt);
    Ok(b)
}

/// Number of hash blocks of each tree level, level 0 first, for `data_blocks` data blocks.
///
/// Matches cryptsetup's `hash_levels()` and the kernel's level count: a level is added while more
/// than one block remains, so a single data block has no tree (empty result).
pub fn tree_level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut blocks = data_blocks;
    while blocks > 1 {
        blocks = blocks.div_ceil(HASHES_PER_BLOCK);
        levels.push(blocks);
    }
    levels
}

/// Size of the hash area (superblock block + tree) for `data_bytes` of data, rounded up to whole
/// data blocks — used to size the hash partition before the data is hashed.
pub fn hash_area_size(data_bytes: u64) -> u64 {
    let data_blocks = data_bytes.div_ceil(BLOCK_SIZE);
    let tree_blocks: u64 = tree_level_blocks(data_blocks).iter().sum();
    (HASH_START_BLOCK + tree_blocks) * BLOCK_SIZE
}

/// Hashes `data` (length a non-zero multiple of 4096), writes superblock + tree to `hash_out`
/// (created or truncated) and returns the parameters. Level 0 uses one thread per available core.
pub fn format(data: &Path, hash_out: &Path, params: &VerityParams) -> Result<VerityInfo> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format_with_threads(data, hash_out, params, cores)
}

/// [`format`] with an explicit upper bound on the level-0 hashing threads (for benchmarks and
/// tests); small inputs use fewer threads.
pub fn format_with_threads(
    data: &Path,
    hash_out: &Path,
    params: &VerityParams,
    max_threads: usize,
) -> Result<VerityInfo> {
    let file = File::open(data)
        .with_context(|| format!("opening verity data image {}", data.display()))?;
    let data_blocks = data_block_count(&file, data)?;
    let salted = Sha256::new_with_prefix(params.salt);
    let threads = level0_threads(data_blocks, max_threads);
    let level0 = hash_data_blocks(&file, data, data_blocks, &salted, threads)?;
    let (levels, root_hash) = build_tree(level0, data_blocks, &salted);
    let superblock = superblock_bytes(&superblock_for(params, data_blocks))?;
    write_hash_area(hash_out, &superblock, &levels)?;
    let tree_blocks: usize = levels.iter().map(|l| l.len() / BLOCK_SIZE as usize).sum();
    Ok(VerityInfo {
        root_hash,
        salt: params.salt,
        uuid: params.uuid,
        data_blocks,
        hash_blocks: HASH_START_BLOCK + tree_blocks as u64,
    })
}

/// Data blocks in the image, rejecting sizes the kernel cannot map.
fn data_block_count(file: &File, path: &Path) -> Result<u64> {
    let len = file
        .metadata()
        .with_context(|| format!("reading the size of verity data image {}", path.display()))?
        .len();
    if len == 0 {
        bail!(
            "verity data image {} is empty; dm-verity needs at least one {BLOCK_SIZE}-byte block",
            path.display()
        );
    }
    if len % BLOCK_SIZE != 0 {
        bail!(
            "verity data image {} is {len} bytes, not a multiple of {BLOCK_SIZE}; pad it to {} \
             bytes (mksquashfs pads to 4 KiB unless -nopad is given)",
            path.display(),
            len.next_multiple_of(BLOCK_SIZE)
        );
    }
    Ok(len / BLOCK_SIZE)
}

fn level0_threads(data_blocks: u64, max_threads: usize) -> usize {
    let useful = (data_blocks / MIN_BLOCKS_PER_THREAD).max(1);
    usize::try_from(useful)
        .map_or(max_threads, |u| u.min(max_threads))
        .max(1)
}

/// Level 0 entries for every data block, in a buffer padded with zeros to whole hash blocks.
/// Each thread hashes one contiguous run of data blocks into its own slice of the buffer.
fn hash_data_blocks(
    file: &File,
    path: &Path,
    data_blocks: u64,
    salted: &Sha256,
    threads: usize,
) -> Result<Vec<u8>> {
    let mut level0 = vec![0u8; padded_level_bytes(data_blocks)?];
    let entry_bytes = usize::try_from(data_blocks)? * DIGEST_SIZE;
    let blocks_per_thread = usize::try_from(data_blocks)?.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = level0[..entry_bytes]
            .chunks_mut(blocks_per_thread * DIGEST_SIZE)
            .enumerate()
            .map(|(i, out)| {
                let first_block = (i * blocks_per_thread) as u64;
                scope.spawn(move || hash_data_range(file, path, first_block, out, salted))
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    Ok(level0)
}

/// Hashes the data blocks starting at `first_block` into `out` (one entry per block), reading
/// the file in [`READ_CHUNK_BYTES`] pieces so memory stays bounded.
fn hash_data_range(
    file: &File,
    path: &Path,
    first_block: u64,
    out: &mut [u8],
    salted: &Sha256,
) -> Result<()> {
    let blocks_per_chunk = READ_CHUNK_BYTES / BLOCK_SIZE as usize;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut block = first_block;
    for entries in out.chunks_mut(blocks_per_chunk * DIGEST_SIZE) {
        let n = entries.len() / DIGEST_SIZE;
        let chunk = &mut buf[..n * BLOCK_SIZE as usize];
        file.read_exact_at(chunk, block * BLOCK_SIZE)
            .with_context(|| {
                format!(
                    "reading blocks {block}..{} of verity data image {} (did it shrink?)",
                    block + n as u64,
                    path.display()
                )
            })?;
        hash_blocks(chunk, entries, salted);
        block += n as u64;
    }
    Ok(())
}

/// Writes `SHA-256(salt ‖ block)` of each 4096-byte block of `blocks` into consecutive 32-byte
/// entries of `entries`. `salted` already holds the salt, so each block starts from a clone.
fn hash_blocks(blocks: &[u8], entries: &mut [u8], salted: &Sha256) {
    let blocks = blocks.chunks_exact(BLOCK_SIZE as usize);
    for (block, entry) in blocks.zip(entries.chunks_exact_mut(DIGEST_SIZE)) {
        let mut hasher = salted.clone();
        hasher.update(block);
        entry.copy_from_slice(&hasher.finalize());
    }
}

/// Bytes of a level holding `entries` entries, padded to whole hash blocks.
fn padded_level_bytes(entries: u64) -> Result<usize> {
    let bytes = entries.div_ceil(HASHES_PER_BLOCK) * BLOCK_SIZE;
    usize::try_from(bytes).context("verity hash tree does not fit in memory")
}

/// From the padded level-0 entries, computes the upper levels. Returns the levels that go on disk
/// (level 0 first, each padded to whole hash blocks) and the root hash.
fn build_tree(level0: Vec<u8>, data_blocks: u64, salted: &Sha256) -> (Vec<Vec<u8>>, [u8; 32]) {
    let mut levels = Vec::new();
    let mut current = level0;
    let mut entries = data_blocks;
    while entries > 1 {
        let blocks = entries.div_ceil(HASHES_PER_BLOCK);
        // `blocks` ≤ data_blocks / 128, whose buffer was already allocated, so this fits.
        let mut next = vec![0u8; (blocks.div_ceil(HASHES_PER_BLOCK) * BLOCK_SIZE) as usize];
        hash_blocks(&current, &mut next[..blocks as usize * DIGEST_SIZE], salted);
        levels.push(current);
        current = next;
        entries = blocks;
    }
    let mut root = [0u8; 32];
    root.copy_from_slice(&current[..DIGEST_SIZE]);
    (levels, root)
}

/// Writes superblock block, then the levels from the top down to level 0.
fn write_hash_area(path: &Path, superblock: &[u8; sb::SIZE], levels: &[Vec<u8>]) -> Result<()> {
    let context = || format!("writing verity hash area {}", path.display());
    let mut out = File::create(path).with_context(context)?;
    let mut first_block = vec![0u8; BLOCK_SIZE as usize];
    first_block[..sb::SIZE].copy_from_slice(superblock);
    out.write_all(&first_block).with_context(context)?;
    for level in levels.iter().rev() {
        out.write_all(level).with_context(context)?;
    }
    out.flush().with_context(context)
}

/// Textual 8-4-4-4-12 form of UUID bytes stored in RFC order (as veritysetup prints them).
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn serialize_hex<S: Serializer, T: AsRef<[u8]>>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

fn serialize_uuid<S: Serializer>(uuid: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_uuid(uuid))
}

fn put(buf: &mut [u8], offset: usize, field: &[u8]) {
    buf[offset..offset + field.len()].copy_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::process::{Command, Output};

    const SALT: [u8; 32] = [
        0x5a, 0x17, 0xc0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba,
        0x98, 0x76, 0x54, 0x32, 0x10, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99,
        0xaa, 0xbb,
    ];
    const SALT_HEX: &str = "5a17c0de0123456789abcdeffedcba987654321000112233445566778899aabb";
    const UUID: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];
    const UUID_TEXT: &str = "12345678-9abc-4def-8123-456789abcdef";

    fn params() -> VerityParams {
        VerityParams {
            salt: SALT,
            uuid: UUID,
        }
    }

    /// Deterministic pseudo-random data (splitmix64); every 5th block and block 2 are all zero,
    /// so identical blocks and zero blocks both occur.
    fn write_pattern(path: &Path, blocks: u64, seed: u64) {
        let mut state = seed;
        let mut data = Vec::with_capacity((blocks * BLOCK_SIZE) as usize);
        for b in 0..blocks {
            if b % 5 == 4 || b == 2 {
                data.extend(std::iter::repeat_n(0u8, BLOCK_SIZE as usize));
                continue;
            }
            for _ in 0..BLOCK_SIZE / 8 {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                data.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
            }
        }
        std::fs::write(path, data).expect("write test data");
    }

    fn veritysetup(args: &[&str]) -> Output {
        Command::new("veritysetup")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run veritysetup ({e}); install cryptsetup-bin (it is the reference)")
            })
    }

    /// Runs the reference `veritysetup format`; returns the root hash it prints.
    fn reference_format(data: &Path, hash: &Path) -> [u8; 32] {
        let out = veritysetup(&[
            "format",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
            "--format=1",
            &format!("--salt={}", SALT_HEX),
            &format!("--uuid={UUID_TEXT}"),
            data.to_str().expect("utf-8 temp path"),
            hash.to_str().expect("utf-8 temp path"),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "veritysetup format failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .unwrap_or_else(|| panic!("no root hash in veritysetup output: {stdout}"))
            .trim();
        hex::decode(root)
            .expect("hex root hash")
            .try_into()
            .expect("32-byte root hash")
    }

    fn verify(data: &Path, hash: &Path, root: &[u8; 32]) -> bool {
        let root = hex::encode(root);
        let args = [
            "verify",
            data.to_str().expect("utf-8 temp path"),
            hash.to_str().expect("utf-8 temp path"),
            &root,
        ];
        veritysetup(&args).status.success()
    }

    /// Formats `blocks` blocks with us (auto threads and 3 threads) and with veritysetup; the
    /// hash files must be identical and the root hashes equal.
    fn assert_matches_veritysetup(blocks: u64) {
        let dir = TempDir::new(&format!("match{blocks}"));
        let (data, ours, ours3, theirs) = (
            dir.join("data"),
            dir.join("ours"),
            dir.join("ours3"),
            dir.join("theirs"),
        );
        write_pattern(&data, blocks, blocks);
        let root = reference_format(&data, &theirs);
        let expected = std::fs::read(&theirs).expect("read veritysetup output");

        let info = format(&data, &ours, &params()).expect("format");
        let info3 = format_with_threads(&data, &ours3, &params(), 3).expect("format, 3 threads");
        for (info, file) in [(&info, &ours), (&info3, &ours3)] {
            let got = std::fs::read(file).expect("read our output");
            assert!(
                got == expected,
                "{blocks} blocks: hash area differs from veritysetup ({} vs {} bytes)",
                got.len(),
                expected.len()
            );
            assert_eq!(
                hex::encode(info.root_hash),
                hex::encode(root),
                "{blocks} blocks"
            );
            assert_eq!(info.data_blocks, blocks);
            assert_eq!(info.hash_area_bytes(), expected.len() as u64);
        }
        assert_eq!(hash_area_size(blocks * BLOCK_SIZE), expected.len() as u64);
    }

    #[test]
    fn matches_veritysetup_1_block() {
        assert_matches_veritysetup(1);
    }

    #[test]
    fn matches_veritysetup_74_blocks() {
        assert_matches_veritysetup(74);
    }

    #[test]
    fn matches_veritysetup_127_blocks() {
        assert_matches_veritysetup(127);
    }

    #[test]
    fn matches_veritysetup_128_blocks() {
        assert_matches_veritysetup(128);
    }

    #[test]
    fn matches_veritysetup_129_blocks() {
        assert_matches_veritysetup(129);
    }

    #[test]
    fn matches_veritysetup_20000_blocks() {
        assert_matches_veritysetup(20_000);
    }

    #[test]
    fn matches_veritysetup_three_levels() {
        assert_matches_veritysetup(128 * 128 + 1);
    }

    /// Sizes from docs/formats.md §1.2 and veritysetup's report for one block ("Hash blocks: 0").
    #[test]
    fn hash_area_sizes_follow_the_spec() {
        assert_eq!(hash_area_size(4096), 4096);
        assert_eq!(hash_area_size(74 * 4096), 2 * 4096);
        assert_eq!(hash_area_size(20_000 * 4096), (1 + 157 + 2 + 1) * 4096);
        assert_eq!(tree_level_blocks(20_000), [157, 2, 1]);
        assert_eq!(tree_level_blocks(128), [1]);
        assert_eq!(tree_level_blocks(129), [2, 1]);
        assert_eq!(tree_level_blocks(128 * 128 + 1), [129, 2, 1]);
        assert!(tree_level_blocks(1).is_empty());
        // Partial blocks round up: sizing a partition for an unpadded image must not undershoot.
        assert_eq!(hash_area_size(74 * 4096 - 1), 2 * 4096);
    }

    #[test]
    fn veritysetup_verify_accepts_output_and_detects_corruption() {
        let dir = TempDir::new("verify");
        let (data, hash) = (dir.join("data"), dir.join("hash"));
        write_pattern(&data, 300, 7);
        let info = format(&data, &hash, &params()).expect("format");
        assert!(
            verify(&data, &hash, &info.root_hash),
            "veritysetup verify rejected our tree"
        );

        let mut bad_root = info.root_hash;
        bad_root[31] ^= 1;
        assert!(!verify(&data, &hash, &bad_root), "wrong root hash accepted");

        let mut bytes = std::fs::read(&data).expect("read data");
        bytes[200 * 4096 + 1234] ^= 0x40;
        std::fs::write(&data, bytes).expect("corrupt data");
        assert!(
            !verify(&data, &hash, &info.root_hash),
            "corrupted data accepted"
        );
    }

    #[test]
    fn rejects_data_not_a_multiple_of_the_block_size() {
        let dir = TempDir::new("unaligned");
        let (data, hash) = (dir.join("odd.img"), dir.join("hash"));
        std::fs::write(&data, vec![1u8; 4097]).expect("write data");
        let err = format!("{:#}", format(&data, &hash, &params()).unwrap_err());
        assert!(
            err.contains("odd.img"),
            "error does not name the file: {err}"
        );
        assert!(err.contains("4097 bytes, not a multiple of 4096"), "{err}");
        assert!(err.contains("pad it to 8192"), "{err}");

        std::fs::write(&data, b"").expect("write data");
        let err = format!("{:#}", format(&data, &hash, &params()).unwrap_err());
        assert!(err.contains("odd.img") && err.contains("empty"), "{err}");

        let missing = dir.join("missing.img");
        let err = format!("{:#}", format(&missing, &hash, &params()).unwrap_err());
        assert!(err.contains("missing.img"), "{err}");
    }

    #[test]
    fn parse_superblock_reads_veritysetup_output() {
        let dir = TempDir::new("sb");
        let (data, hash) = (dir.join("data"), dir.join("hash"));
        write_pattern(&data, 74, 3);
        reference_format(&data, &hash);
        let bytes = std::fs::read(&hash).expect("read hash");
        let sb = sb::parse(&bytes[..512]).expect("parse");
        assert_eq!(sb.version, 1);
        assert_eq!(sb.hash_type, 1);
        assert_eq!(format_uuid(&sb.uuid), UUID_TEXT);
        assert_eq!(sb.algorithm, "sha256");
        assert_eq!(sb.data_block_size, 4096);
        assert_eq!(sb.hash_block_size, 4096);
        assert_eq!(sb.data_blocks, 74);
        assert_eq!(hex::encode(&sb.salt), SALT_HEX);
    }

    /// Table line written out by hand from docs/formats.md §1.4 around veritysetup's root hash.
    #[test]
    fn table_line_and_json() {
        let dir = TempDir::new("table");
        let (data, ours, theirs) = (dir.join("data"), dir.join("ours"), dir.join("theirs"));
        write_pattern(&data, 74, 11);
        let root = hex::encode(reference_format(&data, &theirs));
        let info = format(&data, &ours, &params()).expect("format");
        let salt = SALT_HEX;
        assert_eq!(
            info.table_line("/dev/vda2", "/dev/vda3"),
            format!("0 592 verity 1 /dev/vda2 /dev/vda3 4096 4096 74 1 sha256 {root} {salt}")
        );
        assert_eq!(info.hash_blocks, 2);
        assert_eq!(
            serde_json::to_string(&info).expect("json"),
            format!(
                r#"{{"root_hash":"{root}","salt":"{salt}","uuid":"{UUID_TEXT}","data_blocks":74,"hash_blocks":2}}"#
            )
        );
    }
}

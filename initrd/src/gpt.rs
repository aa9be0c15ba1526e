//! Reading a GPT partition table (UEFI 2.10, ch. 5) from a disk device.
//!
//! There is no udev in the initramfs, so no `/dev/disk/by-partuuid`; the kernel's uevents carry the
//! partition number but not its GUIDs. The init therefore reads each disk's primary GPT itself and maps
//! (disk, partition number) → type GUID and unique GUID. Integrity of the *contents* comes from
//! dm-verity, not from here; the CRC checks only make sure garbage is reported as such.

use std::io::{Read, Seek, SeekFrom};

use anyhow::{bail, ensure, Context, Result};

/// `Signature` of the GPT header.
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// The primary header is at LBA 1.
const PRIMARY_HEADER_LBA: u64 = 1;
/// Smallest `HeaderSize` (the fields defined by the spec).
const MIN_HEADER_SIZE: usize = 92;
/// Smallest `SizeOfPartitionEntry`; it must be 128 × 2^n.
const MIN_ENTRY_SIZE: usize = 128;
/// Upper bound on `NumberOfPartitionEntries` × `SizeOfPartitionEntry` we are willing to read
/// (the usual table is 128 × 128 = 16 KiB).
const MAX_ENTRY_ARRAY: usize = 1 << 20;

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based index in the entry array: the kernel's partition number (`vda<N>`).
    pub number: u32,
    /// `PartitionTypeGUID`, in textual byte order.
    pub type_guid: [u8; 16],
    /// `UniquePartitionGUID` (the PARTUUID), in textual byte order.
    pub unique_guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
}

/// GPT stores the first three GUID fields little-endian ("mixed endian"); textual order is big-endian.
pub fn guid_from_disk(raw: &[u8]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g.copy_from_slice(&raw[..16]);
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// CRC-32 (IEEE 802.3, reflected, as GPT uses).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Reads the primary GPT of `dev` (logical sector size `sector`) and returns its used entries.
pub fn read_gpt<D: Read + Seek>(dev: &mut D, sector: u64) -> Result<Vec<GptPartition>> {
    let mut header = vec![0u8; sector as usize];
    dev.seek(SeekFrom::Start(PRIMARY_HEADER_LBA * sector))?;
    dev.read_exact(&mut header)
        .context("reading the GPT header (LBA 1)")?;
    if &header[0..8] != GPT_SIGNATURE {
        bail!("no GPT (no \"EFI PART\" signature at LBA 1)");
    }
    let header_size = le32(&header, 12) as usize;
    ensure!(
        (MIN_HEADER_SIZE..=header.len()).contains(&header_size),
        "GPT HeaderSize {header_size} is invalid"
    );
    let stored_crc = le32(&header, 16);
    let mut check = header[..header_size].to_vec();
    check[16..20].fill(0);
    ensure!(
        crc32(&check) == stored_crc,
        "GPT header CRC mismatch (corrupted partition table)"
    );
    let entries_lba = le64(&header, 72);
    let count = le32(&header, 80) as usize;
    let entry_size = le32(&header, 84) as usize;
    let entries_crc = le32(&header, 88);
    ensure!(
        entry_size >= MIN_ENTRY_SIZE && entry_size.is_power_of_two(),
        "GPT SizeOfPartitionEntry {entry_size} is invalid"
    );
    let total = count
        .checked_mul(entry_size)
        .filter(|&t| t <= MAX_ENTRY_ARRAY)
        .with_context(|| format!("GPT entry array of {count} × {entry_size} bytes is too large"))?;
    let mut entries = vec![0u8; total];
    dev.seek(SeekFrom::Start(entries_lba * sector))?;
    dev.read_exact(&mut entries)
        .with_context(|| format!("reading the GPT entry array at LBA {entries_lba}"))?;
    ensure!(
        crc32(&entries) == entries_crc,
        "GPT partition entry array CRC mismatch (corrupted partition table)"
    );
    Ok(parse_entries(&entries, entry_size))
}

/// The used entries (type GUID not all zero) of an entry array.
fn parse_entries(entries: &[u8], entry_size: usize) -> Vec<GptPartition> {
    entries
        .chunks_exact(entry_size)
        .zip(1u32..)
        .filter(|(e, _)| e[0..16].iter().any(|&b| b != 0))
        .map(|(e, number)| GptPartition {
            number,
            type_guid: guid_from_disk(&e[0..16]),
            unique_guid: guid_from_disk(&e[16..32]),
            first_lba: le64(e, 32),
            last_lba: le64(e, 40),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvm_measure::boot_config::{format_uuid, parse_uuid};
    use std::process::Command;

    #[test]
    fn crc32_check_value() {
        // The CRC-32/ISO-HDLC check value (catalogue of parametrised CRC algorithms).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn mixed_endian_guid() {
        // EFI System Partition type C12A7328-F81F-11D2-BA4B-00A0C93EC93B as stored on disk.
        let raw = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B,
        ];
        assert_eq!(
            format_uuid(&guid_from_disk(&raw)),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
    }

    /// A disk partitioned by sgdisk (the reference tool) reads back with the GUIDs we gave it.
    #[test]
    fn reads_sgdisk_table() {
        let path = std::env::temp_dir().join(format!("cvm-init-gpt-{}.img", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        drop(f);
        let status = Command::new("sgdisk")
            .args([
                "-n",
                "1:2048:+1M",
                "-t",
                "1:4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
                "-u",
                "1:00010203-0405-0607-0809-0a0b0c0d0e0f",
                "-n",
                "3:0:+1M",
                "-t",
                "3:2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
                "-u",
                "3:10111213-1415-1617-1819-1a1b1c1d1e1f",
            ])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run sgdisk ({e}); apt-get install gdisk"));
        assert!(status.status.success(), "sgdisk: {status:?}");
        let mut dev = std::fs::File::open(&path).unwrap();
        let parts = read_gpt(&mut dev, 512).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].number, 1);
        assert_eq!(parts[0].first_lba, 2048);
        assert_eq!(parts[0].last_lba, 2048 + 2047);
        assert_eq!(
            parts[0].type_guid,
            parse_uuid("4f68bce3-e8cd-4db1-96e7-fbcaf984b709").unwrap()
        );
        assert_eq!(
            parts[0].unique_guid,
            parse_uuid("00010203-0405-0607-0809-0a0b0c0d0e0f").unwrap()
        );
        assert_eq!(parts[1].number, 3);
        assert_eq!(
            parts[1].unique_guid,
            parse_uuid("10111213-1415-1617-1819-1a1b1c1d1e1f").unwrap()
        );
    }

    #[test]
    fn rejects_non_gpt_and_corruption() {
        let mut blank = std::io::Cursor::new(vec![0u8; 64 * 512]);
        let e = read_gpt(&mut blank, 512).unwrap_err().to_string();
        assert!(e.contains("no GPT"), "{e}");
        // A minimal valid header with a flipped byte fails the header CRC.
        let mut disk = vec![0u8; 64 * 512];
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(GPT_SIGNATURE);
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&4u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&[0u8; 512]).to_le_bytes());
        let c = crc32(&h);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        disk[512..604].copy_from_slice(&h);
        assert!(read_gpt(&mut std::io::Cursor::new(disk.clone()), 512)
            .unwrap()
            .is_empty());
        disk[512 + 40] ^= 1;
        let e = read_gpt(&mut std::io::Cursor::new(disk), 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("header CRC"), "{e}");
    }
}

//! Reading a GUID partition table (UEFI 2.10 ch. 5): the primary header at LBA 1, its entry array,
//! both CRC-checked.
//!
//! Only the primary table is read. A firmware that finds it damaged measures a header rebuilt from the
//! backup (PCR 5), which nothing here predicts; and for an image this project wrote, a damaged primary
//! means the image is damaged. So a bad primary is an error, never a silent fallback. The integrity of
//! partition *contents* comes from dm-verity, not from these CRCs: they only make sure garbage is
//! reported as such.

use crate::guid;
use std::io::{self, Read, Seek, SeekFrom};

/// `Signature` of the GPT header.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The primary header is at LBA 1.
pub const PRIMARY_HEADER_LBA: u64 = 1;
/// `sizeof(EFI_PARTITION_TABLE_HEADER)`: the fields the spec defines, and the bytes PCR 5 measures.
pub const HEADER_SIZE: usize = 92;
/// Smallest `SizeOfPartitionEntry`; the spec requires 128 × 2^n.
pub const MIN_ENTRY_SIZE: u32 = 128;
/// Upper bound on the entry array we read (the usual table is 128 × 128 = 16 KiB).
pub const MAX_ENTRY_ARRAY: u64 = 1 << 20;
/// UTF-16 code units of `PartitionName`.
pub const NAME_UNITS: usize = 36;
/// Logical sector sizes a disk image may use, in the order [`Gpt::find`] tries them.
pub const SECTOR_SIZES: [u64; 2] = [512, 4096];

/// Why a primary GPT could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("reading {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no GPT (no \"EFI PART\" signature at LBA 1)")]
    NoSignature,
    #[error("GPT HeaderSize {0} is invalid")]
    HeaderSize(usize),
    #[error("GPT header CRC mismatch (corrupted partition table)")]
    HeaderCrc,
    #[error("GPT header at LBA 1 says MyLBA = {0}")]
    MyLba(u64),
    #[error("unsupported GPT entry array: {count} entries of {size} bytes")]
    EntryArray { count: u32, size: u32 },
    #[error("GPT partition entry array CRC mismatch (corrupted partition table)")]
    EntryCrc,
    #[error("GPT partition {0} ends before it starts")]
    Inverted(u32),
    /// A sector number whose byte offset does not fit 64 bits: no disk has it, only a forged table.
    #[error("GPT {what} at LBA {lba} lies beyond any disk ({sector}-byte sectors)")]
    OutOfRange {
        what: &'static str,
        lba: u64,
        sector: u64,
    },
}

/// The primary header's fields (GUIDs in textual byte order) and its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header as on disk, `HeaderSize` bytes.
    pub raw: Vec<u8>,
    pub revision: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
}

/// One used entry (type GUID not nil).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based index in the entry array: the kernel's partition number (`vda<N>`).
    pub number: u32,
    /// `PartitionTypeGUID`, textual byte order.
    pub type_guid: [u8; 16],
    /// `UniquePartitionGUID` (the PARTUUID), textual byte order.
    pub unique_guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    /// `PartitionName`, up to the first NUL.
    pub name: String,
}

impl Partition {
    /// Sectors the partition spans (inclusive LBA range).
    pub fn sectors(&self) -> u64 {
        self.last_lba + 1 - self.first_lba
    }

    /// (first byte, length in bytes) on a disk with `sector`-byte sectors.
    pub fn byte_range(&self, sector: u64) -> (u64, u64) {
        (self.first_lba * sector, self.sectors() * sector)
    }
}

/// A validated primary GPT.
#[derive(Debug, Clone)]
pub struct Gpt {
    /// The logical sector size it was read with.
    pub sector: u64,
    pub header: Header,
    /// The entry array as on disk.
    pub entries: Vec<u8>,
    /// The used entries, in table order.
    pub partitions: Vec<Partition>,
}

impl Gpt {
    /// Reads and validates the primary GPT of `dev` with `sector`-byte logical sectors.
    pub fn read<D: Read + Seek>(dev: &mut D, sector: u64) -> Result<Gpt, GptError> {
        let mut sector_bytes = vec![0u8; sector as usize];
        read_at(
            dev,
            PRIMARY_HEADER_LBA * sector,
            &mut sector_bytes,
            "the GPT header (LBA 1)",
        )?;
        let header = parse_header(&sector_bytes)?;
        let array = u64::from(header.entry_count) * u64::from(header.entry_size);
        let mut entries = vec![0u8; array as usize];
        read_at(
            dev,
            byte_offset("entry array", header.entries_lba, sector)?,
            &mut entries,
            "the GPT entry array",
        )?;
        if crc32(&entries) != le32(&sector_bytes, 88) {
            return Err(GptError::EntryCrc);
        }
        let partitions = parse_entries(&entries, header.entry_size as usize, sector)?;
        Ok(Gpt {
            sector,
            header,
            entries,
            partitions,
        })
    }

    /// Reads the primary GPT trying each of [`SECTOR_SIZES`]; the error is the 512-byte attempt's.
    pub fn find<D: Read + Seek>(dev: &mut D) -> Result<Gpt, GptError> {
        let first = Gpt::read(dev, SECTOR_SIZES[0]);
        if let Err(GptError::NoSignature) = first {
            for &sector in &SECTOR_SIZES[1..] {
                if let Ok(gpt) = Gpt::read(dev, sector) {
                    return Ok(gpt);
                }
            }
        }
        first
    }

    /// `EFI_GPT_DATA` as the firmware measures it into PCR 5: the 92-byte header as on disk ‖ UINT64
    /// count of used entries ‖ those entries in table order, `SizeOfPartitionEntry` bytes each.
    pub fn event_data(&self) -> Vec<u8> {
        let size = self.header.entry_size as usize;
        let used: Vec<&[u8]> = self
            .entries
            .chunks_exact(size)
            .filter(|e| is_used(e))
            .collect();
        let mut event = Vec::with_capacity(HEADER_SIZE + 8 + used.len() * size);
        event.extend_from_slice(&self.header.raw[..HEADER_SIZE]);
        event.extend_from_slice(&(used.len() as u64).to_le_bytes());
        for entry in used {
            event.extend_from_slice(entry);
        }
        event
    }

    /// The first used entry of this type (textual byte order).
    pub fn first_of_type(&self, type_guid: &[u8; 16]) -> Option<&Partition> {
        self.partitions.iter().find(|p| &p.type_guid == type_guid)
    }
}

fn read_at<D: Read + Seek>(
    dev: &mut D,
    offset: u64,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), GptError> {
    dev.seek(SeekFrom::Start(offset))
        .and_then(|_| dev.read_exact(buf))
        .map_err(|source| GptError::Io { what, source })
}

/// Validates the header in `sector_bytes` (signature, size, CRC, MyLBA, entry geometry).
fn parse_header(sector_bytes: &[u8]) -> Result<Header, GptError> {
    if &sector_bytes[0..8] != SIGNATURE {
        return Err(GptError::NoSignature);
    }
    let header_size = le32(sector_bytes, 12) as usize;
    if !(HEADER_SIZE..=sector_bytes.len()).contains(&header_size) {
        return Err(GptError::HeaderSize(header_size));
    }
    let mut check = sector_bytes[..header_size].to_vec();
    check[16..20].fill(0);
    if crc32(&check) != le32(sector_bytes, 16) {
        return Err(GptError::HeaderCrc);
    }
    let my_lba = le64(sector_bytes, 24);
    if my_lba != PRIMARY_HEADER_LBA {
        return Err(GptError::MyLba(my_lba));
    }
    let (count, size) = (le32(sector_bytes, 80), le32(sector_bytes, 84));
    if size < MIN_ENTRY_SIZE
        || !size.is_power_of_two()
        || u64::from(count) * u64::from(size) > MAX_ENTRY_ARRAY
    {
        return Err(GptError::EntryArray { count, size });
    }
    Ok(Header {
        raw: sector_bytes[..header_size].to_vec(),
        revision: le32(sector_bytes, 8),
        my_lba,
        alternate_lba: le64(sector_bytes, 32),
        first_usable_lba: le64(sector_bytes, 40),
        last_usable_lba: le64(sector_bytes, 48),
        disk_guid: guid_at(sector_bytes, 56),
        entries_lba: le64(sector_bytes, 72),
        entry_count: count,
        entry_size: size,
    })
}

fn is_used(entry: &[u8]) -> bool {
    entry[0..16].iter().any(|&b| b != 0)
}

/// Byte offset of `lba`, or [`GptError::OutOfRange`].
fn byte_offset(what: &'static str, lba: u64, sector: u64) -> Result<u64, GptError> {
    lba.checked_mul(sector)
        .ok_or(GptError::OutOfRange { what, lba, sector })
}

/// The used entries of an entry array, numbered from 1. Every partition's end, in bytes, fits 64
/// bits, so [`Partition::sectors`] and [`Partition::byte_range`] cannot overflow.
fn parse_entries(
    entries: &[u8],
    entry_size: usize,
    sector: u64,
) -> Result<Vec<Partition>, GptError> {
    entries
        .chunks_exact(entry_size)
        .zip(1u32..)
        .filter(|(e, _)| is_used(e))
        .map(|(e, number)| {
            let (first_lba, last_lba) = (le64(e, 32), le64(e, 40));
            if last_lba < first_lba {
                return Err(GptError::Inverted(number));
            }
            let end = last_lba.checked_add(1).ok_or(GptError::OutOfRange {
                what: "partition end",
                lba: last_lba,
                sector,
            })?;
            byte_offset("partition end", end, sector)?;
            Ok(Partition {
                number,
                type_guid: guid_at(e, 0),
                unique_guid: guid_at(e, 16),
                first_lba,
                last_lba,
                attributes: le64(e, 48),
                name: utf16_name(&e[56..56 + 2 * NAME_UNITS]),
            })
        })
        .collect()
}

fn utf16_name(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn guid_at(b: &[u8], off: usize) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&b[off..off + 16]);
    guid::from_disk(raw)
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// CRC-32 as GPT uses it (IEEE 802.3, reflected; the CRC-32/ISO-HDLC of the CRC catalogue).
/// Bitwise: the tables are 16 KiB at most, read once per boot, and the init stays small.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::process::Command;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// A disk partitioned by sgdisk (the reference tool) reads back with the GUIDs, ranges and names
    /// we gave it, and its event data is what the firmware's rule says.
    #[test]
    fn reads_sgdisk_table() {
        let path = std::env::temp_dir().join(format!("cvm-disk-gpt-{}.img", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        drop(f);
        let out = Command::new("sgdisk")
            .args([
                "-n",
                "1:2048:+1M",
                "-t",
                "1:4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
                "-u",
                "1:00010203-0405-0607-0809-0a0b0c0d0e0f",
                "-c",
                "1:root-x86-64",
                "-n",
                "3:0:+1M",
                "-t",
                "3:2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
                "-u",
                "3:10111213-1415-1617-1819-1a1b1c1d1e1f",
                "-A",
                "3:set:60",
            ])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run sgdisk ({e}); apt-get install gdisk"));
        assert!(out.status.success(), "sgdisk: {out:?}");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let gpt = Gpt::find(&mut Cursor::new(&bytes)).unwrap();
        assert_eq!(gpt.sector, 512);
        let p = &gpt.partitions;
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].number, p[0].first_lba, p[0].last_lba),
            (1, 2048, 4095)
        );
        assert_eq!(p[0].name, "root-x86-64");
        assert_eq!(
            p[0].type_guid,
            guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709").unwrap()
        );
        assert_eq!(
            p[0].unique_guid,
            guid::parse("00010203-0405-0607-0809-0a0b0c0d0e0f").unwrap()
        );
        assert_eq!((p[1].number, p[1].attributes), (3, 1 << 60));
        assert_eq!(p[0].byte_range(512), (2048 * 512, 1 << 20));
        let event = gpt.event_data();
        assert_eq!(&event[..HEADER_SIZE], &bytes[512..512 + HEADER_SIZE]);
        assert_eq!(event[HEADER_SIZE..HEADER_SIZE + 8], 2u64.to_le_bytes());
        assert_eq!(event.len(), HEADER_SIZE + 8 + 2 * 128);
    }

    fn minimal_disk() -> Vec<u8> {
        let mut disk = vec![0u8; 64 * 512];
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(SIGNATURE);
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&4u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&[0u8; 512]).to_le_bytes());
        let c = crc32(&h);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        disk[512..604].copy_from_slice(&h);
        disk
    }

    #[test]
    fn rejects_non_gpt_and_corruption() {
        let blank = vec![0u8; 64 * 512];
        let e = Gpt::find(&mut Cursor::new(blank)).unwrap_err();
        assert!(matches!(e, GptError::NoSignature), "{e}");
        let mut disk = minimal_disk();
        assert!(Gpt::read(&mut Cursor::new(disk.clone()), 512)
            .unwrap()
            .partitions
            .is_empty());
        let mut entries_bad = disk.clone();
        entries_bad[2 * 512 + 3] = 1;
        assert!(matches!(
            Gpt::read(&mut Cursor::new(entries_bad), 512),
            Err(GptError::EntryCrc)
        ));
        disk[512 + 40] ^= 1;
        let e = Gpt::read(&mut Cursor::new(disk), 512).unwrap_err();
        assert!(e.to_string().contains("header CRC"), "{e}");
    }

    /// `minimal_disk` with one partition entry and both CRCs recomputed.
    fn with_entry(mut disk: Vec<u8>, entry: &[u8; 128]) -> Vec<u8> {
        disk[2 * 512..2 * 512 + 128].copy_from_slice(entry);
        reseal(&mut disk);
        disk
    }

    /// Recomputes the entry-array and header CRCs, as a host forging the table would.
    fn reseal(disk: &mut [u8]) {
        let array = crc32(&disk[2 * 512..2 * 512 + 4 * 128]);
        disk[512 + 88..512 + 92].copy_from_slice(&array.to_le_bytes());
        disk[512 + 16..512 + 20].fill(0);
        let header = crc32(&disk[512..512 + 92]);
        disk[512 + 16..512 + 20].copy_from_slice(&header.to_le_bytes());
    }

    /// A malicious host writes the disk: a table whose CRCs match but whose numbers are absurd must be
    /// an error, never a panic of the init (PID 1) nor a wrapped offset that reads elsewhere.
    #[test]
    fn forged_tables_are_errors() {
        let mut entry = [0u8; 128];
        entry[0] = 1; // a used entry
        entry[32..40].copy_from_slice(&10u64.to_le_bytes());
        entry[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = Gpt::read(&mut Cursor::new(with_entry(minimal_disk(), &entry)), 512).unwrap_err();
        assert!(matches!(e, GptError::OutOfRange { .. }), "{e}");
        entry[40..48].copy_from_slice(&(u64::MAX / 256).to_le_bytes());
        let e = Gpt::read(&mut Cursor::new(with_entry(minimal_disk(), &entry)), 512).unwrap_err();
        assert!(matches!(e, GptError::OutOfRange { .. }), "{e}");
        entry[40..48].copy_from_slice(&20u64.to_le_bytes());
        let ok = Gpt::read(&mut Cursor::new(with_entry(minimal_disk(), &entry)), 512).unwrap();
        assert_eq!(ok.partitions[0].byte_range(512), (10 * 512, 11 * 512));

        let mut far = minimal_disk();
        far[512 + 72..512 + 80].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal(&mut far);
        let e = Gpt::read(&mut Cursor::new(far), 512).unwrap_err();
        assert!(matches!(e, GptError::OutOfRange { .. }), "{e}");

        // Every byte of the header and of the first entry set to extreme values, CRCs resealed: the
        // reader answers with a table or an error, and never panics.
        let base = with_entry(minimal_disk(), &entry);
        let fields = (512..512 + HEADER_SIZE).chain(2 * 512..2 * 512 + 128);
        for at in fields {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff] {
                let mut d = base.clone();
                d[at] = v;
                reseal(&mut d);
                let _ = Gpt::read(&mut Cursor::new(d.clone()), 512);
                let _ = Gpt::find(&mut Cursor::new(d));
            }
        }
    }
}

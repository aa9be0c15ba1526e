//! GPT disk assembly: protective MBR, primary and backup GPT, partition contents.
//!
//! The table is written by `gptman` (docs/crates.md §1: GUIDs are plain bytes, no RNG; primary,
//! backup and protective MBR; `sgdisk -v` clean; reruns byte-identical). This module adds the
//! layout (1 MiB-aligned partitions in the caller's order, disk size rounded to what the cloud
//! wants), the GUID conversions and sparse streaming of partition contents. The two read-backs the
//! rest of the builder needs — the layout (`inspect`) and the `EFI_GPT_DATA` the firmware measures
//! into PCR 5 — go through `cvm_disk::gpt`, the one GPT reader the init and the agent use too.
//!
//! **GUID byte order.** EFI stores the first three GUID fields little-endian (docs/formats.md §4):
//! `c12a7328-f81f-11d2-…` is `28 73 2a c1 1f f8 d2 11 …` on disk. `uuid::Uuid` holds the RFC
//! (big-endian) form, and `to_bytes_le`/`from_bytes_le` perform exactly the EFI swap, so every
//! [`Uuid`] ↔ gptman `[u8; 16]` conversion goes through [`to_gpt_bytes`]/[`from_gpt_bytes`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use cvm_disk::gpt::{Gpt, NAME_UNITS};
use gptman::{GPTPartitionEntry, GPT};
use serde::{Deserialize, Serialize};
use uuid::{uuid, Uuid};

/// Logical sector size of the disk (every LBA below counts these).
pub const SECTOR: u64 = 512;
/// Partition alignment and the granularity of partition sizes.
pub const ALIGN: u64 = 1 << 20;
const ALIGN_LBAS: u64 = ALIGN / SECTOR;
/// `NumberOfPartitionEntries` × `SizeOfPartitionEntry` as gptman writes them: 128 × 128 bytes,
/// the 16 KiB minimum array of the UEFI spec.
const ENTRY_COUNT: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ENTRY_ARRAY_LBAS: u64 = ENTRY_COUNT * ENTRY_SIZE / SECTOR;
/// The backup entry array and the backup header occupy the last 33 LBAs.
const BACKUP_LBAS: u64 = ENTRY_ARRAY_LBAS + 1;
/// Partition contents are streamed through a buffer of this size …
const COPY_BUFFER: usize = 4 << 20;
/// … and all-zero runs of this granularity are skipped, leaving holes in the output.
const HOLE_GRANULE: usize = 64 << 10;

/// EFI System Partition (UEFI spec; DPS `esp`).
pub const ESP_TYPE: Uuid = Uuid::from_bytes(cvm_disk::guid::ESP_TYPE);
/// Root partition, x86-64 (Discoverable Partitions Specification `root-x86-64`).
pub const ROOT_X86_64_TYPE: Uuid = uuid!("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
/// Root verity partition, x86-64 (DPS `root-x86-64-verity`).
pub const ROOT_VERITY_X86_64_TYPE: Uuid = uuid!("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5");
/// Namespace of every identifier cvm-image derives: UUIDv5(`NAMESPACE_URL`, `"urn:cvm-image"`).
pub const CVM_IMAGE_NAMESPACE: Uuid = uuid!("70e449f9-bda5-5799-ab43-6e8b932e8b79");
/// Workload data partition (project type; the DPS has none):
/// `derive_guid(b"gpt-partition-type", "workload")`, i.e. in Python
/// `uuid5(uuid5(uuid5(NAMESPACE_URL, "urn:cvm-image"), "gpt-partition-type"), "workload")`.
pub const WORKLOAD_TYPE: Uuid = uuid!("8dac24de-52d1-57e3-8a8d-dd0103395d91");
/// Workload verity partition (project type): `derive_guid(b"gpt-partition-type", "workload-verity")`.
pub const WORKLOAD_VERITY_TYPE: Uuid = uuid!("8526f6bf-be51-5bdf-bc7a-90138ace3344");

/// Attribute bit 0 (UEFI): platform-required partition.
pub const ATTR_REQUIRED: u64 = 1 << 0;
/// Attribute bit 1 (UEFI): firmware must not produce an EFI_BLOCK_IO_PROTOCOL for it.
pub const ATTR_NO_BLOCK_IO: u64 = 1 << 1;
/// Attribute bit 59 (DPS): grow the file system to the partition size on first mount.
pub const ATTR_GROWFS: u64 = 1 << 59;
/// Attribute bit 60 (DPS): mount read-only.
pub const ATTR_READ_ONLY: u64 = 1 << 60;
/// Attribute bit 63 (DPS): not auto-discovered by systemd-gpt-auto-generator.
pub const ATTR_NO_AUTO: u64 = 1 << 63;

/// A partition to place: its identity and the file holding its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// GPT partition name (at most 36 UTF-16 code units).
    pub name: String,
    /// Partition type, e.g. [`ESP_TYPE`] or [`ROOT_X86_64_TYPE`].
    pub type_guid: Uuid,
    /// Unique partition GUID (PARTUUID); for verity pairs see `cvm_disk::verity_pair`.
    pub uuid: Uuid,
    /// File with the partition's content, copied to the partition's start.
    pub source: PathBuf,
    /// Partition size in bytes, at least the source's length; rounded up to [`ALIGN`].
    pub size: u64,
    /// GPT attribute bits, e.g. [`ATTR_READ_ONLY`].
    pub attributes: u64,
}

/// A partition as placed on the disk (and as `manifest.json` reports it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedPartition {
    /// 1-based index in the partition entry array.
    pub number: u32,
    pub name: String,
    pub type_guid: Uuid,
    pub uuid: Uuid,
    pub first_lba: u64,
    /// Inclusive, as in the GPT entry.
    pub last_lba: u64,
    pub size_bytes: u64,
    pub attributes: u64,
}

/// The whole disk: what [`plan`] decides, [`write_disk`] writes and [`read_layout`] reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLayout {
    pub disk_guid: Uuid,
    pub size_bytes: u64,
    pub partitions: Vec<PlacedPartition>,
}

/// Deterministic GUID for `name` within `namespace`, never random:
/// UUIDv5(UUIDv5([`CVM_IMAGE_NAMESPACE`], namespace), name).
///
/// Nesting keeps (namespace, name) pairs apart without a separator convention, and any
/// UUIDv5 implementation reproduces the result.
pub fn derive_guid(namespace: &[u8], name: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::new_v5(&CVM_IMAGE_NAMESPACE, namespace),
        name.as_bytes(),
    )
}

/// EFI on-disk (mixed-endian) bytes of a GUID.
pub fn to_gpt_bytes(guid: Uuid) -> [u8; 16] {
    cvm_disk::guid::to_disk(*guid.as_bytes())
}

/// GUID from its EFI on-disk (mixed-endian) bytes.
pub fn from_gpt_bytes(bytes: [u8; 16]) -> Uuid {
    Uuid::from_bytes(cvm_disk::guid::from_disk(bytes))
}

/// Places the partitions in order, each 1 MiB-aligned with a size rounded up to 1 MiB, the
/// first at 1 MiB. The disk keeps room for the backup GPT after the last partition and its size
/// is the smallest multiple of `size_multiple` (1 GiB for GCP, 1 MiB for Azure) that is at least
/// `min_size`.
pub fn plan(
    disk_guid: Uuid,
    parts: &[PartitionPlan],
    size_multiple: u64,
    min_size: u64,
) -> Result<DiskLayout> {
    ensure!(!parts.is_empty(), "a disk needs at least one partition");
    ensure!(
        parts.len() as u64 <= ENTRY_COUNT,
        "{} partitions do not fit the {ENTRY_COUNT}-entry GPT",
        parts.len()
    );
    ensure!(
        size_multiple > 0 && size_multiple.is_multiple_of(SECTOR),
        "disk size multiple {size_multiple} must be a positive multiple of {SECTOR} bytes"
    );
    check_unique_guids(disk_guid, parts)?;

    let mut next_lba = ALIGN_LBAS;
    let mut partitions = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        check_partition(part)?;
        let sectors = part.size.div_ceil(ALIGN) * ALIGN_LBAS;
        partitions.push(PlacedPartition {
            number: index as u32 + 1,
            name: part.name.clone(),
            type_guid: part.type_guid,
            uuid: part.uuid,
            first_lba: next_lba,
            last_lba: next_lba + sectors - 1,
            size_bytes: sectors * SECTOR,
            attributes: part.attributes,
        });
        next_lba += sectors;
    }
    let needed = (next_lba + BACKUP_LBAS) * SECTOR;
    let size_bytes = needed
        .max(min_size)
        .checked_next_multiple_of(size_multiple)
        .context("disk size overflows u64")?;
    Ok(DiskLayout {
        disk_guid,
        size_bytes,
        partitions,
    })
}

/// Checks one partition's identity and that its source fits.
fn check_partition(part: &PartitionPlan) -> Result<()> {
    let units = part.name.encode_utf16().count();
    ensure!(
        units <= NAME_UNITS,
        "partition name {:?} is {units} UTF-16 units; GPT names hold {NAME_UNITS}",
        part.name
    );
    ensure!(
        !part.type_guid.is_nil(),
        "partition {:?} has a nil type GUID",
        part.name
    );
    ensure!(part.size > 0, "partition {:?} has size 0", part.name);
    let len = source_len(part)?;
    ensure!(
        len <= part.size,
        "partition {:?}: source {} is {len} bytes, more than the partition size {}",
        part.name,
        part.source.display(),
        part.size
    );
    Ok(())
}

fn source_len(part: &PartitionPlan) -> Result<u64> {
    let meta = std::fs::metadata(&part.source).with_context(|| {
        format!(
            "partition {:?}: reading source {}",
            part.name,
            part.source.display()
        )
    })?;
    ensure!(
        meta.is_file(),
        "partition {:?}: source {} is not a regular file",
        part.name,
        part.source.display()
    );
    Ok(meta.len())
}

/// The disk GUID and all partition GUIDs must differ (and not be nil): firmware and udev
/// identify partitions by them.
fn check_unique_guids(disk_guid: Uuid, parts: &[PartitionPlan]) -> Result<()> {
    ensure!(!disk_guid.is_nil(), "the disk GUID is nil");
    let mut seen = std::collections::BTreeMap::new();
    seen.insert(disk_guid, "the disk");
    for part in parts {
        ensure!(
            !part.uuid.is_nil(),
            "partition {:?} has a nil UUID",
            part.name
        );
        if let Some(other) = seen.insert(part.uuid, part.name.as_str()) {
            bail!(
                "partition {:?} reuses GUID {} of {other}",
                part.name,
                part.uuid
            );
        }
    }
    Ok(())
}

/// Writes the raw disk image `out` for `layout` (from [`plan`] over the same `parts`).
///
/// The file is created at its final size and only non-zero data is written: partition
/// contents are streamed from their sources in large reads, and all-zero 64 KiB runs are
/// skipped, so the image stays sparse. No partition is ever held in memory.
pub fn write_disk(out: &Path, layout: &DiskLayout, parts: &[PartitionPlan]) -> Result<()> {
    check_layout_matches(layout, parts)?;
    let file = create_with_table(out, layout)?;
    for (placed, part) in layout.partitions.iter().zip(parts) {
        copy_sparse(
            &part.source,
            &file,
            placed.first_lba * SECTOR,
            placed.size_bytes,
        )
        .with_context(|| {
            format!(
                "copying {} into partition {} ({:?}) of {}",
                part.source.display(),
                placed.number,
                placed.name,
                out.display()
            )
        })?;
    }
    Ok(())
}

/// Writes a sparse disk image of `layout` holding the protective MBR and both GPTs but no
/// partition content: all that the firmware measures of a disk (PCR 5, [`gpt_event_data`]). The
/// build predicts from it before the ESP's unmeasured files (the golden measurement) exist.
pub fn write_table(out: &Path, layout: &DiskLayout) -> Result<()> {
    create_with_table(out, layout).map(drop)
}

/// Creates `out` at the layout's size (a hole) with its partition table written.
fn create_with_table(out: &Path, layout: &DiskLayout) -> Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating disk image {}", out.display()))?;
    file.set_len(layout.size_bytes).with_context(|| {
        format!(
            "sizing disk image {} to {} bytes",
            out.display(),
            layout.size_bytes
        )
    })?;
    write_partition_table(&mut file, layout)
        .with_context(|| format!("writing the GPT of {}", out.display()))?;
    Ok(file)
}

/// The layout must describe exactly these partitions, in this order.
fn check_layout_matches(layout: &DiskLayout, parts: &[PartitionPlan]) -> Result<()> {
    ensure!(
        layout.partitions.len() == parts.len(),
        "layout has {} partitions but {} were given",
        layout.partitions.len(),
        parts.len()
    );
    ensure!(
        layout.size_bytes.is_multiple_of(SECTOR),
        "disk size {} is not a multiple of {SECTOR}",
        layout.size_bytes
    );
    for (placed, part) in layout.partitions.iter().zip(parts) {
        ensure!(
            placed.name == part.name
                && placed.type_guid == part.type_guid
                && placed.uuid == part.uuid
                && placed.attributes == part.attributes,
            "layout partition {} ({:?}) does not match the plan for {:?}: re-run gpt::plan",
            placed.number,
            placed.name,
            part.name
        );
        ensure!(
            (1..=ENTRY_COUNT).contains(&u64::from(placed.number))
                && placed.last_lba >= placed.first_lba
                && placed.size_bytes == (placed.last_lba - placed.first_lba + 1) * SECTOR,
            "layout partition {} ({:?}) has inconsistent number/LBAs/size",
            placed.number,
            placed.name
        );
    }
    Ok(())
}

/// Protective MBR, primary and backup GPT (gptman checks overlap, bounds and GUID uniqueness).
fn write_partition_table(file: &mut File, layout: &DiskLayout) -> Result<()> {
    let mut gpt = GPT::new_from(file, SECTOR, to_gpt_bytes(layout.disk_guid))?;
    gpt.align = ALIGN_LBAS;
    for p in &layout.partitions {
        gpt[p.number] = GPTPartitionEntry {
            partition_type_guid: to_gpt_bytes(p.type_guid),
            unique_partition_guid: to_gpt_bytes(p.uuid),
            starting_lba: p.first_lba,
            ending_lba: p.last_lba,
            attribute_bits: p.attributes,
            partition_name: p.name.as_str().into(),
        };
    }
    gpt.write_into(file)?;
    GPT::write_protective_mbr_into(file, SECTOR)?;
    Ok(())
}

/// Streams `source` to `offset` of `out`, skipping all-zero runs; fails if it exceeds `capacity`.
fn copy_sparse(source: &Path, out: &File, offset: u64, capacity: u64) -> Result<()> {
    let mut src =
        File::open(source).with_context(|| format!("opening source {}", source.display()))?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    loop {
        let n = read_full(&mut src, &mut buffer)
            .with_context(|| format!("reading {}", source.display()))?;
        if n == 0 {
            return Ok(());
        }
        ensure!(
            copied + n as u64 <= capacity,
            "source {} is larger than its {capacity}-byte partition (did it change after planning?)",
            source.display()
        );
        write_non_zero(out, &buffer[..n], offset + copied)?;
        copied += n as u64;
    }
}

/// Fills `buffer` as far as the source allows; returns the byte count (0 at end of file).
fn read_full(src: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match src.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes the non-zero [`HOLE_GRANULE`] runs of `data` at `offset`, coalesced into large writes.
fn write_non_zero(out: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut run_start = None;
    for (index, chunk) in data.chunks(HOLE_GRANULE).enumerate() {
        let start = index * HOLE_GRANULE;
        match (is_zero(chunk), run_start) {
            (true, Some(from)) => {
                out.write_all_at(&data[from..start], offset + from as u64)?;
                run_start = None;
            }
            (false, None) => run_start = Some(start),
            _ => {}
        }
    }
    if let Some(from) = run_start {
        out.write_all_at(&data[from..], offset + from as u64)?;
    }
    Ok(())
}

/// Branch-free OR over 512-byte blocks (vectorises), stopping at the first non-zero block.
fn is_zero(chunk: &[u8]) -> bool {
    chunk
        .chunks(SECTOR as usize)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// `EFI_GPT_DATA` as the firmware measures it into PCR 5 (docs/measured-boot.md §8): the 92-byte
/// primary header as on disk ‖ UINT64 count of entries with a non-nil type GUID ‖ those
/// entries in table order, `SizeOfPartitionEntry` bytes each.
///
/// The primary header and entry array must be valid (signature, header and array CRCs): when
/// they are not, the firmware measures a header rebuilt from the backup, which is not predicted
/// here.
pub fn gpt_event_data(disk: &Path) -> Result<Vec<u8>> {
    let gpt = read_primary(disk).with_context(|| {
        format!(
            "primary GPT of {} is not valid; the firmware would measure a header rebuilt \
             from the backup, which is not predicted",
            disk.display()
        )
    })?;
    Ok(gpt.event_data())
}

/// The validated primary GPT of `disk`, 512-byte sectors (what this builder writes).
fn read_primary(disk: &Path) -> Result<Gpt> {
    let mut file = File::open(disk).with_context(|| format!("opening disk {}", disk.display()))?;
    Ok(Gpt::read(&mut file, SECTOR)?)
}

/// Reads a disk's partition table back (for `cvm-image inspect` and tests).
///
/// Requires a valid primary GPT: a builder-written image whose primary table is damaged is
/// damaged, and is reported as such rather than read from the backup.
pub fn read_layout(disk: &Path) -> Result<DiskLayout> {
    let size_bytes = std::fs::metadata(disk)
        .with_context(|| format!("reading size of {}", disk.display()))?
        .len();
    let gpt =
        read_primary(disk).with_context(|| format!("reading the GPT of {}", disk.display()))?;
    let partitions = gpt
        .partitions
        .iter()
        .map(|p| PlacedPartition {
            number: p.number,
            name: p.name.clone(),
            type_guid: Uuid::from_bytes(p.type_guid),
            uuid: Uuid::from_bytes(p.unique_guid),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            size_bytes: p.sectors() * SECTOR,
            attributes: p.attributes,
        })
        .collect();
    Ok(DiskLayout {
        disk_guid: Uuid::from_bytes(gpt.header.disk_guid),
        size_bytes,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; len as usize];
        file.read_exact_at(&mut buffer, offset)?;
        Ok(buffer)
    }

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// Runs sgdisk; a missing tool fails the test with the package to install.
    fn sgdisk(args: &[&str]) -> String {
        let out = Command::new("sgdisk")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("sgdisk not runnable ({e}): install gdisk"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "sgdisk {args:?} failed:\n{text}");
        text
    }

    /// Value after `label` on the line that starts with it.
    fn field<'a>(text: &'a str, label: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
            .trim()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    /// A 256-bit "root hash" whose two halves become the verity pair's partition UUIDs.
    const ROOT_HASH: &str = "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210";

    /// ESP, root + verity, workload + verity; the workload is 64 MiB of mostly zeros.
    fn sources(tmp: &TempDir) -> Vec<PartitionPlan> {
        let write = |name: &str, data: &[u8]| {
            let path = tmp.join(name);
            std::fs::write(&path, data).unwrap();
            path
        };
        let workload = tmp.join("workload.img");
        let file = File::create(&workload).unwrap();
        file.set_len(64 * MIB).unwrap();
        file.write_all_at(&pattern(4096, 7), 0).unwrap();
        file.write_all_at(&pattern(100, 9), 32 * MIB + 12_345)
            .unwrap();

        let hash = hex::decode(ROOT_HASH).unwrap();
        let (root_uuid, verity_uuid) = cvm_disk::verity_pair::partition_uuids(&hash).unwrap();
        let (root_uuid, verity_uuid) = (Uuid::from_bytes(root_uuid), Uuid::from_bytes(verity_uuid));
        let part = |name: &str, type_guid, uuid, source: PathBuf, size, attributes| PartitionPlan {
            name: name.into(),
            type_guid,
            uuid,
            source,
            size,
            attributes,
        };
        vec![
            part(
                "esp",
                ESP_TYPE,
                derive_guid(b"test", "esp"),
                write("esp.img", &pattern(2 * MIB as usize + 100, 1)),
                3 * MIB,
                0,
            ),
            part(
                "root",
                ROOT_X86_64_TYPE,
                root_uuid,
                write("root.img", &pattern(MIB as usize, 2)),
                1_500_000,
                ATTR_READ_ONLY,
            ),
            part(
                "root-verity",
                ROOT_VERITY_X86_64_TYPE,
                verity_uuid,
                write("root.verity", &pattern(12_288, 3)),
                12_288,
                ATTR_READ_ONLY,
            ),
            part(
                "workload",
                WORKLOAD_TYPE,
                derive_guid(b"test", "wl"),
                workload,
                64 * MIB,
                ATTR_READ_ONLY | ATTR_NO_AUTO,
            ),
            part(
                "workload-verity",
                WORKLOAD_VERITY_TYPE,
                derive_guid(b"test", "wlv"),
                write("wl.verity", &pattern(8192, 4)),
                8192,
                ATTR_READ_ONLY | ATTR_NO_AUTO,
            ),
        ]
    }

    fn disk_guid() -> Uuid {
        derive_guid(b"test", "disk")
    }

    #[test]
    fn derived_guids_match_python_uuid5() {
        // python3: ns = uuid5(NAMESPACE_URL, "urn:cvm-image"); uuid5(uuid5(ns, NS), NAME)
        assert_eq!(
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:cvm-image"),
            CVM_IMAGE_NAMESPACE
        );
        assert_eq!(
            derive_guid(b"gpt-partition-type", "workload"),
            WORKLOAD_TYPE
        );
        assert_eq!(
            derive_guid(b"gpt-partition-type", "workload-verity"),
            WORKLOAD_VERITY_TYPE
        );
        assert_eq!(
            derive_guid(b"disk", "example"),
            uuid!("f740025f-86bc-5360-9755-a13be70b152f")
        );
    }

    #[test]
    fn plan_aligns_and_sizes_the_disk() {
        let tmp = TempDir::new("plan");
        let parts = sources(&tmp);
        // Partitions: 1 MiB gap + 3 + 2 + 1 + 64 + 1 MiB = 72 MiB; the backup GPT's 33 sectors
        // need one more MiB when the disk is a whole number of MiB.
        let azure = plan(disk_guid(), &parts, MIB, 0).unwrap();
        assert_eq!(azure.size_bytes, 73 * MIB);
        let lbas: Vec<(u64, u64)> = azure
            .partitions
            .iter()
            .map(|p| (p.first_lba, p.last_lba))
            .collect();
        assert_eq!(
            lbas,
            [
                (2048, 8191),
                (8192, 12287),
                (12288, 14335),
                (14336, 145407),
                (145408, 147455)
            ]
        );
        assert_eq!(plan(disk_guid(), &parts, GIB, 0).unwrap().size_bytes, GIB);
        assert_eq!(
            plan(disk_guid(), &parts, MIB, 100 * MIB)
                .unwrap()
                .size_bytes,
            100 * MIB
        );
        assert_eq!(
            plan(disk_guid(), &parts, GIB, GIB + 1).unwrap().size_bytes,
            2 * GIB
        );
    }

    #[test]
    fn plan_rejects_bad_input() {
        let tmp = TempDir::new("bad");
        let parts = sources(&tmp);
        let err = |parts: &[PartitionPlan], multiple| {
            format!("{:#}", plan(disk_guid(), parts, multiple, 0).unwrap_err())
        };
        assert!(err(&parts, 0).contains("multiple"));
        assert!(err(&parts, 100).contains("multiple"));
        assert!(err(&[], MIB).contains("at least one partition"));

        let mut small = parts.clone();
        small[1].size = 1000;
        assert!(
            err(&small, MIB).contains("more than the partition size"),
            "{}",
            err(&small, MIB)
        );
        let mut dup = parts.clone();
        dup[4].uuid = dup[3].uuid;
        assert!(err(&dup, MIB).contains("reuses GUID"));
        let mut disk = parts.clone();
        disk[0].uuid = disk_guid();
        assert!(err(&disk, MIB).contains("reuses GUID"));
        let mut long = parts.clone();
        long[0].name = "x".repeat(37);
        assert!(err(&long, MIB).contains("UTF-16"));
        let mut missing = parts;
        missing[2].source = tmp.join("absent");
        assert!(err(&missing, MIB).contains("absent"));
    }

    #[test]
    fn disk_checks_with_sgdisk_and_reads_back() {
        let tmp = TempDir::new("disk");
        let parts = sources(&tmp);
        let layout = plan(disk_guid(), &parts, GIB, 0).unwrap();
        let disk = tmp.join("disk.raw");
        write_disk(&disk, &layout, &parts).unwrap();
        let disk_arg = disk.to_str().unwrap();

        // Size honoured; the image stays sparse (data ≈ 4 MiB of a 1 GiB file).
        let meta = std::fs::metadata(&disk).unwrap();
        assert_eq!(meta.len(), GIB);
        assert!(
            meta.blocks() * 512 < 8 * MIB,
            "{} bytes allocated",
            meta.blocks() * 512
        );

        let verify = sgdisk(&["-v", disk_arg]);
        assert!(verify.contains("No problems found"), "sgdisk -v:\n{verify}");

        let print = sgdisk(&["-p", disk_arg]);
        let total_lbas = GIB / SECTOR;
        assert!(
            print.contains(&format!(": {total_lbas} sectors")),
            "{print}"
        );
        assert_eq!(
            field(&print, "Disk identifier (GUID):"),
            disk_guid().to_string().to_uppercase()
        );
        assert_eq!(
            field(&print, "First usable sector is"),
            format!("34, last usable sector is {}", total_lbas - 34)
        );
        let rows: Vec<Vec<&str>> = print
            .lines()
            .skip_while(|l| !l.starts_with("Number"))
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), parts.len(), "{print}");

        for (row, placed) in rows.iter().zip(&layout.partitions) {
            // Number, Start, End, Size, unit, Code, Name
            assert_eq!(row[0], placed.number.to_string());
            assert_eq!(row[1], placed.first_lba.to_string());
            assert_eq!(row[2], placed.last_lba.to_string());
            assert_eq!(row[6], placed.name);

            let info = sgdisk(&["-i", &placed.number.to_string(), disk_arg]);
            let type_text = field(&info, "Partition GUID code:");
            assert!(
                type_text.starts_with(&placed.type_guid.to_string().to_uppercase()),
                "{info}"
            );
            assert_eq!(
                field(&info, "Partition unique GUID:"),
                placed.uuid.to_string().to_uppercase()
            );
            assert!(field(&info, "First sector:").starts_with(&format!("{} ", placed.first_lba)));
            assert!(field(&info, "Last sector:").starts_with(&format!("{} ", placed.last_lba)));
            assert_eq!(
                field(&info, "Attribute flags:"),
                format!("{:016X}", placed.attributes)
            );
            assert_eq!(
                field(&info, "Partition name:"),
                format!("'{}'", placed.name)
            );
        }
        // sgdisk names the DPS types; the verity pair carries the root hash halves.
        assert!(
            field(&sgdisk(&["-i", "1", disk_arg]), "Partition GUID code:").contains("EFI system")
        );
        let root = sgdisk(&["-i", "2", disk_arg]);
        assert_eq!(
            field(&root, "Partition unique GUID:"),
            "00112233-4455-6677-8899-AABBCCDDEEFF"
        );
        assert_eq!(field(&root, "Attribute flags:"), "1000000000000000");

        // Contents at the LBAs: the source, then zeros to the partition's end.
        let image = File::open(&disk).unwrap();
        for (placed, part) in layout.partitions.iter().zip(&parts) {
            let got = read_at(&image, placed.first_lba * SECTOR, placed.size_bytes).unwrap();
            let source = std::fs::read(&part.source).unwrap();
            assert!(
                got[..source.len()] == source[..],
                "partition {} content differs",
                placed.name
            );
            assert!(
                got[source.len()..].iter().all(|&b| b == 0),
                "{} tail not zero",
                placed.name
            );
        }

        // Backup header in the real last sector, pointing back at LBA 1 and its entries.
        let last = read_at(&image, GIB - SECTOR, SECTOR).unwrap();
        let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        assert_eq!(&last[..8], b"EFI PART");
        assert_eq!(le64(&last, 24), total_lbas - 1, "backup MyLBA");
        assert_eq!(le64(&last, 32), 1, "backup AlternateLBA");
        assert_eq!(le64(&last, 72), total_lbas - 33, "backup PartitionEntryLBA");
        let mbr = read_at(&image, 0, SECTOR).unwrap();
        assert_eq!(mbr[446 + 4], 0xee, "protective MBR type");
        assert_eq!(&mbr[510..], [0x55, 0xaa]);

        assert_eq!(read_layout(&disk).unwrap(), layout);
    }

    #[test]
    fn esp_partition_is_readable_inside_the_disk() {
        let tmp = TempDir::new("esp");
        let uki = pattern(300_000, 11);
        let esp_img = tmp.join("real-esp.img");
        let esp_size = crate::esp::fit_size(uki.len() as u64);
        let files = [crate::esp::EspFile {
            path: "EFI/BOOT/BOOTX64.EFI",
            data: &uki,
        }];
        crate::esp::write_esp(&esp_img, &files, esp_size, 0x0c0f_fee0, 0).unwrap();
        let mut parts = sources(&tmp);
        parts[0].source = esp_img;
        parts[0].size = esp_size;
        let layout = plan(disk_guid(), &parts, MIB, 0).unwrap();
        let disk = tmp.join("disk.raw");
        write_disk(&disk, &layout, &parts).unwrap();

        // mtools addresses a partition by byte offset: IMAGE@@OFFSET.
        let at = format!(
            "{}@@{}",
            disk.display(),
            layout.partitions[0].first_lba * SECTOR
        );
        let out = Command::new("mtype")
            .args(["-i", &at, "::/EFI/BOOT/BOOTX64.EFI"])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap_or_else(|e| panic!("mtype not runnable ({e}): install mtools"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == uki,
            "BOOTX64.EFI read through the disk differs"
        );
    }

    #[test]
    fn gpt_event_data_is_header_count_and_used_entries() {
        let tmp = TempDir::new("event");
        let parts = sources(&tmp);
        let layout = plan(disk_guid(), &parts, MIB, 0).unwrap();
        let disk = tmp.join("disk.raw");
        write_disk(&disk, &layout, &parts).unwrap();

        let event = gpt_event_data(&disk).unwrap();
        let n = parts.len();
        assert_eq!(event.len(), 92 + 8 + n * 128);
        let raw = std::fs::read(&disk).unwrap();
        assert_eq!(&event[..92], &raw[512..512 + 92], "header = LBA 1");
        assert_eq!(&event[92..100], (n as u64).to_le_bytes());
        assert_eq!(
            &event[100..],
            &raw[1024..1024 + n * 128],
            "entries = LBA 2…"
        );

        // A damaged primary header is refused rather than mis-predicted.
        let mut damaged = raw;
        damaged[512 + 40] ^= 1;
        std::fs::write(&disk, &damaged).unwrap();
        let err = format!("{:#}", gpt_event_data(&disk).unwrap_err());
        assert!(err.contains("primary GPT"), "{err}");
        assert!(read_layout(&disk).is_err());
    }

    #[test]
    fn writes_are_byte_identical() {
        let tmp = TempDir::new("repro");
        let parts = sources(&tmp);
        let layout = plan(disk_guid(), &parts, MIB, 0).unwrap();
        let (a, b) = (tmp.join("a.raw"), tmp.join("b.raw"));
        write_disk(&a, &layout, &parts).unwrap();
        // Overwriting an existing, larger file must not leave old bytes behind.
        std::fs::write(&b, vec![0xff; 80 * MIB as usize]).unwrap();
        write_disk(&b, &layout, &parts).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    }

    #[test]
    fn write_disk_refuses_mismatches() {
        let tmp = TempDir::new("mismatch");
        let mut parts = sources(&tmp);
        let layout = plan(disk_guid(), &parts, MIB, 0).unwrap();
        let disk = tmp.join("disk.raw");
        assert!(write_disk(&disk, &layout, &parts[..4]).is_err());
        // A source that grew past its partition after planning.
        std::fs::write(&parts[4].source, vec![1u8; 2 * MIB as usize]).unwrap();
        let err = format!("{:#}", write_disk(&disk, &layout, &parts).unwrap_err());
        assert!(err.contains("larger than its"), "{err}");
        parts[0].name = "other".into();
        assert!(write_disk(&disk, &layout, &parts).is_err());
    }

    #[test]
    fn zero_runs_become_holes() {
        let tmp = TempDir::new("holes");
        let out = File::create(tmp.join("o")).unwrap();
        out.set_len(8 * MIB).unwrap();
        let mut data = vec![0u8; 4 * MIB as usize];
        data[100] = 1;
        data[3 * MIB as usize + 5] = 2;
        write_non_zero(&out, &data, MIB).unwrap();
        let written = std::fs::read(tmp.join("o")).unwrap();
        assert!(written[MIB as usize..5 * MIB as usize] == data[..]);
        // Two 64 KiB granules hold data; everything else is unallocated.
        assert!(out.metadata().unwrap().blocks() * 512 <= 2 * HOLE_GRANULE as u64);
    }
}

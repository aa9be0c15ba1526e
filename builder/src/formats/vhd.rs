//! Azure image artifact: a fixed VHD — the raw disk followed by one 512-byte big-endian footer
//! (Microsoft "Virtual Hard Disk Image Format Specification" 1.0; docs/formats.md §7).
//!
//! Azure requires the virtual size to be a whole number of MiB; the pipeline sizes `disk.raw` for
//! that, so a raw disk of any other size is rejected here rather than padded (padding would make
//! the VHD's disk differ from `disk.raw`, and its GPT backup header would no longer be at the end).
//!
//! The copy skips zero chunks (the output file gets holes there), so writing a mostly empty 30 GiB
//! disk costs only its data. Timestamp and unique id come from the caller: no clock, no randomness.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use uuid::Uuid;

use super::scan::RawDisk;

pub const FOOTER_SIZE: usize = 512;
/// Azure's size rule for page-blob VHDs.
pub const AZURE_SIZE_MULTIPLE: u64 = 1 << 20;
/// Copy granularity (and hole granularity of the output).
const COPY_CHUNK: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// Footer fields (spec "Hard Disk Footer Format"; offsets in bytes, big-endian).
const COOKIE: &[u8; 8] = b"conectix";
/// `Features`: bit 1 "reserved, must always be set".
const FEATURES_RESERVED: u32 = 0x0000_0002;
const FILE_FORMAT_VERSION: u32 = 0x0001_0000;
/// `Data Offset` for fixed disks: no dynamic header.
const DATA_OFFSET_FIXED: u64 = u64::MAX;
/// `Time Stamp` counts seconds from 2000-01-01 00:00:00 UTC.
const VHD_EPOCH_UNIX: u64 = 946_684_800;
/// `Creator Application` "win " (Hyper-V), as Microsoft's own VHD tools stamp it. Readers decide
/// from this field whether the disk size is `Current Size` or the CHS product: qemu uses CHS for
/// unknown creators (and for "vpc "/"qemu"), which would cut a 129 MiB disk to 128.97 MiB; with
/// "win " every reader — Azure, Hyper-V, qemu — takes `Current Size`, the exact raw size.
const CREATOR_APP: &[u8; 4] = b"win ";
const CREATOR_VERSION: u32 = 0x0001_0000;
/// `Creator Host OS`: "Wi2k", what Microsoft's tools write and Azure expects to see.
const CREATOR_HOST_OS: &[u8; 4] = b"Wi2k";
/// `Disk Type` 2 = fixed hard disk.
const DISK_TYPE_FIXED: u32 = 2;

/// Writes `out` = `raw` + VHD footer. `timestamp` is Unix seconds (SOURCE_DATE_EPOCH), stored
/// relative to 2000-01-01 and clamped into the field's range.
pub fn write_fixed(raw: &Path, out: &Path, timestamp: u64, unique_id: Uuid) -> Result<()> {
    let disk = RawDisk::open(raw)?;
    ensure!(
        disk.size > 0 && disk.size % AZURE_SIZE_MULTIPLE == 0,
        "raw disk {} is {} bytes; an Azure fixed VHD needs a whole number of MiB — \
         build with the azure target so the disk is sized for it",
        raw.display(),
        disk.size
    );
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    file.set_len(disk.size)
        .with_context(|| format!("sizing {}", out.display()))?;
    copy_nonzero(&disk, &file, out)?;
    let footer = footer(disk.size, timestamp, unique_id);
    file.write_all_at(&footer, disk.size)
        .with_context(|| format!("writing the VHD footer of {}", out.display()))
}

/// Copies every non-zero chunk to the same offset; the rest of `out` stays a hole (reads as zero).
fn copy_nonzero(disk: &RawDisk, out: &File, out_path: &Path) -> Result<()> {
    for chunk in disk.nonzero_chunks(COPY_CHUNK) {
        let (index, bytes) = chunk?;
        out.write_all_at(&bytes, index * COPY_CHUNK)
            .with_context(|| format!("writing {}", out_path.display()))?;
    }
    Ok(())
}

/// The 512-byte footer for a fixed disk of `size` bytes.
pub fn footer(size: u64, timestamp: u64, unique_id: Uuid) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    f[0..8].copy_from_slice(COOKIE);
    f[8..12].copy_from_slice(&FEATURES_RESERVED.to_be_bytes());
    f[12..16].copy_from_slice(&FILE_FORMAT_VERSION.to_be_bytes());
    f[16..24].copy_from_slice(&DATA_OFFSET_FIXED.to_be_bytes());
    f[24..28].copy_from_slice(&vhd_timestamp(timestamp).to_be_bytes());
    f[28..32].copy_from_slice(CREATOR_APP);
    f[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
    f[36..40].copy_from_slice(CREATOR_HOST_OS);
    f[40..48].copy_from_slice(&size.to_be_bytes()); // Original Size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // Current Size
    let chs = Geometry::for_sectors(size / SECTOR);
    f[56..58].copy_from_slice(&chs.cylinders.to_be_bytes());
    f[58] = chs.heads;
    f[59] = chs.sectors_per_track;
    f[60..64].copy_from_slice(&DISK_TYPE_FIXED.to_be_bytes());
    f[68..84].copy_from_slice(unique_id.as_bytes());
    // 84 Saved State 0, 85.. reserved zeros.
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// One's complement of the byte sum of the footer, taken with the checksum field (64..68) zero.
pub fn checksum(footer: &[u8; FOOTER_SIZE]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

fn vhd_timestamp(unix: u64) -> u32 {
    u32::try_from(unix.saturating_sub(VHD_EPOCH_UNIX)).unwrap_or(u32::MAX)
}

/// Cylinders / heads / sectors-per-track as the VHD specification's appendix computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
}

impl Geometry {
    /// Largest addressable CHS size: 65535 cylinders × 16 heads × 255 sectors.
    const MAX_SECTORS: u64 = 65535 * 16 * 255;

    /// The spec's "CHS calculation" algorithm, verbatim in structure.
    pub fn for_sectors(total: u64) -> Self {
        let total = total.min(Self::MAX_SECTORS);
        let (spt, heads, cyl_times_heads);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cyl_times_heads = total / spt;
        } else {
            let mut s = 17;
            let mut cth = total / s;
            let mut h = cth.div_ceil(1024).max(4);
            if cth >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                cth = total / s;
            }
            if cth >= h * 1024 {
                s = 63;
                h = 16;
                cth = total / s;
            }
            spt = s;
            heads = h;
            cyl_times_heads = cth;
        }
        Self {
            cylinders: (cyl_times_heads / heads) as u16,
            heads: heads as u8,
            sectors_per_track: spt as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testutil::{
        assert_qemu_identical, make_test_disk, run, scratch_dir, sha256_file, MIB,
    };

    fn read_footer(path: &Path) -> Result<[u8; FOOTER_SIZE]> {
        let f = File::open(path)?;
        let len = f.metadata()?.len();
        let mut footer = [0u8; FOOTER_SIZE];
        f.read_exact_at(&mut footer, len - FOOTER_SIZE as u64)?;
        Ok(footer)
    }

    #[test]
    fn qemu_img_accepts_it_and_reads_the_raw_disk_back() -> Result<()> {
        let dir = scratch_dir("vhd")?;
        let raw = make_test_disk(&dir, 129 * MIB)?;
        let vhd = dir.join("azure-disk.vhd");
        let id = Uuid::from_bytes([7; 16]);
        write_fixed(&raw, &vhd, 1_700_000_000, id)?;
        assert_eq!(std::fs::metadata(&vhd)?.len(), 129 * MIB + 512);

        run("qemu-img", &["check", "-f", "vpc", vhd.to_str().unwrap()]).or_else(|e| {
            // qemu-img 7.2 cannot "check" vpc images at all; info must still accept it.
            if format!("{e:#}").contains("does not support checks") {
                Ok(String::new())
            } else {
                Err(e)
            }
        })?;
        let info = run(
            "qemu-img",
            &["info", "--output=json", "-f", "vpc", vhd.to_str().unwrap()],
        )?;
        let info: serde_json::Value = serde_json::from_str(&info)?;
        assert_eq!(info["virtual-size"], 129 * MIB, "{info}");
        assert_qemu_identical(&raw, &vhd, "vpc")?;

        // Independent reference: qemu's own fixed VHD of the same disk. With force_size qemu stores the
        // maximum CHS (65535/16/255) as its "use Current Size" marker instead of the spec's CHS, so the
        // geometry is compared in `geometry_matches_qemu_img_for_many_sizes` instead.
        let reference = dir.join("qemu.vhd");
        run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed,force_size=on",
                raw.to_str().unwrap(),
                reference.to_str().unwrap(),
            ],
        )?;
        let ours = read_footer(&vhd)?;
        let theirs = read_footer(&reference)?;
        assert_eq!(
            theirs[56..60],
            [0xff, 0xff, 16, 255],
            "qemu-img's force_size marker changed"
        );
        assert_eq!(
            ours[40..56],
            theirs[40..56],
            "original/current size differ from qemu-img's"
        );
        assert_eq!(ours[60..64], theirs[60..64], "disk type differs");
        assert_eq!(
            ours[0..24],
            theirs[0..24],
            "cookie/features/version/data offset differ"
        );
        assert_eq!(
            checksum(&theirs).to_be_bytes(),
            theirs[64..68],
            "checksum rule disagrees with qemu-img"
        );
        assert_eq!(
            &ours[24..28],
            &(1_700_000_000u32 - 946_684_800).to_be_bytes()
        );
        assert_eq!(&ours[68..84], id.as_bytes());

        let again = dir.join("again.vhd");
        write_fixed(&raw, &again, 1_700_000_000, id)?;
        assert_eq!(sha256_file(&again)?, sha256_file(&vhd)?, "two runs differ");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn qemu_img_rejects_a_wrong_checksum_so_the_check_above_means_something() -> Result<()> {
        let dir = scratch_dir("vhd-bad")?;
        let raw = dir.join("r.raw");
        File::create(&raw)?.set_len(4 * MIB)?;
        let vhd = dir.join("bad.vhd");
        write_fixed(&raw, &vhd, 0, Uuid::nil())?;
        let f = OpenOptions::new().write(true).open(&vhd)?;
        f.write_all_at(&[0xff], 4 * MIB + 67)?; // last byte of the checksum
        assert!(run("qemu-img", &["info", "-f", "vpc", vhd.to_str().unwrap()]).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn geometry_matches_qemu_img_for_many_sizes() -> Result<()> {
        // Without force_size qemu-img runs the spec's CHS algorithm and stores the CHS product as
        // Current Size; our geometry for that size must be qemu's geometry.
        let dir = scratch_dir("vhd-geom")?;
        // Sizes crossing each branch of the algorithm: 17, 31 and 63 sectors/track, 255 at the top.
        for mib in [
            1u64, 3, 20, 100, 129, 500, 1024, 2047, 4096, 40_000, 130_000,
        ] {
            let path = dir.join(format!("{mib}.vhd"));
            let size = format!("{}", mib * MIB);
            run(
                "qemu-img",
                &[
                    "create",
                    "-q",
                    "-f",
                    "vpc",
                    "-o",
                    "subformat=fixed",
                    path.to_str().unwrap(),
                    &size,
                ],
            )?;
            let theirs = read_footer(&path)?;
            let their_size = u64::from_be_bytes(theirs[48..56].try_into()?);
            let ours = footer(their_size, 0, Uuid::nil());
            assert_eq!(
                ours[56..60],
                theirs[56..60],
                "geometry for {their_size} bytes ({mib} MiB asked)"
            );
            assert_eq!(checksum(&theirs).to_be_bytes(), theirs[64..68]);
            std::fs::remove_file(&path)?;
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_size_that_is_not_whole_mib_is_refused() -> Result<()> {
        let dir = scratch_dir("vhd-size")?;
        let raw = dir.join("odd.raw");
        File::create(&raw)?.set_len(MIB + 512)?;
        let err = write_fixed(&raw, &dir.join("x.vhd"), 0, Uuid::nil()).unwrap_err();
        assert!(
            format!("{err:#}").contains("whole number of MiB"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

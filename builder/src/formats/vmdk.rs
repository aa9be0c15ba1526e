//! AWS image artifact: a streamOptimized VMDK (VMware "Virtual Disk Format" 5.0, sparse extent
//! with compressed grains and markers), the format `ec2 import-snapshot` takes.
//!
//! Layout written (one pass, in disk order, so it could be piped):
//! sector 0 header (gdOffset = "GD at end") · descriptor · padding to [`OVERHEAD_SECTORS`] ·
//! for every non-zero 64 KiB grain: grain marker {lba, size} + zlib data, padded to a sector ·
//! after the grains of each 32 MiB span that has any: GT marker + grain table · GD marker + grain
//! directory · footer marker + footer (header copy with the real gdOffset) · end-of-stream marker.
//! All-zero grains are not stored (GT entry 0); a span with no grain gets no grain table (GD entry 0).
//!
//! qemu-img 7.2 writes a different but equally valid variant (GD and all GTs pre-allocated in the
//! header area, no footer); VMware's own stream writer, and AWS, use the footer form written here.
//! The CID is the caller's (derived from the build seed): qemu-img picks a random one.
//!
//! Grain compression is independent per grain: batches of grains are compressed on every core and
//! written in order (see `parallel`), so the output does not depend on thread timing.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use super::compress::zlib;
use super::parallel::ordered_map;
use super::scan::RawDisk;

const SECTOR: u64 = 512;
/// `SparseExtentHeader.magicNumber`: "KDMV" read as a little-endian u32.
const MAGIC: u32 = 0x564d_444b;
/// `version` 3: the version that allows compressed grains with markers.
const VERSION: u32 = 3;
/// `flags`: bit 0 valid new-line detection test, bit 16 compressed grains, bit 17 markers.
const FLAG_NEWLINE_TEST: u32 = 1 << 0;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
/// `grainSize` in sectors: 64 KiB grains, as qemu and VMware write them.
const GRAIN_SECTORS: u64 = 128;
const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
/// `numGTEsPerGT`: 512 grain-table entries, so one grain table covers 32 MiB.
const GTES_PER_GT: u64 = 512;
/// `descriptorOffset` / `descriptorSize` in sectors (qemu reserves 20 sectors too).
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
/// `overHead`: sectors before the first grain; grain-aligned like qemu's.
const OVERHEAD_SECTORS: u64 = GRAIN_SECTORS;
/// `gdOffset` value meaning "read the real one from the footer".
const GD_AT_END: u64 = u64::MAX;
/// `compressAlgorithm` 1 = deflate (zlib-wrapped, RFC 1950).
const COMPRESSION_DEFLATE: u16 = 1;
/// zlib's default level, what qemu-img and VMware use for grains.
const GRAIN_ZLIB_LEVEL: u32 = 6;
/// Metadata marker types.
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// Grains per parallel compression job: amortises per-job overhead, bounds memory (2 MiB in).
const GRAINS_PER_JOB: usize = 32;
/// Descriptor geometry for the IDE adapter, as qemu-img writes it.
const IDE_HEADS: u64 = 16;
const IDE_SECTORS_PER_TRACK: u64 = 63;
const IDE_MAX_CYLINDERS: u64 = 16383;
/// `ddb.virtualHWVersion` "6" (`qemu-img -o compat6`), the value the seed used for AWS import.
const VIRTUAL_HW_VERSION: u32 = 6;

/// Writes `out` as a streamOptimized VMDK of `raw`; the descriptor names the extent after `out`'s
/// file name. See [`write_stream_optimized_named`] when writing under a temporary name.
pub fn write_stream_optimized(raw: &Path, out: &Path, cid: u32) -> Result<()> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", out.display()))?;
    write_stream_optimized_named(raw, out, cid, name)
}

/// As [`write_stream_optimized`], with the extent file name for the descriptor given explicitly
/// (the artifact's final name when `out` is a temporary file).
pub fn write_stream_optimized_named(
    raw: &Path,
    out: &Path,
    cid: u32,
    extent_name: &str,
) -> Result<()> {
    let disk = RawDisk::open(raw)?;
    ensure!(
        disk.size % SECTOR == 0,
        "raw disk {} is {} bytes, not a whole number of 512-byte sectors",
        raw.display(),
        disk.size
    );
    let capacity = disk.size / SECTOR;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = StreamWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        sector: 0,
    };

    let header = sparse_header(capacity, GD_AT_END);
    w.write_padded(&header)?;
    w.write_padded(&descriptor(cid, capacity, extent_name)?)?;
    w.pad_to_sector(OVERHEAD_SECTORS)?;

    let n_gts = capacity.div_ceil(GRAIN_SECTORS).div_ceil(GTES_PER_GT);
    let mut tables = GrainTables::new(n_gts);
    let jobs = batches(disk.nonzero_chunks(GRAIN_BYTES), GRAINS_PER_JOB);
    ordered_map(jobs, compress_batch, |grains| {
        for (index, data) in grains {
            tables.flush_before(index / GTES_PER_GT, &mut w)?;
            tables.set(index, w.sector)?;
            w.write_grain(index * GRAIN_SECTORS, &data)?;
        }
        Ok(())
    })?;
    tables.flush_before(n_gts, &mut w)?;

    w.write_metadata_marker(tables.directory_sectors(), MARKER_GD)?;
    let gd_offset = w.sector;
    w.write_padded(&tables.directory_bytes())?;
    w.write_metadata_marker(1, MARKER_FOOTER)?;
    w.write_padded(&sparse_header(capacity, gd_offset))?;
    w.write_metadata_marker(0, MARKER_EOS)?;
    w.out
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("flushing {}", out.display()))
}

/// The 512-byte `SparseExtentHeader` (little-endian fields at the offsets of the VMDK spec).
fn sparse_header(capacity: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&(FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS).to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // 48..56 rgdOffset: 0, no redundant grain directory in a stream.
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD_SECTORS.to_le_bytes());
    // 72 uncleanShutdown 0; 73..77 the new-line detection characters.
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&COMPRESSION_DEFLATE.to_le_bytes());
    h
}

/// The embedded descriptor text, qemu-img's layout with a fixed CID and compat6 hardware version.
fn descriptor(cid: u32, capacity: u64, extent_name: &str) -> Result<Vec<u8>> {
    ensure!(
        !extent_name.contains('"') && !extent_name.contains('\n'),
        "VMDK extent name {extent_name:?} cannot be quoted in a descriptor"
    );
    let cylinders = (capacity / (IDE_HEADS * IDE_SECTORS_PER_TRACK)).min(IDE_MAX_CYLINDERS);
    let text = format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{extent_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"{VIRTUAL_HW_VERSION}\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"{IDE_HEADS}\"\n\
         ddb.geometry.sectors = \"{IDE_SECTORS_PER_TRACK}\"\n\
         ddb.adapterType = \"ide\"\n\
         ddb.toolsVersion = \"2147483647\"\n"
    );
    ensure!(
        text.len() as u64 <= DESCRIPTOR_SECTORS * SECTOR,
        "VMDK descriptor ({} bytes) exceeds its {DESCRIPTOR_SECTORS} sectors",
        text.len()
    );
    let mut bytes = text.into_bytes();
    bytes.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    Ok(bytes)
}

/// Groups consecutive non-zero grains into jobs of up to `n`.
fn batches<I>(grains: I, n: usize) -> impl Iterator<Item = Result<Vec<(u64, Vec<u8>)>>> + Send
where
    I: Iterator<Item = Result<(u64, Vec<u8>)>> + Send,
{
    let mut grains = grains.peekable();
    std::iter::from_fn(move || {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            match grains.next()? {
                Ok(g) => batch.push(g),
                Err(e) => return Some(Err(e)),
            }
            if grains.peek().is_none() {
                break;
            }
        }
        Some(Ok(batch))
    })
}

/// zlib-compresses each grain of a batch (a short last grain is zero-padded to a full grain, as
/// qemu does; incompressible grains are stored, see `compress`).
fn compress_batch(batch: Vec<(u64, Vec<u8>)>) -> Result<Vec<(u64, Vec<u8>)>> {
    batch
        .into_iter()
        .map(|(index, mut data)| {
            data.resize(GRAIN_BYTES as usize, 0);
            Ok((
                index,
                zlib(&data, GRAIN_ZLIB_LEVEL)
                    .with_context(|| format!("compressing grain {index}"))?,
            ))
        })
        .collect()
}

/// Output with a running position in sectors; every record is padded to a sector.
struct StreamWriter {
    out: BufWriter<File>,
    sector: u64,
}

impl StreamWriter {
    fn write_padded(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        let padded = (bytes.len() as u64).next_multiple_of(SECTOR);
        self.out
            .write_all(&vec![0u8; (padded - bytes.len() as u64) as usize])?;
        self.sector += padded / SECTOR;
        Ok(())
    }

    fn pad_to_sector(&mut self, sector: u64) -> Result<()> {
        let gap = sector
            .checked_sub(self.sector)
            .context("VMDK metadata overran its reserved area")?;
        self.out.write_all(&vec![0u8; (gap * SECTOR) as usize])?;
        self.sector = sector;
        Ok(())
    }

    /// Grain marker {lba: u64, size: u32} immediately followed by the compressed data.
    fn write_grain(&mut self, lba: u64, compressed: &[u8]) -> Result<()> {
        let mut record = Vec::with_capacity(12 + compressed.len());
        record.extend_from_slice(&lba.to_le_bytes());
        record.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
        record.extend_from_slice(compressed);
        self.write_padded(&record)
    }

    /// Metadata marker {numSectors: u64, size: u32 = 0, type: u32}, alone in its sector.
    fn write_metadata_marker(&mut self, num_sectors: u64, kind: u32) -> Result<()> {
        let mut m = [0u8; SECTOR as usize];
        m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        self.write_padded(&m)
    }
}

/// The grain table being filled and the grain directory.
struct GrainTables {
    directory: Vec<u32>,
    current: u64,
    table: Vec<u32>,
    used: bool,
}

impl GrainTables {
    fn new(n_gts: u64) -> Self {
        Self {
            directory: vec![0; n_gts as usize],
            current: 0,
            table: vec![0; GTES_PER_GT as usize],
            used: false,
        }
    }

    /// Writes the current grain table (when it has any grain) once the stream has moved to table
    /// `next` or beyond, and records where it went in the directory.
    fn flush_before(&mut self, next: u64, w: &mut StreamWriter) -> Result<()> {
        if next <= self.current {
            return Ok(());
        }
        if self.used {
            let gt_sectors = GTES_PER_GT * 4 / SECTOR;
            w.write_metadata_marker(gt_sectors, MARKER_GT)?;
            self.directory[self.current as usize] = sector_u32(w.sector)?;
            let bytes: Vec<u8> = self.table.iter().flat_map(|e| e.to_le_bytes()).collect();
            w.write_padded(&bytes)?;
        }
        self.table.fill(0);
        self.used = false;
        self.current = next;
        Ok(())
    }

    fn set(&mut self, grain: u64, sector: u64) -> Result<()> {
        self.table[(grain % GTES_PER_GT) as usize] = sector_u32(sector)?;
        self.used = true;
        Ok(())
    }

    fn directory_sectors(&self) -> u64 {
        (self.directory.len() as u64 * 4).div_ceil(SECTOR)
    }

    fn directory_bytes(&self) -> Vec<u8> {
        self.directory
            .iter()
            .flat_map(|e| e.to_le_bytes())
            .collect()
    }
}

/// Grain-table and directory entries are 32-bit sector numbers: the file must stay under 2 TiB.
fn sector_u32(sector: u64) -> Result<u32> {
    match u32::try_from(sector) {
        Ok(s) => Ok(s),
        Err(_) => bail!(
            "streamOptimized VMDK would exceed 2 TiB (sector {sector}); VMDK GT entries are 32-bit"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testutil::{
        assert_qemu_identical, make_test_disk, run, scratch_dir, sha256_file, MIB,
    };

    #[test]
    fn qemu_img_accepts_compares_and_converts_back_byte_for_byte() -> Result<()> {
        let dir = scratch_dir("vmdk")?;
        let raw = make_test_disk(&dir, 256 * MIB)?;
        let vmdk = dir.join("aws-disk.vmdk");
        write_stream_optimized(&raw, &vmdk, 0x1234_abcd)?;

        run("qemu-img", &["check", "-f", "vmdk", vmdk.to_str().unwrap()])?;
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
        assert_eq!(info["virtual-size"], 256 * MIB);
        assert_eq!(
            info["format-specific"]["data"]["create-type"],
            "streamOptimized"
        );
        assert_eq!(info["format-specific"]["data"]["cid"], 0x1234_abcd_u32);
        assert_eq!(
            info["format-specific"]["data"]["extents"][0]["compressed"],
            true
        );

        assert_qemu_identical(&raw, &vmdk, "vmdk")?;
        let back = dir.join("back.raw");
        run(
            "qemu-img",
            &[
                "convert",
                "-f",
                "vmdk",
                "-O",
                "raw",
                vmdk.to_str().unwrap(),
                back.to_str().unwrap(),
            ],
        )?;
        assert_eq!(
            sha256_file(&back)?,
            sha256_file(&raw)?,
            "VMDK does not read back as the raw disk"
        );

        let again = dir.join("again.vmdk");
        write_stream_optimized_named(&raw, &again, 0x1234_abcd, "aws-disk.vmdk")?;
        assert_eq!(sha256_file(&again)?, sha256_file(&vmdk)?, "two runs differ");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn header_fields_follow_the_spec() {
        let h = sparse_header(2048, GD_AT_END);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(
            u32::from_le_bytes(h[8..12].try_into().unwrap()),
            0x0003_0001
        );
        assert_eq!(u64::from_le_bytes(h[56..64].try_into().unwrap()), u64::MAX);
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes(h[77..79].try_into().unwrap()), 1);
    }

    #[test]
    fn an_all_zero_disk_has_no_grains_and_reads_back_as_zeros() -> Result<()> {
        let dir = scratch_dir("vmdk-zero")?;
        let raw = dir.join("zero.raw");
        File::create(&raw)?.set_len(64 * MIB)?;
        let vmdk = dir.join("zero.vmdk");
        write_stream_optimized(&raw, &vmdk, 1)?;
        // header + descriptor padded to 128 sectors, GD marker + 1 GD sector, footer marker + footer, EOS.
        assert_eq!(std::fs::metadata(&vmdk)?.len(), (128 + 2 + 2 + 1) * SECTOR);
        run("qemu-img", &["check", vmdk.to_str().unwrap()])?;
        assert_qemu_identical(&raw, &vmdk, "vmdk")?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

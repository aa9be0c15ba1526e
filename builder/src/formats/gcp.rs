//! GCP image artifact: a gzip'd GNU tar holding exactly one member, `disk.raw`.
//!
//! GCP's image import wants `tar --format=oldgnu -S -czf image.tar.gz disk.raw` (sparse allowed).
//! The member is written as an old-GNU sparse file (typeflag `S`): the header carries the map of data
//! regions and the archive stores only their bytes, so a 10 GiB disk with 300 MiB of data costs
//! 300 MiB of deflate work, not 10 GiB. Regions are found at [`SPARSE_CHUNK`] granularity from the
//! disk's content (see `scan`), so the map — and the archive — depend on content only.
//!
//! Reproducibility: owner/group 0 with empty user/group names (numeric), mode 0644, mtime from the
//! caller (SOURCE_DATE_EPOCH), gzip header with MTIME 0 and no file name (like `gzip -n`).
//!
//! Parallel gzip: the tar stream is cut into [`SEGMENT`]-sized pieces, each compressed to raw deflate
//! ending in a sync flush (an empty stored block, byte aligned, BFINAL clear) on its own core; the
//! pieces are concatenated in order into one deflate stream (as pigz does, without the shared
//! dictionary), closed by an empty final block, and the CRC-32s are combined. The result is a single
//! ordinary gzip member, identical for any thread timing. Incompressible segments are stored
//! (see `compress`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use flate2::Crc;

use super::compress::raw_deflate_sync;
use super::parallel::ordered_map;
use super::scan::RawDisk;

/// Name of the single archive member GCP looks for.
pub const MEMBER_NAME: &str = "disk.raw";
/// Tar block size.
const BLOCK: usize = 512;
/// GNU tar's default record (blocking factor 20): archives are padded to a multiple of it.
const RECORD: u64 = 10240;
/// Granularity of hole detection for the sparse map.
const SPARSE_CHUNK: u64 = 64 * 1024;
/// Uncompressed tar bytes per parallel gzip job.
const SEGMENT: usize = 1024 * 1024;
/// gzip's default level (`gzip -6`), what `tar -z` uses.
const GZIP_LEVEL: u32 = 6;

/// gzip member header (RFC 1952 §2.3): ID1 ID2, CM = 8 (deflate), FLG = 0 (no name, no extra),
/// MTIME = 0, XFL = 0, OS = 3 (Unix) — what `gzip -n` writes.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
/// An empty fixed-Huffman block with BFINAL set: ends the concatenated deflate stream.
const DEFLATE_FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

/// GNU tar header field offsets and sizes (GNU tar `src/tar.h`, `struct posix_header` + `oldgnu_header`).
mod hdr {
    pub const NAME: usize = 0;
    pub const MODE: (usize, usize) = (100, 8);
    pub const UID: (usize, usize) = (108, 8);
    pub const GID: (usize, usize) = (116, 8);
    pub const SIZE: (usize, usize) = (124, 12);
    pub const MTIME: (usize, usize) = (136, 12);
    pub const CHKSUM: (usize, usize) = (148, 8);
    pub const TYPEFLAG: usize = 156;
    pub const MAGIC: usize = 257;
    /// Old GNU magic + version: `"ustar  \0"`.
    pub const OLDGNU_MAGIC: &[u8; 8] = b"ustar  \0";
    pub const SPARSE: usize = 386;
    pub const SPARSE_IN_HEADER: usize = 4;
    pub const IS_EXTENDED: usize = 482;
    pub const REALSIZE: (usize, usize) = (483, 12);
    /// Extension block: 21 sparse entries then the isextended flag at 504.
    pub const SPARSE_IN_EXT: usize = 21;
    pub const EXT_IS_EXTENDED: usize = 504;
    /// One sparse entry: offset[12] + numbytes[12].
    pub const SPARSE_ENTRY: usize = 24;
    pub const REGTYPE: u8 = b'0';
    pub const GNUTYPE_SPARSE: u8 = b'S';
    pub const MODE_0644: u64 = 0o644;
}

/// Writes `out` = gzip(GNU tar containing `disk.raw` = the bytes of `raw`) with member mtime `mtime`.
pub fn write_tar_gz(raw: &Path, out: &Path, mtime: u64) -> Result<()> {
    let disk = RawDisk::open(raw)?;
    let map = sparse_map(&disk)?;
    let headers = member_headers(disk.size, &map, mtime)?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&GZIP_HEADER)?;
    let mut crc = Crc::new();
    let segments = TarStream::new(&disk, headers, &map).segments();
    ordered_map(segments, deflate_segment, |(deflated, seg_crc)| {
        crc.combine(&seg_crc);
        w.write_all(&deflated)
            .with_context(|| format!("writing {}", out.display()))
    })?;
    w.write_all(&DEFLATE_FINAL_EMPTY_BLOCK)?;
    w.write_all(&crc.sum().to_le_bytes())?;
    w.write_all(&crc.amount().to_le_bytes())?; // ISIZE: length mod 2^32
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("flushing {}", out.display()))
}

/// Data regions `(offset, length)` of the disk, merged from non-zero [`SPARSE_CHUNK`]s, followed by
/// the GNU convention's terminating entry: a zero-length region at the end of the file when the
/// file ends in a hole (so the map always reaches the real size).
fn sparse_map(disk: &RawDisk) -> Result<Vec<(u64, u64)>> {
    let mut map: Vec<(u64, u64)> = Vec::new();
    for chunk in disk.nonzero_chunks(SPARSE_CHUNK) {
        let (index, bytes) = chunk?;
        let start = index * SPARSE_CHUNK;
        match map.last_mut() {
            Some((off, len)) if *off + *len == start => *len += bytes.len() as u64,
            _ => map.push((start, bytes.len() as u64)),
        }
    }
    if map.last().is_none_or(|&(off, len)| off + len < disk.size) {
        map.push((disk.size, 0));
    }
    Ok(map)
}

/// The header block(s) of the member: a plain file when the map has no hole, else an old-GNU
/// sparse header followed by as many extension blocks as the map needs.
fn member_headers(size: u64, map: &[(u64, u64)], mtime: u64) -> Result<Vec<u8>> {
    let dense = map == [(0, size)];
    let stored: u64 = map.iter().map(|&(_, len)| len).sum();
    let mut h = [0u8; BLOCK];
    h[hdr::NAME..hdr::NAME + MEMBER_NAME.len()].copy_from_slice(MEMBER_NAME.as_bytes());
    put_number(&mut h, hdr::MODE, hdr::MODE_0644)?;
    put_number(&mut h, hdr::UID, 0)?;
    put_number(&mut h, hdr::GID, 0)?;
    put_number(&mut h, hdr::SIZE, stored)?;
    put_number(&mut h, hdr::MTIME, mtime)?;
    h[hdr::MAGIC..hdr::MAGIC + 8].copy_from_slice(hdr::OLDGNU_MAGIC);
    let mut blocks = Vec::new();
    if dense {
        h[hdr::TYPEFLAG] = hdr::REGTYPE;
    } else {
        h[hdr::TYPEFLAG] = hdr::GNUTYPE_SPARSE;
        put_number(&mut h, hdr::REALSIZE, size)?;
        let (first, rest) = map.split_at(map.len().min(hdr::SPARSE_IN_HEADER));
        put_sparse_entries(&mut h, hdr::SPARSE, first)?;
        h[hdr::IS_EXTENDED] = u8::from(!rest.is_empty());
        let exts: Vec<_> = rest.chunks(hdr::SPARSE_IN_EXT).collect();
        for (i, entries) in exts.iter().enumerate() {
            let mut e = [0u8; BLOCK];
            put_sparse_entries(&mut e, 0, entries)?;
            e[hdr::EXT_IS_EXTENDED] = u8::from(i + 1 < exts.len());
            blocks.extend_from_slice(&e);
        }
    }
    set_checksum(&mut h);
    let mut out = h.to_vec();
    out.extend_from_slice(&blocks);
    Ok(out)
}

fn put_sparse_entries(block: &mut [u8; BLOCK], at: usize, entries: &[(u64, u64)]) -> Result<()> {
    for (i, &(offset, len)) in entries.iter().enumerate() {
        let base = at + i * hdr::SPARSE_ENTRY;
        put_number(block, (base, 12), offset)?;
        put_number(block, (base + 12, 12), len)?;
    }
    Ok(())
}

/// Writes `value` into a numeric field the way GNU tar does: zero-padded octal digits and a NUL when
/// it fits, else GNU base-256 (high bit of the first byte set, big-endian binary) — needed for
/// sizes and offsets of 8 GiB and more in 12-byte fields.
fn put_number(block: &mut [u8; BLOCK], (at, width): (usize, usize), value: u64) -> Result<()> {
    let digits = width - 1;
    let field = &mut block[at..at + width];
    if value < 1u64 << (3 * digits) {
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
        return Ok(());
    }
    ensure!(
        width > 8,
        "value {value} does not fit the {width}-byte tar field at offset {at}"
    );
    field.fill(0);
    field[0] = 0x80;
    field[width - 8..].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Header checksum: the byte sum with the checksum field read as spaces, stored as six octal
/// digits, NUL, space (as GNU tar writes it).
fn set_checksum(h: &mut [u8; BLOCK]) {
    let (at, width) = hdr::CHKSUM;
    h[at..at + width].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[at..at + 6].copy_from_slice(format!("{sum:06o}").as_bytes());
    h[at + 6] = 0;
    h[at + 7] = b' ';
}

/// The uncompressed archive as a sequence of [`SEGMENT`]-sized pieces: headers, the data regions'
/// bytes, padding to a block, two zero blocks (end of archive), padding to a record.
struct TarStream<'a> {
    disk: &'a RawDisk,
    headers: Vec<u8>,
    map: &'a [(u64, u64)],
}

impl<'a> TarStream<'a> {
    fn new(disk: &'a RawDisk, headers: Vec<u8>, map: &'a [(u64, u64)]) -> Self {
        Self { disk, headers, map }
    }

    /// Pieces of the stream; reading happens lazily, one segment at a time.
    fn segments(self) -> impl Iterator<Item = Result<Vec<u8>>> + Send + 'a {
        let stored: u64 = self.map.iter().map(|&(_, len)| len).sum();
        let mut total =
            self.headers.len() as u64 + stored.next_multiple_of(BLOCK as u64) + 2 * BLOCK as u64;
        total = total.next_multiple_of(RECORD);
        let disk = self.disk;
        let mut pieces = std::iter::once(Piece::Bytes(self.headers))
            .chain(
                self.map
                    .iter()
                    .filter(|r| r.1 > 0)
                    .map(|&(off, len)| Piece::Disk(off, len)),
            )
            .peekable();
        let mut emitted = 0u64;
        let mut pending_disk: Option<(u64, u64)> = None;
        std::iter::from_fn(move || {
            if emitted >= total {
                return None;
            }
            let mut seg = Vec::with_capacity(SEGMENT);
            while seg.len() < SEGMENT {
                if let Some((off, len)) = pending_disk.take() {
                    let take = len.min((SEGMENT - seg.len()) as u64);
                    if let Err(e) = read_into(disk, off, take, &mut seg) {
                        return Some(Err(e));
                    }
                    if take < len {
                        pending_disk = Some((off + take, len - take));
                    }
                    continue;
                }
                match pieces.next() {
                    Some(Piece::Bytes(b)) => seg.extend_from_slice(&b),
                    Some(Piece::Disk(off, len)) => pending_disk = Some((off, len)),
                    None => {
                        // Trailer: zeros up to the record-padded total.
                        let missing =
                            (total - emitted - seg.len() as u64).min((SEGMENT - seg.len()) as u64);
                        seg.resize(seg.len() + missing as usize, 0);
                        break;
                    }
                }
            }
            emitted += seg.len() as u64;
            Some(Ok(seg))
        })
    }
}

enum Piece {
    Bytes(Vec<u8>),
    Disk(u64, u64),
}

fn read_into(disk: &RawDisk, off: u64, len: u64, seg: &mut Vec<u8>) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let start = seg.len();
    seg.resize(start + len as usize, 0);
    disk.file
        .read_exact_at(&mut seg[start..], off)
        .with_context(|| format!("reading raw disk bytes {off}..{}", off + len))
}

/// Raw deflate of one segment ending in a sync flush, plus its CRC-32.
fn deflate_segment(seg: Vec<u8>) -> Result<(Vec<u8>, Crc)> {
    let mut crc = Crc::new();
    crc.update(&seg);
    let deflated = raw_deflate_sync(&seg, GZIP_LEVEL).context("deflating a tar segment")?;
    Ok((deflated, crc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::testutil::{make_test_disk, run, scratch_dir, sha256_file, GIB};

    #[test]
    fn gnu_tar_lists_extracts_and_the_archive_is_reproducible() -> Result<()> {
        let dir = scratch_dir("gcp")?;
        let raw = make_test_disk(&dir, GIB)?;
        let a = dir.join("a.tar.gz");
        let b = dir.join("b.tar.gz");
        write_tar_gz(&raw, &a, 1_700_000_000)?;
        write_tar_gz(&raw, &b, 1_700_000_000)?;
        assert_eq!(sha256_file(&a)?, sha256_file(&b)?, "two runs differ");

        run("gzip", &["-t", a.to_str().unwrap()])?;
        let listing = run("tar", &["--numeric-owner", "-tvf", a.to_str().unwrap()])?;
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 1, "exactly one member expected: {listing}");
        let fields: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(fields[0], "-rw-r--r--", "{listing}");
        assert_eq!(fields[1], "0/0", "{listing}");
        assert_eq!(fields[2], GIB.to_string(), "{listing}");
        assert_eq!(fields[5], MEMBER_NAME, "{listing}");
        let utc = run("env", &["TZ=UTC", "tar", "-tvf", a.to_str().unwrap()])?;
        assert!(utc.contains("2023-11-14 22:13"), "mtime not kept: {utc}");

        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -xOf '{}' disk.raw | cmp - '{}'",
                a.display(),
                raw.display()
            ))
            .status()?;
        assert!(
            status.success(),
            "extracted disk.raw differs from the raw disk"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn large_values_use_gnu_base256_and_tar_reads_them() -> Result<()> {
        // A 12 GiB sparse disk: realsize and the final map entry exceed the 11-digit octal range.
        let dir = scratch_dir("gcp-big")?;
        let raw = dir.join("big.raw");
        let f = File::create(&raw)?;
        f.set_len(12 * GIB)?;
        std::os::unix::fs::FileExt::write_all_at(&f, b"tail data", 10 * GIB)?;
        drop(f);
        let out = dir.join("big.tar.gz");
        write_tar_gz(&raw, &out, 0)?;
        let listing = run("tar", &["--numeric-owner", "-tvf", out.to_str().unwrap()])?;
        assert!(listing.contains(&(12 * GIB).to_string()), "{listing}");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -xOf '{}' | cmp - '{}'",
                out.display(),
                raw.display()
            ))
            .status()?;
        assert!(status.success());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn many_regions_need_extension_headers() -> Result<()> {
        // 60 separate data regions: 4 in the header, 21 + 21 + 14 in three extension blocks.
        let dir = scratch_dir("gcp-ext")?;
        let raw = dir.join("frag.raw");
        let f = File::create(&raw)?;
        f.set_len(64 << 20)?;
        for i in 0..60u64 {
            std::os::unix::fs::FileExt::write_all_at(
                &f,
                &[i as u8 + 1; 100],
                i * 1024 * 1024 + 4096,
            )?;
        }
        drop(f);
        let out = dir.join("frag.tar.gz");
        write_tar_gz(&raw, &out, 0)?;
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -xOf '{}' | cmp - '{}'",
                out.display(),
                raw.display()
            ))
            .status()?;
        assert!(status.success());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

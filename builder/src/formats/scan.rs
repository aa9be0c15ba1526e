//! Reading a raw disk image chunk by chunk, skipping what is certainly zero.
//!
//! Every writer in `formats` needs the same thing: the raw disk's non-zero chunks in order, at a fixed
//! granularity, without holding the disk in memory. The file system's hole map (`SEEK_DATA` /
//! `SEEK_HOLE`) is used only as an accelerator: a chunk that touches no data extent is zero for sure,
//! every other chunk is read and tested for zeros. The chunks reported are therefore a function of
//! the disk's *content* alone, never of how the file happens to be allocated on the host — which is
//! what keeps the artifacts reproducible when the same `disk.raw` is copied or re-created.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

/// `whence` values of Linux `lseek(2)` (`include/uapi/linux/fs.h`).
const SEEK_DATA: i32 = 3;
const SEEK_HOLE: i32 = 4;
/// `lseek` sets `ENXIO` when there is no data at or after the offset.
const ENXIO: i32 = 6;

extern "C" {
    // glibc on x86-64: off_t is 64 bits, so `lseek` is `lseek64`.
    fn lseek(fd: i32, offset: i64, whence: i32) -> i64;
}

/// One `lseek` call; `Ok(None)` when the kernel says "no data past here" (ENXIO).
fn seek(file: &File, offset: u64, whence: i32) -> io::Result<Option<u64>> {
    let offset = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on a valid, open file descriptor; no memory is passed.
    let r = unsafe { lseek(file.as_raw_fd(), offset, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(ENXIO) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// Byte ranges `[start, end)` of `file` that may hold data, in order. When the file system cannot
/// report holes, the whole file is one range (correct, only slower).
pub fn data_extents(file: &File, size: u64) -> Vec<(u64, u64)> {
    let mut extents = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match seek(file, pos, SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(_) => return vec![(0, size)],
        };
        if start >= size {
            break;
        }
        let end = match seek(file, start, SEEK_HOLE) {
            Ok(Some(e)) => e.min(size),
            Ok(None) | Err(_) => size,
        };
        extents.push((start, end));
        pos = end;
    }
    extents
}

/// True when every byte of `buf` is zero. Runs over every data byte, so it ORs 256-byte blocks
/// without an early exit inside a block (the compiler vectorises that) and exits between blocks.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(256);
    for block in blocks.by_ref() {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

/// The raw disk opened for chunked reading.
pub struct RawDisk {
    pub file: File,
    pub size: u64,
    extents: Vec<(u64, u64)>,
}

impl RawDisk {
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            File::open(path).with_context(|| format!("opening raw disk {}", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        let extents = data_extents(&file, size);
        Ok(Self {
            file,
            size,
            extents,
        })
    }

    /// Indices of the `chunk`-sized chunks that touch a data extent, ascending.
    pub fn candidate_chunks(&self, chunk: u64) -> impl Iterator<Item = u64> + '_ {
        let mut next = 0u64;
        self.extents.iter().flat_map(move |&(start, end)| {
            let first = (start / chunk).max(next);
            let last = end.div_ceil(chunk);
            next = next.max(last);
            first..last
        })
    }

    /// Reads chunk `index` (the last one may be short); holes read back as zeros.
    pub fn read_chunk(&self, index: u64, chunk: u64) -> Result<Vec<u8>> {
        let start = index * chunk;
        let len = chunk.min(self.size - start) as usize;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, start)
            .with_context(|| format!("reading raw disk bytes {start}..{}", start + len as u64))?;
        Ok(buf)
    }

    /// The non-zero chunks `(index, bytes)` in ascending order.
    pub fn nonzero_chunks(&self, chunk: u64) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
        self.candidate_chunks(chunk)
            .filter_map(move |i| match self.read_chunk(i, chunk) {
                Ok(buf) if is_zero(&buf) => None,
                Ok(buf) => Some(Ok((i, buf))),
                Err(e) => Some(Err(e)),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_a_single_bit_anywhere() {
        let mut buf = vec![0u8; 4099];
        assert!(is_zero(&buf));
        for pos in [0, 15, 16, 4095, 4098] {
            buf[pos] = 0x80;
            assert!(!is_zero(&buf), "bit at {pos} missed");
            buf[pos] = 0;
        }
    }

    #[test]
    fn holes_are_skipped_and_data_is_found() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("scan-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("sparse.raw");
        let f = File::create(&path)?;
        f.set_len(64 << 20)?;
        f.write_all_at(&[7u8; 10], (32 << 20) + 5)?;
        f.write_all_at(&[0u8; 65536], 48 << 20)?; // allocated but zero: must not be reported
        drop(f);
        let disk = RawDisk::open(&path)?;
        let found: Vec<u64> = disk
            .nonzero_chunks(65536)
            .map(|r| r.map(|(i, _)| i))
            .collect::<Result<_>>()?;
        assert_eq!(found, vec![(32 << 20) / 65536]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

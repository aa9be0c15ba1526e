//! Writes an [`FsTree`] as a reproducible squashfs 4.0 image with backhand 0.25.5.
//!
//! Reproducibility: every inode (the root included) gets the caller's mtime and owner 0:0,
//! entries are pushed in sorted order, the host's metadata never reaches the tree (see
//! `fstree`), and the compressor output depends only on the block contents.
//!
//! Speed: backhand compresses data blocks one at a time on the calling thread. To use every
//! core, a pipeline reads the files ahead of backhand, in the same order, cuts them into the same
//! blocks and compresses those on worker threads. backhand's compressor is replaced (through its
//! public custom-compressor hook, [`Kind::new_v4`]) by one that returns the precompressed block
//! when its input is byte-identical to the block backhand asks for, and compresses inline
//! otherwise. Compression is a pure function of the input bytes, so the image is byte-identical
//! to what backhand alone writes; a pipeline that fell out of step would only cost speed.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Cursor, Read};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, Scope};

use anyhow::{ensure, Context, Result};
use backhand::compression::{
    CompressionAction, CompressionOptions, Compressor, DefaultCompressor, Zstd,
};
use backhand::kind::Kind;
use backhand::{
    BackhandError, FilesystemCompressor, FilesystemReader, FilesystemWriter, NodeHeader, SuperBlock,
};

use crate::fstree::{FileSource, FsTree, Node, ROOT};

/// Data block size (superblock `block_size`). 128 KiB is the mksquashfs default: a good ratio
/// while a random 4 KiB read decompresses at most 128 KiB.
pub const BLOCK_SIZE: u32 = 128 * 1024;
/// The image is padded to a multiple of this: dm-verity hashes whole 4 KiB data blocks.
pub const IMAGE_ALIGN: u64 = 4096;
/// zstd level of [`Compression::default`]. Measured on Debian's /usr/bin (274 MiB, 128 KiB
/// blocks): level 3 -> 105.9 MiB / 1.0 s CPU, 6 -> 99.6 MiB / 3.1 s, 9 -> 98.7 MiB / 4.7 s,
/// 12 -> 98.3 MiB / 15 s, 15 (the mksquashfs default) -> 91.6 MiB / 36 s, 19 -> 90.2 MiB / 83 s.
/// Level 6 is the knee: 8 % larger than 15 for a tenth of the CPU time; decompression speed
/// barely depends on the level. Pass `Compression::Zstd(15)` when size matters more.
pub const DEFAULT_ZSTD_LEVEL: i32 = 6;
/// Levels mksquashfs and libzstd accept.
pub const ZSTD_LEVELS: RangeInclusive<i32> = 1..=22;
/// Permission bits of a symlink inode (Linux ignores them; mksquashfs writes 0777).
const SYMLINK_MODE: u16 = 0o777;
/// Owner and group of every inode.
const ROOT_ID: u32 = 0;
/// How many compressed blocks may wait for backhand; bounds the pipeline's memory to about
/// `PIPELINE_DEPTH * 2 * BLOCK_SIZE`.
const PIPELINE_DEPTH: usize = 32;
/// Compression jobs queued per worker thread.
const JOBS_PER_WORKER: usize = 2;
/// Output buffer; large writes keep the syscall count low.
const OUTPUT_BUFFER: usize = 1 << 20;

/// squashfs metadata block header: a u16 length (bit 15 = stored uncompressed).
const METADATA_HEADER_LEN: usize = 2;
/// Offset of `mtime` in the inode header: inode_type u16, permissions u16, uid u16, gid u16,
/// mtime u32, inode_number u32.
const INODE_MTIME_OFFSET: usize = 8;
/// squashfs inode types of a directory (basic, extended).
const INODE_TYPE_BASIC_DIR: u16 = 1;
const INODE_TYPE_EXTENDED_DIR: u16 = 8;

/// Compressor of data and metadata blocks. Both Debian 6.1 and 6.12 kernels have
/// SQUASHFS_ZLIB=y and SQUASHFS_ZSTD=y.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zlib level 9, window 15: the mksquashfs `-comp gzip` defaults.
    Gzip,
    /// zstd at the given level (1..=22).
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(DEFAULT_ZSTD_LEVEL)
    }
}

impl Compression {
    /// backhand's compressor settings. gzip stores no options (they equal the defaults, as
    /// with mksquashfs); zstd stores its level, so `unsquashfs -s` shows it.
    fn filesystem_compressor(self) -> Result<FilesystemCompressor> {
        let compressor = match self {
            Compression::Gzip => FilesystemCompressor::new(Compressor::Gzip, None),
            Compression::Zstd(level) => {
                ensure!(
                    ZSTD_LEVELS.contains(&level),
                    "zstd level {level} is outside {}..={}",
                    ZSTD_LEVELS.start(),
                    ZSTD_LEVELS.end()
                );
                let options = CompressionOptions::Zstd(Zstd {
                    compression_level: level as u32,
                });
                FilesystemCompressor::new(Compressor::Zstd, Some(options))
            }
        };
        compressor.with_context(|| format!("configuring squashfs compression {self:?}"))
    }
}

/// Writes the tree as squashfs at `out` with every inode's mtime = `mtime` (the root's too),
/// uid/gid 0, entries sorted, and the image padded with zeros to a multiple of
/// [`IMAGE_ALIGN`]. Returns the padded size. The same tree content always gives the same bytes.
pub fn write_squashfs(
    tree: &FsTree,
    out: &Path,
    mtime: u32,
    compression: Compression,
) -> Result<u64> {
    write_squashfs_with_stats(tree, out, mtime, compression).map(|(size, _)| size)
}

/// How the pipeline served backhand's compression calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PipelineStats {
    /// Blocks compressed ahead of time and used by backhand.
    used: u64,
    /// Blocks compressed ahead of time that backhand never asked for (0 unless the pipeline's
    /// block plan diverged from backhand's).
    unused: u64,
}

fn write_squashfs_with_stats(
    tree: &FsTree,
    out: &Path,
    mtime: u32,
    compression: Compression,
) -> Result<(u64, PipelineStats)> {
    let fs_compressor = compression.filesystem_compressor()?;
    let root_mode = match tree.get(ROOT) {
        Some(Node::Dir { mode }) => *mode,
        _ => anyhow::bail!("the tree has no root directory"),
    };
    let seed = root_seed_image(root_mode, mtime)?;
    let seed_reader = FilesystemReader::from_reader(Cursor::new(seed))
        .context("reading back the squashfs root seed image")?;
    let entries = backhand_order(tree);
    let mut writer = FilesystemWriter::from_fs_reader(&seed_reader)
        .context("starting the squashfs writer from the root seed image")?;
    configure_writer(&mut writer, fs_compressor, mtime, root_mode);
    push_entries(&mut writer, &entries, mtime)?;
    let data_files: Vec<&FileSource> = entries
        .iter()
        .filter_map(|(_, node)| match node {
            Node::File { source, .. } => Some(source),
            _ => None,
        })
        .collect();

    let file =
        File::create(out).with_context(|| format!("creating squashfs image {}", out.display()))?;
    let mut output = BufWriter::with_capacity(OUTPUT_BUFFER, file);
    let (bytes_used, stats) = thread::scope(|scope| -> Result<(u64, PipelineStats)> {
        let consumer = spawn_pipeline(scope, data_files, fs_compressor);
        let guard = ConsumerGuard::install(consumer);
        let (_, bytes_used) = writer
            .write(&mut output)
            .with_context(|| format!("writing squashfs image {}", out.display()))?;
        Ok((bytes_used, guard.finish()))
    })?;
    let file = output
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("flushing squashfs image {}", out.display()))?;
    let padded = pad_image(&file, bytes_used)
        .with_context(|| format!("padding squashfs image {}", out.display()))?;
    Ok((padded, stats))
}

/// The tree's entries in backhand's order: by path components (`Path` order), in which
/// "/a/x" sorts before "/a.b" (unlike string order). The data-block pipeline depends on
/// following exactly the order in which backhand reads the files.
fn backhand_order(tree: &FsTree) -> Vec<(&str, &Node)> {
    let mut entries: Vec<(&str, &Node)> = tree.iter().filter(|(path, _)| *path != ROOT).collect();
    entries.sort_by(|a, b| Path::new(a.0).cmp(Path::new(b.0)));
    entries
}

fn configure_writer(
    writer: &mut FilesystemWriter<'_, '_, '_>,
    fs_compressor: FilesystemCompressor,
    mtime: u32,
    root_mode: u16,
) {
    writer.set_kind(Kind::new_v4(&PIPELINED_COMPRESSOR));
    writer.set_compressor(fs_compressor);
    writer.set_block_size(BLOCK_SIZE);
    writer.set_time(mtime);
    writer.set_root_mode(root_mode);
    writer.set_root_uid(ROOT_ID);
    writer.set_root_gid(ROOT_ID);
    writer.set_only_root_id();
    // Same data stored once, like mksquashfs (on by default; set so the image never depends
    // on the default).
    writer.set_no_duplicate_files(true);
    writer.set_emit_compression_options(true);
    // backhand pads a whole extra 4 KiB when the image is already aligned; pad_image pads
    // like mksquashfs instead.
    writer.set_no_padding();
}

fn push_entries<'t>(
    writer: &mut FilesystemWriter<'_, '_, 't>,
    entries: &[(&'t str, &'t Node)],
    mtime: u32,
) -> Result<()> {
    let header = |mode: u16| NodeHeader::new(mode, ROOT_ID, ROOT_ID, mtime);
    for &(path, node) in entries {
        let pushed = match node {
            Node::Dir { mode } => writer.push_dir(path, header(*mode)),
            Node::File { source, mode } => {
                writer.push_file(LazySourceReader::new(source), path, header(*mode))
            }
            Node::Symlink { target } => writer.push_symlink(target, path, header(SYMLINK_MODE)),
        };
        pushed
            .with_context(|| format!("adding {} {path} to the squashfs image", node.kind_name()))?;
    }
    Ok(())
}

/// Cuts the image at `bytes_used` (backhand's duplicate-file handling can leave stale bytes
/// past the end) and zero-pads it to a multiple of [`IMAGE_ALIGN`].
fn pad_image(file: &File, bytes_used: u64) -> io::Result<u64> {
    let padded = bytes_used.div_ceil(IMAGE_ALIGN) * IMAGE_ALIGN;
    file.set_len(bytes_used)?;
    file.set_len(padded)?;
    Ok(padded)
}

/// Builds a root-only squashfs image whose root inode carries `mtime`.
///
/// backhand 0.25.5 has no setter for the root inode's mtime (it stays 0), but
/// `FilesystemWriter::from_fs_reader` takes the root's header from an existing image. This
/// image is written uncompressed, so the root inode's mtime field can be patched in place.
fn root_seed_image(root_mode: u16, mtime: u32) -> Result<Vec<u8>> {
    let mut seed = FilesystemWriter::default();
    seed.set_compressor(
        FilesystemCompressor::new(Compressor::Uncompressed, None)
            .context("configuring the uncompressed squashfs root seed image")?,
    );
    seed.set_root_mode(root_mode);
    seed.set_no_padding();
    let mut image = Cursor::new(Vec::new());
    let (superblock, _) = seed
        .write(&mut image)
        .context("writing the squashfs root seed image")?;
    let mut image = image.into_inner();
    patch_root_mtime(&mut image, &superblock, mtime)?;
    Ok(image)
}

/// Sets the mtime of the root inode of an uncompressed image. `root_inode` is
/// (metadata block offset within the inode table << 16) | offset within that block.
fn patch_root_mtime(image: &mut [u8], superblock: &SuperBlock, mtime: u32) -> Result<()> {
    let block = usize::try_from(superblock.root_inode >> 16)?;
    let offset = usize::try_from(superblock.root_inode & 0xffff)?;
    let inode = usize::try_from(superblock.inode_table)? + block + METADATA_HEADER_LEN + offset;
    let field = inode + INODE_MTIME_OFFSET;
    let (Some(kind), Some(old)) = (image.get(inode..inode + 2), image.get(field..field + 4)) else {
        anyhow::bail!("root inode of the squashfs seed image lies outside the image");
    };
    let kind = u16::from_le_bytes([kind[0], kind[1]]);
    ensure!(
        (kind == INODE_TYPE_BASIC_DIR || kind == INODE_TYPE_EXTENDED_DIR) && old == [0; 4],
        "unexpected root inode in the squashfs seed image (type {kind}); backhand's layout changed"
    );
    image[field..field + 4].copy_from_slice(&mtime.to_le_bytes());
    Ok(())
}

/// File contents for backhand, opened on the first read: backhand holds every reader until
/// its write, and drops each one as soon as the file is written, so at most one host file is
/// open at a time. Errors name the host path.
struct LazySourceReader<'t> {
    source: &'t FileSource,
    reader: Option<Box<dyn Read + 't>>,
}

impl<'t> LazySourceReader<'t> {
    fn new(source: &'t FileSource) -> Self {
        Self {
            source,
            reader: None,
        }
    }
}

impl Read for LazySourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => {
                let reader = self
                    .source
                    .open()
                    .map_err(|e| io::Error::other(format!("{e:#}")))?;
                self.reader.insert(reader)
            }
        };
        reader.read(buf).map_err(|e| {
            io::Error::new(e.kind(), format!("reading {}: {e}", self.source.describe()))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Parallel compression pipeline

/// backhand's compressor replacement; the per-write state lives in [`CONSUMER`] of the thread
/// that runs `FilesystemWriter::write` (backhand calls `compress` only from that thread).
struct PipelinedCompressor;

static PIPELINED_COMPRESSOR: PipelinedCompressor = PipelinedCompressor;

thread_local! {
    static CONSUMER: RefCell<Option<Consumer>> = const { RefCell::new(None) };
}

impl CompressionAction for PipelinedCompressor {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        compressor: Compressor,
    ) -> Result<(), BackhandError> {
        DefaultCompressor.decompress(bytes, out, compressor)
    }

    fn compress(
        &self,
        bytes: &[u8],
        fc: FilesystemCompressor,
        block_size: u32,
    ) -> Result<Vec<u8>, BackhandError> {
        let precompressed = CONSUMER.with(|consumer| {
            consumer
                .borrow_mut()
                .as_mut()
                .and_then(|consumer| consumer.take_matching(bytes))
        });
        match precompressed {
            Some(compressed) => Ok(compressed),
            None => DefaultCompressor.compress(bytes, fc, block_size),
        }
    }

    fn compression_options(
        &self,
        superblock: &mut SuperBlock,
        kind: &Kind,
        fs_compressor: FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(superblock, kind, fs_compressor)
    }
}

/// A block compressed by a worker, with its input so a match can be verified.
struct Precompressed {
    input: Vec<u8>,
    /// `None` if compression failed; the inline path then reports backhand's error.
    output: Option<Vec<u8>>,
}

/// One compression job and where its result goes.
struct Job {
    input: Vec<u8>,
    reply: SyncSender<Precompressed>,
}

/// Receives the results in block order: one ticket per block, in the order backhand needs them.
struct Consumer {
    tickets: Receiver<Receiver<Precompressed>>,
    next: Option<Precompressed>,
    exhausted: bool,
    stats: PipelineStats,
}

impl Consumer {
    /// The precompressed output for `bytes` if it is the next block of the plan. Metadata
    /// blocks (and blocks of a diverged plan) do not match and are compressed inline.
    fn take_matching(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        if self.next.is_none() && !self.exhausted {
            self.next = self
                .tickets
                .recv()
                .ok()
                .and_then(|ticket| ticket.recv().ok());
            self.exhausted = self.next.is_none();
        }
        if self.next.as_ref()?.input != bytes {
            return None;
        }
        self.stats.used += 1;
        self.next.take()?.output
    }

    fn finish(mut self) -> PipelineStats {
        self.stats.unused = u64::from(self.next.is_some()) + self.tickets.try_iter().count() as u64;
        self.stats
    }
}

/// Installs the consumer for this thread's backhand write and removes it on drop, which also
/// closes the ticket channel so the producer stops even if the write failed.
struct ConsumerGuard;

impl ConsumerGuard {
    fn install(consumer: Consumer) -> Self {
        CONSUMER.with(|slot| *slot.borrow_mut() = Some(consumer));
        ConsumerGuard
    }

    fn finish(self) -> PipelineStats {
        let consumer = CONSUMER.with(|slot| slot.borrow_mut().take());
        consumer.map(Consumer::finish).unwrap_or_default()
    }
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        CONSUMER.with(|slot| slot.borrow_mut().take());
    }
}

/// Starts the producer (reads and cuts the files) and one compression worker per core.
fn spawn_pipeline<'scope, 'tree: 'scope>(
    scope: &'scope Scope<'scope, '_>,
    files: Vec<&'tree FileSource>,
    fs_compressor: FilesystemCompressor,
) -> Consumer {
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    let (job_tx, job_rx) = sync_channel::<Job>(workers * JOBS_PER_WORKER);
    let (ticket_tx, ticket_rx) = sync_channel(PIPELINE_DEPTH);
    let job_rx = Arc::new(Mutex::new(job_rx));
    for _ in 0..workers {
        let job_rx = Arc::clone(&job_rx);
        scope.spawn(move || compress_jobs(&job_rx, fs_compressor));
    }
    scope.spawn(move || {
        // A read error stops the plan; backhand hits the same error and reports it.
        let _ = plan_blocks(&files, BLOCK_SIZE as usize, |input| {
            let (reply, ticket) = sync_channel(1);
            job_tx.send(Job { input, reply }).is_ok() && ticket_tx.send(ticket).is_ok()
        });
    });
    Consumer {
        tickets: ticket_rx,
        next: None,
        exhausted: false,
        stats: PipelineStats::default(),
    }
}

fn compress_jobs(jobs: &Mutex<Receiver<Job>>, fs_compressor: FilesystemCompressor) {
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(Job { input, reply }) = job else {
            return;
        };
        let output = DefaultCompressor
            .compress(&input, fs_compressor, BLOCK_SIZE)
            .ok();
        // The consumer may be gone (write failed); nothing to do then.
        let _ = reply.send(Precompressed { input, output });
    }
}

/// Emits, in order, every block that backhand 0.25.5 compresses while writing the data of
/// `files` (`DataWriter::add_bytes` and the final `finalize`, src/v4/data.rs):
/// - a file of less than one block goes into the fragment buffer; when the buffer cannot take
///   it, the buffer is compressed first;
/// - a larger file is cut into whole blocks and one last partial block (no tail fragment);
///   all-zero blocks are holes and not compressed;
/// - the last fragment buffer is compressed at the end, even when empty.
///
/// `emit` returns false to stop.
fn plan_blocks(
    files: &[&FileSource],
    block_size: usize,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> io::Result<()> {
    let mut fragments = Vec::with_capacity(block_size);
    for source in files {
        let mut reader = source
            .open()
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
        let mut block = read_block(&mut reader, block_size)?;
        if block.is_empty() {
            continue;
        }
        if block.len() < block_size {
            if fragments.len() + block.len() > block_size
                && !emit(std::mem::replace(
                    &mut fragments,
                    Vec::with_capacity(block_size),
                ))
            {
                return Ok(());
            }
            fragments.extend_from_slice(&block);
            continue;
        }
        while !block.is_empty() {
            if block.iter().any(|&byte| byte != 0) && !emit(block) {
                return Ok(());
            }
            block = read_block(&mut reader, block_size)?;
        }
    }
    emit(fragments);
    Ok(())
}

/// Reads up to `block_size` bytes, stopping early only at end of file.
fn read_block(reader: &mut impl Read, block_size: usize) -> io::Result<Vec<u8>> {
    let mut block = Vec::with_capacity(block_size);
    reader.take(block_size as u64).read_to_end(&mut block)?;
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, SystemTime};

    /// 2023-11-14 22:13:20 UTC.
    const MTIME: u32 = 1_700_000_000;
    const BS: usize = BLOCK_SIZE as usize;

    /// Deterministic incompressible bytes (xorshift64*).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    fn text(tag: &str, len: usize) -> Vec<u8> {
        let line = format!("{tag}: the quick brown fox jumps over the lazy dog\n");
        line.bytes().cycle().take(len).collect()
    }

    /// Data block, two zero blocks, a partial data block, then a zero tail.
    fn holey() -> Vec<u8> {
        let mut v = noise(7, BS);
        v.extend(vec![0u8; 2 * BS]);
        v.extend(noise(8, BS / 2));
        v.extend(vec![0u8; BS / 3]);
        v
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Want {
        Dir,
        File(Vec<u8>),
        Link(String),
    }

    /// What the image must contain: path (relative to the root) -> (`ls -l` mode, kind).
    /// Written by hand, independently of the code under test.
    fn expected() -> BTreeMap<String, (&'static str, Want)> {
        let dup = noise(3, 2 * BS + 5);
        let entries: Vec<(&str, &str, Want)> = vec![
            ("", "drwxr-xr-x", Want::Dir),
            ("a", "drwxr-xr-x", Want::Dir),
            ("a/x", "-rw-r--r--", Want::File(text("a/x", 100))),
            ("a-c", "-rw-r--r--", Want::File(text("a-c", 3000))),
            ("a.b", "-rw-r--r--", Want::File(text("a.b", BS - 1))),
            (
                "abs-link",
                "lrwxrwxrwx",
                Want::Link("/usr/bin/missing".into()),
            ),
            ("big", "-rw-r--r--", Want::File(noise(1, 3 * BS + 12345))),
            ("bin", "drwxr-xr-x", Want::Dir),
            ("bin/tool", "-rwxr-xr-x", Want::File(text("tool", 5000))),
            ("dup1", "-rw-r--r--", Want::File(dup.clone())),
            ("dup2", "-rw-r--r--", Want::File(dup)),
            ("empty", "-rw-r--r--", Want::File(Vec::new())),
            ("empty-dir", "drwx------", Want::Dir),
            ("etc", "drwxr-xr-x", Want::Dir),
            (
                "etc/os-release",
                "-rw-r--r--",
                Want::File(b"ID=test\n".to_vec()),
            ),
            ("exact", "-rw-r--r--", Want::File(text("exact", BS))),
            ("holes", "-rw-r--r--", Want::File(holey())),
            ("link", "lrwxrwxrwx", Want::Link("etc/os-release".into())),
            ("private", "-rw-------", Want::File(text("private", 10))),
            ("setuid", "-rwsr-xr-x", Want::File(text("setuid", 20))),
            ("text", "-rw-r--r--", Want::File(text("text", 5 * BS + 77))),
            ("var", "drwxr-xr-x", Want::Dir),
            ("var/lib", "drwxr-xr-x", Want::Dir),
            ("var/lib/state", "drwxr-xr-x", Want::Dir),
            (
                "zeros",
                "-rw-r--r--",
                Want::File(vec![0u8; 2 * BS + BS / 2]),
            ),
        ];
        entries
            .into_iter()
            .map(|(p, m, w)| (p.to_string(), (m, w)))
            .collect()
    }

    /// The tree of [`expected`], some files from the host (`host` dir), some from memory.
    fn sample_tree(host: &Path) -> FsTree {
        let mut tree = FsTree::new();
        let host_file = |name: &str, data: &[u8]| {
            let path = host.join(name);
            fs::write(&path, data).unwrap();
            FileSource::Host(path)
        };
        let want = expected();
        let data = |p: &str| match &want[p].1 {
            Want::File(d) => d.clone(),
            other => panic!("{p} is {other:?}"),
        };
        tree.add_file("/a/x", FileSource::Bytes(data("a/x")), 0o644)
            .unwrap();
        tree.add_file("/a-c", FileSource::Bytes(data("a-c")), 0o644)
            .unwrap();
        tree.add_file("/a.b", host_file("a.b", &data("a.b")), 0o644)
            .unwrap();
        tree.add_symlink("/abs-link", "/usr/bin/missing").unwrap();
        tree.add_file("/big", host_file("big", &data("big")), 0o644)
            .unwrap();
        tree.add_file("/bin/tool", FileSource::Bytes(data("bin/tool")), 0o755)
            .unwrap();
        tree.add_file("/dup1", host_file("dup1", &data("dup1")), 0o644)
            .unwrap();
        tree.add_file("/dup2", FileSource::Bytes(data("dup2")), 0o644)
            .unwrap();
        tree.add_file("/empty", host_file("empty", &[]), 0o644)
            .unwrap();
        tree.add_dir("/empty-dir", 0o700).unwrap();
        tree.add_file(
            "/etc/os-release",
            FileSource::Bytes(data("etc/os-release")),
            0o644,
        )
        .unwrap();
        tree.add_file("/exact", host_file("exact", &data("exact")), 0o644)
            .unwrap();
        tree.add_file("/holes", host_file("holes", &data("holes")), 0o644)
            .unwrap();
        tree.add_symlink("/link", "etc/os-release").unwrap();
        tree.add_file("/private", FileSource::Bytes(data("private")), 0o600)
            .unwrap();
        tree.add_file("/setuid", FileSource::Bytes(data("setuid")), 0o4755)
            .unwrap();
        tree.add_file("/text", host_file("text", &data("text")), 0o644)
            .unwrap();
        tree.add_dir("/var/lib/state", 0o755).unwrap();
        tree.add_file("/zeros", host_file("zeros", &data("zeros")), 0o644)
            .unwrap();
        tree
    }

    fn run(cmd: &mut Command) -> String {
        let output = cmd
            .env("TZ", "UTC")
            .output()
            .unwrap_or_else(|e| panic!("{cmd:?} failed to start ({e}); install squashfs-tools"));
        assert!(
            output.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn write_sample(tmp: &TempDir, compression: Compression) -> (PathBuf, u64, PipelineStats) {
        let host = tmp.path().join("host");
        fs::create_dir_all(&host).unwrap();
        let tree = sample_tree(&host);
        let image = tmp.path().join("image.squashfs");
        let (size, stats) = write_squashfs_with_stats(&tree, &image, MTIME, compression).unwrap();
        assert_eq!(fs::metadata(&image).unwrap().len(), size);
        assert_eq!(
            size % IMAGE_ALIGN,
            0,
            "image size {size} is not 4 KiB aligned"
        );
        (image, size, stats)
    }

    /// `unsquashfs -lln` (independent reader) lists exactly the expected entries, owned by
    /// 0/0, with the expected modes, sizes, symlink targets and the fixed mtime.
    #[test]
    fn unsquashfs_lists_expected_entries() {
        let tmp = TempDir::new("list");
        let (image, _, _) = write_sample(&tmp, Compression::default());
        let listing = run(Command::new("unsquashfs").arg("-lln").arg(&image));
        let mut got = BTreeMap::new();
        for line in listing.lines().filter(|l| l.contains("squashfs-root")) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [mode, owner, size, date, time, path, rest @ ..] = fields.as_slice() else {
                panic!("unexpected unsquashfs line {line:?}");
            };
            assert_eq!(
                (*owner, *date, *time),
                ("0/0", "2023-11-14", "22:13"),
                "{line}"
            );
            let path = path
                .strip_prefix("squashfs-root")
                .unwrap()
                .trim_start_matches('/');
            let target = match rest {
                ["->", target] => Some(target.to_string()),
                [] => None,
                _ => panic!("unexpected unsquashfs line {line:?}"),
            };
            got.insert(
                path.to_string(),
                (mode.to_string(), size.parse::<u64>().unwrap(), target),
            );
        }
        let want: BTreeMap<String, (String, u64, Option<String>)> = expected()
            .into_iter()
            .map(|(path, (mode, kind))| {
                let (size, target) = match kind {
                    // Directory sizes are squashfs-internal; take unsquashfs's value.
                    Want::Dir => (got.get(&path).map_or(0, |g| g.1), None),
                    Want::File(data) => (data.len() as u64, None),
                    Want::Link(target) => (target.len() as u64, Some(target)),
                };
                (path, (mode.to_string(), size, target))
            })
            .collect();
        assert_eq!(got, want);
    }

    /// The superblock as `unsquashfs -s` reads it: compressor, block size, creation time,
    /// size, duplicates flag.
    #[test]
    fn unsquashfs_reads_superblock_settings() {
        for (compression, name) in [(Compression::Zstd(3), "zstd"), (Compression::Gzip, "gzip")] {
            let tmp = TempDir::new("super");
            let (image, size, _) = write_sample(&tmp, compression);
            let stat = run(Command::new("unsquashfs").arg("-s").arg(&image));
            for want in [
                format!("Compression {name}"),
                "Block size 131072".to_string(),
                "Creation or last append time Tue Nov 14 22:13:20 2023".to_string(),
                "Duplicates are removed".to_string(),
            ] {
                assert!(stat.contains(&want), "missing {want:?} in:\n{stat}");
            }
            let used: u64 = stat
                .lines()
                .find_map(|l| l.strip_prefix("Filesystem size "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no Filesystem size in:\n{stat}"));
            assert_eq!(size, used.div_ceil(IMAGE_ALIGN) * IMAGE_ALIGN, "{stat}");
            if compression == Compression::Zstd(3) {
                assert!(stat.contains("compression-level 3"), "{stat}");
            }
        }
    }

    /// `unsquashfs -d` extracts exactly the sources (files, symlinks, empty dirs, holes) with
    /// owner 0:0, the modes and, on every entry including the root, the fixed mtime.
    #[test]
    fn unsquashfs_extracts_the_sources() {
        for compression in [Compression::default(), Compression::Gzip] {
            let tmp = TempDir::new("extract");
            let (image, _, _) = write_sample(&tmp, compression);
            let out = tmp.path().join("out");
            run(Command::new("unsquashfs")
                .arg("-no-progress")
                .arg("-d")
                .arg(&out)
                .arg(&image));
            let got = walk(&out);
            let want = expected();
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>()
            );
            for (path, (kind, mode, uid_gid, mtime)) in &got {
                let (want_mode, want_kind) = &want[path];
                assert_eq!(kind, want_kind, "{path}");
                assert_eq!(*uid_gid, (0, 0), "{path}");
                if !matches!(kind, Want::Link(_)) {
                    assert_eq!(mode_string(*mode, kind), *want_mode, "{path}");
                    assert_eq!(*mtime, i64::from(MTIME), "{path} mtime");
                }
            }
        }
    }

    type Extracted = BTreeMap<String, (Want, u32, (u32, u32), i64)>;

    fn walk(root: &Path) -> Extracted {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let kind = if meta.is_dir() {
                stack.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                Want::Dir
            } else if meta.file_type().is_symlink() {
                Want::Link(fs::read_link(&path).unwrap().to_str().unwrap().to_string())
            } else {
                Want::File(fs::read(&path).unwrap())
            };
            let ids = (meta.uid(), meta.gid());
            out.insert(
                rel,
                (kind, meta.permissions().mode() & 0o7777, ids, meta.mtime()),
            );
        }
        out
    }

    /// `ls -l` style mode string (independent of the code under test).
    fn mode_string(mode: u32, kind: &Want) -> String {
        let kind = match kind {
            Want::Dir => 'd',
            Want::File(_) => '-',
            Want::Link(_) => 'l',
        };
        let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
        let exec = |x: u32, special: u32, set: char| match (mode & x != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => set.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        };
        [
            kind,
            bit(0o400, 'r'),
            bit(0o200, 'w'),
            exec(0o100, 0o4000, 's'),
            bit(0o040, 'r'),
            bit(0o020, 'w'),
            exec(0o010, 0o2000, 's'),
            bit(0o004, 'r'),
            bit(0o002, 'w'),
            exec(0o001, 0o1000, 't'),
        ]
        .iter()
        .collect()
    }

    /// Creates a host tree with the given creation order, host modes and mtimes.
    fn make_host_tree(dir: &Path, reverse: bool, file_mode: u32, exec_mode: u32, age: u64) {
        let mut files: Vec<(&str, Vec<u8>, bool)> = vec![
            ("usr/bin/prog", text("prog", 70_000), true),
            ("usr/lib/data.bin", noise(11, 3 * BS + 1), false),
            ("usr/lib/holes", holey(), false),
            ("etc/a.conf", text("a", 10), false),
            ("etc/b.conf", text("b", 20), false),
            ("etc.d/x", text("x", 30), false),
            ("empty", Vec::new(), false),
        ];
        if reverse {
            files.reverse();
        }
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + age);
        for (name, data, exec) in &files {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            let mode = if *exec { exec_mode } else { file_mode };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        fs::create_dir_all(dir.join("var/empty")).unwrap();
        symlink("../usr/bin/prog", dir.join("etc/prog-link")).unwrap();
        let dir_mode = if reverse { 0o700 } else { 0o775 };
        fs::set_permissions(dir.join("var/empty"), fs::Permissions::from_mode(dir_mode)).unwrap();
    }

    /// Same content from two host directories that differ in creation order, host modes (before
    /// normalisation) and mtimes gives byte-identical images; so does a second run.
    #[test]
    fn images_are_reproducible() {
        let tmp = TempDir::new("repro");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        make_host_tree(&a, false, 0o644, 0o755, 0);
        make_host_tree(&b, true, 0o600, 0o700, 86_400 * 365);
        let image = |src: &Path, name: &str| {
            let mut tree = FsTree::new();
            tree.add_host_dir(src, "/").unwrap();
            let out = tmp.path().join(name);
            write_squashfs(&tree, &out, MTIME, Compression::default()).unwrap();
            fs::read(out).unwrap()
        };
        let first = image(&a, "a.img");
        assert_eq!(first, image(&b, "b.img"), "images from a and b differ");
        assert_eq!(first, image(&a, "a2.img"), "two runs differ");
        // Sanity: the content matters.
        fs::write(b.join("etc/a.conf"), b"changed").unwrap();
        assert_ne!(first, image(&b, "b2.img"));
    }

    /// Every block the pipeline compressed ahead of time was used by backhand (its block
    /// plan follows backhand's file order, fragments and holes), and the output equals a
    /// write without the pipeline's help.
    #[test]
    fn pipeline_serves_every_data_block() {
        let tmp = TempDir::new("pipeline");
        let (image, _, stats) = write_sample(&tmp, Compression::Zstd(3));
        // Blocks: big 4 + text 6 + dup1 3 + dup2 3 (deduplicated only after compression) +
        // exact 1 + holes 2 (zero blocks are holes) + zeros 0 + fragment buffers 3
        // ([a/x, a-c] flushed when a.b does not fit, [a.b] flushed by bin/tool, the rest).
        assert_eq!(
            stats,
            PipelineStats {
                used: 22,
                unused: 0
            }
        );
        let tree = sample_tree(&tmp.path().join("host"));
        let plain_image = tmp.path().join("plain.squashfs");
        write_without_pipeline(&tree, &plain_image);
        assert_eq!(fs::read(image).unwrap(), fs::read(plain_image).unwrap());
    }

    /// Writes `tree` with backhand's own compressor only: no consumer is installed, so every
    /// block is compressed inline (the reference for the pipeline test).
    fn write_without_pipeline(tree: &FsTree, out: &Path) {
        let fc = Compression::Zstd(3).filesystem_compressor().unwrap();
        let seed = root_seed_image(0o755, MTIME).unwrap();
        let reader = FilesystemReader::from_reader(Cursor::new(seed)).unwrap();
        let mut writer = FilesystemWriter::from_fs_reader(&reader).unwrap();
        configure_writer(&mut writer, fc, MTIME, 0o755);
        push_entries(&mut writer, &backhand_order(tree), MTIME).unwrap();
        let mut file = File::create(out).unwrap();
        let (_, used) = writer.write(&mut file).unwrap();
        pad_image(&file, used).unwrap();
    }

    #[test]
    fn missing_host_file_is_named_in_the_error() {
        let tmp = TempDir::new("missing");
        let gone = tmp.path().join("gone");
        let mut tree = FsTree::new();
        tree.add_file("/a", FileSource::Bytes(b"a".to_vec()), 0o644)
            .unwrap();
        tree.add_file("/b", FileSource::Host(gone.clone()), 0o644)
            .unwrap();
        let out = tmp.path().join("img");
        let err = format!(
            "{:#}",
            write_squashfs(&tree, &out, MTIME, Compression::Gzip).unwrap_err()
        );
        assert!(err.contains(&gone.display().to_string()), "{err}");
        assert!(err.contains(&out.display().to_string()), "{err}");
    }

    #[test]
    fn rejects_invalid_zstd_level() {
        let tmp = TempDir::new("level");
        let out = tmp.path().join("img");
        for level in [0, 23, -1] {
            let err = write_squashfs(&FsTree::new(), &out, 0, Compression::Zstd(level));
            assert!(format!("{:#}", err.unwrap_err()).contains("zstd level"));
        }
    }

    /// Root-only tree: the root inode carries the mtime and mode (backhand would leave 0).
    #[test]
    fn empty_tree_root_inode_has_mtime_and_mode() {
        let tmp = TempDir::new("root");
        let mut tree = FsTree::new();
        tree.add_dir("/", 0o750).unwrap();
        let image = tmp.path().join("img");
        let size = write_squashfs(&tree, &image, MTIME, Compression::default()).unwrap();
        assert_eq!(size % IMAGE_ALIGN, 0);
        let out = tmp.path().join("out");
        run(Command::new("unsquashfs")
            .arg("-no-progress")
            .arg("-d")
            .arg(&out)
            .arg(&image));
        let meta = fs::metadata(&out).unwrap();
        assert_eq!(meta.mtime(), i64::from(MTIME));
        assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    }
}

//! Reproducible initramfs: a newc cpio archive (docs/formats.md §3) plus deterministic compression.
//!
//! The archive is what GNU cpio 2.13 writes for
//! `find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z | cpio -o -H newc --reproducible --null --owner 0:0`
//! over the same tree with every mtime set to the fixed epoch — byte for byte, except the inode numbers:
//! GNU cpio `--renumber-inodes` counts from 0, we count from 1 so that no real entry carries 0, the value
//! the `TRAILER!!!` record uses (the kernel compares inodes only to find hard links of regular files with
//! nlink ≥ 2, which we never emit; Linux's own `usr/gen_init_cpio` starts at 721, never 0).
//!
//! Field choices, all matching GNU cpio and `gen_init_cpio`:
//! * header hex digits are upper case (both tools; the kernel accepts either case);
//! * `nlink` is what `lstat` reports on Linux: 2 + number of subdirectories for a directory, 1 otherwise;
//! * uid/gid 0, dev/rdev 0, check 0, one fixed mtime for every entry;
//! * symlinks are mode `0120777` (Linux symlinks have no permissions of their own) with the target,
//!   without NUL, as data;
//! * the archive is zero-padded to a multiple of 512 bytes (GNU cpio's block size). The kernel skips zero
//!   padding between concatenated archives, so this is harmless and keeps GNU cpio usable as an oracle.
//!
//! Paths are sorted bytewise (= `LC_ALL=C sort`), which puts every directory before its contents because
//! a path sorts before every path it is a prefix of.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, ensure, Context, Result};

/// newc magic (`070702` would be the checksummed variant).
const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Name of the end-of-archive record.
const TRAILER_NAME: &str = "TRAILER!!!";
/// Header, name and file data are each padded to this alignment.
const NEWC_ALIGN: usize = 4;
/// GNU cpio pads the whole archive to its I/O block size; we do the same (see module docs).
const ARCHIVE_BLOCK: usize = 512;
/// Inode number of the first entry; see module docs for why not 0.
const FIRST_INO: u32 = 1;
/// `S_IFMT` file-type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
/// Permission bits (incl. setuid/setgid/sticky) that an [`Entry`] may carry.
const PERMISSION_MASK: u32 = 0o7777;
/// Mode of every symlink on Linux.
const SYMLINK_PERMISSIONS: u32 = 0o777;
/// Mode of parent directories created implicitly.
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// The kernel's unpacker rejects names of PATH_MAX bytes or more (`init/initramfs.c`, `name_len`).
const PATH_MAX: usize = 4096;
/// zstd level: decompression speed is nearly level-independent, so spend build time for a smaller UKI.
pub const ZSTD_LEVEL: i32 = 19;
/// gzip OS header field: 3 = Unix, what `gzip -n` writes on Linux (RFC 1952 §2.3.1).
const GZIP_OS_UNIX: u8 = 3;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path without leading `/` or `./`, e.g. `init`, `lib/modules/…/dm-verity.ko.xz`.
    pub path: String,
    /// Permission bits only (≤ 0o7777); must be 0o777 for symlinks.
    pub mode: u32,
    pub kind: EntryKind,
}

impl Entry {
    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        Self {
            path: path.into(),
            mode,
            kind: EntryKind::Dir,
        }
    }

    pub fn file(path: impl Into<String>, mode: u32, data: Vec<u8>) -> Self {
        Self {
            path: path.into(),
            mode,
            kind: EntryKind::File(data),
        }
    }

    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            mode: SYMLINK_PERMISSIONS,
            kind: EntryKind::Symlink(target.into()),
        }
    }
}

/// Builds the newc archive: parents before children (missing parents created 0755), sorted paths,
/// inode numbers from 1 in archive order, uid/gid 0, nlink as Linux reports it, one fixed `mtime`,
/// dev 0, `TRAILER!!!`, padded to 512 bytes.
pub fn write_cpio(entries: Vec<Entry>, mtime: u32) -> Result<Vec<u8>> {
    let tree = build_tree(entries)?;
    let nlinks = directory_nlinks(&tree);
    let mut out = Vec::new();
    for (index, (path, (mode, kind))) in tree.iter().enumerate() {
        let ino = FIRST_INO
            .checked_add(
                u32::try_from(index).context("too many initramfs entries for 32-bit inodes")?,
            )
            .context("too many initramfs entries for 32-bit inodes")?;
        let (type_bits, data): (u32, &[u8]) = match kind {
            EntryKind::Dir => (S_IFDIR, &[]),
            EntryKind::File(bytes) => (S_IFREG, bytes),
            EntryKind::Symlink(target) => (S_IFLNK, target.as_bytes()),
        };
        let header = Header {
            ino,
            mode: type_bits | mode,
            nlink: nlinks.get(path.as_str()).copied().unwrap_or(1),
            mtime,
            filesize: u32::try_from(data.len()).with_context(|| {
                format!("initramfs entry {path}: newc cannot store files of 4 GiB or more")
            })?,
        };
        write_record(&mut out, &header, path, data);
    }
    write_record(&mut out, &Header::trailer(), TRAILER_NAME, &[]);
    pad_to(&mut out, ARCHIVE_BLOCK);
    Ok(out)
}

/// The varying fields of a newc header; the rest (uid, gid, dev, rdev, check) are always 0.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
}

impl Header {
    /// `TRAILER!!!`: nlink 1, everything else 0 (GNU cpio, gen_init_cpio).
    fn trailer() -> Self {
        Self {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
        }
    }
}

/// Appends header + name + NUL + padding + data + padding.
fn write_record(out: &mut Vec<u8>, h: &Header, name: &str, data: &[u8]) {
    let namesize = name.len() + 1;
    let fields = [
        h.ino,
        h.mode,
        0,
        /* uid */ 0,
        /* gid */ h.nlink,
        h.mtime,
        h.filesize,
        0, /* devmajor */
        0,
        /* devminor */ 0,
        /* rdevmajor */ 0, /* rdevminor */
        namesize as u32,
        0, /* check */
    ];
    out.extend_from_slice(NEWC_MAGIC);
    for field in fields {
        // Infallible: writing into a Vec.
        let _ = write!(out, "{field:08X}");
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad_to(out, NEWC_ALIGN);
    out.extend_from_slice(data);
    pad_to(out, NEWC_ALIGN);
}

fn pad_to(out: &mut Vec<u8>, align: usize) {
    out.resize(out.len().next_multiple_of(align), 0);
}

/// Path → (permission bits, kind), with implicit parents added and every rule checked.
type Tree = BTreeMap<String, (u32, EntryKind)>;

fn build_tree(entries: Vec<Entry>) -> Result<Tree> {
    let mut tree = Tree::new();
    for entry in entries {
        validate_entry(&entry)?;
        let path = entry.path.clone();
        if tree.insert(entry.path, (entry.mode, entry.kind)).is_some() {
            bail!("initramfs entry {path} is given twice");
        }
    }
    let explicit: Vec<String> = tree.keys().cloned().collect();
    for path in &explicit {
        add_parents(&mut tree, path)?;
    }
    Ok(tree)
}

/// Creates missing parents of `path` (mode 0755) and checks existing ones are directories.
fn add_parents(tree: &mut Tree, path: &str) -> Result<()> {
    let mut parent = path;
    while let Some((p, _)) = parent.rsplit_once('/') {
        parent = p;
        match tree.get(parent) {
            Some((_, EntryKind::Dir)) => {}
            Some(_) => bail!("initramfs entry {path} is inside {parent}, which is not a directory"),
            None => {
                tree.insert(parent.to_string(), (IMPLICIT_DIR_MODE, EntryKind::Dir));
            }
        }
    }
    Ok(())
}

fn validate_entry(entry: &Entry) -> Result<()> {
    let path = &entry.path;
    ensure!(!path.is_empty(), "initramfs entry with an empty path");
    ensure!(
        path.len() < PATH_MAX,
        "initramfs entry {path}: path of {} bytes exceeds the kernel's PATH_MAX",
        path.len()
    );
    ensure!(
        !path.contains('\0'),
        "initramfs entry {path:?}: path contains NUL"
    );
    ensure!(
        !path.starts_with('/') && !path.ends_with('/'),
        "initramfs entry {path}: use a relative path without leading or trailing '/'"
    );
    ensure!(
        path.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."),
        "initramfs entry {path}: empty, '.' or '..' path components are not allowed"
    );
    ensure!(
        path != TRAILER_NAME,
        "initramfs entry {path}: reserved name of the end-of-archive record"
    );
    ensure!(
        entry.mode & !PERMISSION_MASK == 0,
        "initramfs entry {path}: mode {:o} has bits outside 0o7777 (give permission bits only)",
        entry.mode
    );
    if let EntryKind::Symlink(target) = &entry.kind {
        ensure!(
            entry.mode == SYMLINK_PERMISSIONS,
            "initramfs symlink {path}: mode must be 0o777 (Linux symlinks have no permissions)"
        );
        ensure!(
            !target.is_empty() && !target.contains('\0'),
            "initramfs symlink {path}: target {target:?} must be non-empty and contain no NUL"
        );
    }
    Ok(())
}

/// nlink of each directory as Linux reports it: 2 (`.` and the entry in its parent) + one `..` per
/// subdirectory.
fn directory_nlinks(tree: &Tree) -> BTreeMap<&str, u32> {
    let mut nlinks: BTreeMap<&str, u32> = tree
        .iter()
        .filter(|(_, (_, kind))| *kind == EntryKind::Dir)
        .map(|(path, _)| (path.as_str(), 2))
        .collect();
    for (path, (_, kind)) in tree {
        if *kind != EntryKind::Dir {
            continue;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            if let Some(n) = nlinks.get_mut(parent) {
                *n += 1;
            }
        }
    }
    nlinks
}

/// Compression of the initramfs cpio. All three are `y` (`RD_GZIP`, `RD_ZSTD`) in Debian 6.1 and 6.12.
///
/// Default: zstd. The kernel decompresses the initramfs itself, and under TCG that code runs emulated,
/// so decompression speed dominates: zstd decodes several times faster than gzip and an order of
/// magnitude faster than xz for a similar or better ratio than gzip. The payload is mostly an
/// already-compressed init binary and (on 6.12) `.ko.xz` modules, so xz's extra ratio would buy little.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Zstd,
}

impl std::str::FromStr for Compression {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            other => bail!("unknown initramfs compression {other:?}: use none, gzip or zstd"),
        }
    }
}

/// Compresses deterministically: gzip with header mtime 0, no file name, OS = Unix, level 9 (pure-Rust
/// miniz_oxide backend); zstd single-threaded at [`ZSTD_LEVEL`] with content size and checksum in the
/// frame header (as the `zstd` CLI writes). Output depends only on the input and the pinned crate
/// versions (Cargo.lock).
pub fn compress(cpio: &[u8], c: Compression) -> Result<Vec<u8>> {
    match c {
        Compression::None => Ok(cpio.to_vec()),
        Compression::Gzip => gzip(cpio),
        Compression::Zstd => zstd_compress(cpio),
    }
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNIX)
        .write(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(data)
        .context("gzip-compressing the initramfs")?;
    encoder.finish().context("gzip-compressing the initramfs")
}

fn zstd_compress(data: &[u8]) -> Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)
        .context("creating the zstd compressor for the initramfs")?;
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .context("enabling zstd frame checksums")?;
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))
        .context("enabling the zstd frame content size")?;
    compressor
        .compress(data)
        .context("zstd-compressing the initramfs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// 2023-11-14T22:13:20Z.
    const EPOCH: u32 = 1_700_000_000;

    /// Runs a reference tool; a missing tool fails the test with the package to install.
    fn run(cmd: &mut Command, package: &str) -> Vec<u8> {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run {cmd:?} ({e}): install Debian package {package}")
        });
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Deterministic pseudo-random bytes (64-bit LCG, Knuth's MMIX constants).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    /// Covers every name/data padding remainder, implicit parents, a `-` vs `/` sort trap, special
    /// permission bits, empty files, relative and absolute symlinks.
    fn sample_entries() -> Vec<Entry> {
        vec![
            Entry::file("init", 0o755, noise(70_001, 1)),
            Entry::symlink("sbin/init", "../init"),
            Entry::file(
                "lib/modules/6.12/kernel/dm-verity.ko.xz",
                0o644,
                noise(4096, 2),
            ),
            Entry::file(
                "lib/modules/6.12/modules.order",
                0o644,
                b"kernel/dm-verity.ko\n".to_vec(),
            ),
            Entry::file("etc/cvm/root.hash", 0o600, b"abc".to_vec()),
            Entry::file("etc/cvm-x", 0o644, Vec::new()),
            Entry::file("etc/a", 0o4755, b"1".to_vec()),
            Entry::file("etc/ab", 0o644, b"12".to_vec()),
            Entry::file("etc/abc", 0o644, b"123".to_vec()),
            Entry::file("etc/abcd", 0o644, b"1234".to_vec()),
            Entry::dir("root", 0o700),
            Entry::dir("dev", 0o755),
            Entry::dir("proc", 0o555),
            Entry::dir("sysroot", 0o755),
            Entry::symlink("bin", "/usr/bin"),
            Entry::dir("usr/bin", 0o755),
        ]
    }

    /// Hand-written `cpio -itv -n` expectations for sample_entries (mode string, nlink, size, name):
    /// implicit parents 0755, dir nlink = 2 + subdirectories.
    const EXPECTED_LISTING: [(&str, u32, u64, &str); 23] = [
        ("lrwxrwxrwx", 1, 8, "bin -> /usr/bin"),
        ("drwxr-xr-x", 2, 0, "dev"),
        ("drwxr-xr-x", 3, 0, "etc"),
        ("-rwsr-xr-x", 1, 1, "etc/a"),
        ("-rw-r--r--", 1, 2, "etc/ab"),
        ("-rw-r--r--", 1, 3, "etc/abc"),
        ("-rw-r--r--", 1, 4, "etc/abcd"),
        // "etc/cvm-x" sorts between "etc/cvm" and its children ('-' < '/'): still parent first.
        ("drwxr-xr-x", 2, 0, "etc/cvm"),
        ("-rw-r--r--", 1, 0, "etc/cvm-x"),
        ("-rw-------", 1, 3, "etc/cvm/root.hash"),
        ("-rwxr-xr-x", 1, 70_001, "init"),
        ("drwxr-xr-x", 3, 0, "lib"),
        ("drwxr-xr-x", 3, 0, "lib/modules"),
        ("drwxr-xr-x", 3, 0, "lib/modules/6.12"),
        ("drwxr-xr-x", 2, 0, "lib/modules/6.12/kernel"),
        (
            "-rw-r--r--",
            1,
            4096,
            "lib/modules/6.12/kernel/dm-verity.ko.xz",
        ),
        ("-rw-r--r--", 1, 20, "lib/modules/6.12/modules.order"),
        ("dr-xr-xr-x", 2, 0, "proc"),
        ("drwx------", 2, 0, "root"),
        ("drwxr-xr-x", 2, 0, "sbin"),
        ("lrwxrwxrwx", 1, 7, "sbin/init -> ../init"),
        ("drwxr-xr-x", 2, 0, "sysroot"),
        ("drwxr-xr-x", 3, 0, "usr"),
    ];

    fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, bytes).expect("write temp file");
        p
    }

    #[test]
    fn gnu_cpio_lists_our_entries_in_our_order() {
        let tmp = TempDir::new("list");
        let archive = write_temp(
            tmp.path(),
            "a.cpio",
            &write_cpio(sample_entries(), EPOCH).expect("cpio"),
        );
        let out = run(
            Command::new("cpio")
                .args(["-itv", "-n", "--quiet", "-F"])
                .arg(&archive)
                .env("TZ", "UTC")
                .env("LC_ALL", "C"),
            "cpio",
        );
        let listing = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = listing.lines().collect();
        // usr/bin sorts after usr; EXPECTED_LISTING ends at usr, so check the tail separately.
        assert_eq!(lines.len(), EXPECTED_LISTING.len() + 1, "{listing}");
        for (line, (mode, nlink, size, name)) in lines.iter().zip(EXPECTED_LISTING) {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[0], mode, "{line}");
            assert_eq!(f[1], nlink.to_string(), "{line}");
            assert_eq!((f[2], f[3]), ("0", "0"), "uid/gid: {line}");
            assert_eq!(f[4], size.to_string(), "{line}");
            assert_eq!(&f[5..8], ["Nov", "14", "2023"], "mtime: {line}");
            assert_eq!(f[8..].join(" "), name, "{line}");
        }
        assert!(
            lines[EXPECTED_LISTING.len()].starts_with("drwxr-xr-x   2 0"),
            "{listing}"
        );
        assert!(
            lines[EXPECTED_LISTING.len()].ends_with(" usr/bin"),
            "{listing}"
        );
    }

    #[test]
    fn gnu_cpio_extracts_same_bytes_modes_and_mtimes() {
        let tmp = TempDir::new("extract");
        let archive = write_temp(
            tmp.path(),
            "a.cpio",
            &write_cpio(sample_entries(), EPOCH).expect("cpio"),
        );
        let root = tmp.join("root");
        fs::create_dir(&root).expect("mkdir");
        run(
            Command::new("cpio")
                .args(["-idm", "--quiet", "--no-absolute-filenames", "-F"])
                .arg(&archive)
                .current_dir(&root),
            "cpio",
        );
        for entry in sample_entries() {
            let path = root.join(&entry.path);
            let meta =
                fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", entry.path));
            match &entry.kind {
                EntryKind::File(data) => {
                    assert_eq!(&fs::read(&path).expect("read"), data, "{}", entry.path);
                    assert_eq!(
                        meta.permissions().mode() & 0o7777,
                        entry.mode,
                        "{}",
                        entry.path
                    );
                    assert_eq!(meta.mtime(), i64::from(EPOCH), "{}", entry.path);
                }
                EntryKind::Symlink(target) => {
                    assert_eq!(
                        fs::read_link(&path).expect("readlink").to_str(),
                        Some(target.as_str())
                    );
                }
                EntryKind::Dir => {
                    assert!(meta.is_dir(), "{}", entry.path);
                    assert_eq!(
                        meta.permissions().mode() & 0o7777,
                        entry.mode,
                        "{}",
                        entry.path
                    );
                }
            }
        }
    }

    /// Recreates the entries on disk as a file tree with every mtime = EPOCH.
    fn materialise(root: &Path, entries: &[Entry]) {
        for e in entries {
            let p = root.join(&e.path);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).expect("mkdir parents");
            }
            match &e.kind {
                EntryKind::Dir => fs::create_dir_all(&p).expect("mkdir"),
                EntryKind::File(data) => fs::write(&p, data).expect("write"),
                EntryKind::Symlink(t) => std::os::unix::fs::symlink(t, &p).expect("symlink"),
            }
            if !matches!(e.kind, EntryKind::Symlink(_)) {
                fs::set_permissions(&p, fs::Permissions::from_mode(e.mode)).expect("chmod");
            }
        }
        run(
            Command::new("find")
                .arg(".")
                .args(["-mindepth", "1", "-exec", "touch", "-h", "-d"])
                .arg(format!("@{EPOCH}"))
                .args(["{}", "+"])
                .current_dir(root),
            "findutils",
        );
    }

    /// Offsets of the c_ino fields of every non-trailer header of a newc archive.
    fn ino_offsets(archive: &[u8]) -> Vec<usize> {
        let field = |off: usize, i: usize| {
            let s = std::str::from_utf8(&archive[off + 6 + 8 * i..off + 14 + 8 * i]).expect("hex");
            usize::from_str_radix(s, 16).expect("hex field")
        };
        let mut offsets = Vec::new();
        let mut off = 0;
        loop {
            assert_eq!(&archive[off..off + 6], NEWC_MAGIC);
            let (filesize, namesize) = (field(off, 6), field(off, 11));
            let name = &archive[off + 110..off + 110 + namesize - 1];
            if name == TRAILER_NAME.as_bytes() {
                return offsets;
            }
            offsets.push(off + 6);
            off = (off + 110 + namesize).next_multiple_of(4);
            off = (off + filesize).next_multiple_of(4);
        }
    }

    #[test]
    fn matches_gnu_cpio_reproducible_except_inode_base() {
        let tmp = TempDir::new("gnu");
        let tree = tmp.join("tree");
        fs::create_dir(&tree).expect("mkdir");
        materialise(&tree, &sample_entries());
        let gnu_out = tmp.join("gnu.cpio");
        let script = "find . -mindepth 1 -printf '%P\\0' | LC_ALL=C sort -z | \
                      cpio -o -H newc --reproducible --null --owner 0:0 --quiet -O \"$1\"";
        run(
            Command::new("sh")
                .args(["-c", script, "sh"])
                .arg(&gnu_out)
                .current_dir(&tree),
            "cpio",
        );
        let mut gnu = fs::read(&gnu_out).expect("read GNU archive");
        let ours = write_cpio(sample_entries(), EPOCH).expect("cpio");
        // GNU cpio --renumber-inodes counts from 0, we from 1 (module docs): shift GNU's and compare.
        for off in ino_offsets(&gnu) {
            let ino =
                u32::from_str_radix(std::str::from_utf8(&gnu[off..off + 8]).expect("hex"), 16)
                    .expect("hex");
            gnu[off..off + 8].copy_from_slice(format!("{:08X}", ino + 1).as_bytes());
        }
        assert_eq!(ours.len(), gnu.len());
        assert!(ours == gnu, "archives differ beyond the inode base");
    }

    #[test]
    fn cpio_crate_reader_agrees() {
        let ours = write_cpio(sample_entries(), EPOCH).expect("cpio");
        let mut rest: &[u8] = &ours;
        let mut seen = Vec::new();
        loop {
            let reader = cpio::NewcReader::new(rest).expect("parse header");
            let e = reader.entry();
            if e.is_trailer() {
                break;
            }
            assert_eq!(e.ino(), seen.len() as u32 + FIRST_INO);
            assert_eq!(
                (e.uid(), e.gid(), e.mtime(), e.dev_major(), e.rdev_minor()),
                (0, 0, EPOCH, 0, 0)
            );
            seen.push(e.name().to_string());
            rest = reader.finish().expect("skip data");
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        assert_eq!(seen.len(), EXPECTED_LISTING.len() + 1);
        assert_eq!(ours.len() % ARCHIVE_BLOCK, 0);
    }

    #[test]
    fn input_order_does_not_change_output() {
        let mut reversed = sample_entries();
        reversed.reverse();
        let a = write_cpio(sample_entries(), EPOCH).expect("cpio");
        assert_eq!(a, write_cpio(reversed, EPOCH).expect("cpio"));
        assert_eq!(a, write_cpio(sample_entries(), EPOCH).expect("cpio"));
        assert_ne!(a, write_cpio(sample_entries(), EPOCH + 1).expect("cpio"));
    }

    #[test]
    fn rejects_invalid_entries() {
        let bad = |entries: Vec<Entry>, needle: &str| {
            let err = format!("{:#}", write_cpio(entries, 0).unwrap_err());
            assert!(err.contains(needle), "{err}");
        };
        bad(vec![Entry::file("/init", 0o755, vec![])], "relative path");
        bad(vec![Entry::file("a/../init", 0o755, vec![])], "'..'");
        bad(vec![Entry::file("a//b", 0o755, vec![])], "empty");
        bad(
            vec![Entry::file("init", 0o100755, vec![])],
            "permission bits only",
        );
        bad(
            vec![Entry::file("x", 0o644, vec![]), Entry::dir("x", 0o755)],
            "given twice",
        );
        bad(
            vec![
                Entry::file("x", 0o644, vec![]),
                Entry::file("x/y", 0o644, vec![]),
            ],
            "not a directory",
        );
        bad(
            vec![Entry {
                path: "l".into(),
                mode: 0o755,
                kind: EntryKind::Symlink("t".into()),
            }],
            "0o777",
        );
        bad(vec![Entry::symlink("l", "")], "non-empty");
        bad(vec![Entry::dir(TRAILER_NAME, 0o755)], "reserved");
    }

    #[test]
    fn empty_archive_is_trailer_only() {
        let out = write_cpio(Vec::new(), EPOCH).expect("cpio");
        assert_eq!(out.len(), ARCHIVE_BLOCK);
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[110..121], b"TRAILER!!!\0");
    }

    #[test]
    fn compressed_output_round_trips_with_reference_tools() {
        let tmp = TempDir::new("compress");
        let cpio = write_cpio(sample_entries(), EPOCH).expect("cpio");
        for (c, tool, package) in [
            (Compression::Gzip, "gzip", "gzip"),
            (Compression::Zstd, "zstd", "zstd"),
        ] {
            let packed = compress(&cpio, c).expect("compress");
            assert_eq!(
                packed,
                compress(&cpio, c).expect("compress"),
                "{c:?} is not deterministic"
            );
            assert!(packed.len() < cpio.len(), "{c:?} did not compress");
            let file = write_temp(tmp.path(), tool, &packed);
            let unpacked = run(Command::new(tool).args(["-d", "-c"]).arg(&file), package);
            assert!(unpacked == cpio, "{tool} -d output differs from the cpio");
        }
        assert_eq!(compress(&cpio, Compression::None).expect("none"), cpio);
    }

    #[test]
    fn gzip_header_is_reproducible() {
        let gz = compress(b"x", Compression::Gzip).expect("gzip");
        // RFC 1952: ID1 ID2 CM=8 FLG=0 (no FNAME/FEXTRA/FCOMMENT) MTIME=0 XFL=2 (best) OS=3 (Unix).
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);
    }

    #[test]
    fn zstd_frame_has_checksum_and_size() {
        let tmp = TempDir::new("zstdlist");
        let file = write_temp(
            tmp.path(),
            "x.zst",
            &compress(&noise(10_000, 3), Compression::Zstd).expect("zstd"),
        );
        let out = String::from_utf8(run(Command::new("zstd").arg("-lv").arg(&file), "zstd"))
            .expect("utf-8");
        assert!(out.contains("Check: XXH64"), "{out}");
        assert!(
            out.contains("Decompressed Size: 9.77 KiB (10000 B)"),
            "{out}"
        );
    }

    #[test]
    fn compression_names_parse() {
        assert_eq!(
            "zstd".parse::<Compression>().expect("zstd"),
            Compression::Zstd
        );
        assert_eq!(Compression::default(), Compression::Zstd);
        assert!("xz".parse::<Compression>().is_err());
    }
}

//! squashfs of a 1 GiB tree: our writer (backhand + parallel block compression) vs `mksquashfs` with the
//! same compressor and level, both reading from the page cache.

use super::{heading, time, workdir, MIB};
use crate::fstree::FsTree;
use crate::squashfs::{write_squashfs, Compression};
use anyhow::{ensure, Context, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;

const TREE_BYTES: u64 = 1 << 30;
const MTIME: u32 = 1_700_000_000;

pub fn bench() -> Result<()> {
    let compression = Compression::default();
    heading(&format!(
        "squashfs: 1 GiB tree, cvm-image vs mksquashfs ({compression:?})"
    ));
    let dir = workdir("squashfs")?;
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    build_test_tree(&src, TREE_BYTES)?;
    let tree_bytes = warm_page_cache(&src)?;
    let (ours_size, ours) = time(|| {
        let mut tree = FsTree::new();
        tree.add_host_dir(&src, "/")?;
        write_squashfs(&tree, &dir.join("ours.img"), MTIME, compression)
    })?;
    let ((), theirs) = time(|| run_mksquashfs(&src, &dir.join("mksquashfs.img"), compression))?;
    let theirs_size = fs::metadata(dir.join("mksquashfs.img"))?.len();
    println!(
        "tree                   {:>8.0} MiB",
        tree_bytes as f64 / MIB
    );
    println!(
        "cvm-image              {:>8.2} s  image {:.1} MiB",
        ours.as_secs_f64(),
        ours_size as f64 / MIB
    );
    println!(
        "mksquashfs             {:>8.2} s  image {:.1} MiB",
        theirs.as_secs_f64(),
        theirs_size as f64 / MIB
    );
    println!(
        "time ratio: {:.2}x of mksquashfs (goal <= 1.2x)",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    fs::remove_dir_all(&dir)?;
    Ok(())
}

fn run_mksquashfs(src: &Path, out: &Path, compression: Compression) -> Result<()> {
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(src)
        .arg(out)
        .args(["-noappend", "-all-root", "-no-progress", "-quiet"]);
    match compression {
        Compression::Gzip => cmd.args(["-comp", "gzip"]),
        Compression::Zstd(level) => {
            cmd.args(["-comp", "zstd", "-Xcompression-level", &level.to_string()])
        }
    };
    let status = cmd
        .status()
        .context("running mksquashfs (install squashfs-tools)")?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

/// Reads every file once; returns the total size.
fn warm_page_cache(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else if meta.is_file() {
            let mut file = File::open(&path)?;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    Ok(total)
}

/// xorshift64*: deterministic, fast pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "the",
    "kernel",
    "module",
    "squashfs",
    "verity",
    "root",
    "init",
    "systemd",
    "config",
    "lib",
    "usr",
    "share",
    "locale",
    "error",
    "return",
    "value",
    "struct",
    "static",
    "const",
    "unsigned",
    "int",
    "char",
    "void",
    "if",
    "else",
    "for",
    "while",
    "0x7f",
    "ELF",
    "GLIBC_2.34",
    "memcpy",
    "printf",
    "{",
    "}",
    "(",
    ")",
    ";",
    "=",
    "\n",
    "\t",
    "    ",
    "#include",
    "<stdio.h>",
    "data",
];

/// Fills `len` bytes of text-like content (compresses about 3-4x with zstd).
fn write_text(out: &mut impl Write, rng: &mut Rng, len: u64) -> Result<()> {
    let mut written = 0;
    let mut line = Vec::with_capacity(256);
    while written < len {
        line.clear();
        for _ in 0..(4 + rng.below(12)) {
            line.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            line.push(if rng.below(8) == 0 { b'_' } else { b' ' });
            if rng.below(6) == 0 {
                line.extend_from_slice(format!("{}", rng.below(100_000)).as_bytes());
            }
        }
        line.push(b'\n');
        let take = line.len().min((len - written) as usize);
        out.write_all(&line[..take])?;
        written += take as u64;
    }
    Ok(())
}

/// Fills `len` bytes of incompressible content.
fn write_random(out: &mut impl Write, rng: &mut Rng, len: u64) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        let take = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..take])?;
        left -= take as u64;
    }
    Ok(())
}

/// Builds a deterministic tree of about `total` bytes under `dir`: 80 % of the files are small
/// (up to 64 KiB), 18 % medium (64 KiB..1 MiB), 2 % large (1..16 MiB); 60 % of the files are
/// text-like, 40 % random. Directories are 3 levels deep. Returns the bytes written.
pub fn build_test_tree(dir: &Path, total: u64) -> Result<u64> {
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut written = 0u64;
    let mut index = 0u64;
    while written < total {
        let size = match rng.below(100) {
            0..80 => rng.below(64 * 1024),
            80..98 => 64 * 1024 + rng.below(960 * 1024),
            _ => (1 << 20) + rng.below(15 << 20),
        }
        .min(total - written);
        let path = dir
            .join(format!("d{}", index % 7))
            .join(format!("s{}", index % 23))
            .join(format!(
                "f{index:05}.{}",
                if index % 5 < 3 { "txt" } else { "bin" }
            ));
        fs::create_dir_all(path.parent().context("file path has a parent")?)?;
        let mut out = BufWriter::new(File::create(&path)?);
        if index % 5 < 3 {
            write_text(&mut out, &mut rng, size)?;
        } else {
            write_random(&mut out, &mut rng, size)?;
        }
        out.flush()?;
        written += size;
        index += 1;
    }
    Ok(written)
}

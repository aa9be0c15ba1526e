//! Shared test fixtures: sparse raw disks with deterministic content and reference-tool runners.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// A fresh directory under the system temp dir, unique per test name and process.
pub fn scratch_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cvm-formats-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible, reproducible, no `rand` crate.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A sparse raw disk of `size` bytes: a few MiB of pseudo-random data at several offsets (start,
/// unaligned middle pieces, a grain-table boundary, the last MiB) separated by large zero gaps, plus
/// compressible text. Everything else is a hole.
pub fn make_test_disk(dir: &Path, size: u64) -> Result<PathBuf> {
    let path = dir.join("disk.raw");
    let f = File::create(&path)?;
    f.set_len(size)?;
    let pieces: [(u64, usize); 6] = [
        (0, (MIB + 4096) as usize),
        (33 * MIB + 777, 3 * MIB as usize),
        (32 * MIB - 1000, 2000), // straddles the 32 MiB VMDK grain-table boundary
        (size / 2 + 12_345, 100_000),
        (size - MIB, MIB as usize),
        (size / 3, 10),
    ];
    for (i, &(offset, len)) in pieces.iter().enumerate() {
        f.write_all_at(&pseudo_random(i as u64 + 1, len), offset)?;
    }
    let text = "cvm-image compressible test text 0123456789\n".repeat(50_000);
    f.write_all_at(text.as_bytes(), size / 4)?;
    Ok(path)
}

/// Runs a reference tool and returns its stdout; a missing tool or a failure is an error that
/// names the command (tests must fail, not skip, when the oracle is absent).
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| {
        format!("running {program}: is it installed? (qemu-img: apt install qemu-utils)")
    })?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// `qemu-img compare -f raw -F <fmt> RAW IMAGE` must say "Images are identical."
pub fn assert_qemu_identical(raw: &Path, image: &Path, fmt: &str) -> Result<()> {
    let out = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            fmt,
            raw.to_str().unwrap_or_default(),
            image.to_str().unwrap_or_default(),
        ],
    )?;
    if !out.contains("Images are identical") {
        bail!("qemu-img compare: {out}");
    }
    Ok(())
}

//! dm-verity hashing of a 1 GiB image: ours (both cores) vs `veritysetup format`, and our per-core
//! throughput against single-core SHA-256 over 4 KiB blocks.

use super::{heading, pseudo_random, run, time, workdir, MIB};
use crate::verity::{format_uuid, format_with_threads, VerityParams, BLOCK_SIZE};
use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DATA_BYTES: usize = 1 << 30;
/// Bytes hashed to measure single-core SHA-256 throughput (from a cache-resident buffer).
const SINGLE_CORE_BYTES: usize = 512 << 20;
const SINGLE_CORE_BUFFER: usize = 1 << 20;
const PARAMS: VerityParams = VerityParams {
    salt: [0xa5; 32],
    uuid: [0x42; 16],
};

/// Read a file once so both contenders find it in the page cache.
fn warm(path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

fn single_core_sha256() -> Duration {
    let buf = pseudo_random(SINGLE_CORE_BUFFER, 1);
    let start = std::time::Instant::now();
    let mut sink = 0u8;
    for _ in 0..SINGLE_CORE_BYTES / SINGLE_CORE_BUFFER {
        for block in buf.chunks_exact(BLOCK_SIZE as usize) {
            sink ^= Sha256::digest(block)[0];
        }
    }
    std::hint::black_box(sink);
    start.elapsed()
}

fn veritysetup(data: &Path, hash: &Path) -> Result<String> {
    let out = run(Command::new("veritysetup")
        .args([
            "format",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
            "--format=1",
        ])
        .arg(format!("--salt={}", hex::encode(PARAMS.salt)))
        .arg(format!("--uuid={}", format_uuid(&PARAMS.uuid)))
        .arg(data)
        .arg(hash))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|r| r.trim().to_string())
        .context("veritysetup printed no root hash")
}

pub fn bench() -> Result<()> {
    heading("dm-verity: 1 GiB image, cvm-image vs veritysetup format");
    let dir = workdir("verity")?;
    let data = dir.join("data.img");
    let mut f = std::fs::File::create(&data)?;
    for i in 0..(DATA_BYTES >> 24) {
        f.write_all(&pseudo_random(1 << 24, i as u64))?;
    }
    drop(f);
    warm(&data)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let single = single_core_sha256();
    let (info, ours) =
        time(|| format_with_threads(&data, &dir.join("ours.hash"), &PARAMS, threads))?;
    let (theirs_root, theirs) = time(|| veritysetup(&data, &dir.join("veritysetup.hash")))?;
    ensure!(
        hex::encode(info.root_hash) == theirs_root,
        "root hashes differ"
    );
    ensure!(
        std::fs::read(dir.join("ours.hash"))? == std::fs::read(dir.join("veritysetup.hash"))?,
        "hash areas differ"
    );
    let single_mib_s = SINGLE_CORE_BYTES as f64 / MIB / single.as_secs_f64();
    let ours_mib_s = DATA_BYTES as f64 / MIB / ours.as_secs_f64();
    println!("single-core sha256     {single_mib_s:>8.0} MiB/s");
    println!(
        "cvm-image ({threads} threads)    {:>8.3} s  {ours_mib_s:.0} MiB/s",
        ours.as_secs_f64()
    );
    println!("veritysetup format     {:>8.3} s", theirs.as_secs_f64());
    println!(
        "speed-up vs veritysetup: {:.2}x (goal >= 1.6x)",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    println!(
        "per-core efficiency:     {:.0} % of single-core sha256 (goal >= 80 %)",
        100.0 * ours_mib_s / threads as f64 / single_mib_s
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

//! CSP/VMM artifacts of a 2 GiB disk: our writers vs `qemu-img convert` (and GNU tar + gzip for GCP).

use super::{heading, workdir};
use anyhow::Result;

const DISK_BYTES: u64 = 2 << 30;

pub fn bench() -> Result<()> {
    heading(
        "CSP artifacts of a 2 GiB disk: cvm-image vs qemu-img convert / tar -S -cz (goal <= 1x)",
    );
    let dir = workdir("formats")?;
    let raw = dir.join(crate::formats::gcp::MEMBER_NAME);
    crate::formats::make_bench_disk(&raw, DISK_BYTES)?;
    for row in crate::formats::bench(&raw, &dir)? {
        println!("{row}");
    }
    // Upper bound for the writers' memory: the high-water mark of this whole benchmark process.
    let status = std::fs::read_to_string("/proc/self/status")?;
    if let Some(hwm) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!(
            "peak RSS of the benchmark process so far: {}",
            hwm.trim_start_matches("VmHWM:").trim()
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

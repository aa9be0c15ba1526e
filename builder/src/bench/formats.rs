//! CSP/VMM artifacts of a 2 GiB disk: our writers vs `qemu-img convert` (and GNU tar + gzip for GCP).

use super::{heading, workdir};
use crate::formats::{gcp, qcow2, vhd, vhd_unique_id, vmdk, vmdk_cid};
use anyhow::{bail, ensure, Context, Result};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

const DISK_BYTES: u64 = 2 << 30;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

pub fn bench() -> Result<()> {
    heading(
        "CSP artifacts of a 2 GiB disk: cvm-image vs qemu-img convert / tar -S -cz (goal <= 1x)",
    );
    let dir = workdir("formats")?;
    let raw = dir.join(gcp::MEMBER_NAME);
    make_bench_disk(&raw, DISK_BYTES)?;
    for row in writers(&raw, &dir)? {
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

/// A benchmark case: format, our writer, the reference command, the reference output name.
type BenchCase<'a> = (
    &'static str,
    Box<dyn Fn(&Path) -> Result<()> + 'a>,
    Vec<String>,
    &'static str,
);

/// One row of the writer benchmark: our writer vs the reference tool writing the same format.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub format: &'static str,
    pub ours: Duration,
    pub reference: Duration,
    pub ours_bytes: u64,
    pub reference_bytes: u64,
    pub reference_command: String,
}

impl BenchRow {
    /// ours / reference: the goal is ≤ 1.
    pub fn ratio(&self) -> f64 {
        self.ours.as_secs_f64() / self.reference.as_secs_f64()
    }
}

impl fmt::Display for BenchRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} ours {:>7.3}s ({:>11} B)  reference {:>7.3}s ({:>11} B)  ratio {:.2}×  [{}]",
            self.format,
            self.ours.as_secs_f64(),
            self.ours_bytes,
            self.reference.as_secs_f64(),
            self.reference_bytes,
            self.ratio(),
            self.reference_command
        )
    }
}

/// Creates the benchmark disk: `size` bytes, sparse, with ~200 MiB of compressible text-like data
/// and ~100 MiB of incompressible data spread over it (a realistic image: kernel, squashfs, zeros).
pub fn make_bench_disk(path: &Path, size: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    ensure!(size >= GIB, "benchmark disk must be at least 1 GiB");
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let words = [
        "cvm",
        "image",
        "verity",
        "squashfs",
        "kernel",
        "module",
        "initrd",
        "attest",
        "pcr",
        "measure",
        "boot",
        "firmware",
        "tpm",
        "workload",
        "0x1f",
        "config",
        "\n",
        "/usr/lib/",
    ];
    // 20 regions of 10 MiB compressible text and 10 regions of 10 MiB random bytes.
    for r in 0..30u64 {
        let mut buf = Vec::with_capacity(10 * MIB as usize + 64);
        if r < 20 {
            while buf.len() < 10 * MIB as usize {
                buf.extend_from_slice(words[(rng.next() % words.len() as u64) as usize].as_bytes());
                buf.push(b' ');
            }
        } else {
            while buf.len() < 10 * MIB as usize {
                buf.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
        buf.truncate(10 * MIB as usize);
        let offset = (r * (size / 30)) / MIB * MIB;
        f.write_all_at(&buf, offset)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Times each of our writers against the reference tool on `raw` (a file named `disk.raw`, as the
/// GCP tar member must be called that), writing into `work_dir`. Every output is deleted after it
/// is measured. Reference commands: `qemu-img convert` to VMDK streamOptimized / fixed VPC / qcow2
/// and `tar --format=gnu -S -czf` (gzip -6, single-threaded, as GNU tar runs it).
pub fn writers(raw: &Path, work_dir: &Path) -> Result<Vec<BenchRow>> {
    ensure!(
        raw.file_name().is_some_and(|n| n == gcp::MEMBER_NAME),
        "benchmark disk must be named {} (it becomes the tar member)",
        gcp::MEMBER_NAME
    );
    let raw_dir = raw
        .parent()
        .context("benchmark disk has no parent directory")?;
    let r = raw.to_str().context("benchmark path is not UTF-8")?;
    let out = |name: &str| work_dir.join(name);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let seed = [0u8; 32];

    let cases: Vec<BenchCase> = vec![
        (
            "vmdk",
            Box::new(move |o: &Path| vmdk::write_stream_optimized(raw, o, vmdk_cid(&seed))),
            vec![
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                r,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "ref.vmdk",
        ),
        (
            "vhd",
            Box::new(move |o: &Path| vhd::write_fixed(raw, o, 0, vhd_unique_id(&seed))),
            vec![
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed,force_size=on",
                r,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "ref.vhd",
        ),
        (
            "qcow2",
            Box::new(move |o: &Path| qcow2::write(raw, o)),
            vec!["qemu-img", "convert", "-f", "raw", "-O", "qcow2", r]
                .into_iter()
                .map(String::from)
                .collect(),
            "ref.qcow2",
        ),
        (
            "gcp",
            Box::new(move |o: &Path| gcp::write_tar_gz(raw, o, 0)),
            vec![
                "tar".to_string(),
                "--format=gnu".into(),
                "-S".into(),
                "-czf".into(),
                "{OUT}".into(),
                "-C".into(),
                s(raw_dir),
                gcp::MEMBER_NAME.into(),
            ],
            "ref.tar.gz",
        ),
    ];

    let mut rows = Vec::new();
    for (format, ours, mut reference, ref_name) in cases {
        let ours_out = out(&format!("ours.{format}"));
        let ref_out = out(ref_name);
        let start = Instant::now();
        ours(&ours_out).with_context(|| format!("benchmark: our {format} writer"))?;
        let ours_time = start.elapsed();
        // qemu-img takes the output as its last argument; tar has an {OUT} placeholder.
        match reference.iter_mut().find(|a| *a == "{OUT}") {
            Some(slot) => *slot = s(&ref_out),
            None => reference.push(s(&ref_out)),
        }
        let start = Instant::now();
        let status = std::process::Command::new(&reference[0])
            .args(&reference[1..])
            .status()
            .with_context(|| format!("benchmark: running {} (installed?)", reference[0]))?;
        let ref_time = start.elapsed();
        if !status.success() {
            bail!("benchmark reference failed: {}", reference.join(" "));
        }
        rows.push(BenchRow {
            format,
            ours: ours_time,
            reference: ref_time,
            ours_bytes: allocated_or_len(&ours_out)?,
            reference_bytes: allocated_or_len(&ref_out)?,
            reference_command: reference.join(" "),
        });
        std::fs::remove_file(&ours_out)?;
        std::fs::remove_file(&ref_out)?;
    }
    Ok(rows)
}

/// Logical size of a benchmark output (for sparse VHDs this is the full disk size).
fn allocated_or_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .len())
}

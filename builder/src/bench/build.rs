//! Whole builds: the default image from cached inputs (no cached stages), a rebuild where only the
//! workload changed, and the peak memory of a build whose root holds 2 GiB.

use super::{heading, peak_rss_kib, pseudo_random, run, workdir};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Spec files a build needs; the guest crates are built from this workspace (CVM_IMAGE_WORKSPACE).
/// `reference/` holds the recorded boots the lock pins: without it a build stops.
const SPEC_ENTRIES: &[&str] = &[
    "image.toml",
    "cvm-image.lock",
    "reference",
    "workload",
    "rootfs",
    "esp",
    "kernel",
];
const BIG_ROOT_BYTES: usize = 2 << 30;
const BIG_FILE_BYTES: usize = 32 << 20;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cvm_image() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .context("no parent of the bench executable")?
        .join("cvm-image");
    anyhow::ensure!(
        p.is_file(),
        "{} is missing: build it first (`make tool`)",
        p.display()
    );
    Ok(p)
}

fn copy_spec(dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in SPEC_ENTRIES {
        run(Command::new("cp").arg("-a").arg(repo().join(e)).arg(dest))?;
    }
    Ok(())
}

/// A cache directory that shares the downloaded and extracted packages of the default cache, but not
/// its stages: the build does all its own work.
fn cold_stage_cache(dir: &Path) -> Result<PathBuf> {
    let shared = crate::inputs::cache::Cache::default_location();
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache)?;
    for sub in ["debs", "extract", "apt"] {
        let from = shared.join(sub);
        anyhow::ensure!(
            from.exists(),
            "{} is missing: run `make fixtures` first",
            from.display()
        );
        std::os::unix::fs::symlink(&from, cache.join(sub))?;
    }
    Ok(cache)
}

fn build_cmd(exe: &Path, spec_dir: &Path, out: &Path, cache: &Path) -> Command {
    let mut c = Command::new(exe);
    c.arg("build")
        .arg("--spec")
        .arg(spec_dir.join("image.toml"))
        .arg("--out")
        .arg(out)
        .env("CVM_IMAGE_CACHE", cache)
        .env("CVM_IMAGE_WORKSPACE", repo());
    c
}

fn timed_build(exe: &Path, spec_dir: &Path, out: &Path, cache: &Path) -> Result<f64> {
    let start = std::time::Instant::now();
    run(&mut build_cmd(exe, spec_dir, out, cache))?;
    Ok(start.elapsed().as_secs_f64())
}

pub fn bench() -> Result<()> {
    let exe = cvm_image()?;
    let dir = workdir("build")?;
    let spec = dir.join("spec");
    copy_spec(&spec)?;
    let cache = cold_stage_cache(&dir)?;

    heading("cvm-image build of the default image");
    // Guest binaries are compiled by cargo and are not part of the image build proper: warm them first.
    run(&mut build_cmd(&exe, &spec, &dir.join("warm"), &cache))?;
    let _ = std::fs::remove_dir_all(cache.join("stages"));
    let cold = timed_build(&exe, &spec, &dir.join("out1"), &cache)?;
    println!("from cached inputs, no cached stages: {cold:>6.2} s");
    let start = std::time::Instant::now();
    run(Command::new(&exe)
        .arg("measure")
        .arg("--spec")
        .arg(spec.join("image.toml"))
        .arg("--out")
        .arg(dir.join("measure"))
        .env("CVM_IMAGE_CACHE", &cache)
        .env("CVM_IMAGE_WORKSPACE", repo()))?;
    println!(
        "cvm-image measure, cached inputs:     {:>6.2} s (goal well under 1 s)",
        start.elapsed().as_secs_f64()
    );
    let greeting = spec.join("workload/config/greeting.txt");
    let mut f = std::fs::OpenOptions::new().append(true).open(&greeting)?;
    writeln!(f, "bench")?;
    let rebuild = timed_build(&exe, &spec, &dir.join("out2"), &cache)?;
    println!("rebuild, only workload/ changed:      {rebuild:>6.2} s (goal < 2 s)");

    heading("peak memory of a build with a 2 GiB root");
    let overlay = spec.join("rootfs/srv/bulk");
    std::fs::create_dir_all(&overlay)?;
    for i in 0..BIG_ROOT_BYTES / BIG_FILE_BYTES {
        // Half compressible (repeated text), half random: a realistic squashfs workload.
        let data = if i % 2 == 0 {
            b"cvm-image benchmark line of compressible text\n".repeat(BIG_FILE_BYTES / 46 + 1)
                [..BIG_FILE_BYTES]
                .to_vec()
        } else {
            pseudo_random(BIG_FILE_BYTES, i as u64)
        };
        std::fs::write(overlay.join(format!("file{i:03}")), data)?;
    }
    let (kib, took) = peak_rss_kib(&mut build_cmd(&exe, &spec, &dir.join("out3"), &cache))?;
    println!(
        "peak RSS {:>6.0} MiB over {:.1} s (goal < 300 MiB)",
        kib as f64 / 1024.0,
        took.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::lock::Lockfile;
    use crate::reference::{lock_dir, Variant};
    use crate::spec::Spec;
    use crate::testutil::TempDir;

    /// The bench's copy of the spec holds everything a build of it reads: the spec's own files
    /// inside the copy, the lock, and every reference boot the lock pins, with the pinned hash
    /// (the bench's build once stopped because `reference/` was not copied).
    #[test]
    fn the_bench_spec_copy_has_everything_the_build_reads() {
        let tmp = TempDir::new("bench-spec-copy");
        let dest = tmp.join("spec");
        copy_spec(&dest).unwrap();
        let spec = Spec::load(&dest.join("image.toml"), None).unwrap();
        let mut read = vec![
            spec.path.clone(),
            spec.kernel_profile.clone(),
            spec.uki.os_release.clone(),
            spec.rootfs.overlay.clone(),
        ];
        read.extend(spec.uki.cmdline.clone());
        read.extend(spec.workload.as_ref().map(|w| w.dir.clone()));
        for p in &read {
            assert!(p.starts_with(&dest), "{} is outside the copy", p.display());
            assert!(p.exists(), "{} is missing from the copy", p.display());
        }
        let lock_path = crate::fetch::InputPaths::resolve(&spec, None, None).lock;
        assert!(lock_path.starts_with(&dest) && lock_path.is_file());
        let lock = Lockfile::load(&lock_path).unwrap();
        let original = Lockfile::load(&repo().join(crate::fetch::LOCK_FILE)).unwrap();
        for variant in Variant::ALL {
            let Some(pin) = original.reference(variant.name()) else {
                continue;
            };
            assert!(lock.reference(variant.name()).is_some());
            let file = lock_dir(&lock_path).join(&pin.file);
            let bytes = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("{} is missing from the copy: {e}", file.display()));
            assert_eq!(hex::encode(crate::ids::sha256(&bytes)), pin.sha256);
        }
    }
}

//! `make bench`: speed figures as ratios against the reference tools, measured in the same run.
//!
//! Each benchmark prints its own lines; [`run_all`] runs them in order. Inputs are generated
//! deterministically (so runs compare), outputs are checked against the reference tool's before a
//! figure is printed: a fast wrong answer is not a result.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod boot;
pub mod build;
pub mod formats;
pub mod squashfs;
pub mod verity;

pub const MIB: f64 = (1u64 << 20) as f64;

/// Scratch directory of a benchmark run (under `target/bench` of the workspace, on the same disk).
pub fn workdir(name: &str) -> Result<PathBuf> {
    let base = std::env::var_os("CVM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d)
}

/// Deterministic incompressible bytes (splitmix64).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Time a closure.
pub fn time<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let v = f()?;
    Ok((v, start.elapsed()))
}

/// Run a command, failing with its output when it fails; returns stdout.
pub fn run(cmd: &mut std::process::Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown} (run `make deps`)"))?;
    anyhow::ensure!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Peak resident memory (KiB) of a command, from GNU time's `-v` report.
pub fn peak_rss_kib(cmd: &mut std::process::Command) -> Result<(u64, Duration)> {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed.arg("-v").arg(program).args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        timed.current_dir(d);
    }
    let start = Instant::now();
    let out = timed
        .output()
        .context("cannot run /usr/bin/time (apt package `time`; run `make deps`)")?;
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "{timed:?} failed:\n{stderr}");
    let kib = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .context("GNU time printed no maximum resident set size")?
        .trim()
        .parse()?;
    Ok((kib, elapsed))
}

pub fn heading(title: &str) {
    println!("\n== {title}");
}

/// Every benchmark, in order.
pub fn run_all() -> Result<()> {
    verity::bench()?;
    squashfs::bench()?;
    build::bench()?;
    formats::bench()?;
    boot::bench()?;
    Ok(())
}

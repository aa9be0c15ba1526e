//! Boot time under TCG, from QEMU start to the agent's health, split into firmware (OVMF +
//! systemd-stub + kernel decompression), kernel, initramfs (of which module loading) and agent start —
//! from the console's timestamps. Also the initramfs size.

use super::{heading, run, workdir};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Boots averaged (TCG timing varies with the machine's load).
const BOOTS: usize = 2;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn bench() -> Result<()> {
    heading(&format!(
        "boot under TCG: QEMU start to agent healthy (mean of {BOOTS} boots)"
    ));
    let exe = std::env::current_exe()?
        .parent()
        .context("no bench dir")?
        .join("cvm-image");
    let dir = workdir("boot")?;
    let spec = repo().join("image.toml");
    run(Command::new(&exe)
        .arg("build")
        .arg("--spec")
        .arg(&spec)
        .arg("--out")
        .arg(&dir))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    println!(
        "initramfs {:.0} KiB (zstd), {} modules",
        manifest["initramfs"]["size"].as_u64().unwrap_or(0) as f64 / 1024.0,
        manifest["initramfs"]["modules"]
            .as_array()
            .map_or(0, |m| m.len())
    );
    let mut timings = vec![];
    for _ in 0..BOOTS {
        run(Command::new(&exe)
            .arg("run")
            .arg("--detach")
            .arg("--spec")
            .arg(&spec)
            .arg("--out")
            .arg(&dir))?;
        let timing = crate::qemu::boot_timing(&dir.join("console.log"));
        run(Command::new(&exe).arg("stop").arg("--out").arg(&dir))?;
        let timing = timing?;
        println!("  {}", timing.summary());
        timings.push(timing);
    }
    let mean = |f: &dyn Fn(&crate::qemu::timing::BootTiming) -> Option<f64>| {
        let v: Vec<f64> = timings.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let show = |v: Option<f64>| v.map_or("?".to_string(), |s| format!("{s:.2} s"));
    println!(
        "firmware (OVMF, stub, decompression) {}",
        show(mean(&|t| t.firmware_secs))
    );
    println!(
        "kernel                               {}",
        show(mean(&|t| Some(t.kernel_secs)))
    );
    println!(
        "initramfs / init                     {}",
        show(mean(&|t| Some(t.initramfs_secs)))
    );
    println!(
        "  of which module loading            {}",
        show(mean(&|t| t.init_modules_secs))
    );
    println!(
        "agent start to healthy               {}",
        show(mean(&|t| Some(t.agent_secs)))
    );
    println!(
        "QEMU start to healthy                {}",
        show(mean(&|t| t.total_secs))
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

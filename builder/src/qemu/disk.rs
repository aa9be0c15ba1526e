//! Refuse to boot what is not a cvm-image disk, with a message that says why and what to do.
//!
//! QEMU would happily boot a missing or truncated file into the firmware's "no bootable device" screen
//! and sit there until the health timeout; checking the GPT first turns that into an immediate, clear
//! error.

use crate::gpt::{self, DiskLayout};
use anyhow::{bail, Context, Result};
use std::path::Path;
use uuid::Uuid;

/// The partitions without which the image cannot boot: (GPT type, what it is).
const REQUIRED: [(Uuid, &str); 3] = [
    (gpt::ESP_TYPE, "EFI system partition"),
    (gpt::ROOT_X86_64_TYPE, "root (x86-64)"),
    (gpt::ROOT_VERITY_X86_64_TYPE, "root verity (x86-64)"),
];

/// First bytes of a qcow2 image ("QFI\xfb").
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// Checks the image and returns its QEMU format: a qcow2 (from `build --target qemu`) must pass
/// `qemu-img check`; a raw disk must hold our GPT (see [`check_raw`]).
pub fn check(disk: &Path) -> Result<&'static str> {
    let mut magic = [0u8; 4];
    let is_qcow2 = std::fs::File::open(disk)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == QCOW2_MAGIC;
    if !is_qcow2 {
        check_raw(disk)?;
        return Ok("raw");
    }
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-q", "-f", "qcow2"])
        .arg(disk)
        .output()
        .context("cannot run qemu-img (Debian package qemu-utils; run `make deps`)")?;
    if !out.status.success() {
        bail!(
            "{} is a damaged qcow2 image (qemu-img check: {}); rebuild it with `cvm-image build --target qemu`",
            disk.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok("qcow2")
}

/// Checks that `disk` exists, has a valid primary GPT with the ESP and the root verity pair, and that no
/// partition extends past the end of the file. Returns the layout read.
pub fn check_raw(disk: &Path) -> Result<DiskLayout> {
    if !disk.exists() {
        bail!(
            "{} does not exist: build the image first (`cvm-image build --out {}` or `make image`)",
            disk.display(),
            disk.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    let layout = gpt::read_layout(disk).with_context(|| {
        format!(
            "{} is not a cvm-image disk (no valid GPT); rebuild it with `cvm-image build`",
            disk.display()
        )
    })?;
    check_layout(disk, &layout)?;
    Ok(layout)
}

fn check_layout(disk: &Path, layout: &DiskLayout) -> Result<()> {
    for (ty, what) in REQUIRED {
        if !layout.partitions.iter().any(|p| p.type_guid == ty) {
            bail!(
                "{} is not a cvm-image disk: it has no {what} partition (GPT type {ty}); rebuild it with \
                 `cvm-image build`",
                disk.display()
            );
        }
    }
    for p in &layout.partitions {
        let end = (p.last_lba + 1) * gpt::SECTOR;
        if end > layout.size_bytes {
            bail!(
                "{} is truncated: partition {} ({}) ends at byte {end} but the file has {} bytes; rebuild it \
                 with `cvm-image build`",
                disk.display(),
                p.number,
                p.name,
                layout.size_bytes
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::PlacedPartition;

    fn part(number: u32, type_guid: Uuid, first_lba: u64, last_lba: u64) -> PlacedPartition {
        PlacedPartition {
            number,
            name: format!("p{number}"),
            type_guid,
            uuid: Uuid::nil(),
            first_lba,
            last_lba,
            size_bytes: (last_lba + 1 - first_lba) * gpt::SECTOR,
            attributes: 0,
        }
    }

    fn layout(parts: Vec<PlacedPartition>, size_bytes: u64) -> DiskLayout {
        DiskLayout {
            disk_guid: Uuid::nil(),
            size_bytes,
            partitions: parts,
        }
    }

    #[test]
    fn requires_esp_and_root_pair_within_the_file() {
        let d = Path::new("x.raw");
        let full = vec![
            part(1, gpt::ESP_TYPE, 2048, 4095),
            part(2, gpt::ROOT_X86_64_TYPE, 4096, 6143),
            part(3, gpt::ROOT_VERITY_X86_64_TYPE, 6144, 8191),
        ];
        check_layout(d, &layout(full.clone(), 8192 * 512 + 33 * 512)).unwrap();

        let err = check_layout(d, &layout(full[..2].to_vec(), 1 << 30)).unwrap_err();
        assert!(
            err.to_string()
                .contains("no root verity (x86-64) partition"),
            "{err}"
        );

        let err = check_layout(d, &layout(full, 7000 * 512)).unwrap_err();
        assert!(
            err.to_string().contains("x.raw is truncated: partition 3"),
            "{err}"
        );
    }

    #[test]
    fn missing_and_non_gpt_files_are_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("cvm-disk-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("disk.raw");
        let _ = std::fs::remove_file(&missing);
        let err = format!("{:#}", check(&missing).unwrap_err());
        assert!(
            err.contains("does not exist: build the image first"),
            "{err}"
        );

        std::fs::write(&missing, vec![0u8; 1 << 20]).unwrap();
        let err = format!("{:#}", check(&missing).unwrap_err());
        assert!(
            err.contains("is not a cvm-image disk (no valid GPT)"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The expected TCG event log of a boot of a built image on the `qemu` profile (`cvm-image run`:
//! QEMU q35 + the pinned OVMF with its empty VARS template + swtpm, Secure Boot off), from the
//! built files alone: `uki.efi`, `disk.raw`, the OVMF VARS template and the workload measurement.
//!
//! The rules live in [`cvm_measure::predict`]; this module only gathers the inputs (the GPT event
//! payload from the disk, the workload events from the manifest's verity root hash and the spec's
//! `workload.toml`) and names the files in its errors.
//!
//! Not covered: PCRs 0 and 1 (the OVMF build's firmware volumes, QEMU's ACPI tables and the boot
//! options the firmware creates): they need a reference boot of the pinned firmware and
//! configuration. PCR 10 is IMA's.

use std::path::Path;

use anyhow::{Context, Result};
use cvm_measure::eventlog::{ExpectedEvent, HashAlg};
use cvm_measure::predict::{self, BootInputs};
use cvm_measure::workload::{self, RuntimeEvent};

use crate::gpt;
use crate::manifest::Manifest;
use crate::rootfs::WORKLOAD_MANIFEST;
use crate::spec::Spec;

/// Where OVMF finds the UKI: the removable-media path of the ESP.
pub const UKI_ESP_PATH: &str = r"\EFI\BOOT\BOOTX64.EFI";
/// Banks every event is predicted in: all four a TPM may have active (swtpm as `cvm-image run`
/// provisions it has all four; GCE's vTPM SHA-1/256/384). Which of them a golden profile lists is
/// [`crate::golden`]'s choice.
pub const BANKS: [HashAlg; 4] = cvm_measure::workload::HASHABLE_BANKS;

/// Expected events, in boot order, of a boot of `disk` whose ESP holds `uki` at
/// [`UKI_ESP_PATH`], started from the VARS file `ovmf_vars`, with the init measuring `workload`.
pub fn expected_events(
    uki: &Path,
    disk: &Path,
    ovmf_vars: &Path,
    workload: &[RuntimeEvent],
    banks: &[HashAlg],
) -> Result<Vec<ExpectedEvent>> {
    let uki_bytes =
        std::fs::read(uki).with_context(|| format!("cannot read the UKI {}", uki.display()))?;
    let vars = std::fs::read(ovmf_vars)
        .with_context(|| format!("cannot read the OVMF VARS file {}", ovmf_vars.display()))?;
    let gpt_event_data = gpt::gpt_event_data(disk)?;
    let inputs = BootInputs {
        uki: &uki_bytes,
        uki_path: UKI_ESP_PATH,
        gpt_event_data: &gpt_event_data,
        ovmf_vars: &vars,
        workload,
    };
    predict::boot_events(&inputs, banks).with_context(|| {
        format!(
            "predicting the boot of {} (UKI {}, VARS {})",
            disk.display(),
            uki.display(),
            ovmf_vars.display()
        )
    })
}

/// Expected events for the output directory of `cvm-image build` (`OUT/uki.efi`, `OUT/disk.raw`,
/// `OUT/manifest.json`) of `spec`, booted from `ovmf_vars`.
pub fn expected_events_for_output(
    out: &Path,
    spec: &Spec,
    ovmf_vars: &Path,
    banks: &[HashAlg],
) -> Result<Vec<ExpectedEvent>> {
    let manifest_path = out.join("manifest.json");
    let text = std::fs::read(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a cvm-image manifest", manifest_path.display()))?;
    let workload = workload_events(&manifest, spec)?;
    expected_events(
        &out.join("uki.efi"),
        &out.join("disk.raw"),
        ovmf_vars,
        &workload,
        banks,
    )
}

/// The init's PCR 23 events for the image: the workload verity root hash recorded in the manifest
/// and the spec's `workload.toml` (the file the partition carries). Empty without a workload.
pub fn workload_events(manifest: &Manifest, spec: &Spec) -> Result<Vec<RuntimeEvent>> {
    let Some(entry) = &manifest.verity.workload else {
        return Ok(Vec::new());
    };
    let root_hash: [u8; 32] = hex::decode(&entry.root_hash)
        .ok()
        .and_then(|v| v.try_into().ok())
        .with_context(|| {
            format!(
                "manifest workload root hash {:?} is not 64 hex digits",
                entry.root_hash
            )
        })?;
    workload_events_for_hash(&root_hash, spec)
}

/// The init's PCR 23 events for a workload partition whose verity root hash is `root_hash` and
/// the spec's `workload.toml`. Empty when the spec has no workload.
pub fn workload_events_for_hash(root_hash: &[u8; 32], spec: &Spec) -> Result<Vec<RuntimeEvent>> {
    let Some(w) = &spec.workload else {
        return Ok(Vec::new());
    };
    let path = w.dir.join(WORKLOAD_MANIFEST);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(workload::workload_events(
        root_hash,
        WORKLOAD_MANIFEST,
        &bytes,
        &BANKS,
    ))
}

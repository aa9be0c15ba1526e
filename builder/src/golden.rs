//! `golden-measurement.json`: what an honest VM built from this spec measures, per deployment profile,
//! written at build time (docs/golden-measurement.md documents the schema).
//!
//! Every PCR of every profile is marked `predicted` (computed from the built files, with its expected
//! event log), `reference` (taken from a recorded reference boot) or `unknown` (the platform decides
//! it), and `enforce: true|false` — whether a verifier should reject a VM whose value differs. The
//! rules per profile follow reference/measured-boot.md §1 and §3: the OS-controlled PCRs are the same
//! formula everywhere; firmware PCRs are the VMM's or the cloud's.

use anyhow::{Context, Result};
use cvm_measure::eventlog::{ExpectedEvent, HashAlg};
use cvm_measure::predict::{pcr4::KERNEL_DESCRIPTION, pcr_values};
use std::collections::BTreeMap;

pub use cvm_verify::golden::*;

/// How one profile treats one PCR.
#[derive(Clone, Copy)]
enum Rule {
    /// Predicted from the built files and enforced.
    Enforce,
    /// Predicted, but informational: the platform may legitimately change it.
    Inform(&'static str),
    /// Predicted with Secure Boot on (the clouds' default): the stub loads the kernel without a PCR 4 event.
    EnforceSecureBootOn,
    /// Not predictable from the image.
    Unknown(&'static str),
}

const FW_QEMU: &str = "OVMF firmware volumes and QEMU's memory/CPU/ACPI configuration; no reference boot is recorded yet";
const IMA: &str = "IMA (kernel, at run time); not used by this image";
const CLOUD_FW: &str = "the cloud's firmware and VM configuration";
const CLOUD_KEYS: &str =
    "Secure Boot variables hold the provider's or the owner's keys and dbx updates";
const DISK_RESIZE: &str = "changes when the cloud resizes the disk (backup GPT header moves)";
const SEPARATOR_CLOUD: &str = "separator only on this cloud's firmware (informational)";

fn rule(profile: &str, pcr: u32) -> Rule {
    use Rule::*;
    match (profile, pcr) {
        (_, 10) => Unknown(IMA),
        ("qemu", 0 | 1) => Unknown(FW_QEMU),
        ("qemu", _) => Enforce,
        (_, 0 | 1) => Unknown(CLOUD_FW),
        (_, 7) => Unknown(CLOUD_KEYS),
        (_, 5) => Inform(DISK_RESIZE),
        (_, 2 | 3) => Inform(SEPARATOR_CLOUD),
        ("azure", 6) => Unknown("Azure measures the VM's unique id into PCR 6"),
        (_, 6) => Inform(SEPARATOR_CLOUD),
        (_, 4) => EnforceSecureBootOn,
        (_, _) => Enforce,
    }
}

const QEMU_SECURE_BOOT: &str =
    "cvm-image run --secure-boot: QEMU q35 (SMM) + the pinned OVMF secboot build \
     with the owner's keys enrolled + swtpm";

pub const PROFILES: [(&str, &str); 4] = [
    (
        "qemu",
        "cvm-image run: QEMU q35 + the pinned OVMF (Secure Boot off) + swtpm",
    ),
    ("gcp", "Google Cloud confidential VM (vTPM, Secure Boot on)"),
    ("aws", "AWS EC2 with NitroTPM (Secure Boot on)"),
    ("azure", "Azure confidential VM (vTPM, Secure Boot on)"),
];

/// The golden measurements of an image whose qemu-profile boot is `events` (in boot order).
pub fn golden(
    name: &str,
    version: &str,
    uki_sha256: &str,
    secure_boot: bool,
    events: &[ExpectedEvent],
) -> Result<Golden> {
    let mut profiles = BTreeMap::new();
    for (profile, description) in PROFILES {
        let description = match (profile, secure_boot) {
            ("qemu", true) => QEMU_SECURE_BOOT,
            _ => description,
        };
        let mut bank = BTreeMap::new();
        for pcr in PCRS {
            bank.insert(pcr.to_string(), entry(rule(profile, pcr), pcr, events)?);
        }
        profiles.insert(
            profile.to_string(),
            Profile {
                description: description.into(),
                pcrs: BTreeMap::from([("sha256".to_string(), bank)]),
            },
        );
    }
    Ok(Golden {
        format: FORMAT,
        generator: format!("cvm-image {}", env!("CARGO_PKG_VERSION")),
        image: ImageRef {
            name: name.into(),
            version: version.into(),
            uki_sha256: uki_sha256.into(),
        },
        profiles,
    })
}

fn entry(rule: Rule, pcr: u32, all: &[ExpectedEvent]) -> Result<PcrEntry> {
    let (enforce, note, keep_kernel) = match rule {
        Rule::Unknown(why) => {
            return Ok(PcrEntry {
                value: None,
                source: Source::Unknown,
                enforce: false,
                note: Some(why.into()),
                events: vec![],
            })
        }
        Rule::Enforce => (true, None, true),
        Rule::Inform(why) => (false, Some(why.to_string()), true),
        Rule::EnforceSecureBootOn => (
            true,
            Some("Secure Boot on: no kernel event (systemd-stub 252)".to_string()),
            false,
        ),
    };
    let events: Vec<ExpectedEvent> = all
        .iter()
        .filter(|e| e.pcr == pcr && (keep_kernel || e.description != KERNEL_DESCRIPTION))
        .cloned()
        .collect();
    let value = pcr_values(&events, &[pcr], HashAlg::SHA256)
        .with_context(|| format!("replaying the expected events of PCR {pcr}"))?;
    Ok(PcrEntry {
        value: value.get(&pcr).map(hex::encode),
        source: Source::Predicted,
        enforce,
        note,
        events,
    })
}

//! `golden-measurement.json`: what an honest VM built from this spec measures, per deployment profile,
//! written at build time (docs/golden-measurement.md documents the schema).
//!
//! Every PCR of every profile is marked `predicted` (computed from the built files, with its expected
//! event log), `reference` (taken from a recorded reference boot) or `unknown` (the platform decides
//! it), and `enforce: true|false` — whether a verifier should reject a VM whose value differs. The
//! rules per profile follow docs/measured-boot.md §1 and §3: the OS-controlled PCRs are the same
//! formula everywhere; firmware PCRs are the VMM's or the cloud's.

use crate::reference::Pinned;
use anyhow::{bail, Context, Result};
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
    /// From the recorded reference boot pinned in the lock (src/reference), enforced; `unknown`
    /// with the reason when none is usable.
    Reference,
}

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
        ("qemu", 0 | 1) => Reference,
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

/// PCR banks of `cvm-image run`'s swtpm (builder/src/qemu/swtpm.rs `ACTIVE_PCR_BANKS`: SHA-1, SHA-256,
/// SHA-384, SHA-512) minus SHA-1.
///
/// No profile lists SHA-1, although the TPMs have it and every event is predicted in it
/// (tests/predict_boot.rs checks the SHA-1 bank too): SHA-1 collisions are practical (chosen-prefix,
/// 2020), so a SHA-1 PCR value does not pin what was measured, and a golden file should not invite a
/// verifier to accept one.
const QEMU_BANKS: [HashAlg; 3] = [HashAlg::SHA256, HashAlg::SHA384, HashAlg::SHA512];
/// Google Cloud's vTPM has SHA-1, SHA-256 and SHA-384 active: the Spec ID event of every crypto-agile
/// GCE log in /work/shared/testdata/eventlog (gce-cos101-sev, gce-ubuntu2404-sevsnp,
/// gce-rhel8-secureboot, gce-ubuntu1804-sev-secureboot) lists those three, and
/// testdata/tpm-quote/gce-cos85-* holds a quote of each bank.
const GCP_BANKS: [HashAlg; 2] = [HashAlg::SHA256, HashAlg::SHA384];
/// NitroTPM: SHA-384 is the bank AWS attests (testdata/tpm-quote/aws-nitrotpm-vaportpm.json: the quote
/// and the Nitro attestation document's `nitrotpm_pcrs` are SHA-384); SHA-256 is the bank TCG PC
/// Client TPMs must have, kept from before.
const AWS_BANKS: [HashAlg; 2] = [HashAlg::SHA256, HashAlg::SHA384];
/// Azure's vTPM quotes in testdata/azure (azure-{snp,tdx}-tpm-quote-trustee.json, from trustee) are of
/// the SHA-256 bank; nothing here shows an active SHA-384 bank.
const AZURE_BANKS: [HashAlg; 1] = [HashAlg::SHA256];

/// The banks a profile's golden values are given in (see the constants for the evidence).
fn profile_banks(profile: &str) -> &'static [HashAlg] {
    match profile {
        "qemu" => &QEMU_BANKS,
        "gcp" => &GCP_BANKS,
        "aws" => &AWS_BANKS,
        _ => &AZURE_BANKS,
    }
}

/// The golden measurements of `image` (its name, version, UKI hash and optional security
/// version), whose qemu-profile boot is `events` (in boot order, with digests in every bank of
/// [`profile_banks`]), with the qemu profile's PCR 0/1 from `firmware` (the pinned reference boot
/// of the same Secure Boot mode).
pub fn golden(
    image: ImageRef,
    secure_boot: bool,
    events: &[ExpectedEvent],
    firmware: &Pinned,
) -> Result<Golden> {
    let mut profiles = BTreeMap::new();
    for (profile, description) in PROFILES {
        let description = match (profile, secure_boot) {
            ("qemu", true) => QEMU_SECURE_BOOT,
            _ => description,
        };
        let mut pcrs = BTreeMap::new();
        for &bank in profile_banks(profile) {
            let mut values = BTreeMap::new();
            for pcr in PCRS {
                let e = match rule(profile, pcr) {
                    Rule::Reference => firmware.entry(pcr, bank, &[bank])?,
                    r => entry(r, pcr, bank, events)?,
                };
                values.insert(pcr.to_string(), e);
            }
            pcrs.insert(bank.name(), values);
        }
        profiles.insert(
            profile.to_string(),
            Profile {
                description: description.into(),
                pcrs,
            },
        );
    }
    Ok(Golden {
        format: FORMAT,
        generator: format!("cvm-image {}", env!("CARGO_PKG_VERSION")),
        image,
        profiles,
    })
}

/// The entry of `pcr` in `bank`; its events carry only that bank's digest (each bank's section
/// replays on its own).
fn entry(rule: Rule, pcr: u32, bank: HashAlg, all: &[ExpectedEvent]) -> Result<PcrEntry> {
    let (enforce, note, keep_kernel) = match rule {
        Rule::Reference => bail!("internal error: PCR {pcr} is a reference value, not predicted"),
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
        .map(|e| {
            let mut e = e.clone();
            e.digests.retain(|alg, _| *alg == bank);
            e
        })
        .collect();
    let value = pcr_values(&events, &[pcr], bank)
        .with_context(|| format!("replaying the expected events of PCR {pcr} in {bank}"))?;
    Ok(PcrEntry {
        value: value.get(&pcr).map(hex::encode),
        source: Source::Predicted,
        enforce,
        note,
        events,
    })
}

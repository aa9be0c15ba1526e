//! Prediction of the TCG event log a correct boot of a built image produces: OVMF (edk2
//! 2022.11) → systemd-stub 252 UKI at `\EFI\BOOT\BOOTX64.EFI` → Linux EFI stub → the project's
//! init, Secure Boot off.
//!
//! Every event is derived from the built artifacts alone (the UKI file, the disk's GPT, the VARS
//! file the VM boots with, the workload measurement) — never from a boot. The rules are those of
//! docs/measured-boot.md §3–§9; each was checked against a real boot of exactly these components
//! (tests/predict_boot.rs):
//!
//! | PCR | events | module |
//! |---|---|---|
//! | 2, 3, 6 | separator (no option ROMs on the QEMU machine) | [`separator`] |
//! | 4 | "Calling EFI Application from Boot Option", separator, Authenticode of the UKI, Authenticode of the in-memory kernel (stub 252–257, Secure Boot off) | [`pcr4`] |
//! | 5 | separator, GPT, the two ExitBootServices actions | [`pcr5`] |
//! | 7 | SecureBoot, PK, KEK, db, dbx from the VARS file, separator | [`pcr7`] |
//! | 9 | Linux stub: LoadOptions (UTF-16 cmdline), initrd | [`pcr9`] |
//! | 11 | systemd-stub: two EV_IPL per UKI section | [`pcr11`] |
//! | 8, 12–15 | none: the value stays zero | [`EMPTY_PCRS`] |
//! | 23 | the init's workload events | [`pcr23`] |
//!
//! PCRs 0 and 1 depend on the OVMF build and on the QEMU configuration (firmware volumes, ACPI
//! tables, boot options the firmware creates) and are not predicted here; PCR 10 belongs to IMA.
//!
//! Banks: every event is predicted in every requested bank of SHA-1, SHA-256, SHA-384 and SHA-512
//! (the firmware measures the same bytes into every active bank, Authenticode included; another
//! algorithm is an [`PredictError::UnsupportedBank`] error). PCR 23 carries the banks of the
//! [`RuntimeEvent`]s given (the init extends every active bank).

pub mod pcr11;
pub mod pcr23;
pub mod pcr4;
pub mod pcr5;
pub mod pcr7;
pub mod pcr9;
pub mod varstore;

use std::collections::BTreeMap;

use crate::eventlog::{replay_expected, EventLogError, EventType, ExpectedEvent, HashAlg};
use crate::pe::PeError;
use crate::workload::RuntimeEvent;

/// Why a prediction could not be made. Every variant names what was being predicted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PredictError {
    /// The UKI (or the kernel inside it) is not a PE image the rules apply to.
    #[error("{what}: {source}")]
    Pe {
        what: String,
        #[source]
        source: PeError,
    },
    /// An expected event could not be formed (unknown bank).
    #[error(transparent)]
    EventLog(#[from] EventLogError),
    /// The OVMF variable store is malformed.
    #[error("OVMF variable store: {0}")]
    VarStore(String),
    /// The inputs describe a boot whose measurements were never checked against a real log;
    /// predicting it would give a value nobody verified.
    #[error("not predicted: {0}")]
    Unsupported(String),
    /// A digest this crate cannot compute in that bank.
    #[error("{what} cannot be predicted in bank {bank}: only sha1, sha256, sha384 and sha512 are implemented")]
    UnsupportedBank { what: String, bank: HashAlg },
}

impl PredictError {
    pub(crate) fn pe(what: impl Into<String>) -> impl FnOnce(PeError) -> Self {
        let what = what.into();
        move |source| PredictError::Pe { what, source }
    }
}

/// Result of this module.
pub type Result<T, E = PredictError> = std::result::Result<T, E>;

/// Event data (and measured bytes) of EV_SEPARATOR: a UINT32 0 (PFP §10.4.1, edk2 `Tcg2Dxe.c`).
pub const SEPARATOR_DATA: [u8; 4] = [0; 4];
/// PCRs that only receive the firmware's separator on the QEMU q35 machine without option ROMs
/// (docs/measured-boot.md §3, §12).
pub const SEPARATOR_ONLY_PCRS: [u32; 3] = [2, 3, 6];
/// PCRs nothing extends in this boot chain: no grub (8), no stub addons/credentials/profiles (12),
/// no sysexts (13), no shim (14), no systemd userspace (15). Expected zero.
pub const EMPTY_PCRS: [u32; 5] = [8, 12, 13, 14, 15];
/// Every PCR this module predicts, ascending.
/// PCR 23 is predicted too, by [`pcr23`], but from the init's runtime log, not the firmware log.
pub const PREDICTED_PCRS: [u32; 13] = [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];

/// What the boot reads, as built.
#[derive(Debug, Clone, Copy)]
pub struct BootInputs<'a> {
    /// The UKI file exactly as the firmware reads it from the ESP.
    pub uki: &'a [u8],
    /// Path of the UKI on the ESP, for descriptions (`\EFI\BOOT\BOOTX64.EFI`).
    pub uki_path: &'a str,
    /// `EFI_GPT_DATA` of the boot disk (the builder's `gpt::gpt_event_data`).
    pub gpt_event_data: &'a [u8],
    /// The OVMF VARS file the VM starts from (a fresh copy of the pinned template).
    pub ovmf_vars: &'a [u8],
    /// The init's PCR 23 events ([`crate::workload::workload_events`]); empty without a workload.
    pub workload: &'a [RuntimeEvent],
}

/// The expected events of a whole boot, in the order the components log them (so that an
/// expected log written from them reads like the real one): PCR 7 variables and separator, the
/// boot-option action, the separators of PCRs 2–6, the GPT, the UKI, the stub's PCR 11 events,
/// the kernel image, the Linux stub's PCR 9 events, ExitBootServices, then the init's PCR 23.
pub fn boot_events(inputs: &BootInputs<'_>, banks: &[HashAlg]) -> Result<Vec<ExpectedEvent>> {
    let secure_boot = pcr7::secure_boot_events(inputs.ovmf_vars, banks)?;
    let pcr4 = pcr4::Pcr4::new(inputs.uki, inputs.uki_path, banks)?;
    let mut events = secure_boot.events;
    events.push(pcr4.boot_option_action.clone());
    for pcr in 2..=6 {
        events.push(separator(pcr, banks)?);
    }
    events.push(pcr5::gpt_event(inputs.gpt_event_data, banks)?);
    events.push(pcr4.uki.clone());
    events.extend(pcr11::uki_section_events(inputs.uki, banks)?);
    events.extend(pcr4.kernel.clone());
    events.extend(pcr9::linux_stub_events(inputs.uki, banks)?);
    events.extend(pcr5::exit_boot_services_events(banks)?);
    events.extend(pcr23::workload_events(inputs.workload));
    Ok(events)
}

/// EV_SEPARATOR into `pcr`.
pub fn separator(pcr: u32, banks: &[HashAlg]) -> Result<ExpectedEvent> {
    Ok(ExpectedEvent::hashing(
        pcr,
        EventType::EV_SEPARATOR,
        "separator",
        &SEPARATOR_DATA,
        Some(SEPARATOR_DATA.to_vec()),
        banks,
    )?)
}

/// EV_EFI_ACTION: the digest covers the ASCII text without NUL, which is also the event data.
pub fn efi_action(pcr: u32, text: &str, banks: &[HashAlg]) -> Result<ExpectedEvent> {
    Ok(ExpectedEvent::hashing(
        pcr,
        EventType::EV_EFI_ACTION,
        format!("\"{text}\""),
        text.as_bytes(),
        Some(text.as_bytes().to_vec()),
        banks,
    )?)
}

/// The value of every PCR in `pcrs` in `bank` after `events` (PCRs without events keep their reset
/// value, e.g. zero for [`EMPTY_PCRS`]).
pub fn pcr_values(
    events: &[ExpectedEvent],
    pcrs: &[u32],
    bank: HashAlg,
) -> Result<BTreeMap<u32, Vec<u8>>> {
    let relevant: Vec<ExpectedEvent> = events
        .iter()
        .filter(|e| pcrs.contains(&e.pcr))
        .cloned()
        .collect();
    let mut values = replay_expected(&relevant, bank)?;
    let len = bank.digest_len().ok_or(PredictError::UnsupportedBank {
        what: "a PCR value".into(),
        bank,
    })?;
    for &pcr in pcrs {
        values.entry(pcr).or_insert_with(|| reset_value(pcr, len));
    }
    Ok(values)
}

/// PC Client reset value: PCRs 17–22 all ones, the others zero.
fn reset_value(pcr: u32, len: usize) -> Vec<u8> {
    let byte = if (17..=22).contains(&pcr) { 0xFF } else { 0 };
    vec![byte; len]
}

/// `s` as UTF-16LE code units, with a terminating NUL when `nul`.
pub(crate) fn utf16le(s: &str, nul: bool) -> Vec<u8> {
    s.encode_utf16()
        .chain(nul.then_some(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    /// A pinned input from `target/fixtures` (`make fixtures`), or `$CVM_FIXTURES`.
    pub fn fixture(rel: &str) -> Vec<u8> {
        let root = std::env::var_os("CVM_FIXTURES")
            .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures").into());
        let p = PathBuf::from(root).join(rel);
        std::fs::read(&p).unwrap_or_else(|e| {
            panic!(
                "fixture {} unreadable: {e} (run `make fixtures`)",
                p.display()
            )
        })
    }

    pub const STUB: &str = "systemd-boot-efi/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    pub const KERNEL_6_12: &str =
        "linux-image-6.12.117+deb12-amd64/boot/vmlinuz-6.12.117+deb12-amd64";
    pub const KERNEL_6_1: &str = "linux-image-6.1.0-56-amd64/boot/vmlinuz-6.1.0-56-amd64";
    pub const OVMF_VARS: &str = "ovmf/usr/share/OVMF/OVMF_VARS_4M.fd";
    pub const OVMF_VARS_SNAKEOIL: &str = "ovmf/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_and_action_vectors() {
        // docs/measured-boot.md §13 and §4/§8.
        let banks = [HashAlg::SHA1, HashAlg::SHA256, HashAlg::SHA384];
        let sep = separator(3, &banks).unwrap();
        assert_eq!(
            hex::encode(&sep.digests[&HashAlg::SHA256]),
            "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
        );
        assert_eq!(
            hex::encode(&sep.digests[&HashAlg::SHA1]),
            "9069ca78e7450a285173431b3e52c5c25299e473"
        );
        assert_eq!(
            hex::encode(&sep.digests[&HashAlg::SHA384]),
            "394341b7182cd227c5c6b07ef8000cdfd86136c4292b8e576573ad7ed9ae41019f5818b4b971c9effc60e1ad9f1289f0"
        );
        let values = pcr_values(&[sep], &[3, 12, 17], HashAlg::SHA256).unwrap();
        assert_eq!(
            hex::encode(&values[&3]),
            "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
        );
        assert_eq!(values[&12], vec![0; 32]);
        assert_eq!(values[&17], vec![0xFF; 32]);
        let ebs = efi_action(5, "Exit Boot Services Invocation", &banks).unwrap();
        assert_eq!(
            hex::encode(&ebs.digests[&HashAlg::SHA256]),
            "d8043d6b7b85ad358eb3b6ae6a873ab7ef23a26352c5dc4faa5aeedacf5eb41b"
        );
    }

    #[test]
    fn predicted_pcrs_are_sorted_and_cover_the_groups() {
        let mut all: Vec<u32> = [4, 5, 7, 9, 11]
            .into_iter()
            .chain(SEPARATOR_ONLY_PCRS)
            .chain(EMPTY_PCRS)
            .collect();
        all.sort_unstable();
        assert_eq!(all, PREDICTED_PCRS);
    }
}

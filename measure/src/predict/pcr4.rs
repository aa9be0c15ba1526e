//! PCR 4: the boot manager's action, its separator, and every EFI application the firmware loads
//! (docs/measured-boot.md §4, §7).
//!
//! edk2 2022.11 BDS logs "Calling EFI Application from Boot Option" at the first ReadyToBoot, the
//! separator of PCRs 0–6, then `DxeTpm2MeasureBootLib` logs an EV_EFI_BOOT_SERVICES_APPLICATION
//! whose digest is the Authenticode hash of the UKI file as read from the ESP. systemd-stub
//! 252–257 starts the kernel with `BS->LoadImage` from a memory buffer (vendor media device path
//! 55c5d1f8-…): with Secure Boot off the firmware measures that buffer too — the `.linux` section
//! as loaded, `VirtualSize` bytes — as a second application event.

use crate::eventlog::{EventType, ExpectedEvent, HashAlg};
use crate::pe;

use super::{efi_action, separator, PredictError, Result};

/// The PCR.
pub const PCR: u32 = 4;
/// edk2 `EFI_CALLING_EFI_APPLICATION` (`MdePkg/Include/Guid/EventGroup.h` … `Tcg2Dxe.c`).
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";
/// `IMAGE_SUBSYSTEM_EFI_APPLICATION`: edk2 measures such images into PCR 4; drivers go to PCR 2.
pub const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
/// First systemd-stub version that loads the kernel with `LoadImage` (measured by the firmware).
const FIRST_STUB_WITH_KERNEL_EVENT: u32 = 252;
/// Last one: 258 jumps into the kernel itself (systemd PR #37372).
const LAST_STUB_WITH_KERNEL_EVENT: u32 = 257;
/// Description of the kernel event.
pub const KERNEL_DESCRIPTION: &str = "Authenticode of the UKI's .linux (kernel loaded from memory)";

/// The PCR 4 events of one boot, in log order (the separator is logged with those of PCRs 0–6).
#[derive(Debug, Clone)]
pub struct Pcr4 {
    /// EV_EFI_ACTION "Calling EFI Application from Boot Option".
    pub boot_option_action: ExpectedEvent,
    pub separator: ExpectedEvent,
    /// Authenticode of the UKI file.
    pub uki: ExpectedEvent,
    /// Authenticode of the in-memory kernel, when the stub version logs one.
    pub kernel: Option<ExpectedEvent>,
}

impl Pcr4 {
    /// Predict PCR 4 for `uki` booted from `uki_path` with Secure Boot off.
    pub fn new(uki: &[u8], uki_path: &str, banks: &[HashAlg]) -> Result<Self> {
        let headers = pe::PeHeaders::parse(uki).map_err(PredictError::pe("the UKI"))?;
        if headers.subsystem != SUBSYSTEM_EFI_APPLICATION {
            return Err(PredictError::Unsupported(format!(
                "the UKI has PE Subsystem {}, not an EFI application ({SUBSYSTEM_EFI_APPLICATION}): \
                 the firmware would measure it into PCR 2",
                headers.subsystem
            )));
        }
        let uki_event = application_event(
            format!("Authenticode of {uki_path}"),
            authenticode_firmware(uki, "the UKI", banks)?,
        );
        Ok(Pcr4 {
            boot_option_action: efi_action(PCR, CALLING_EFI_APPLICATION, banks)?,
            separator: separator(PCR, banks)?,
            uki: uki_event,
            kernel: kernel_event(uki, banks)?,
        })
    }

    /// In PCR order.
    pub fn events(&self) -> Vec<ExpectedEvent> {
        let mut v = vec![
            self.boot_option_action.clone(),
            self.separator.clone(),
            self.uki.clone(),
        ];
        v.extend(self.kernel.clone());
        v
    }
}

/// The kernel's EV_EFI_BOOT_SERVICES_APPLICATION, if this stub (Secure Boot off) causes one.
fn kernel_event(uki: &[u8], banks: &[HashAlg]) -> Result<Option<ExpectedEvent>> {
    let version = pe::stub_version(uki).map_err(PredictError::pe("the UKI's stub"))?;
    let major = pe::stub_major_version(&version).ok_or_else(|| {
        PredictError::Unsupported(format!("systemd-stub version {version:?} has no number"))
    })?;
    if !(FIRST_STUB_WITH_KERNEL_EVENT..=LAST_STUB_WITH_KERNEL_EVENT).contains(&major) {
        // ≤ 251 used the EFI handover protocol and ≥ 258 jumps into the kernel: no event. Neither
        // was checked against a boot here, and the section tables refuse them anyway.
        return Err(PredictError::Unsupported(format!(
            "systemd-stub {version}: PCR 4 is verified for stubs {FIRST_STUB_WITH_KERNEL_EVENT}–\
             {LAST_STUB_WITH_KERNEL_EVENT} only"
        )));
    }
    let kernel = loaded_kernel(uki)?;
    let digests = authenticode_firmware(&kernel, "the UKI's .linux", banks)?;
    Ok(Some(application_event(KERNEL_DESCRIPTION.into(), digests)))
}

/// The `.linux` buffer the stub hands to `LoadImage`: the section as loaded (`VirtualSize` bytes,
/// zero-extended past the raw data), found with the stub's own lookup rule.
pub fn loaded_kernel(uki: &[u8]) -> Result<Vec<u8>> {
    let headers = pe::PeHeaders::parse(uki).map_err(PredictError::pe("the UKI"))?;
    let section = pe::stub_252_find_section(&headers.sections, ".linux")
        .ok_or_else(|| PredictError::Unsupported("the UKI has no .linux section".into()))?;
    let loaded =
        pe::section_as_loaded(uki, section).map_err(PredictError::pe("the UKI's .linux"))?;
    Ok(loaded.into_owned())
}

fn application_event(description: String, digests: Vec<(HashAlg, Vec<u8>)>) -> ExpectedEvent {
    // The event data (EFI_IMAGE_LOAD_EVENT) holds load addresses: not predictable, not hashed.
    digests.into_iter().fold(
        ExpectedEvent::new(
            PCR,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            description,
        ),
        |e, (bank, d)| e.with_digest(bank, d),
    )
}

/// The firmware's Authenticode digest of `image` (no 8-byte tail padding) in every bank: edk2
/// hashes the same ranges once per active bank. The banks are hashed in parallel: the UKI is tens
/// of MiB and SHA-384/512 have no CPU instructions, so this is most of `cvm-image measure`'s time.
fn authenticode_firmware(
    image: &[u8],
    what: &str,
    banks: &[HashAlg],
) -> Result<Vec<(HashAlg, Vec<u8>)>> {
    let one = |bank: HashAlg| -> Result<(HashAlg, Vec<u8>)> {
        let digest = match bank {
            HashAlg::SHA1 => pe::authenticode_firmware::<sha1::Sha1>(image),
            HashAlg::SHA256 => pe::authenticode_firmware::<sha2::Sha256>(image),
            HashAlg::SHA384 => pe::authenticode_firmware::<sha2::Sha384>(image),
            HashAlg::SHA512 => pe::authenticode_firmware::<sha2::Sha512>(image),
            _ => {
                return Err(PredictError::UnsupportedBank {
                    what: format!("Authenticode of {what}"),
                    bank,
                })
            }
        };
        digest
            .map(|d| (bank, d))
            .map_err(PredictError::pe(format!("Authenticode of {what}")))
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = banks
            .iter()
            .map(|&bank| s.spawn(move || one(bank)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an Authenticode thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use std::process::Command;

    /// osslsigncode's "Calculated message digest" of a signed PE file.
    fn osslsigncode_digest(path: &std::path::Path) -> String {
        let out = Command::new("osslsigncode")
            .args(["verify", "-in"])
            .arg(path)
            .output()
            .expect("osslsigncode is needed (apt-get install osslsigncode)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Calculated message digest"))
            .map(|v| v.trim().trim_start_matches(':').trim().to_ascii_lowercase())
            .expect("osslsigncode printed no digest")
    }

    /// A minimal UKI: the stub with `.linux` = the signed 6.12 kernel (objcopy, independent of the
    /// builder), VirtualSize = file length as the builder and ukify < 257 do.
    fn objcopy_uki(dir: &std::path::Path) -> Vec<u8> {
        let stub = dir.join("stub.efi");
        let kernel = dir.join("vmlinuz");
        std::fs::write(&stub, fixture(STUB)).unwrap();
        std::fs::write(&kernel, fixture(KERNEL_6_12)).unwrap();
        let uki = dir.join("uki.efi");
        let out = Command::new("objcopy")
            .arg("--add-section")
            .arg(format!(".linux={}", kernel.display()))
            .args(["--change-section-vma", ".linux=0x2000000"])
            .arg(&stub)
            .arg(&uki)
            .output()
            .expect("objcopy (binutils) is needed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&uki).unwrap()
    }

    #[test]
    fn kernel_event_is_authenticode_of_the_signed_kernel() {
        let dir = std::env::temp_dir().join(format!("cvm-pcr4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uki = objcopy_uki(&dir);
        let p = Pcr4::new(&uki, "\\EFI\\BOOT\\BOOTX64.EFI", &[HashAlg::SHA256]).unwrap();
        let kernel = p
            .kernel
            .clone()
            .expect("stub 252 with Secure Boot off logs the kernel");
        // The buffer is the whole signed vmlinuz: its Authenticode excludes the certificate
        // table, so it equals the digest signed by Debian, recomputed by osslsigncode.
        assert_eq!(
            hex::encode(&kernel.digests[&HashAlg::SHA256]),
            osslsigncode_digest(&dir.join("vmlinuz"))
        );
        assert_eq!(
            hex::encode(&p.boot_option_action.digests[&HashAlg::SHA256]),
            "3d6772b4f84ed47595d72a2c4c5ffd15f5bb72c7507fe26f2aaee2c69d5633ba"
        );
        assert_eq!(p.events().len(), 4);
        assert!(p.events().iter().all(|e| e.pcr == PCR));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn every_bank_has_the_kernel_authenticode() {
        let dir = std::env::temp_dir().join(format!("cvm-pcr4-banks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uki = objcopy_uki(&dir);
        let banks = [
            HashAlg::SHA1,
            HashAlg::SHA256,
            HashAlg::SHA384,
            HashAlg::SHA512,
        ];
        let p = Pcr4::new(&uki, "\\EFI\\BOOT\\BOOTX64.EFI", &banks).unwrap();
        for e in p.events() {
            let banks_of: Vec<HashAlg> = e.digests.keys().copied().collect();
            assert_eq!(banks_of, banks, "{}", e.description);
        }
        // The kernel buffer is the whole signed vmlinuz (8-aligned before its certificate table,
        // so the firmware and signer forms agree): virt-firmware's Authenticode of that file.
        let kernel = p.kernel.unwrap();
        let names = ["sha1", "sha256", "sha384", "sha512"];
        let theirs = crate::pe::tests::virt_firmware_authenticode(&dir.join("vmlinuz"), &names);
        let ours: Vec<String> = banks
            .iter()
            .map(|b| hex::encode(&kernel.digests[b]))
            .collect();
        assert_eq!(ours, theirs);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn other_algorithms_and_non_stubs_are_refused() {
        let stub = fixture(STUB);
        let e = Pcr4::new(&stub, "x", &[HashAlg::SM3_256]).unwrap_err();
        assert!(matches!(e, PredictError::UnsupportedBank { .. }), "{e}");
        // A bare stub has no .linux.
        let e = Pcr4::new(&stub, "x", &[HashAlg::SHA256]).unwrap_err();
        assert!(e.to_string().contains("no .linux section"), "{e}");
        // The kernel is no systemd-stub.
        let e = Pcr4::new(&fixture(KERNEL_6_1), "x", &[HashAlg::SHA256]).unwrap_err();
        assert!(e.to_string().contains("stub"), "{e}");
    }
}

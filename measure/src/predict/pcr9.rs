//! PCR 9: what the Linux EFI stub measures (docs/measured-boot.md §6; kernel
//! `drivers/firmware/efi/libstub/efi-stub-helper.c`).
//!
//! 1. LoadOptions (kernel ≥ 6.1): EV_EVENT_TAG, tag 0x8F3B22ED, digest H(LoadOptions). systemd-stub
//!    252 passes the `.cmdline` section (as loaded, up to its first NUL) widened to UTF-16LE with a
//!    UTF-16 NUL.
//! 2. initrd (kernel ≥ 5.17, loaded through LINUX_EFI_INITRD_MEDIA / LoadFile2): EV_EVENT_TAG, tag
//!    0x8F3B22EC, digest H(initrd buffer). With only a `.initrd` section (no `.pcrsig`/`.pcrpkey`,
//!    no credentials or sysexts next to the UKI on the ESP) stub 252 hands over the section as loaded.
//!
//! Inputs outside what was checked against a boot are refused rather than guessed: a cmdline with
//! control or non-ASCII bytes or surrounding spaces (stub versions differ in how they mangle it), a
//! UKI with `.pcrsig`/`.pcrpkey` (turned into an extra cpio by the stub), a kernel older than 6.1.

use crate::eventlog::{EventType, ExpectedEvent, HashAlg};
use crate::pe;

use super::{utf16le, PredictError, Result};

/// The PCR.
pub const PCR: u32 = 9;
/// `EFISTUB_EVENT_TAG_ID` of the LoadOptions event (`efistub.h`, `LINUX_EFI_LOADOPTIONS_TAG`).
pub const TAG_LOAD_OPTIONS: u32 = 0x8F3B_22ED;
/// Tag of the initrd event (`INITRD_EVENT_TAG_ID`).
pub const TAG_INITRD: u32 = 0x8F3B_22EC;
/// Tagged-event description the kernel logs with the LoadOptions event (NUL included).
pub const LOAD_OPTIONS_DESCRIPTION: &[u8] = b"LOADED_IMAGE::LoadOptions\0";
/// Tagged-event description of the initrd event (NUL included).
pub const INITRD_DESCRIPTION: &[u8] = b"Linux initrd\0";
/// First kernel that measures LoadOptions (commit 71c7adc9).
const FIRST_KERNEL_WITH_LOAD_OPTIONS: (u32, u32) = (6, 1);
/// UKI sections stub 252 turns into an additional initrd cpio: their presence changes the buffer.
const SECTIONS_ADDED_TO_INITRD: [&str; 2] = [".pcrsig", ".pcrpkey"];
/// Offset of the boot-protocol "HdrS" magic in a bzImage (Documentation/arch/x86/boot.rst).
const BZIMAGE_HDRS_OFFSET: usize = 0x202;
/// Offset of `kernel_version` (pointer to the version string, minus 0x200).
const BZIMAGE_KERNEL_VERSION_OFFSET: usize = 0x20E;
/// Base the `kernel_version` pointer is relative to.
const BZIMAGE_KERNEL_VERSION_BASE: usize = 0x200;

/// LoadOptions then initrd, as the Linux stub logs them for this UKI.
pub fn linux_stub_events(uki: &[u8], banks: &[HashAlg]) -> Result<Vec<ExpectedEvent>> {
    let headers = pe::PeHeaders::parse(uki).map_err(PredictError::pe("the UKI"))?;
    let kernel = super::pcr4::loaded_kernel(uki)?;
    check_kernel(&kernel)?;
    if let Some(name) = SECTIONS_ADDED_TO_INITRD
        .iter()
        .find(|n| pe::stub_252_find_section(&headers.sections, n).is_some())
    {
        return Err(PredictError::Unsupported(format!(
            "the UKI has a {name} section, which systemd-stub appends to the initrd as a cpio: \
             PCR 9 for that is not predicted"
        )));
    }
    let mut events = Vec::new();
    if let Some(cmdline) = section(uki, &headers, ".cmdline")? {
        let options = load_options(&cmdline)?;
        events.push(tagged(
            TAG_LOAD_OPTIONS,
            LOAD_OPTIONS_DESCRIPTION,
            "LoadOptions (UTF-16 of the UKI's .cmdline)",
            &options,
            banks,
        )?);
    }
    if let Some(initrd) = section(uki, &headers, ".initrd")? {
        events.push(tagged(
            TAG_INITRD,
            INITRD_DESCRIPTION,
            "initrd (the UKI's .initrd)",
            &initrd,
            banks,
        )?);
    }
    Ok(events)
}

/// The LoadOptions systemd-stub 252 gives the kernel for a `.cmdline` section as loaded: the text up
/// to the first NUL as UTF-16LE plus a UTF-16 NUL.
pub fn load_options(cmdline_section: &[u8]) -> Result<Vec<u8>> {
    let end = cmdline_section
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline_section.len());
    let raw = &cmdline_section[..end];
    if let Some(i) = raw.iter().position(|b| !(0x20..0x7F).contains(b)) {
        return Err(PredictError::Unsupported(format!(
            ".cmdline byte {i} is 0x{:02x}: only printable ASCII command lines are predicted",
            raw[i]
        )));
    }
    // Printable ASCII is valid UTF-8.
    let text = String::from_utf8_lossy(raw);
    if text.is_empty() || text.trim() != text {
        return Err(PredictError::Unsupported(format!(
            ".cmdline {text:?} is empty or has surrounding spaces: how the stub mangles that is \
             not verified"
        )));
    }
    Ok(utf16le(&text, true))
}

/// A present section (VirtualSize > 0) as loaded, found with stub 252's lookup rule.
fn section(uki: &[u8], headers: &pe::PeHeaders, name: &str) -> Result<Option<Vec<u8>>> {
    match pe::stub_252_find_section(&headers.sections, name) {
        Some(s) if s.virtual_size > 0 => pe::section_as_loaded(uki, s)
            .map(|b| Some(b.into_owned()))
            .map_err(PredictError::pe(format!("the UKI's {name}"))),
        _ => Ok(None),
    }
}

/// `TCG_PCClientTaggedEvent` {taggedEventID u32, taggedEventDataSize u32, data}; the digest is over
/// the payload, not the event data.
fn tagged(
    tag: u32,
    tag_description: &[u8],
    description: &str,
    measured: &[u8],
    banks: &[HashAlg],
) -> Result<ExpectedEvent> {
    let mut data = Vec::with_capacity(8 + tag_description.len());
    data.extend_from_slice(&tag.to_le_bytes());
    data.extend_from_slice(&(tag_description.len() as u32).to_le_bytes());
    data.extend_from_slice(tag_description);
    Ok(ExpectedEvent::hashing(
        PCR,
        EventType::EV_EVENT_TAG,
        description,
        measured,
        Some(data),
        banks,
    )?)
}

/// The kernel must measure LoadOptions (≥ 6.1) and take the initrd through LoadFile2 (PE
/// MajorImageVersion ≥ 1, the stub's test for LINUX_INITRD_MEDIA support).
fn check_kernel(kernel: &[u8]) -> Result<()> {
    let headers = pe::PeHeaders::parse(kernel).map_err(PredictError::pe("the UKI's .linux"))?;
    if headers.major_image_version < 1 {
        return Err(PredictError::Unsupported(
            "the kernel's PE MajorImageVersion is 0: systemd-stub would use the EFI handover \
             protocol, whose PCR 9 events are not predicted"
                .into(),
        ));
    }
    let version = bzimage_version(kernel).ok_or_else(|| {
        PredictError::Unsupported("the UKI's .linux has no bzImage version string".into())
    })?;
    let (major, minor) = parse_major_minor(&version).ok_or_else(|| {
        PredictError::Unsupported(format!("kernel version {version:?} is not MAJOR.MINOR…"))
    })?;
    if (major, minor) < FIRST_KERNEL_WITH_LOAD_OPTIONS {
        return Err(PredictError::Unsupported(format!(
            "kernel {version}: kernels before 6.1 do not measure LoadOptions into PCR 9"
        )));
    }
    Ok(())
}

/// The bzImage's version string ("6.12.117+deb12-amd64 (…) #1 SMP …"), first word.
pub fn bzimage_version(kernel: &[u8]) -> Option<String> {
    if kernel.get(BZIMAGE_HDRS_OFFSET..BZIMAGE_HDRS_OFFSET + 4)? != b"HdrS" {
        return None;
    }
    let ptr = kernel.get(BZIMAGE_KERNEL_VERSION_OFFSET..BZIMAGE_KERNEL_VERSION_OFFSET + 2)?;
    let start = usize::from(u16::from_le_bytes([ptr[0], ptr[1]])) + BZIMAGE_KERNEL_VERSION_BASE;
    let rest = kernel.get(start..)?;
    let end = rest.iter().position(|&b| b == 0 || b == b' ')?;
    std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
}

fn parse_major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn constellation_pcr9_vector() {
        // docs/measured-boot.md §13: UTF-16LE "console=tty0" + NUL, then an initrd digest of 32×00.
        let opts = load_options(b"console=tty0\0\0\0").unwrap();
        use sha2::Digest;
        let mut pcr = [0u8; 32];
        for d in [sha2::Sha256::digest(&opts).to_vec(), vec![0u8; 32]] {
            let mut h = sha2::Sha256::new();
            h.update(pcr);
            h.update(&d);
            pcr = h.finalize().into();
        }
        assert_eq!(
            hex::encode(pcr),
            "eb4f7bca865807d3163b95174d6e66cfc74acf8b930a553e95ec94662cb6facd"
        );
    }

    #[test]
    fn unverified_cmdlines_are_refused() {
        for bad in [
            &b" quiet"[..],
            b"quiet ",
            b"a\nb",
            b"caf\xc3\xa9",
            b"",
            b"\0x",
        ] {
            assert!(load_options(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_kernel_versions_from_the_setup_header() {
        // `file` prints the same string: "Linux kernel x86 boot executable bzImage, version 6.12.117+deb12-amd64 …".
        assert_eq!(
            bzimage_version(&fixture(KERNEL_6_12)).as_deref(),
            Some("6.12.117+deb12-amd64")
        );
        assert_eq!(
            bzimage_version(&fixture(KERNEL_6_1)).as_deref(),
            Some("6.1.0-56-amd64")
        );
        assert!(check_kernel(&fixture(KERNEL_6_1)).is_ok());
        assert_eq!(parse_major_minor("5.10.0-1"), Some((5, 10)));
        assert!(bzimage_version(b"MZ").is_none());
    }
}

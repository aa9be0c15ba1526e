//! UEFI Secure Boot with the image owner's keys: key generation ([`keys`]), Authenticode
//! signing of the UKI ([`authenticode`]), EFI signature lists ([`esl`]), time-based
//! authenticated variables ([`authvar`]), an enrolled OVMF variable store ([`varstore`]; read
//! with the measurement library's reader) and the PCR 7 events a boot with that store produces
//! ([`pcr7`], the measurement library's events for the db entry that verifies the UKI); the AWS
//! `--uefi-data` blob ([`aws`]); the build stage that signs the UKI and writes `OVMF_VARS.fd`
//! and `secure-boot/` ([`sign_uki`], [`write_outputs`]); `cvm-image keys` is in `cli/keys.rs`.
//!
//! Everything here is deterministic for fixed keys: PKCS#1 v1.5 signatures have no random
//! component, no signing time is embedded, and authenticated variables carry a fixed
//! timestamp ([`ENROLL_TIME`]). Only [`keys::generate`] uses randomness.

pub mod authenticode;
pub mod authvar;
pub mod aws;
pub mod esl;
pub mod keys;
pub mod pcr7;
mod pkcs7;
mod stage;
pub mod varstore;

pub use pcr7::pcr7_expected;
pub use stage::{
    sign_uki, signature_owner, write_outputs, CertificateInfo, SecureBootInfo, SecureBootOutputs,
    AWS_UEFI_DATA, KEY_MATERIAL_DIR, OVMF_VARS_OUTPUT,
};

use anyhow::{bail, Context, Result};

/// An EFI_GUID in its on-disk (mixed-endian) byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parse the textual `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` form: the first three groups
    /// are stored little-endian (UEFI spec Appendix A), the last two byte by byte.
    pub fn parse(text: &str) -> Result<Self> {
        let groups: Vec<&str> = text.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            bail!("GUID `{text}` is not in the 8-4-4-4-12 hex form");
        }
        let hex_bytes = |g: &str| {
            hex::decode(g).with_context(|| format!("GUID `{text}` has a non-hex group `{g}`"))
        };
        let mut out = Vec::with_capacity(16);
        for g in &groups[..3] {
            let mut b = hex_bytes(g)?;
            b.reverse();
            out.extend(b);
        }
        out.extend(hex_bytes(groups[3])?);
        out.extend(hex_bytes(groups[4])?);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&out);
        Ok(Self(bytes))
    }

    /// Compile-time constant from the spec's field form (`Data1`, `Data2`, `Data3`, `Data4`).
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Self([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{}-{}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            hex::encode(&b[8..10]),
            hex::encode(&b[10..16])
        )
    }
}

/// EFI_GLOBAL_VARIABLE: vendor GUID of `PK`, `KEK`, `SecureBoot`, `SetupMode` (the
/// measurement library's bytes, which PCR 7 measures).
pub const EFI_GLOBAL_VARIABLE: Guid = Guid(cvm_measure::predict::pcr7::EFI_GLOBAL_VARIABLE);
/// EFI_IMAGE_SECURITY_DATABASE_GUID: vendor GUID of `db`, `dbx`, `dbt`.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid =
    Guid(cvm_measure::predict::pcr7::EFI_IMAGE_SECURITY_DATABASE);

/// Variable attribute bits (UEFI spec `SetVariable`).
pub mod attr {
    /// EFI_VARIABLE_NON_VOLATILE.
    pub const NON_VOLATILE: u32 = 0x0000_0001;
    /// EFI_VARIABLE_BOOTSERVICE_ACCESS.
    pub const BOOTSERVICE_ACCESS: u32 = 0x0000_0002;
    /// EFI_VARIABLE_RUNTIME_ACCESS.
    pub const RUNTIME_ACCESS: u32 = 0x0000_0004;
    /// EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
    pub const TIME_BASED_AUTHENTICATED_WRITE_ACCESS: u32 = 0x0000_0020;
    /// What PK, KEK, db and dbx carry: NV | BS | RT | TIME_BASED_AUTH (0x27).
    pub const SECURE_BOOT_POLICY: u32 =
        NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS;
}

/// EFI_TIME (UEFI spec §8.3), 16 bytes. Authenticated variables use it as a monotonic
/// timestamp; only the date and time fields are set (no time zone, no daylight flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EfiTime {
    /// 1900–9999.
    pub year: u16,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59.
    pub second: u8,
}

/// The timestamp of every variable we enroll: fixed so the build stays reproducible, and
/// early enough that the owner can later replace keys with any current timestamp.
pub const ENROLL_TIME: EfiTime = EfiTime {
    year: 2025,
    month: 1,
    day: 1,
    hour: 0,
    minute: 0,
    second: 0,
};

impl EfiTime {
    /// Size of EFI_TIME on disk.
    pub const LEN: usize = 16;

    /// The on-disk encoding: Year u16, Month, Day, Hour, Minute, Second, Pad1, Nanosecond u32,
    /// TimeZone i16, Daylight, Pad2 — all zero after Second, as time-based authenticated
    /// variables require (UEFI spec §8.2.2: Pad1, Nanosecond, TimeZone, Daylight, Pad2 = 0).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..2].copy_from_slice(&self.year.to_le_bytes());
        b[2] = self.month;
        b[3] = self.day;
        b[4] = self.hour;
        b[5] = self.minute;
        b[6] = self.second;
        b
    }
}

/// UTF-16LE encoding of a variable name without the terminating NUL.
pub(crate) fn utf16le(name: &str) -> Vec<u8> {
    name.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_and_constant_forms_agree() {
        // EFI_GLOBAL_VARIABLE as the UEFI spec prints it and as it appears in a varstore
        // (bytes as virt-fw-vars writes the PK vendor GUID into an OVMF varstore).
        let parsed = Guid::parse("8be4df61-93ca-11d2-aa0d-00e098032b8c").unwrap();
        assert_eq!(parsed, EFI_GLOBAL_VARIABLE);
        assert_eq!(hex::encode(parsed.0), "61dfe48bca93d211aa0d00e098032b8c");
        assert_eq!(parsed.to_string(), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        assert!(Guid::parse("8be4df61-93ca-11d2-aa0d").is_err());
        assert!(Guid::parse("8be4df61-93ca-11d2-aa0d-00e098032bzz").is_err());
    }

    #[test]
    fn efi_time_layout() {
        assert_eq!(
            hex::encode(ENROLL_TIME.to_bytes()),
            "e9070101000000000000000000000000"
        );
    }
}

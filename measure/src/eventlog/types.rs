//! Identifiers of the TCG event log: hash algorithms (TPM_ALG_ID) and event types.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A TCG hash algorithm identifier (`TPM_ALG_ID`, TPM 2.0 Library Part 2 §6.3).
///
/// Kept as the raw 16-bit value so that a log using an algorithm this crate cannot compute
/// (SM3, SHA3) still parses and renders; only replay needs [`HashAlg::digest_len`] and an
/// implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashAlg(pub u16);

impl HashAlg {
    /// `TPM_ALG_SHA1`.
    pub const SHA1: HashAlg = HashAlg(0x0004);
    /// `TPM_ALG_SHA256`.
    pub const SHA256: HashAlg = HashAlg(0x000B);
    /// `TPM_ALG_SHA384`.
    pub const SHA384: HashAlg = HashAlg(0x000C);
    /// `TPM_ALG_SHA512`.
    pub const SHA512: HashAlg = HashAlg(0x000D);
    /// `TPM_ALG_SM3_256` (named and sized, not computed).
    pub const SM3_256: HashAlg = HashAlg(0x0012);

    /// Algorithms with a known name and digest size.
    const KNOWN: [(HashAlg, &'static str, usize); 5] = [
        (HashAlg::SHA1, "sha1", 20),
        (HashAlg::SHA256, "sha256", 32),
        (HashAlg::SHA384, "sha384", 48),
        (HashAlg::SHA512, "sha512", 64),
        (HashAlg::SM3_256, "sm3_256", 32),
    ];

    /// Lower-case name as tpm2-tools prints it ("sha256"), or `alg_0x00NN` for others.
    pub fn name(self) -> String {
        match Self::KNOWN.iter().find(|(a, _, _)| *a == self) {
            Some((_, name, _)) => (*name).to_string(),
            None => format!("alg_0x{:04x}", self.0),
        }
    }

    /// Inverse of [`HashAlg::name`]; also accepts "sha-256" and "SHA256".
    pub fn from_name(name: &str) -> Option<HashAlg> {
        let lower = name.to_ascii_lowercase().replace('-', "");
        if let Some((alg, _, _)) = Self::KNOWN.iter().find(|(_, n, _)| *n == lower) {
            return Some(*alg);
        }
        let hex = lower.strip_prefix("alg_0x")?;
        u16::from_str_radix(hex, 16).ok().map(HashAlg)
    }

    /// Digest size in bytes, when the algorithm is known.
    pub fn digest_len(self) -> Option<usize> {
        Self::KNOWN
            .iter()
            .find(|(a, _, _)| *a == self)
            .map(|(_, _, len)| *len)
    }

    /// `H(data)`, for the algorithms this crate implements (SHA-1 and SHA-2).
    pub fn hash(self, data: &[u8]) -> Option<Vec<u8>> {
        self.hash_parts(&[data])
    }

    /// `H(part0 ‖ part1 ‖ …)`, for the algorithms this crate implements.
    pub fn hash_parts(self, parts: &[&[u8]]) -> Option<Vec<u8>> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            HashAlg::SHA1 => Some(run::<sha1::Sha1>(parts)),
            HashAlg::SHA256 => Some(run::<sha2::Sha256>(parts)),
            HashAlg::SHA384 => Some(run::<sha2::Sha384>(parts)),
            HashAlg::SHA512 => Some(run::<sha2::Sha512>(parts)),
            _ => None,
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for HashAlg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for HashAlg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        HashAlg::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown hash algorithm {name:?}")))
    }
}

/// A TCG event type (`TCG_EVENTTYPE`, PC Client PFP §10.4.1; edk2 `UefiTcgPlatform.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(pub u32);

/// Base of the EFI-specific event types.
const EV_EFI_EVENT_BASE: u32 = 0x8000_0000;

impl EventType {
    pub const EV_PREBOOT_CERT: EventType = EventType(0x0);
    pub const EV_POST_CODE: EventType = EventType(0x1);
    pub const EV_UNUSED: EventType = EventType(0x2);
    pub const EV_NO_ACTION: EventType = EventType(0x3);
    pub const EV_SEPARATOR: EventType = EventType(0x4);
    pub const EV_ACTION: EventType = EventType(0x5);
    pub const EV_EVENT_TAG: EventType = EventType(0x6);
    pub const EV_S_CRTM_CONTENTS: EventType = EventType(0x7);
    pub const EV_S_CRTM_VERSION: EventType = EventType(0x8);
    pub const EV_CPU_MICROCODE: EventType = EventType(0x9);
    pub const EV_PLATFORM_CONFIG_FLAGS: EventType = EventType(0xA);
    pub const EV_TABLE_OF_DEVICES: EventType = EventType(0xB);
    pub const EV_COMPACT_HASH: EventType = EventType(0xC);
    pub const EV_IPL: EventType = EventType(0xD);
    pub const EV_IPL_PARTITION_DATA: EventType = EventType(0xE);
    pub const EV_NONHOST_CODE: EventType = EventType(0xF);
    pub const EV_NONHOST_CONFIG: EventType = EventType(0x10);
    pub const EV_NONHOST_INFO: EventType = EventType(0x11);
    pub const EV_OMIT_BOOT_DEVICE_EVENTS: EventType = EventType(0x12);
    pub const EV_POST_CODE2: EventType = EventType(0x13);
    pub const EV_EFI_VARIABLE_DRIVER_CONFIG: EventType = EventType(EV_EFI_EVENT_BASE + 0x1);
    pub const EV_EFI_VARIABLE_BOOT: EventType = EventType(EV_EFI_EVENT_BASE + 0x2);
    pub const EV_EFI_BOOT_SERVICES_APPLICATION: EventType = EventType(EV_EFI_EVENT_BASE + 0x3);
    pub const EV_EFI_BOOT_SERVICES_DRIVER: EventType = EventType(EV_EFI_EVENT_BASE + 0x4);
    pub const EV_EFI_RUNTIME_SERVICES_DRIVER: EventType = EventType(EV_EFI_EVENT_BASE + 0x5);
    pub const EV_EFI_GPT_EVENT: EventType = EventType(EV_EFI_EVENT_BASE + 0x6);
    pub const EV_EFI_ACTION: EventType = EventType(EV_EFI_EVENT_BASE + 0x7);
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: EventType = EventType(EV_EFI_EVENT_BASE + 0x8);
    pub const EV_EFI_HANDOFF_TABLES: EventType = EventType(EV_EFI_EVENT_BASE + 0x9);
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: EventType = EventType(EV_EFI_EVENT_BASE + 0xA);
    pub const EV_EFI_HANDOFF_TABLES2: EventType = EventType(EV_EFI_EVENT_BASE + 0xB);
    pub const EV_EFI_VARIABLE_BOOT2: EventType = EventType(EV_EFI_EVENT_BASE + 0xC);
    pub const EV_EFI_GPT_EVENT2: EventType = EventType(EV_EFI_EVENT_BASE + 0xD);
    pub const EV_EFI_HCRTM_EVENT: EventType = EventType(EV_EFI_EVENT_BASE + 0x10);
    pub const EV_EFI_VARIABLE_AUTHORITY: EventType = EventType(EV_EFI_EVENT_BASE + 0xE0);
    pub const EV_EFI_SPDM_FIRMWARE_BLOB: EventType = EventType(EV_EFI_EVENT_BASE + 0xE1);
    pub const EV_EFI_SPDM_FIRMWARE_CONFIG: EventType = EventType(EV_EFI_EVENT_BASE + 0xE2);
    pub const EV_EFI_SPDM_DEVICE_POLICY: EventType = EventType(EV_EFI_EVENT_BASE + 0xE3);
    pub const EV_EFI_SPDM_DEVICE_AUTHORITY: EventType = EventType(EV_EFI_EVENT_BASE + 0xE4);

    const NAMES: [(EventType, &'static str); 39] = [
        (Self::EV_PREBOOT_CERT, "EV_PREBOOT_CERT"),
        (Self::EV_POST_CODE, "EV_POST_CODE"),
        (Self::EV_UNUSED, "EV_UNUSED"),
        (Self::EV_NO_ACTION, "EV_NO_ACTION"),
        (Self::EV_SEPARATOR, "EV_SEPARATOR"),
        (Self::EV_ACTION, "EV_ACTION"),
        (Self::EV_EVENT_TAG, "EV_EVENT_TAG"),
        (Self::EV_S_CRTM_CONTENTS, "EV_S_CRTM_CONTENTS"),
        (Self::EV_S_CRTM_VERSION, "EV_S_CRTM_VERSION"),
        (Self::EV_CPU_MICROCODE, "EV_CPU_MICROCODE"),
        (Self::EV_PLATFORM_CONFIG_FLAGS, "EV_PLATFORM_CONFIG_FLAGS"),
        (Self::EV_TABLE_OF_DEVICES, "EV_TABLE_OF_DEVICES"),
        (Self::EV_COMPACT_HASH, "EV_COMPACT_HASH"),
        (Self::EV_IPL, "EV_IPL"),
        (Self::EV_IPL_PARTITION_DATA, "EV_IPL_PARTITION_DATA"),
        (Self::EV_NONHOST_CODE, "EV_NONHOST_CODE"),
        (Self::EV_NONHOST_CONFIG, "EV_NONHOST_CONFIG"),
        (Self::EV_NONHOST_INFO, "EV_NONHOST_INFO"),
        (
            Self::EV_OMIT_BOOT_DEVICE_EVENTS,
            "EV_OMIT_BOOT_DEVICE_EVENTS",
        ),
        (Self::EV_POST_CODE2, "EV_POST_CODE2"),
        (
            Self::EV_EFI_VARIABLE_DRIVER_CONFIG,
            "EV_EFI_VARIABLE_DRIVER_CONFIG",
        ),
        (Self::EV_EFI_VARIABLE_BOOT, "EV_EFI_VARIABLE_BOOT"),
        (
            Self::EV_EFI_BOOT_SERVICES_APPLICATION,
            "EV_EFI_BOOT_SERVICES_APPLICATION",
        ),
        (
            Self::EV_EFI_BOOT_SERVICES_DRIVER,
            "EV_EFI_BOOT_SERVICES_DRIVER",
        ),
        (
            Self::EV_EFI_RUNTIME_SERVICES_DRIVER,
            "EV_EFI_RUNTIME_SERVICES_DRIVER",
        ),
        (Self::EV_EFI_GPT_EVENT, "EV_EFI_GPT_EVENT"),
        (Self::EV_EFI_ACTION, "EV_EFI_ACTION"),
        (
            Self::EV_EFI_PLATFORM_FIRMWARE_BLOB,
            "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        ),
        (Self::EV_EFI_HANDOFF_TABLES, "EV_EFI_HANDOFF_TABLES"),
        (
            Self::EV_EFI_PLATFORM_FIRMWARE_BLOB2,
            "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        ),
        (Self::EV_EFI_HANDOFF_TABLES2, "EV_EFI_HANDOFF_TABLES2"),
        (Self::EV_EFI_VARIABLE_BOOT2, "EV_EFI_VARIABLE_BOOT2"),
        (Self::EV_EFI_GPT_EVENT2, "EV_EFI_GPT_EVENT2"),
        (Self::EV_EFI_HCRTM_EVENT, "EV_EFI_HCRTM_EVENT"),
        (Self::EV_EFI_VARIABLE_AUTHORITY, "EV_EFI_VARIABLE_AUTHORITY"),
        (Self::EV_EFI_SPDM_FIRMWARE_BLOB, "EV_EFI_SPDM_FIRMWARE_BLOB"),
        (
            Self::EV_EFI_SPDM_FIRMWARE_CONFIG,
            "EV_EFI_SPDM_FIRMWARE_CONFIG",
        ),
        (Self::EV_EFI_SPDM_DEVICE_POLICY, "EV_EFI_SPDM_DEVICE_POLICY"),
        (
            Self::EV_EFI_SPDM_DEVICE_AUTHORITY,
            "EV_EFI_SPDM_DEVICE_AUTHORITY",
        ),
    ];

    /// The spec name ("EV_IPL"), or `EV_UNKNOWN_0x…` for a value the specs do not define.
    pub fn name(self) -> String {
        match Self::NAMES.iter().find(|(t, _)| *t == self) {
            Some((_, name)) => (*name).to_string(),
            None => format!("EV_UNKNOWN_0x{:08x}", self.0),
        }
    }

    /// Inverse of [`EventType::name`]; also accepts a number ("0x8000000d", "13").
    pub fn from_name(name: &str) -> Option<EventType> {
        if let Some((t, _)) = Self::NAMES.iter().find(|(_, n)| *n == name) {
            return Some(*t);
        }
        let lower = name.to_ascii_lowercase();
        let hex = lower
            .strip_prefix("ev_unknown_0x")
            .or_else(|| lower.strip_prefix("0x"));
        match hex {
            Some(h) => u32::from_str_radix(h, 16).ok().map(EventType),
            None => name.parse().ok().map(EventType),
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        EventType::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_round_trip() {
        for (t, name) in EventType::NAMES {
            assert_eq!(t.name(), name);
            assert_eq!(EventType::from_name(name), Some(t));
        }
        assert_eq!(EventType(0x1234).name(), "EV_UNKNOWN_0x00001234");
        assert_eq!(
            EventType::from_name("EV_UNKNOWN_0x00001234"),
            Some(EventType(0x1234))
        );
        assert_eq!(
            EventType::from_name("0x8000000d"),
            Some(EventType::EV_EFI_GPT_EVENT2)
        );
        assert_eq!(EventType::from_name("EV_BOGUS"), None);
    }

    #[test]
    fn spec_values() {
        // PC Client PFP table 9 / edk2 UefiTcgPlatform.h.
        assert_eq!(EventType::EV_IPL.0, 0xD);
        assert_eq!(EventType::EV_EFI_ACTION.0, 0x8000_0007);
        assert_eq!(EventType::EV_EFI_VARIABLE_AUTHORITY.0, 0x8000_00E0);
        assert_eq!(EventType::EV_EFI_HANDOFF_TABLES2.0, 0x8000_000B);
    }

    #[test]
    fn separator_digest_vectors() {
        // docs/measured-boot.md §13: H(00000000) per bank.
        let sep = [0u8; 4];
        assert_eq!(
            hex::encode(HashAlg::SHA1.hash(&sep).unwrap()),
            "9069ca78e7450a285173431b3e52c5c25299e473"
        );
        assert_eq!(
            hex::encode(HashAlg::SHA256.hash(&sep).unwrap()),
            "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119"
        );
        assert_eq!(
            hex::encode(HashAlg::SHA384.hash(&sep).unwrap()),
            "394341b7182cd227c5c6b07ef8000cdfd86136c4292b8e576573ad7ed9ae41019f5818b4b971c9effc60e1ad9f1289f0"
        );
        assert_eq!(HashAlg::SM3_256.hash(&sep), None);
    }

    #[test]
    fn alg_names() {
        assert_eq!(HashAlg::from_name("SHA-256"), Some(HashAlg::SHA256));
        assert_eq!(HashAlg(0x27).name(), "alg_0x0027");
        assert_eq!(HashAlg::from_name("alg_0x0027"), Some(HashAlg(0x27)));
        assert_eq!(HashAlg::SHA384.digest_len(), Some(48));
    }
}

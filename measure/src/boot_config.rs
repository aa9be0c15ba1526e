//! The boot configuration: what the builder tells the init, as `/etc/cvm/boot.json` in the initramfs.
//!
//! The file is part of the initramfs, which the kernel's EFI stub measures into PCR 9 (and the UKI into
//! PCR 11), so everything in it is attested: the root's verity parameters can come from here directly.
//! The workload's cannot — the base image must not depend on the workload — so for the workload this
//! names only *where* to look (GPT partition type GUIDs) and *how* to mount; its root hash is read from
//! the partition UUIDs at boot and measured into PCR 23 (see [`crate::workload`]).
//!
//! JSON with `deny_unknown_fields` and an explicit `version`, so that an init never silently ignores
//! something a newer builder meant.

use serde::{Deserialize, Serialize};

/// Where the builder puts the file inside the initramfs (relative to its root).
pub const BOOT_CONFIG_PATH: &str = "etc/cvm/boot.json";
/// The only version this code reads and writes.
pub const BOOT_CONFIG_VERSION: u32 = 1;
/// Verity root hash length (SHA-256).
pub const ROOT_HASH_LEN: usize = 32;
/// Largest verity salt (`salt` field of the verity superblock is 256 bytes).
pub const MAX_SALT_LEN: usize = 256;

/// Errors reading or validating a boot configuration.
#[derive(Debug, thiserror::Error)]
pub enum BootConfigError {
    #[error("boot config is not valid JSON for this version: {0}")]
    Json(#[from] serde_json::Error),
    #[error("boot config version {found} is not supported (this init reads version {BOOT_CONFIG_VERSION}); rebuild the image with a matching builder")]
    Version { found: u32 },
    #[error("boot config field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

/// `/etc/cvm/boot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// [`BOOT_CONFIG_VERSION`].
    pub version: u32,
    /// Kernel modules to load, in this order (dependencies first), as paths inside the initramfs, e.g.
    /// `lib/modules/6.12.117+deb12-amd64/kernel/drivers/md/dm-verity.ko.xz`. `.ko.xz`/`.ko.zst` are
    /// handed to the kernel compressed.
    pub modules: Vec<String>,
    /// Modules loaded after `modules` when the hardware is there: TEE guest drivers refuse to load
    /// (ENODEV) outside their TEE, which is not an error. Their dependencies are in `modules` or
    /// earlier in this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional_modules: Vec<String>,
    /// The root filesystem and its verity parameters.
    pub root: RootConfig,
    /// The workload partition pair; absent = an image without a workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadConfig>,
    /// What the init executes after switch_root.
    pub agent: AgentConfig,
    /// How long to wait for the disks' partitions to appear.
    pub device_timeout_secs: u32,
}

/// The root partition pair. Everything is fixed at build time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    /// GPT partition UUID of the data (squashfs) partition, textual, lowercase.
    pub data_partuuid: String,
    /// GPT partition UUID of the verity hash partition.
    pub hash_partuuid: String,
    /// Verity root hash, lowercase hex (64 digits).
    pub root_hash: String,
    /// Verity salt, lowercase hex (the superblock's salt).
    pub salt: String,
    /// Number of 4096-byte data blocks covered by the hash tree.
    pub data_blocks: u64,
    /// First hash block of the tree in the hash partition: 1 when block 0 is the verity superblock.
    pub hash_start_block: u64,
    /// Filesystem type to mount ("squashfs").
    pub fstype: String,
}

/// The workload partition pair: found by GPT type GUID, verified by the root hash in its UUIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// GPT partition type GUID of the workload data partition.
    pub data_type_guid: String,
    /// GPT partition type GUID of the workload verity hash partition.
    pub hash_type_guid: String,
    /// Where the workload appears in the final root ("/workload").
    pub mount_point: String,
    /// Manifest file, relative to the workload root ("workload.toml"); measured into PCR 23.
    pub manifest: String,
    /// Filesystem type ("squashfs").
    pub fstype: String,
}

/// The process the init replaces itself with (it stays PID 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Absolute path in the final root ("/usr/bin/cvm-agent").
    pub path: String,
    /// Arguments after argv[0].
    #[serde(default)]
    pub args: Vec<String>,
}

impl BootConfig {
    /// Parses and validates the JSON text of `/etc/cvm/boot.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BootConfigError> {
        // Read the version first so that a future format says "version 2" instead of "unknown field".
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly = serde_json::from_slice(bytes)?;
        if v.version != BOOT_CONFIG_VERSION {
            return Err(BootConfigError::Version { found: v.version });
        }
        let config: BootConfig = serde_json::from_slice(bytes)?;
        config.validate()?;
        Ok(config)
    }

    /// Deterministic pretty JSON (fields in declaration order) with a trailing newline.
    pub fn to_json(&self) -> Result<String, BootConfigError> {
        self.validate()?;
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// Checks every field the init relies on, so that a bad builder fails at build time.
    pub fn validate(&self) -> Result<(), BootConfigError> {
        if self.version != BOOT_CONFIG_VERSION {
            return Err(BootConfigError::Version {
                found: self.version,
            });
        }
        for m in self.modules.iter().chain(&self.optional_modules) {
            check_relative_path("modules", m)?;
        }
        self.root.validate()?;
        if let Some(w) = &self.workload {
            w.validate()?;
        }
        check_absolute_path("agent.path", &self.agent.path)?;
        if self.device_timeout_secs == 0 {
            return Err(field("device_timeout_secs", "must be at least 1"));
        }
        Ok(())
    }
}

impl RootConfig {
    fn validate(&self) -> Result<(), BootConfigError> {
        parse_uuid(&self.data_partuuid).map_err(|p| field("root.data_partuuid", p.to_string()))?;
        parse_uuid(&self.hash_partuuid).map_err(|p| field("root.hash_partuuid", p.to_string()))?;
        self.root_hash_bytes()?;
        self.salt_bytes()?;
        if self.data_blocks == 0 {
            return Err(field("root.data_blocks", "must be at least 1"));
        }
        check_fstype("root.fstype", &self.fstype)
    }

    /// The root hash as bytes.
    pub fn root_hash_bytes(&self) -> Result<[u8; ROOT_HASH_LEN], BootConfigError> {
        let bytes = parse_lower_hex("root.root_hash", &self.root_hash)?;
        bytes
            .try_into()
            .map_err(|_| field("root.root_hash", "must be 64 hex digits (SHA-256)"))
    }

    /// The salt as bytes (may be empty: veritysetup `--salt=-`).
    pub fn salt_bytes(&self) -> Result<Vec<u8>, BootConfigError> {
        let bytes = parse_lower_hex("root.salt", &self.salt)?;
        if bytes.len() > MAX_SALT_LEN {
            return Err(field("root.salt", "longer than 256 bytes"));
        }
        Ok(bytes)
    }
}

impl WorkloadConfig {
    fn validate(&self) -> Result<(), BootConfigError> {
        parse_uuid(&self.data_type_guid)
            .map_err(|p| field("workload.data_type_guid", p.to_string()))?;
        parse_uuid(&self.hash_type_guid)
            .map_err(|p| field("workload.hash_type_guid", p.to_string()))?;
        if self.data_type_guid == self.hash_type_guid {
            return Err(field(
                "workload.hash_type_guid",
                "must differ from data_type_guid",
            ));
        }
        check_absolute_path("workload.mount_point", &self.mount_point)?;
        check_relative_path("workload.manifest", &self.manifest)?;
        check_fstype("workload.fstype", &self.fstype)
    }
}

fn field(field: &'static str, problem: impl Into<String>) -> BootConfigError {
    BootConfigError::Field {
        field,
        problem: problem.into(),
    }
}

/// A textual UUID that [`parse_uuid`] refuses.
#[derive(Debug, thiserror::Error)]
pub enum UuidError {
    #[error("{0:?} is not a UUID (want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
    Shape(String),
    #[error("{0:?}: write UUIDs in lowercase")]
    Uppercase(String),
    #[error("{0:?}: {1}")]
    Hex(String, hex::FromHexError),
}

/// Parses a textual UUID/GUID ("8-4-4-4-12" hex digits, lowercase) into its 16 bytes in textual
/// (RFC 4122) order. GPT stores GUIDs mixed-endian on disk; converting is the reader's job.
pub fn parse_uuid(text: &str) -> Result<[u8; 16], UuidError> {
    let groups: Vec<&str> = text.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return Err(UuidError::Shape(text.into()));
    }
    let hex_digits: String = groups.concat();
    if hex_digits.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(UuidError::Uppercase(text.into()));
    }
    let mut bytes = [0u8; 16];
    // 32 hex digits (the group lengths add up to 32), so a successful decode fills all 16 bytes.
    hex::decode_to_slice(&hex_digits, &mut bytes).map_err(|e| UuidError::Hex(text.into(), e))?;
    Ok(bytes)
}

/// Formats 16 bytes (textual order) as a lowercase UUID string.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn parse_lower_hex(name: &'static str, text: &str) -> Result<Vec<u8>, BootConfigError> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(field(name, "write hex in lowercase"));
    }
    hex::decode(text).map_err(|e| field(name, format!("{text:?} is not hex: {e}")))
}

fn check_relative_path(name: &'static str, p: &str) -> Result<(), BootConfigError> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(field(
            name,
            format!("{p:?} must be a relative path without empty, '.' or '..' components"),
        ));
    }
    Ok(())
}

fn check_absolute_path(name: &'static str, p: &str) -> Result<(), BootConfigError> {
    match p.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => check_relative_path(name, rest),
        _ => Err(field(
            name,
            format!("{p:?} must be an absolute path below /"),
        )),
    }
}

/// Only read-only filesystems make sense under dm-verity (a writable one would fail its first write).
fn check_fstype(name: &'static str, fstype: &str) -> Result<(), BootConfigError> {
    match fstype {
        "squashfs" | "erofs" => Ok(()),
        other => Err(field(
            name,
            format!("{other:?} is not a read-only filesystem type (squashfs or erofs)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
  "version": 1,
  "modules": [
    "lib/modules/6.12.117+deb12-amd64/kernel/drivers/md/dm-mod.ko.xz",
    "lib/modules/6.12.117+deb12-amd64/kernel/drivers/md/dm-verity.ko.xz"
  ],
  "root": {
    "data_partuuid": "0b9c5f6e-8f8a-4c1e-9d55-3a0f8a6b1c01",
    "hash_partuuid": "0b9c5f6e-8f8a-4c1e-9d55-3a0f8a6b1c02",
    "root_hash": "8878b15a7d6a3a4f464e8f9f42591dbc0cf4bedea0ec309003d2b2ee53655ef8",
    "salt": "00ff",
    "data_blocks": 74,
    "hash_start_block": 1,
    "fstype": "squashfs"
  },
  "workload": {
    "data_type_guid": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
    "hash_type_guid": "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5",
    "mount_point": "/workload",
    "manifest": "workload.toml",
    "fstype": "squashfs"
  },
  "agent": {
    "path": "/usr/bin/cvm-agent",
    "args": []
  },
  "device_timeout_secs": 30
}
"#;

    #[test]
    fn parses_and_reserializes_identically() {
        let c = BootConfig::from_json(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.root.data_blocks, 74);
        assert_eq!(c.root.salt_bytes().unwrap(), vec![0x00, 0xff]);
        assert_eq!(c.to_json().unwrap(), EXAMPLE);
    }

    #[test]
    fn workload_is_optional() {
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        v.as_object_mut().unwrap().remove("workload");
        let c = BootConfig::from_json(v.to_string().as_bytes()).unwrap();
        assert!(c.workload.is_none());
        assert!(!c.to_json().unwrap().contains("workload"));
    }

    #[test]
    fn rejects_unknown_fields_and_versions() {
        let extra = EXAMPLE.replace("\"version\": 1,", "\"version\": 1, \"debug_shell\": true,");
        let e = BootConfig::from_json(extra.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `debug_shell`"), "{e}");
        let v2 = EXAMPLE.replace("\"version\": 1,", "\"version\": 2,");
        let e = BootConfig::from_json(v2.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 2 is not supported"), "{e}");
    }

    #[test]
    fn rejects_bad_fields() {
        let cases = [
            ("\"salt\": \"00ff\"", "\"salt\": \"00FF\"", "root.salt"),
            (
                "\"root_hash\": \"8878",
                "\"root_hash\": \"88",
                "root.root_hash",
            ),
            ("dm-mod.ko.xz\"", "../dm-mod.ko.xz\"", "modules"),
            ("\"/workload\"", "\"workload\"", "workload.mount_point"),
            (
                "\"fstype\": \"squashfs\"\n  },\n  \"workload\"",
                "\"fstype\": \"ext4\"\n  },\n  \"workload\"",
                "root.fstype",
            ),
            ("3a0f8a6b1c01", "3a0f8a6b1c0", "root.data_partuuid"),
        ];
        for (from, to, name) in cases {
            let bad = EXAMPLE.replacen(from, to, 1);
            assert_ne!(bad, EXAMPLE, "replacement {from:?} did not apply");
            let e = BootConfig::from_json(bad.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn uuid_text_roundtrip() {
        let b = parse_uuid("4f68bce3-e8cd-4db1-96e7-fbcaf984b709").unwrap();
        assert_eq!(b[0], 0x4f);
        assert_eq!(b[15], 0x09);
        assert_eq!(format_uuid(&b), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
        assert!(parse_uuid("4f68bce3e8cd4db196e7fbcaf984b709").is_err());
    }
}

//! The schema of `golden-measurement.json` (docs/golden-measurement.md): what an honest VM built from
//! a spec measures, per deployment profile. The builder writes it (`cvm-image build`/`measure`); the
//! host verifier and the guest agent's peer verifier read it.

use crate::error::{Kind, Result, ResultExt, VerifyError};
use cvm_measure::eventlog::ExpectedEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const FILE: &str = "golden-measurement.json";
pub const FORMAT: u32 = 1;
/// PCRs every profile lists.
pub const PCRS: [u32; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Golden {
    pub format: u32,
    pub generator: String,
    pub image: ImageRef,
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    pub version: String,
    /// sha256 of the UKI the prediction is for.
    pub uki_sha256: String,
    /// The spec's `[image] security_version`, when it sets one: a number the owner raises when an
    /// image must no longer be accepted (`verify --min-security-version`). Absent otherwise, so a
    /// spec without it gives the same bytes as before the field existed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub security_version: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub description: String,
    /// bank name ("sha256") → PCR number (as a string, JSON object key) → entry.
    pub pcrs: BTreeMap<String, BTreeMap<String, PcrEntry>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Predicted,
    Reference,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PcrEntry {
    /// Hex value; absent when unknown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    pub source: Source,
    pub enforce: bool,
    /// Why the PCR is not predicted or not enforced.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    /// The expected events, in extend order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub events: Vec<ExpectedEvent>,
}

/// Read and check a golden file (any supported format version).
pub fn load_golden(path: &Path) -> Result<Golden> {
    parse_golden(&read_golden(path)?, path)
}

/// The golden file's bytes (read once, so that the signed bytes are the parsed bytes).
pub fn read_golden(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).input(format!("cannot read the golden file {}", path.display()))
}

/// Parse and check golden-file `bytes` read from `path`.
pub fn parse_golden(bytes: &[u8], path: &Path) -> Result<Golden> {
    let g: Golden = serde_json::from_slice(bytes).or_kind_with(Kind::Golden, || {
        format!(
            "{} is not a golden-measurement.json (docs/golden-measurement.md)",
            path.display()
        )
    })?;
    if g.format != FORMAT {
        return Err(VerifyError::golden(format!(
            "{}: golden file format {}, this cvm-image reads format {} (rebuild the image)",
            path.display(),
            g.format,
            FORMAT
        )));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(security_version: Option<u64>) -> ImageRef {
        ImageRef {
            name: "cvm-demo".into(),
            version: "0.1.0".into(),
            uki_sha256: "ab".repeat(32),
            security_version,
        }
    }

    /// Without a security version the `image` object is what it was before the field existed (a
    /// spec that does not set one keeps byte-identical outputs); older files still parse.
    #[test]
    fn security_version_is_written_only_when_set() {
        let without = serde_json::to_string(&image(None)).unwrap();
        assert_eq!(
            without,
            format!(
                r#"{{"name":"cvm-demo","version":"0.1.0","uki_sha256":"{}"}}"#,
                "ab".repeat(32)
            )
        );
        let parsed: ImageRef = serde_json::from_str(&without).unwrap();
        assert_eq!(parsed.security_version, None);
        let with = serde_json::to_string(&image(Some(4))).unwrap();
        assert!(with.ends_with(r#","security_version":4}"#), "{with}");
        let parsed: ImageRef = serde_json::from_str(&with).unwrap();
        assert_eq!(parsed.security_version, Some(4));
    }
}

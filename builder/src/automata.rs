//! The Automata export of `cvm-image golden export --format automata` (the command is in
//! `cli/golden.rs`): one profile of our golden file in the shape of
//! Automata's off-chain golden measurement, so that their verifiers can consume our prediction.
//!
//! The shape (docs/golden-measurement.md, "Automata's format"; `contracts/script/cvm/gm/*.json` of
//! automata-tee-workload-measurement):
//!
//! ```json
//! {"golden_measurement": {"pcrs": [
//!   {"index": "0x4", "pcr": "0x<32 bytes>", "measure_events": [], "measure_events_idx": []}, …]}}
//! ```
//!
//! * `pcrs[]` lists exactly Automata's PCR set, in their order: 0, 4, 5, 7, 9, 0xb, 0x10, 0x17.
//!   Our other enforced PCRs (2, 3, 6, 8, 12–15) have no place in it and are not exported.
//! * `index` is a `0x`-prefixed lower-case hex string without zero padding ("0x0", "0xb", "0x17"),
//!   as in their files.
//! * `pcr` is the SHA-256 bank value as `0x` + 64 hex digits; all zeros means "do not check" in
//!   their matching model (same section). We write our value for every PCR the profile
//!   *enforces*, and zeros for informational or unknown PCRs and for PCR 16 (Automata's livepatch /
//!   instance-binding PCR, which this image does not use and our golden file does not list).
//! * `measure_events` / `measure_events_idx` pin selected events when `pcr` is zero. Their format
//!   does not define which events of an informational PCR are stable (their GCP policy skips only the
//!   GPT event of PCR 5, per platform, outside the golden file), so we pin none: both are `[]`.
//!   The element forms, where used, would be `0x` + 32-byte digests and hex index strings.
//! * The TEE part — `snp.measurement` or `tdx.{mrtd, mrseam, rtmr0..3}` — is omitted: our golden
//!   file does not predict the launch measurement (it depends on the cloud's firmware), and their
//!   format gives no "unknown" form for it.

use crate::golden::{Golden, PcrEntry, Source};
use anyhow::{Context, Result};
use serde::Serialize;

/// Automata's PCR selection (docs/golden-measurement.md, "Automata's format"), in their order.
pub const AUTOMATA_PCRS: [u32; 8] = [0, 4, 5, 7, 9, 11, 16, 23];
/// The only bank their `pcr` field (bytes32) holds.
const BANK: &str = "sha256";
/// SHA-256 digest size: their `pcr` is a `bytes32`.
const PCR_BYTES: usize = 32;

/// The document: `{"golden_measurement": {"pcrs": [...]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutomataGolden {
    pub golden_measurement: AutomataMeasurement,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutomataMeasurement {
    pub pcrs: Vec<AutomataPcr>,
}

/// One `Pcr{index, pcr, measureEvents, measureEventsIdx}` in its off-chain JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutomataPcr {
    pub index: String,
    pub pcr: String,
    pub measure_events: Vec<String>,
    pub measure_events_idx: Vec<String>,
}

/// Export `profile` of `golden` (see the module documentation for the mapping).
pub fn export(golden: &Golden, profile: &str) -> Result<AutomataGolden> {
    let p = golden.profiles.get(profile).with_context(|| {
        let known: Vec<&str> = golden.profiles.keys().map(String::as_str).collect();
        format!(
            "the golden file has no profile {profile:?}; it has: {}",
            known.join(", ")
        )
    })?;
    let bank = p
        .pcrs
        .get(BANK)
        .with_context(|| format!("profile {profile} has no {BANK} bank"))?;
    let pcrs = AUTOMATA_PCRS
        .iter()
        .map(|&pcr| {
            let value = match bank.get(&pcr.to_string()) {
                Some(entry) => {
                    enforced_value(entry).with_context(|| format!("profile {profile} PCR {pcr}"))?
                }
                None => None,
            };
            Ok(AutomataPcr {
                index: format!("{pcr:#x}"),
                pcr: format!("0x{}", value.unwrap_or_else(|| "00".repeat(PCR_BYTES))),
                measure_events: vec![],
                measure_events_idx: vec![],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AutomataGolden {
        golden_measurement: AutomataMeasurement { pcrs },
    })
}

/// The value to pin: an enforced, known entry's value (checked to be 32 bytes of hex).
fn enforced_value(entry: &PcrEntry) -> Result<Option<String>> {
    if !entry.enforce || entry.source == Source::Unknown {
        return Ok(None);
    }
    let value = entry
        .value
        .as_deref()
        .context("enforced but has no value")?
        .to_ascii_lowercase();
    let ok = hex::decode(&value)
        .map(|b| b.len() == PCR_BYTES)
        .unwrap_or(false);
    anyhow::ensure!(ok, "value {value:?} is not {} hex digits", PCR_BYTES * 2);
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{ImageRef, Profile};
    use std::collections::BTreeMap;

    fn entry(value: Option<&str>, source: Source, enforce: bool) -> PcrEntry {
        PcrEntry {
            value: value.map(str::to_string),
            source,
            enforce,
            note: None,
            events: vec![],
        }
    }

    fn golden() -> Golden {
        let a = "ab".repeat(32);
        let b = "CD".repeat(32);
        let bank = BTreeMap::from([
            ("0".to_string(), entry(None, Source::Unknown, false)),
            ("4".to_string(), entry(Some(&a), Source::Predicted, true)),
            ("5".to_string(), entry(Some(&a), Source::Predicted, false)),
            ("11".to_string(), entry(Some(&b), Source::Reference, true)),
            ("23".to_string(), entry(Some(&a), Source::Predicted, true)),
            ("2".to_string(), entry(Some(&a), Source::Predicted, true)),
        ]);
        Golden {
            format: 1,
            generator: "t".into(),
            image: ImageRef {
                name: "n".into(),
                version: "1".into(),
                uki_sha256: String::new(),
                security_version: None,
            },
            profiles: BTreeMap::from([(
                "gcp".to_string(),
                Profile {
                    description: "d".into(),
                    pcrs: BTreeMap::from([("sha256".to_string(), bank)]),
                },
            )]),
        }
    }

    /// The exact text shape of Automata's `contracts/script/cvm/gm/AzureSnp.json` (indices, key
    /// order, zero value for "not checked"), with our values.
    #[test]
    fn shape_matches_automatas_offchain_file() {
        let out = serde_json::to_string(&export(&golden(), "gcp").unwrap()).unwrap();
        let zero = format!("0x{}", "00".repeat(32));
        let a = format!("0x{}", "ab".repeat(32));
        let b = format!("0x{}", "cd".repeat(32));
        let pcr = |i: &str, v: &str| {
            format!(r#"{{"index":"{i}","pcr":"{v}","measure_events":[],"measure_events_idx":[]}}"#)
        };
        let want = format!(
            r#"{{"golden_measurement":{{"pcrs":[{},{},{},{},{},{},{},{}]}}}}"#,
            pcr("0x0", &zero),
            pcr("0x4", &a),
            pcr("0x5", &zero),
            pcr("0x7", &zero),
            pcr("0x9", &zero),
            pcr("0xb", &b),
            pcr("0x10", &zero),
            pcr("0x17", &a),
        );
        assert_eq!(out, want);
    }

    #[test]
    fn unknown_profile_and_bad_value_are_errors() {
        let g = golden();
        let e = format!("{:#}", export(&g, "aws").unwrap_err());
        assert!(e.contains("no profile \"aws\"; it has: gcp"), "{e}");
        let mut g = golden();
        let bank = g
            .profiles
            .get_mut("gcp")
            .unwrap()
            .pcrs
            .get_mut("sha256")
            .unwrap();
        bank.insert("9".into(), entry(Some("abcd"), Source::Predicted, true));
        let e = format!("{:#}", export(&g, "gcp").unwrap_err());
        assert!(
            e.contains("PCR 9") && e.contains("not 64 hex digits"),
            "{e}"
        );
    }
}

//! PCR 23: what the init measures about the workload, and the runtime event log it writes.
//!
//! This module is the single definition used by the init (to extend) and by the builder (to predict);
//! the agent and the verifier replay the log with it.
//!
//! # Events, in order
//!
//! 1. **`workload verity root hash`** — extended *before* the workload partition is opened, so that
//!    whatever the partition contains, the TPM already names it. The measured bytes are the ASCII text
//!    `"cvm-image.workload.verity-root-hash:" ‖ lowercase-hex(root_hash)`, no NUL, no newline (see
//!    [`ROOT_HASH_TAG`]). The tag keeps this digest from ever colliding with a digest of some other
//!    meaning, and the text form lets a verifier recompute it from the log record's `data` alone.
//! 2. **`workload.toml`** (the configured manifest name) — the manifest file's bytes as read through
//!    dm-verity, extended after the partition is mounted and before anything of it runs.
//!
//! # Banks
//!
//! Each event is extended into **every active PCR bank** of the TPM in one TPM2_PCR_Extend, each bank
//! with its own hash of the same measured bytes (`SHA-384(text)` into the SHA-384 bank, …), the way
//! the firmware measures into all banks. A bank left out would keep its reset value: a verifier
//! reading that bank would see a PCR 23 that names no workload, and anyone could later extend it to
//! any value. Banks whose hash this crate cannot compute (SM3) are reported by the init and left out.
//!
//! PCR 23 starts at zero (TCG PC Client: resettable, debug PCR, reset value 0), so with no other user,
//! `PCR23 = H(H(0 ‖ d1) ‖ d2)` in each bank names exactly one workload.
//!
//! # Runtime event log (`/run/cvm/runtime-eventlog.jsonl`)
//!
//! One JSON object per line, modelled on the TCG Canonical Event Log JSON form as systemd writes it to
//! `/run/log/systemd/tpm2-measure.log` (without systemd's RFC 7464 record separators):
//!
//! ```json
//! {"recnum":0,"pcr":23,"digests":[{"hashAlg":"sha1","digest":"<40 hex>"},{"hashAlg":"sha256","digest":"<64 hex>"},{"hashAlg":"sha384","digest":"<96 hex>"}],"content_type":"cvm-image","content":{"description":"workload verity root hash","data":"cvm-image.workload.verity-root-hash:<64 hex>"}}
//! ```
//!
//! `recnum` counts from 0 without gaps. `digests` lists one digest per bank the init extended, in
//! ascending `TPM_ALG_ID` order. `content.data`, when present, is the exact text whose hash is each
//! digest; the parser checks that. Replay never derives a digest from `data`: it folds `digests`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::eventlog::HashAlg;

/// The PCR the workload is measured into (first of the "debug"/application PCRs no firmware or
/// systemd component uses).
pub const WORKLOAD_PCR: u32 = 23;
/// Prefix of the text hashed for event 1.
pub const ROOT_HASH_TAG: &str = "cvm-image.workload.verity-root-hash:";
/// Description of event 1.
pub const ROOT_HASH_DESCRIPTION: &str = "workload verity root hash";
/// The event type given to runtime (init) events when they are shown beside TCG events: the runtime
/// log records none; EV_IPL by convention (the type systemd-stub gives its PCR 11 measurements).
pub const RUNTIME_EVENT_TYPE: crate::eventlog::EventType = crate::eventlog::EventType::EV_IPL;
/// Where the init writes the runtime event log (in the final root, `/run` is a tmpfs).
pub const RUNTIME_EVENT_LOG_PATH: &str = "/run/cvm/runtime-eventlog.jsonl";
/// `content_type` of every record this project writes.
pub const CONTENT_TYPE: &str = "cvm-image";
/// Every bank whose hash this crate computes ([`HashAlg::hash`]), ascending `TPM_ALG_ID`: what the
/// builder predicts; the init extends those of them the TPM has active.
pub const HASHABLE_BANKS: [HashAlg; 4] = [
    HashAlg::SHA1,
    HashAlg::SHA256,
    HashAlg::SHA384,
    HashAlg::SHA512,
];

/// One extend of a PCR (in several banks at once) and why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub pcr: u32,
    /// What was extended into each bank: PCR\[bank\] := H_bank(PCR ‖ digest), digest = H_bank(measured
    /// bytes).
    pub digests: BTreeMap<HashAlg, Vec<u8>>,
    /// Human-readable name of what was measured ("workload.toml").
    pub description: String,
    /// The exact text hashed into the digests, when it is short text (event 1); `None` when the
    /// measured object is a file named by `description` (event 2).
    pub data: Option<String>,
}

impl RuntimeEvent {
    /// An event measuring `measured` into `banks` (banks outside [`HASHABLE_BANKS`] are left out:
    /// the caller decides what that means, see [`unhashable_banks`]).
    pub fn measuring(
        pcr: u32,
        description: &str,
        measured: &[u8],
        data: Option<String>,
        banks: &[HashAlg],
    ) -> Self {
        RuntimeEvent {
            pcr,
            digests: banks
                .iter()
                .filter_map(|&b| Some((b, b.hash(measured)?)))
                .collect(),
            description: description.to_string(),
            data,
        }
    }

    /// An event whose digests hash `data` (which is recorded with it).
    pub fn of_text(pcr: u32, description: &str, data: String, banks: &[HashAlg]) -> Self {
        let measured = data.clone().into_bytes();
        Self::measuring(pcr, description, &measured, Some(data), banks)
    }

    /// The digest extended into `bank`, if this event was.
    pub fn digest(&self, bank: HashAlg) -> Option<&[u8]> {
        self.digests.get(&bank).map(Vec::as_slice)
    }
}

/// The banks of `banks` this crate cannot hash (the init cannot extend them).
pub fn unhashable_banks(banks: &[HashAlg]) -> Vec<HashAlg> {
    banks
        .iter()
        .copied()
        .filter(|b| !HASHABLE_BANKS.contains(b))
        .collect()
}

/// Event 1: the workload's verity root hash, extended before the partition is opened.
pub fn root_hash_event(root_hash: &[u8; 32], banks: &[HashAlg]) -> RuntimeEvent {
    let text = format!("{ROOT_HASH_TAG}{}", hex::encode(root_hash));
    RuntimeEvent::of_text(WORKLOAD_PCR, ROOT_HASH_DESCRIPTION, text, banks)
}

/// Event 2: the manifest file as read through dm-verity. `manifest_name` is the boot config's
/// `workload.manifest` ("workload.toml").
pub fn manifest_event(manifest_name: &str, manifest: &[u8], banks: &[HashAlg]) -> RuntimeEvent {
    RuntimeEvent::measuring(WORKLOAD_PCR, manifest_name, manifest, None, banks)
}

/// Both workload events, in extend order.
pub fn workload_events(
    root_hash: &[u8; 32],
    manifest_name: &str,
    manifest: &[u8],
    banks: &[HashAlg],
) -> Vec<RuntimeEvent> {
    vec![
        root_hash_event(root_hash, banks),
        manifest_event(manifest_name, manifest, banks),
    ]
}

/// TPM2_PCR_Extend of one bank: H(old ‖ digest); `None` for a bank this crate cannot hash.
pub fn extend(bank: HashAlg, old: &[u8], digest: &[u8]) -> Option<Vec<u8>> {
    bank.hash_parts(&[old, digest])
}

/// A PCR's value after reset in a bank with `len`-byte digests (TCG PC Client PTP: PCRs 17–22 reset
/// to all ones, the others to zero).
pub fn initial_pcr_value(pcr: u32, len: usize) -> Vec<u8> {
    let byte = if (17..=22).contains(&pcr) { 0xFF } else { 0 };
    vec![byte; len]
}

/// Folds `events` in `bank` into the final value of every PCR they touch. An event without a
/// digest for `bank` is an error: the log does not explain that bank.
pub fn replay(events: &[RuntimeEvent], bank: HashAlg) -> Result<BTreeMap<u32, Vec<u8>>, String> {
    let len = bank
        .digest_len()
        .filter(|_| HASHABLE_BANKS.contains(&bank))
        .ok_or_else(|| format!("bank {bank} cannot be replayed"))?;
    let mut pcrs = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let digest = e.digest(bank).ok_or_else(|| {
            format!(
                "runtime event {i} ({}) has no {bank} digest: the init did not extend that bank",
                e.description
            )
        })?;
        let v = pcrs
            .entry(e.pcr)
            .or_insert_with(|| initial_pcr_value(e.pcr, len));
        *v = extend(bank, v, digest).ok_or_else(|| format!("bank {bank} cannot be replayed"))?;
    }
    Ok(pcrs)
}

/// The predicted PCR 23 in `bank` for a workload (what the init produces on a correct boot).
pub fn predict_pcr23(
    root_hash: &[u8; 32],
    manifest_name: &str,
    manifest: &[u8],
    bank: HashAlg,
) -> Result<Vec<u8>, String> {
    let events = workload_events(root_hash, manifest_name, manifest, &[bank]);
    replay(&events, bank)?
        .remove(&WORKLOAD_PCR)
        .ok_or_else(|| "the workload events extend no PCR 23".to_string())
}

/// Errors parsing a runtime event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("runtime event log line {line}: {source}")]
    Json {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("runtime event log line {line}: {problem}")]
    Record { line: usize, problem: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogRecord {
    recnum: u64,
    pcr: u32,
    digests: Vec<LogDigest>,
    content_type: String,
    content: LogContent,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogDigest {
    #[serde(rename = "hashAlg")]
    hash_alg: String,
    digest: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogContent {
    description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
}

/// One log line (with its trailing newline) for the `recnum`-th event.
pub fn encode_record(recnum: u64, event: &RuntimeEvent) -> String {
    let record = LogRecord {
        recnum,
        pcr: event.pcr,
        digests: event
            .digests
            .iter()
            .map(|(bank, d)| LogDigest {
                hash_alg: bank.name(),
                digest: hex::encode(d),
            })
            .collect(),
        content_type: CONTENT_TYPE.to_string(),
        content: LogContent {
            description: event.description.clone(),
            data: event.data.clone(),
        },
    };
    // Serializing plain strings and integers cannot fail.
    let mut line = serde_json::to_string(&record).unwrap_or_default();
    line.push('\n');
    line
}

/// A whole log, records numbered from 0.
pub fn encode_log(events: &[RuntimeEvent]) -> String {
    events
        .iter()
        .zip(0u64..)
        .map(|(e, n)| encode_record(n, e))
        .collect()
}

/// Parses a log: every non-empty line a record, `recnum` 0, 1, 2, …, at least one digest each (one
/// per bank, banks of [`HASHABLE_BANKS`]), and `data` (if present) hashing to every digest.
pub fn parse_log(text: &str) -> Result<Vec<RuntimeEvent>, EventLogError> {
    let mut events = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let record: LogRecord =
            serde_json::from_str(raw).map_err(|source| EventLogError::Json { line, source })?;
        let bad = |problem: String| EventLogError::Record { line, problem };
        if record.recnum != events.len() as u64 {
            return Err(bad(format!(
                "recnum {} where {} was expected (records missing or reordered)",
                record.recnum,
                events.len()
            )));
        }
        events.push(record_to_event(record, line)?);
    }
    Ok(events)
}

/// The event of one record (`line` of the log, for the error).
fn record_to_event(record: LogRecord, line: usize) -> Result<RuntimeEvent, EventLogError> {
    let bad = |problem: String| EventLogError::Record { line, problem };
    if record.content_type != CONTENT_TYPE {
        return Err(bad(format!(
            "content_type {:?}, expected {CONTENT_TYPE:?}",
            record.content_type
        )));
    }
    if record.digests.is_empty() {
        return Err(bad("no digest: every record names at least one bank".into()));
    }
    let mut digests = BTreeMap::new();
    for d in &record.digests {
        let (bank, digest) = parse_digest(d, line)?;
        if let Some(data) = &record.content.data {
            if bank.hash(data.as_bytes()).as_deref() != Some(digest.as_slice()) {
                return Err(bad(format!(
                    "content.data does not hash to the {bank} digest of {:?}",
                    record.content.description
                )));
            }
        }
        if digests.insert(bank, digest).is_some() {
            return Err(bad(format!("two {bank} digests")));
        }
    }
    Ok(RuntimeEvent {
        pcr: record.pcr,
        digests,
        description: record.content.description,
        data: record.content.data,
    })
}

/// One `{"hashAlg", "digest"}` of a bank this crate can replay, with the bank's digest length.
fn parse_digest(d: &LogDigest, line: usize) -> Result<(HashAlg, Vec<u8>), EventLogError> {
    let bad = |problem: String| EventLogError::Record { line, problem };
    let bank = HashAlg::from_name(&d.hash_alg)
        .filter(|b| HASHABLE_BANKS.contains(b))
        .ok_or_else(|| {
            bad(format!(
                "hashAlg {:?}: expected one of sha1, sha256, sha384, sha512",
                d.hash_alg
            ))
        })?;
    let len = bank.digest_len().unwrap_or_default();
    let digest = hex::decode(&d.digest)
        .ok()
        .filter(|v| v.len() == len)
        .ok_or_else(|| {
            bad(format!(
                "{bank} digest {:?} is not {} hex digits",
                d.digest,
                len * 2
            ))
        })?;
    Ok((bank, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// root hash = bytes 0x00..0x1f.
    fn root() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    // printf 'cvm-image.workload.verity-root-hash:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f' | sha256sum
    const D1: &str = "181670ed950bf0b445e2eccbdb1e72880ad939e766a340eb2f461632f5548e89";
    // printf 'name = "hello"\n' | sha256sum
    const D2: &str = "eef4f823724aed1b3a4165d31b95c5df2be3edfa61e15817d79a85e6018d9bd9";
    // The same two inputs | sha384sum.
    const D1_384: &str = "e9efa9c1f26809715479ce8084a96bd070cc3f482be2548206dec68ce3d1cbc94238231f6cfe16c84fd629a64bb24a4d";
    const D2_384: &str = "f103346a574249c8859b6b819f8640d24393f242915556af183a1fdd3a8be9897a3c7e35110c5499bdc52958784bd8df";
    // The same two inputs | sha1sum.
    const D1_1: &str = "7c628f406c9966ae07b3a1167620c43100b71a24";
    const D2_1: &str = "926ec4451e4d8409ee6eb45d6730a2cb679e42ed";
    // python3 hashlib, per bank: p=bytes(n); p=H(p+H(text)); p=H(p+H(manifest))
    const PCR23: &str = "8251ac6ea7e0e41865d72b82c8736aefa4714499a6355cae957c3e1314cd593d";
    const PCR23_1: &str = "262605088df0c5fedc512831e764f16fd77ab2a2";
    const PCR23_384: &str = "0d7cf4d67fc9cff08e5ecba4e57a673b498caaeb765edc0bf034fa8b4e5b8bbee5f4c01e3bfc583fe5b643e49291d939";
    const PCR23_512: &str = "d79e1b3ff744f4a0addc3dc3de98bc39dca9711f164856965b0f643ec60ee9bf169f65de0d452706c759ff49b96c855869f2772a612b550e8e780569cb20de66";
    const MANIFEST: &[u8] = b"name = \"hello\"\n";
    const SHA256_ONLY: [HashAlg; 1] = [HashAlg::SHA256];

    #[test]
    fn event_digests_match_sha_sums_in_every_bank() {
        let ev = workload_events(&root(), "workload.toml", MANIFEST, &HASHABLE_BANKS);
        assert_eq!(ev[0].digest(HashAlg::SHA256).unwrap(), h(D1));
        assert_eq!(ev[0].digest(HashAlg::SHA384).unwrap(), h(D1_384));
        assert_eq!(ev[0].digest(HashAlg::SHA1).unwrap(), h(D1_1));
        assert_eq!(ev[0].description, "workload verity root hash");
        assert_eq!(ev[1].digest(HashAlg::SHA256).unwrap(), h(D2));
        assert_eq!(ev[1].digest(HashAlg::SHA384).unwrap(), h(D2_384));
        assert_eq!(ev[1].digest(HashAlg::SHA1).unwrap(), h(D2_1));
        assert_eq!(ev[1].description, "workload.toml");
        assert!(ev.iter().all(|e| e.pcr == 23 && e.digests.len() == 4));
        // A bank this crate cannot hash is left out, and named by unhashable_banks.
        let sm3 = [HashAlg::SHA256, HashAlg::SM3_256];
        let ev = workload_events(&root(), "workload.toml", MANIFEST, &sm3);
        assert!(ev.iter().all(|e| e.digests.len() == 1));
        assert_eq!(unhashable_banks(&sm3), [HashAlg::SM3_256]);
    }

    #[test]
    fn pcr23_prediction_matches_python_fold_per_bank() {
        for (bank, want) in [
            (HashAlg::SHA1, PCR23_1),
            (HashAlg::SHA256, PCR23),
            (HashAlg::SHA384, PCR23_384),
            (HashAlg::SHA512, PCR23_512),
        ] {
            let got = predict_pcr23(&root(), "workload.toml", MANIFEST, bank).unwrap();
            assert_eq!(hex::encode(got), want, "{bank}");
        }
    }

    #[test]
    fn replay_refuses_a_bank_the_events_lack() {
        let ev = workload_events(&root(), "workload.toml", MANIFEST, &SHA256_ONLY);
        let e = replay(&ev, HashAlg::SHA384).unwrap_err();
        assert!(e.contains("has no sha384 digest"), "{e}");
        assert!(replay(&ev, HashAlg::SM3_256).is_err());
    }

    #[test]
    fn log_encodes_exact_lines_and_replays() {
        let banks = [HashAlg::SHA256, HashAlg::SHA384];
        let ev = workload_events(&root(), "workload.toml", MANIFEST, &banks);
        let log = encode_log(&ev);
        let want = format!(
            concat!(
                r#"{{"recnum":0,"pcr":23,"digests":[{{"hashAlg":"sha256","digest":"{d1}"}},{{"hashAlg":"sha384","digest":"{d1_384}"}}],"content_type":"cvm-image","content":{{"description":"workload verity root hash","data":"cvm-image.workload.verity-root-hash:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"}}}}"#,
                "\n",
                r#"{{"recnum":1,"pcr":23,"digests":[{{"hashAlg":"sha256","digest":"{d2}"}},{{"hashAlg":"sha384","digest":"{d2_384}"}}],"content_type":"cvm-image","content":{{"description":"workload.toml"}}}}"#,
                "\n"
            ),
            d1 = D1,
            d2 = D2,
            d1_384 = D1_384,
            d2_384 = D2_384,
        );
        assert_eq!(log, want);
        let parsed = parse_log(&log).unwrap();
        assert_eq!(parsed, ev);
        assert_eq!(replay(&parsed, HashAlg::SHA256).unwrap()[&23], h(PCR23));
        assert_eq!(replay(&parsed, HashAlg::SHA384).unwrap()[&23], h(PCR23_384));
    }

    #[test]
    fn sha256_only_log_of_earlier_inits_still_parses() {
        let line = format!(
            r#"{{"recnum":0,"pcr":23,"digests":[{{"hashAlg":"sha256","digest":"{D2}"}}],"content_type":"cvm-image","content":{{"description":"workload.toml"}}}}"#
        );
        let parsed = parse_log(&line).unwrap();
        assert_eq!(
            parsed[0].digests.keys().copied().collect::<Vec<_>>(),
            SHA256_ONLY
        );
    }

    #[test]
    fn parse_rejects_tampering() {
        let log = encode_log(&workload_events(
            &root(),
            "workload.toml",
            MANIFEST,
            &HASHABLE_BANKS,
        ));
        // Dropped record.
        let second_only: String = log.lines().skip(1).map(|l| format!("{l}\n")).collect();
        let e = parse_log(&second_only).unwrap_err().to_string();
        assert!(e.contains("recnum 1 where 0 was expected"), "{e}");
        // data no longer matching the digests.
        let forged = log.replacen("verity-root-hash:00", "verity-root-hash:ff", 1);
        let e = parse_log(&forged).unwrap_err().to_string();
        assert!(e.contains("does not hash to the sha1 digest"), "{e}");
        // One bank's digest changed: data still checks every bank.
        let forged = log.replacen(&D1_384[..8], "00000000", 1);
        let e = parse_log(&forged).unwrap_err().to_string();
        assert!(e.contains("does not hash to the sha384 digest"), "{e}");
        // A bank twice, an unknown bank, a digest of the wrong size, no digest.
        let twice = log.replacen("\"sha512\"", "\"sha384\"", 1);
        assert!(parse_log(&twice).is_err());
        let e = parse_log(&log.replacen("\"sha1\"", "\"md5\"", 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hashAlg \"md5\""), "{e}");
        let e = parse_log(&log.replacen("\"sha1\"", "\"sha256\"", 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not 64 hex digits"), "{e}");
        let line = r#"{"recnum":0,"pcr":23,"digests":[],"content_type":"cvm-image","content":{"description":"x"}}"#;
        assert!(parse_log(line)
            .unwrap_err()
            .to_string()
            .contains("no digest"));
        // Unknown field.
        let extra = log.replacen("\"recnum\":0,", "\"recnum\":0,\"x\":1,", 1);
        assert!(parse_log(&extra).is_err());
    }

    #[test]
    fn initial_values_follow_pc_client() {
        assert_eq!(initial_pcr_value(23, 32), [0; 32]);
        assert_eq!(initial_pcr_value(17, 48), [0xFF; 48]);
        assert_eq!(initial_pcr_value(16, 20), [0; 20]);
    }
}

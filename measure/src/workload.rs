//! PCR 23: what the init measures about the workload, and the runtime event log it writes.
//!
//! This module is the single definition used by the init (to extend) and by the builder (to predict);
//! the agent and the verifier replay the log with it.
//!
//! # Events, in order
//!
//! 1. **`workload verity root hash`** — extended *before* the workload partition is opened, so that
//!    whatever the partition contains, the TPM already names it. The digest is
//!    `SHA-256("cvm-image.workload.verity-root-hash:" ‖ lowercase-hex(root_hash))` over the ASCII
//!    bytes, no NUL, no newline (see [`ROOT_HASH_TAG`]). The tag keeps this digest from ever colliding
//!    with a digest of some other meaning, and the text form lets a verifier recompute it from the log
//!    record's `data` alone.
//! 2. **`workload.toml`** (the configured manifest name) — `SHA-256(file bytes)` of the manifest as read
//!    through dm-verity, extended after the partition is mounted and before anything of it runs.
//!
//! PCR 23 starts at 32 zero bytes (TCG PC Client: resettable, debug PCR, reset value 0), so with no
//! other user, `PCR23 = H(H(0³² ‖ d1) ‖ d2)` names exactly one workload.
//!
//! # Runtime event log (`/run/cvm/runtime-eventlog.jsonl`)
//!
//! One JSON object per line, modelled on the TCG Canonical Event Log JSON form as systemd writes it to
//! `/run/log/systemd/tpm2-measure.log` (without systemd's RFC 7464 record separators):
//!
//! ```json
//! {"recnum":0,"pcr":23,"digests":[{"hashAlg":"sha256","digest":"<64 hex>"}],"content_type":"cvm-image","content":{"description":"workload verity root hash","data":"cvm-image.workload.verity-root-hash:<64 hex>"}}
//! ```
//!
//! `recnum` counts from 0 without gaps. `content.data`, when present, is the exact text whose SHA-256 is
//! the digest; the parser checks that. Replay never derives a digest from `data`: it folds `digests`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
/// `hashAlg` name of the only bank recorded.
pub const HASH_ALG_SHA256: &str = "sha256";

/// One extend of a PCR (SHA-256 bank) and why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    pub pcr: u32,
    /// What was extended: PCR := SHA-256(PCR ‖ digest_sha256).
    pub digest_sha256: [u8; 32],
    /// Human-readable name of what was measured ("workload.toml").
    pub description: String,
    /// The exact text hashed into `digest_sha256`, when it is short text (event 1); `None` when the
    /// measured object is a file named by `description` (event 2).
    pub data: Option<String>,
}

impl RuntimeEvent {
    /// An event whose digest is the SHA-256 of `data` (which is recorded with it).
    pub fn of_text(pcr: u32, description: &str, data: String) -> Self {
        RuntimeEvent {
            pcr,
            digest_sha256: Sha256::digest(data.as_bytes()).into(),
            description: description.to_string(),
            data: Some(data),
        }
    }
}

/// Event 1: the workload's verity root hash, extended before the partition is opened.
pub fn root_hash_event(root_hash: &[u8; 32]) -> RuntimeEvent {
    let text = format!("{ROOT_HASH_TAG}{}", hex::encode(root_hash));
    RuntimeEvent::of_text(WORKLOAD_PCR, ROOT_HASH_DESCRIPTION, text)
}

/// Event 2: the manifest file as read through dm-verity. `manifest_name` is the boot config's
/// `workload.manifest` ("workload.toml").
pub fn manifest_event(manifest_name: &str, manifest: &[u8]) -> RuntimeEvent {
    RuntimeEvent {
        pcr: WORKLOAD_PCR,
        digest_sha256: Sha256::digest(manifest).into(),
        description: manifest_name.to_string(),
        data: None,
    }
}

/// Both workload events, in extend order.
pub fn workload_events(
    root_hash: &[u8; 32],
    manifest_name: &str,
    manifest: &[u8],
) -> Vec<RuntimeEvent> {
    vec![
        root_hash_event(root_hash),
        manifest_event(manifest_name, manifest),
    ]
}

/// The verity root hash carried in the workload partition pair's UUIDs (systemd-repart convention):
/// data partition UUID = bytes 0..16, hash partition UUID = bytes 16..32, both in textual UUID byte
/// order (not GPT's mixed-endian on-disk order).
pub fn root_hash_from_partuuids(data_uuid: &[u8; 16], hash_uuid: &[u8; 16]) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..16].copy_from_slice(data_uuid);
    h[16..].copy_from_slice(hash_uuid);
    h
}

/// The inverse of [`root_hash_from_partuuids`]: (data partition UUID, hash partition UUID).
pub fn partuuids_from_root_hash(root_hash: &[u8; 32]) -> ([u8; 16], [u8; 16]) {
    let mut data = [0u8; 16];
    let mut hash = [0u8; 16];
    data.copy_from_slice(&root_hash[..16]);
    hash.copy_from_slice(&root_hash[16..]);
    (data, hash)
}

/// TPM2_PCR_Extend on the SHA-256 bank: SHA-256(old ‖ digest).
pub fn extend(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}

/// A PCR's value after reset (TCG PC Client PTP: PCRs 17–22 reset to all ones, the others to zero).
pub fn initial_pcr_value(pcr: u32) -> [u8; 32] {
    if (17..=22).contains(&pcr) {
        [0xFF; 32]
    } else {
        [0; 32]
    }
}

/// Folds `events` into the final value of every PCR they touch.
pub fn replay(events: &[RuntimeEvent]) -> BTreeMap<u32, [u8; 32]> {
    let mut pcrs = BTreeMap::new();
    for e in events {
        let v = pcrs
            .entry(e.pcr)
            .or_insert_with(|| initial_pcr_value(e.pcr));
        *v = extend(v, &e.digest_sha256);
    }
    pcrs
}

/// The predicted PCR 23 for a workload (what the init produces on a correct boot).
pub fn predict_pcr23(root_hash: &[u8; 32], manifest_name: &str, manifest: &[u8]) -> [u8; 32] {
    let events = workload_events(root_hash, manifest_name, manifest);
    replay(&events)
        .get(&WORKLOAD_PCR)
        .copied()
        .unwrap_or_else(|| initial_pcr_value(WORKLOAD_PCR))
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
        digests: vec![LogDigest {
            hash_alg: HASH_ALG_SHA256.to_string(),
            digest: hex::encode(event.digest_sha256),
        }],
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

/// Parses a log: every non-empty line a record, `recnum` 0, 1, 2, …, one SHA-256 digest each,
/// and `data` (if present) hashing to that digest.
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
        events.push(record_to_event(record).map_err(bad)?);
    }
    Ok(events)
}

fn record_to_event(record: LogRecord) -> Result<RuntimeEvent, String> {
    if record.content_type != CONTENT_TYPE {
        return Err(format!(
            "content_type {:?}, expected {CONTENT_TYPE:?}",
            record.content_type
        ));
    }
    let [d] = record.digests.as_slice() else {
        return Err(format!(
            "{} digests, expected exactly one (sha256)",
            record.digests.len()
        ));
    };
    if d.hash_alg != HASH_ALG_SHA256 {
        return Err(format!("hashAlg {:?}, expected \"sha256\"", d.hash_alg));
    }
    let digest: [u8; 32] = hex::decode(&d.digest)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| format!("digest {:?} is not 64 hex digits", d.digest))?;
    if let Some(data) = &record.content.data {
        let h: [u8; 32] = Sha256::digest(data.as_bytes()).into();
        if h != digest {
            return Err(format!(
                "content.data does not hash to the digest of {:?}",
                record.content.description
            ));
        }
    }
    Ok(RuntimeEvent {
        pcr: record.pcr,
        digest_sha256: digest,
        description: record.content.description,
        data: record.content.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// root hash = bytes 0x00..0x1f.
    fn root() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    // printf 'cvm-image.workload.verity-root-hash:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f' | sha256sum
    const D1: &str = "181670ed950bf0b445e2eccbdb1e72880ad939e766a340eb2f461632f5548e89";
    // printf 'name = "hello"\n' | sha256sum
    const D2: &str = "eef4f823724aed1b3a4165d31b95c5df2be3edfa61e15817d79a85e6018d9bd9";
    // python3: p=sha256(bytes(32)+bytes.fromhex(D1)).digest(); p=sha256(p+bytes.fromhex(D2)).digest()
    const PCR23: &str = "8251ac6ea7e0e41865d72b82c8736aefa4714499a6355cae957c3e1314cd593d";
    const MANIFEST: &[u8] = b"name = \"hello\"\n";

    #[test]
    fn event_digests_match_sha256sum() {
        let ev = workload_events(&root(), "workload.toml", MANIFEST);
        assert_eq!(ev[0].digest_sha256, h(D1));
        assert_eq!(ev[0].description, "workload verity root hash");
        assert_eq!(ev[1].digest_sha256, h(D2));
        assert_eq!(ev[1].description, "workload.toml");
        assert!(ev.iter().all(|e| e.pcr == 23));
    }

    #[test]
    fn pcr23_prediction_matches_python_fold() {
        assert_eq!(predict_pcr23(&root(), "workload.toml", MANIFEST), h(PCR23));
    }

    #[test]
    fn partuuids_carry_root_hash_halves() {
        let (d, hh) = partuuids_from_root_hash(&root());
        assert_eq!(
            crate::boot_config::format_uuid(&d),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
        assert_eq!(
            crate::boot_config::format_uuid(&hh),
            "10111213-1415-1617-1819-1a1b1c1d1e1f"
        );
        assert_eq!(root_hash_from_partuuids(&d, &hh), root());
    }

    #[test]
    fn log_encodes_exact_lines_and_replays() {
        let ev = workload_events(&root(), "workload.toml", MANIFEST);
        let log = encode_log(&ev);
        let want = format!(
            concat!(
                r#"{{"recnum":0,"pcr":23,"digests":[{{"hashAlg":"sha256","digest":"{d1}"}}],"content_type":"cvm-image","content":{{"description":"workload verity root hash","data":"cvm-image.workload.verity-root-hash:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"}}}}"#,
                "\n",
                r#"{{"recnum":1,"pcr":23,"digests":[{{"hashAlg":"sha256","digest":"{d2}"}}],"content_type":"cvm-image","content":{{"description":"workload.toml"}}}}"#,
                "\n"
            ),
            d1 = D1,
            d2 = D2
        );
        assert_eq!(log, want);
        let parsed = parse_log(&log).unwrap();
        assert_eq!(parsed, ev);
        assert_eq!(replay(&parsed)[&23], h(PCR23));
    }

    #[test]
    fn parse_rejects_tampering() {
        let log = encode_log(&workload_events(&root(), "workload.toml", MANIFEST));
        // Dropped record.
        let second_only: String = log.lines().skip(1).map(|l| format!("{l}\n")).collect();
        let e = parse_log(&second_only).unwrap_err().to_string();
        assert!(e.contains("recnum 1 where 0 was expected"), "{e}");
        // data no longer matching the digest.
        let forged = log.replacen("verity-root-hash:00", "verity-root-hash:ff", 1);
        let e = parse_log(&forged).unwrap_err().to_string();
        assert!(e.contains("does not hash to the digest"), "{e}");
        // Unknown field.
        let extra = log.replacen("\"recnum\":0,", "\"recnum\":0,\"x\":1,", 1);
        assert!(parse_log(&extra).is_err());
    }

    #[test]
    fn initial_values_follow_pc_client() {
        assert_eq!(initial_pcr_value(23), [0; 32]);
        assert_eq!(initial_pcr_value(17), [0xFF; 32]);
        assert_eq!(initial_pcr_value(16), [0; 32]);
    }
}

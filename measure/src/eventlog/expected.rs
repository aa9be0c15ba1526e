//! Expected (predicted) events: the form the builder emits, their replay, and the event-by-event
//! diff against a real log that names the first difference.
//!
//! JSON form of one expected event:
//!
//! ```json
//! {"pcr": 11, "type": "EV_IPL", "digests": {"sha256": "<hex>"}, "description": "UKI section .cmdline"}
//! ```
//!
//! with an optional `"data": "<hex>"` holding the event data to write when an expected log is
//! encoded ([`expected_log`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::replay::{extend, initial_value};
use super::{Event, EventDigest, EventLog, EventLogError, EventType, HashAlg, Registers};

/// One event a correct boot is expected to log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedEvent {
    pub pcr: u32,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Digest per bank; a bank may be absent when it is not predicted.
    #[serde(with = "hex_map")]
    pub digests: BTreeMap<HashAlg, Vec<u8>>,
    /// What was measured, for people ("UKI section .cmdline").
    pub description: String,
    /// Event data to write into an expected log file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub data: Option<Vec<u8>>,
}

impl ExpectedEvent {
    /// An event whose digests are given by the caller (e.g. Authenticode hashes).
    pub fn new(pcr: u32, event_type: EventType, description: impl Into<String>) -> Self {
        ExpectedEvent {
            pcr,
            event_type,
            digests: BTreeMap::new(),
            description: description.into(),
            data: None,
        }
    }

    /// Add the digest for `bank`.
    pub fn with_digest(mut self, bank: HashAlg, digest: Vec<u8>) -> Self {
        self.digests.insert(bank, digest);
        self
    }

    /// An event whose digest in every bank is `H(measured)` and whose logged data is `data`
    /// (for separators and actions both are the same bytes).
    pub fn hashing(
        pcr: u32,
        event_type: EventType,
        description: impl Into<String>,
        measured: &[u8],
        data: Option<Vec<u8>>,
        banks: &[HashAlg],
    ) -> Result<Self, EventLogError> {
        let mut e = ExpectedEvent::new(pcr, event_type, description);
        for &bank in banks {
            let digest = bank.hash(measured).ok_or(EventLogError::Expected {
                event: 0,
                problem: format!("bank {bank} is not implemented"),
            })?;
            e.digests.insert(bank, digest);
        }
        e.data = data;
        Ok(e)
    }

    /// The expected form of a logged event (e.g. to record a reference boot).
    pub fn from_event(event: &Event) -> Self {
        ExpectedEvent {
            pcr: event.pcr,
            event_type: event.event_type,
            digests: event
                .digests
                .iter()
                .map(|d| (d.alg, d.digest.clone()))
                .collect(),
            description: event.description(),
            data: Some(event.data.clone()),
        }
    }
}

/// A crypto-agile log with `banks` holding `expected` in order (event data = `data`, or empty).
/// Every event needs a digest for every bank.
pub fn expected_log(
    banks: &[HashAlg],
    expected: &[ExpectedEvent],
) -> Result<EventLog, EventLogError> {
    let mut log = EventLog::new(banks)?;
    for (i, e) in expected.iter().enumerate() {
        let digests = banks
            .iter()
            .map(|&alg| {
                let digest = e.digests.get(&alg).ok_or_else(|| EventLogError::Expected {
                    event: i,
                    problem: format!("no {alg} digest for PCR {} {}", e.pcr, e.description),
                })?;
                Ok(EventDigest {
                    alg,
                    digest: digest.clone(),
                })
            })
            .collect::<Result<Vec<_>, EventLogError>>()?;
        log.events.push(Event {
            pcr: e.pcr,
            event_type: e.event_type,
            digests,
            data: e.data.clone().unwrap_or_default(),
        });
    }
    Ok(log)
}

/// PCR values the expected events produce in `bank` (TPM reset values: 0, PCRs 17–22 0xFF; no
/// StartupLocality). EV_NO_ACTION events are skipped like in a real log.
pub fn replay_expected(
    expected: &[ExpectedEvent],
    bank: HashAlg,
) -> Result<BTreeMap<u32, Vec<u8>>, EventLogError> {
    let problem = |event: usize, problem: String| EventLogError::Expected { event, problem };
    let len = bank
        .digest_len()
        .ok_or_else(|| problem(0, format!("bank {bank} has no known digest size")))?;
    let mut values: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (i, e) in expected.iter().enumerate() {
        if e.event_type == EventType::EV_NO_ACTION {
            continue;
        }
        let digest = e
            .digests
            .get(&bank)
            .ok_or_else(|| problem(i, format!("no {bank} digest ({})", e.description)))?;
        if digest.len() != len {
            return Err(problem(
                i,
                format!("{bank} digest is {} bytes, not {len}", digest.len()),
            ));
        }
        let old = values
            .remove(&e.pcr)
            .unwrap_or_else(|| initial_value(Registers::Pcr, e.pcr, len, None));
        values.insert(
            e.pcr,
            extend(bank, &old, digest).map_err(|p| problem(i, p))?,
        );
    }
    Ok(values)
}

/// The logged events a diff compares with, and how their log numbers them: a mismatch names a
/// logged event by the number `cvm-image eventlog` and `tpm2_eventlog` print for it (`EventNum`).
#[derive(Debug, Clone, Copy)]
pub struct LogEvents<'a> {
    pub events: &'a [Event],
    /// The record number of `events[0]`.
    pub first_record: usize,
}

impl<'a> LogEvents<'a> {
    /// The events of a parsed log, numbered as its records ([`EventLog::record_number`]: the Spec
    /// ID header of a crypto-agile log is record 0, so its first event is record 1).
    pub fn of(log: &'a EventLog) -> Self {
        LogEvents {
            events: &log.events,
            first_record: log.record_number(0),
        }
    }

    /// Events numbered from `first_record` (e.g. the init's runtime log, whose lines count from 1).
    pub fn numbered_from(events: &'a [Event], first_record: usize) -> Self {
        LogEvents {
            events,
            first_record,
        }
    }
}

impl<'a> From<&'a EventLog> for LogEvents<'a> {
    fn from(log: &'a EventLog) -> Self {
        LogEvents::of(log)
    }
}

/// A logged event as a mismatch reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActualEvent {
    /// Its record number in the log ([`LogEvents`]): the `index` of `cvm-image eventlog --json`,
    /// the `EventNum` of `tpm2_eventlog`.
    pub index: usize,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(with = "opt_hex")]
    pub digest: Option<Vec<u8>>,
    pub description: String,
}

/// What differs at one position of one PCR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum MismatchKind {
    /// Type or digest differ.
    Differs {
        expected: Box<ExpectedEvent>,
        actual: ActualEvent,
    },
    /// The log ends (for this PCR) before this expected event.
    Missing { expected: Box<ExpectedEvent> },
    /// The log has more events for this PCR than expected.
    Extra { actual: ActualEvent },
}

/// The first difference in one PCR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub pcr: u32,
    /// 1-based position among this PCR's extending events.
    pub position: usize,
    pub bank: HashAlg,
    #[serde(flatten)]
    pub kind: MismatchKind,
}

fn hex_or_none(d: Option<&Vec<u8>>) -> String {
    d.map_or_else(|| "none".to_string(), hex::encode)
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pcr, n, bank) = (self.pcr, self.position, self.bank);
        match &self.kind {
            MismatchKind::Differs { expected, actual } => {
                let what = if expected.event_type != actual.event_type {
                    format!("type {} expected, got {}", expected.event_type, actual.event_type)
                } else {
                    format!(
                        "expected {bank} {}, got {}",
                        hex_or_none(expected.digests.get(&bank)),
                        hex_or_none(actual.digest.as_ref())
                    )
                };
                write!(
                    f,
                    "PCR {pcr}: event {n} ({} {}) differs: {what} (log event {}: {})",
                    expected.event_type, expected.description, actual.index, actual.description
                )
            }
            MismatchKind::Missing { expected } => write!(
                f,
                "PCR {pcr}: event {n} ({} {}) is missing: the log has only {} event(s) for PCR {pcr}",
                expected.event_type,
                expected.description,
                n - 1
            ),
            MismatchKind::Extra { actual } => write!(
                f,
                "PCR {pcr}: extra event {n} ({} {}, {bank} {}) after the {} expected (log event {})",
                actual.event_type,
                actual.description,
                hex_or_none(actual.digest.as_ref()),
                n - 1,
                actual.index
            ),
        }
    }
}

/// The first mismatch over the PCRs that `expected` names, in ascending PCR order.
pub fn diff<'a>(
    expected: &[ExpectedEvent],
    actual: impl Into<LogEvents<'a>>,
    bank: HashAlg,
) -> Option<Mismatch> {
    diff_all(expected, actual, bank).into_iter().next()
}

/// The first mismatch of every PCR that `expected` names.
pub fn diff_all<'a>(
    expected: &[ExpectedEvent],
    actual: impl Into<LogEvents<'a>>,
    bank: HashAlg,
) -> Vec<Mismatch> {
    let pcrs: BTreeSet<u32> = expected.iter().map(|e| e.pcr).collect();
    diff_pcrs(
        expected,
        actual,
        bank,
        &pcrs.into_iter().collect::<Vec<_>>(),
    )
}

/// The first mismatch of each PCR in `pcrs` (a PCR with no expected events must have none in
/// the log). Events of other PCRs are ignored; EV_NO_ACTION events never count.
pub fn diff_pcrs<'a>(
    expected: &[ExpectedEvent],
    actual: impl Into<LogEvents<'a>>,
    bank: HashAlg,
    pcrs: &[u32],
) -> Vec<Mismatch> {
    let actual = actual.into();
    let mut sorted = pcrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .into_iter()
        .filter_map(|pcr| diff_one(expected, actual, bank, pcr))
        .collect()
}

fn diff_one(
    expected: &[ExpectedEvent],
    actual: LogEvents<'_>,
    bank: HashAlg,
    pcr: u32,
) -> Option<Mismatch> {
    let exp: Vec<&ExpectedEvent> = expected
        .iter()
        .filter(|e| e.pcr == pcr && e.event_type != EventType::EV_NO_ACTION)
        .collect();
    let act: Vec<(usize, &Event)> = actual
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| (actual.first_record + i, e))
        .filter(|(_, e)| e.pcr == pcr && e.is_extended())
        .collect();
    let summary = |(index, e): (usize, &Event)| ActualEvent {
        index,
        event_type: e.event_type,
        digest: e.digest(bank).map(<[u8]>::to_vec),
        description: e.description(),
    };
    let mismatch = |position: usize, kind| {
        Some(Mismatch {
            pcr,
            position,
            bank,
            kind,
        })
    };
    for i in 0..exp.len().max(act.len()) {
        match (exp.get(i), act.get(i)) {
            (Some(e), Some(&a)) => {
                let same = e.event_type == a.1.event_type
                    && e.digests
                        .get(&bank)
                        .map(Vec::as_slice)
                        .is_some_and(|d| Some(d) == a.1.digest(bank));
                if !same {
                    let kind = MismatchKind::Differs {
                        expected: Box::new((*e).clone()),
                        actual: summary(a),
                    };
                    return mismatch(i + 1, kind);
                }
            }
            (Some(e), None) => {
                return mismatch(
                    i + 1,
                    MismatchKind::Missing {
                        expected: Box::new((*e).clone()),
                    },
                )
            }
            (None, Some(&a)) => return mismatch(i + 1, MismatchKind::Extra { actual: summary(a) }),
            (None, None) => break,
        }
    }
    None
}

/// Serde for `BTreeMap<HashAlg, Vec<u8>>` as `{"sha256": "<hex>"}`.
mod hex_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::HashAlg;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<HashAlg, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.iter()
            .map(|(k, v)| (*k, hex::encode(v)))
            .collect::<BTreeMap<HashAlg, String>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<HashAlg, Vec<u8>>, D::Error> {
        BTreeMap::<HashAlg, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                let bytes = hex::decode(&v).map_err(serde::de::Error::custom)?;
                match k.digest_len() {
                    Some(len) if len != bytes.len() => Err(serde::de::Error::custom(format!(
                        "{k} digest has {} bytes, expected {len}",
                        bytes.len()
                    ))),
                    _ => Ok((k, bytes)),
                }
            })
            .collect()
    }
}

/// Serde for `Option<Vec<u8>>` as an optional hex string.
mod opt_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| hex::decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sep(pcr: u32) -> ExpectedEvent {
        ExpectedEvent::hashing(
            pcr,
            EventType::EV_SEPARATOR,
            "separator",
            &[0; 4],
            Some(vec![0; 4]),
            &[HashAlg::SHA256],
        )
        .unwrap()
    }

    fn section(name: &str, content: &[u8]) -> [ExpectedEvent; 2] {
        let utf16: Vec<u8> = name
            .encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut name_z = name.as_bytes().to_vec();
        name_z.push(0);
        let b = [HashAlg::SHA256];
        [
            ExpectedEvent::hashing(
                11,
                EventType::EV_IPL,
                format!("UKI section name {name}"),
                &name_z,
                Some(utf16.clone()),
                &b,
            )
            .unwrap(),
            ExpectedEvent::hashing(
                11,
                EventType::EV_IPL,
                format!("UKI section {name}"),
                content,
                Some(utf16),
                &b,
            )
            .unwrap(),
        ]
    }

    fn uki(cmdline: &[u8]) -> Vec<ExpectedEvent> {
        let mut v = vec![sep(4)];
        v.extend(section(".linux", b"kernel"));
        v.extend(section(".osrel", b"ID=x"));
        v.extend(section(".cmdline", cmdline));
        v
    }

    #[test]
    fn json_shape() {
        let e = ExpectedEvent::new(11, EventType::EV_IPL, "UKI section .cmdline")
            .with_digest(HashAlg::SHA256, vec![0xab; 32]);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"pcr":11,"type":"EV_IPL","digests":{{"sha256":"{}"}},"description":"UKI section .cmdline"}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(serde_json::from_str::<ExpectedEvent>(&json).unwrap(), e);
        let bad = json.replace(&"ab".repeat(32), "abcd");
        assert!(serde_json::from_str::<ExpectedEvent>(&bad)
            .unwrap_err()
            .to_string()
            .contains("2 bytes"));
    }

    #[test]
    fn identical_logs_have_no_mismatch_and_same_values() {
        let exp = uki(b"console=ttyS0");
        let log = expected_log(&[HashAlg::SHA256], &exp).unwrap();
        assert_eq!(diff(&exp, &log, HashAlg::SHA256), None);
        let replayed = crate::eventlog::replay(&log);
        assert_eq!(
            &replayed.banks[&HashAlg::SHA256],
            &replay_expected(&exp, HashAlg::SHA256).unwrap()
        );
    }

    #[test]
    fn changed_cmdline_is_named() {
        let exp = uki(b"console=ttyS0");
        let booted = expected_log(&[HashAlg::SHA256], &uki(b"console=ttyS1")).unwrap();
        let m = diff(&exp, &booted, HashAlg::SHA256).unwrap();
        assert_eq!((m.pcr, m.position), (11, 6));
        let text = m.to_string();
        assert!(
            text.starts_with(
                "PCR 11: event 6 (EV_IPL UKI section .cmdline) differs: expected sha256 "
            ),
            "{text}"
        );
        // The logged event is named by its record number, as `cvm-image eventlog` prints it
        // (record 0 is the Spec ID header, so the sixth event is record 7).
        assert!(
            text.ends_with("(log event 7: UKI section .cmdline)"),
            "{text}"
        );
        let listed = crate::eventlog::render_text(&booted);
        assert!(
            listed.contains("#7    PCR 11  EV_IPL  UKI section .cmdline\n"),
            "{listed}"
        );
    }

    #[test]
    fn missing_and_extra() {
        let exp = uki(b"c");
        let mut short = exp.clone();
        short.pop();
        let log = expected_log(&[HashAlg::SHA256], &short).unwrap();
        let m = diff(&exp, &log, HashAlg::SHA256).unwrap();
        assert!(matches!(m.kind, MismatchKind::Missing { .. }));
        assert_eq!(m.to_string(), "PCR 11: event 6 (EV_IPL UKI section .cmdline) is missing: the log has only 5 event(s) for PCR 11");
        let log = expected_log(&[HashAlg::SHA256], &exp).unwrap();
        let m = diff(&short, &log, HashAlg::SHA256).unwrap();
        assert!(matches!(m.kind, MismatchKind::Extra { .. }), "{m}");
        // A PCR expected empty must be empty.
        let m = diff_pcrs(&[], &log, HashAlg::SHA256, &[4]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].position, 1);
    }

    #[test]
    fn missing_bank_digest_is_a_difference_not_a_match() {
        let exp = vec![ExpectedEvent::new(4, EventType::EV_SEPARATOR, "separator")];
        let log = expected_log(&[HashAlg::SHA256], &[sep(4)]).unwrap();
        let m = diff(&exp, &log, HashAlg::SHA256).unwrap();
        assert!(m.to_string().contains("expected sha256 none"), "{m}");
        assert!(replay_expected(&exp, HashAlg::SHA256).is_err());
    }
}

//! The checks: evidence against one profile of a golden file, as a [`Verdict`].
//!
//! 0. **Attestation** (agent evidence): the quote, AK↔EK and EK certificate checks of
//!    `collaterals` module; a failed one fails the verdict, a skipped one (`--insecure-no-ek`) is shown.
//! 1. **The logs replay to the reported values.** The firmware log, replayed per bank, must give the
//!    reported value of every PCR it extends; the runtime log continues from there for the PCRs it
//!    extends (PCR 23). A log that does not replay cannot explain the values, so its event-level
//!    content proves nothing: this is always a failure, whatever the golden file enforces.
//! 2. **Each PCR of the profile, in every bank both the profile and the evidence have** (a TPM quote
//!    covers one bank; offline PCR files and the agent's `/pcrs` carry every active bank; at least
//!    one bank must be common). `predicted`/`reference` with a value: the reported value must equal
//!    it — a failure when the entry is `enforce: true`, reported only when informational.
//!    `unknown`: the reported value is shown, nothing is compared.
//! 3. **Event-level diff** for every PCR that failed either check and whose golden entry lists its
//!    events: the first expected event the log does not match ([`eventlog::diff_pcrs`]).

use crate::attestation::{AttestCheck, CheckKind, CheckStatus};
use crate::error::{Kind, Result, ResultExt, VerifyError};
use crate::evidence::{Evidence, Origin, PcrValues};
use crate::golden::{Golden, ImageRef, PcrEntry, Source};
use cvm_measure::eventlog::{
    self, diff_pcrs, replay_expected, Event, EventDigest, HashAlg, LogEvents, Mismatch,
};
use cvm_measure::workload::RUNTIME_EVENT_TYPE;
use cvm_measure::workload::{self, RuntimeEvent};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Version of the verdict's JSON shape.
pub const VERDICT_FORMAT: u32 = 1;
/// The number of the runtime log's first line (event), as a difference names it.
const RUNTIME_FIRST_LINE: usize = 1;

/// The outcome of `cvm-image verify`, stable as JSON (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub format: u32,
    /// Everything enforced holds.
    pub ok: bool,
    pub profile: String,
    pub image: ImageRef,
    pub evidence: EvidenceSummary,
    /// The quote, AK↔EK binding and EK certificate checks (empty for offline evidence).
    pub attestation: Vec<AttestCheck>,
    /// Replay of each log against the reported values.
    pub logs: Vec<LogCheck>,
    /// One row per PCR and bank of the profile, ascending.
    pub pcrs: Vec<PcrResult>,
    /// First differing event of each failed PCR whose events the golden file lists.
    pub differences: Vec<Difference>,
    /// Why `ok` is false (empty when it is true).
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceSummary {
    pub origin: Origin,
    /// Whether the PCR values were authenticated by a TPM quote over the verifier's fresh nonce.
    pub quoted: bool,
    /// Banks the evidence reports.
    pub banks: Vec<HashAlg>,
    /// Banks of the profile the evidence does not report: not compared.
    pub banks_not_reported: Vec<HashAlg>,
}

/// Which log a [`LogCheck`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    Firmware,
    Runtime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogStatus {
    Ok,
    Differs,
    /// Not provided (runtime log only).
    Absent,
}

/// Replay of one log against the reported PCR values.
#[derive(Debug, Clone, Serialize)]
pub struct LogCheck {
    pub log: LogKind,
    pub status: LogStatus,
    /// Events that extend a register.
    pub events: usize,
    /// bank → PCRs whose replayed value was compared with the reported one.
    pub checked: BTreeMap<HashAlg, Vec<u32>>,
    pub mismatches: Vec<ReplayMismatch>,
    /// Banks of the evidence this log cannot be replayed in, and why.
    pub problems: Vec<String>,
}

/// A PCR whose replayed value is not the reported one.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayMismatch {
    pub pcr: u32,
    pub bank: HashAlg,
    #[serde(with = "hex_str")]
    pub replayed: Vec<u8>,
    #[serde(with = "hex_str")]
    pub reported: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PcrStatus {
    Ok,
    Differs,
    /// The golden file has no value (`source: unknown`).
    Unknown,
    /// The golden file has a value, the evidence does not report this PCR.
    NotReported,
}

/// One PCR of the profile.
#[derive(Debug, Clone, Serialize)]
pub struct PcrResult {
    pub pcr: u32,
    pub bank: HashAlg,
    pub enforce: bool,
    pub source: Source,
    pub status: PcrStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The first differing event of one PCR (named once when it differs in several banks).
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub pcr: u32,
    pub enforce: bool,
    /// "PCR 11: event 6 (EV_IPL UKI section .cmdline) differs: …"
    pub message: String,
    pub mismatch: Mismatch,
}

/// Check `evidence` against `profile` of `golden`.
pub fn verify(golden: &Golden, profile: &str, evidence: &Evidence) -> Result<Verdict> {
    let all_entries = profile_entries(golden, profile)?;
    let profile_banks: BTreeSet<HashAlg> = all_entries.keys().map(|(bank, _)| *bank).collect();
    let banks_not_reported: Vec<HashAlg> = profile_banks
        .iter()
        .copied()
        .filter(|b| !evidence.pcrs.contains_key(b))
        .collect();
    let entries: BTreeMap<(HashAlg, u32), &PcrEntry> = all_entries
        .into_iter()
        .filter(|((bank, _), _)| evidence.pcrs.contains_key(bank))
        .collect();
    let firmware_replay = eventlog::replay(&evidence.eventlog);
    let mut logs = vec![check_firmware_log(evidence, &firmware_replay)];
    logs.push(check_runtime_log(evidence, &firmware_replay));

    let pcrs: Vec<PcrResult> = entries
        .iter()
        .map(|((bank, pcr), entry)| pcr_result(*bank, *pcr, entry, &evidence.pcrs))
        .collect();

    let replay_failed: BTreeSet<(HashAlg, u32)> = logs
        .iter()
        .flat_map(|l| l.mismatches.iter().map(|m| (m.bank, m.pcr)))
        .collect();
    let differences = differences(&entries, &pcrs, &replay_failed, evidence);
    let mut failures: Vec<String> = attestation_failures(&evidence.attestation);
    if entries.is_empty() {
        let reported: Vec<String> = evidence.pcrs.keys().map(|b| b.name()).collect();
        let wanted: Vec<String> = profile_banks.iter().map(|b| b.name()).collect();
        failures.push(format!(
            "the evidence reports PCR banks {} and the profile lists {}: no bank to compare",
            reported.join(", "),
            wanted.join(", ")
        ));
    }
    failures.extend(self::failures(&logs, &pcrs));
    let quoted = evidence.quote.is_some()
        && evidence
            .attestation
            .iter()
            .any(|c| c.check == CheckKind::Quote && c.status == CheckStatus::Ok);
    Ok(Verdict {
        format: VERDICT_FORMAT,
        ok: failures.is_empty(),
        profile: profile.to_string(),
        image: golden.image.clone(),
        evidence: EvidenceSummary {
            origin: evidence.origin.clone(),
            quoted,
            banks: evidence.pcrs.keys().copied().collect(),
            banks_not_reported,
        },
        attestation: evidence.attestation.clone(),
        logs,
        pcrs,
        differences,
        failures,
    })
}

/// The profile's entries keyed by (bank, PCR), in ascending order.
fn profile_entries<'g>(
    golden: &'g Golden,
    profile: &str,
) -> Result<BTreeMap<(HashAlg, u32), &'g PcrEntry>> {
    let Some(p) = golden.profiles.get(profile) else {
        let known: Vec<&str> = golden.profiles.keys().map(String::as_str).collect();
        return Err(VerifyError::golden(format!(
            "the golden file has no profile {profile:?}; it has: {} (choose one with --profile)",
            known.join(", ")
        )));
    };
    let mut out = BTreeMap::new();
    for (bank_name, values) in &p.pcrs {
        let bank = HashAlg::from_name(bank_name).ok_or_else(|| {
            VerifyError::golden(format!("profile {profile}: unknown bank {bank_name:?}"))
        })?;
        for (index, entry) in values {
            let pcr: u32 = index.parse().or_kind(
                Kind::Golden,
                format!("profile {profile}: PCR {index:?} is not a number"),
            )?;
            out.insert((bank, pcr), entry);
        }
    }
    Ok(out)
}

fn check_firmware_log(evidence: &Evidence, replay: &eventlog::Replay) -> LogCheck {
    let runtime_pcrs: BTreeSet<u32> = evidence.runtime.iter().flatten().map(|e| e.pcr).collect();
    let mut check = LogCheck {
        log: LogKind::Firmware,
        status: LogStatus::Ok,
        events: evidence
            .eventlog
            .events
            .iter()
            .filter(|e| e.is_extended())
            .count(),
        checked: BTreeMap::new(),
        mismatches: vec![],
        problems: vec![],
    };
    for (bank, reported) in &evidence.pcrs {
        let Some(values) = replay.banks.get(bank) else {
            let why = replay
                .problems
                .iter()
                .find(|p| p.contains(&format!("bank {bank} ")))
                .cloned()
                .unwrap_or_else(|| format!("the log has no {bank} bank"));
            check.problems.push(why);
            continue;
        };
        // PCRs the runtime log also extends are checked after it (their final value is its).
        for (pcr, value) in values.iter().filter(|(p, _)| !runtime_pcrs.contains(p)) {
            compare(&mut check, *bank, *pcr, value, reported.get(pcr));
        }
    }
    check.status = status_of(&check);
    check
}

/// Runtime events continue from the firmware log's value of their PCR (23 has none: from zero), in
/// every bank the evidence reports; the init logs a digest for each bank it extended.
fn check_runtime_log(evidence: &Evidence, firmware: &eventlog::Replay) -> LogCheck {
    let mut check = LogCheck {
        log: LogKind::Runtime,
        status: LogStatus::Absent,
        events: 0,
        checked: BTreeMap::new(),
        mismatches: vec![],
        problems: vec![],
    };
    let Some(runtime) = &evidence.runtime else {
        return check;
    };
    check.events = runtime.len();
    for (bank, reported) in &evidence.pcrs {
        match replay_runtime(runtime, firmware, *bank) {
            Ok(values) => {
                for (pcr, value) in &values {
                    compare(&mut check, *bank, *pcr, value, reported.get(pcr));
                }
            }
            Err(why) => check.problems.push(why.to_string()),
        }
    }
    check.status = status_of(&check);
    check
}

fn replay_runtime(
    runtime: &[RuntimeEvent],
    firmware: &eventlog::Replay,
    bank: HashAlg,
) -> Result<BTreeMap<u32, Vec<u8>>> {
    let len = bank
        .digest_len()
        .ok_or_else(|| VerifyError::malformed(format!("bank {bank} has no known digest size")))?;
    let mut values: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (i, e) in runtime.iter().enumerate() {
        let digest = e.digest(bank).ok_or_else(|| {
            VerifyError::malformed(format!(
                "event {} ({}) has no {bank} digest, but the evidence reports that bank",
                i + RUNTIME_FIRST_LINE,
                e.description
            ))
        })?;
        let start = || {
            firmware
                .value(bank, e.pcr)
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| workload::initial_pcr_value(e.pcr, len))
        };
        let v = values.entry(e.pcr).or_insert_with(start);
        *v = workload::extend(bank, v, digest)
            .ok_or_else(|| VerifyError::malformed(format!("bank {bank} cannot be replayed")))?;
    }
    Ok(values)
}

fn compare(
    check: &mut LogCheck,
    bank: HashAlg,
    pcr: u32,
    replayed: &[u8],
    reported: Option<&Vec<u8>>,
) {
    let Some(reported) = reported else {
        return;
    };
    check.checked.entry(bank).or_default().push(pcr);
    if reported.as_slice() != replayed {
        check.mismatches.push(ReplayMismatch {
            pcr,
            bank,
            replayed: replayed.to_vec(),
            reported: reported.clone(),
        });
    }
}

fn status_of(check: &LogCheck) -> LogStatus {
    if check.mismatches.is_empty() && check.problems.is_empty() {
        LogStatus::Ok
    } else {
        LogStatus::Differs
    }
}

fn pcr_result(bank: HashAlg, pcr: u32, entry: &PcrEntry, reported: &PcrValues) -> PcrResult {
    let reported = reported
        .get(&bank)
        .and_then(|b| b.get(&pcr))
        .map(hex::encode);
    let expected = match entry.source {
        Source::Unknown => None,
        Source::Predicted | Source::Reference => entry.value.clone(),
    };
    let status = match (&expected, &reported) {
        (None, _) => PcrStatus::Unknown,
        (Some(_), None) => PcrStatus::NotReported,
        (Some(e), Some(r)) if e.eq_ignore_ascii_case(r) => PcrStatus::Ok,
        (Some(_), Some(_)) => PcrStatus::Differs,
    };
    PcrResult {
        pcr,
        bank,
        enforce: entry.enforce,
        source: entry.source,
        status,
        expected,
        reported,
        note: entry.note.clone(),
    }
}

/// The event-level diff of each PCR whose value differs from the golden one or whose log does not
/// replay, when the golden file lists the events that make up its value.
fn differences(
    entries: &BTreeMap<(HashAlg, u32), &PcrEntry>,
    pcrs: &[PcrResult],
    replay_failed: &BTreeSet<(HashAlg, u32)>,
    evidence: &Evidence,
) -> Vec<Difference> {
    let runtime_events = evidence.runtime.as_deref().map(runtime_as_events);
    let runtime_pcrs: BTreeSet<u32> = evidence.runtime.iter().flatten().map(|e| e.pcr).collect();
    let mut out = vec![];
    let mut shown: BTreeSet<(u32, usize)> = BTreeSet::new();
    for r in pcrs {
        let failed = r.status == PcrStatus::Differs || replay_failed.contains(&(r.bank, r.pcr));
        let Some(entry) = entries.get(&(r.bank, r.pcr)) else {
            continue;
        };
        if !failed || r.expected.is_none() || !events_make_value(entry, r.bank, r.pcr) {
            continue;
        }
        // Logged events are named by the numbers their logs' tools show: the firmware log's
        // record numbers (`cvm-image eventlog`, `tpm2_eventlog`), the runtime log's lines from 1.
        let actual = if runtime_pcrs.contains(&r.pcr) || r.pcr == workload::WORKLOAD_PCR {
            match &runtime_events {
                Some(events) => LogEvents::numbered_from(events, RUNTIME_FIRST_LINE),
                None => continue,
            }
        } else {
            LogEvents::of(&evidence.eventlog)
        };
        for mismatch in diff_pcrs(&entry.events, actual, r.bank, &[r.pcr]) {
            // The same event differing in several banks is one difference: name it once (in the
            // first bank, rows being in bank order).
            if !shown.insert((mismatch.pcr, mismatch.position)) {
                continue;
            }
            out.push(Difference {
                pcr: r.pcr,
                enforce: r.enforce,
                message: mismatch.to_string(),
                mismatch,
            });
        }
    }
    out
}

/// Whether the golden entry's events replay to its value (else an event diff would mislead).
fn events_make_value(entry: &PcrEntry, bank: HashAlg, pcr: u32) -> bool {
    let Some(value) = &entry.value else {
        return false;
    };
    let replayed = match replay_expected(&entry.events, bank) {
        Ok(v) => v.get(&pcr).map(hex::encode),
        Err(_) => return false,
    };
    let reset = hex::encode(workload::initial_pcr_value(
        pcr,
        bank.digest_len().unwrap_or_default(),
    ));
    replayed.unwrap_or(reset).eq_ignore_ascii_case(value)
}

/// The runtime log as TCG events (for the event-level diff of PCR 23).
fn runtime_as_events(runtime: &[RuntimeEvent]) -> Vec<Event> {
    runtime
        .iter()
        .map(|e| Event {
            pcr: e.pcr,
            event_type: RUNTIME_EVENT_TYPE,
            digests: e
                .digests
                .iter()
                .map(|(alg, digest)| EventDigest {
                    alg: *alg,
                    digest: digest.clone(),
                })
                .collect(),
            data: e.data.clone().map(String::into_bytes).unwrap_or_default(),
        })
        .collect()
}

fn attestation_failures(checks: &[AttestCheck]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.status == CheckStatus::Failed)
        .map(|c| format!("{}: {}", c.check.label(), c.detail))
        .collect()
}

fn failures(logs: &[LogCheck], pcrs: &[PcrResult]) -> Vec<String> {
    let mut out = vec![];
    for l in logs {
        let name = match l.log {
            LogKind::Firmware => "the firmware event log",
            LogKind::Runtime => "the runtime event log",
        };
        for m in &l.mismatches {
            out.push(format!(
                "PCR {} ({}): {name} replays to {}, the VM reports {}",
                m.pcr,
                m.bank,
                hex::encode(&m.replayed),
                hex::encode(&m.reported)
            ));
        }
        out.extend(l.problems.iter().map(|p| format!("{name}: {p}")));
    }
    for r in pcrs.iter().filter(|r| r.enforce) {
        match r.status {
            PcrStatus::Differs => out.push(format!(
                "PCR {} ({}): enforced value differs from the golden file",
                r.pcr, r.bank
            )),
            PcrStatus::NotReported => out.push(format!(
                "PCR {} ({}): enforced, but the evidence does not report it",
                r.pcr, r.bank
            )),
            PcrStatus::Ok | PcrStatus::Unknown => {}
        }
    }
    out
}

/// Serde helper: bytes as lower-case hex.
mod hex_str {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::Profile;
    use cvm_measure::eventlog::{expected_log, EventType, ExpectedEvent, MismatchKind};
    use std::path::PathBuf;

    const SHA256: [HashAlg; 1] = [HashAlg::SHA256];
    const TWO_BANKS: [HashAlg; 2] = [HashAlg::SHA256, HashAlg::SHA384];

    /// SHA-256 PCR value after one separator (docs/measured-boot.md §13, "separator-only").
    const SEPARATOR_ONLY: &str = "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969";

    fn separator(pcr: u32) -> ExpectedEvent {
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

    fn entry(pcr: u32, enforce: bool) -> PcrEntry {
        PcrEntry {
            value: Some(SEPARATOR_ONLY.into()),
            source: Source::Predicted,
            enforce,
            note: None,
            events: vec![separator(pcr)],
        }
    }

    /// PCR 2 enforced, PCR 3 informational, PCR 0 unknown; each expected to be one separator.
    fn golden() -> Golden {
        let mut bank = BTreeMap::new();
        bank.insert("2".to_string(), entry(2, true));
        bank.insert("3".to_string(), entry(3, false));
        bank.insert(
            "0".to_string(),
            PcrEntry {
                value: None,
                source: Source::Unknown,
                enforce: false,
                note: Some("firmware".into()),
                events: vec![],
            },
        );
        Golden {
            format: 1,
            generator: "test".into(),
            image: ImageRef {
                name: "t".into(),
                version: "1".into(),
                uki_sha256: "00".into(),
                security_version: None,
            },
            profiles: BTreeMap::from([(
                "qemu".to_string(),
                Profile {
                    description: "test".into(),
                    pcrs: BTreeMap::from([("sha256".to_string(), bank)]),
                },
            )]),
        }
    }

    /// Evidence whose log holds `events` and whose reported PCRs are the log's replay, then `edit`.
    fn evidence(events: &[ExpectedEvent], edit: impl Fn(&mut BTreeMap<u32, Vec<u8>>)) -> Evidence {
        let log = expected_log(&[HashAlg::SHA256], events).unwrap();
        let mut values = eventlog::replay(&log).banks[&HashAlg::SHA256].clone();
        edit(&mut values);
        Evidence {
            origin: Origin::Files {
                eventlog: PathBuf::from("log"),
                pcrs: PathBuf::from("pcrs"),
                runtime_log: None,
            },
            pcrs: BTreeMap::from([(HashAlg::SHA256, values)]),
            eventlog: log,
            runtime: None,
            quote: None,
            attestation: vec![],
            signing_key: None,
        }
    }

    fn status(v: &Verdict, pcr: u32) -> PcrStatus {
        v.pcrs.iter().find(|r| r.pcr == pcr).unwrap().status
    }

    #[test]
    fn matching_evidence_verifies() {
        let e = evidence(&[separator(2), separator(3)], |_| {});
        let v = verify(&golden(), "qemu", &e).unwrap();
        assert!(v.ok, "{:?}", v.failures);
        assert_eq!(status(&v, 0), PcrStatus::Unknown);
        assert_eq!(status(&v, 2), PcrStatus::Ok);
        assert_eq!(v.logs[0].checked[&HashAlg::SHA256], [2, 3]);
        assert_eq!(v.logs[1].status, LogStatus::Absent);
    }

    #[test]
    fn informational_difference_is_reported_not_failed() {
        let mut extra = separator(3);
        extra.event_type = EventType::EV_EFI_ACTION;
        let e = evidence(&[separator(2), separator(3), extra], |_| {});
        let v = verify(&golden(), "qemu", &e).unwrap();
        assert!(v.ok, "{:?}", v.failures);
        assert_eq!(status(&v, 3), PcrStatus::Differs);
        assert_eq!(v.differences.len(), 1);
        assert!(!v.differences[0].enforce);
        assert!(v.differences[0]
            .message
            .starts_with("PCR 3: extra event 2 (EV_EFI_ACTION"));
    }

    #[test]
    fn enforced_difference_fails_and_names_the_event() {
        let mut other = separator(2);
        other.digests.insert(HashAlg::SHA256, vec![0xEE; 32]);
        let e = evidence(&[other, separator(3)], |_| {});
        let v = verify(&golden(), "qemu", &e).unwrap();
        assert!(!v.ok);
        assert_eq!(
            v.failures,
            ["PCR 2 (sha256): enforced value differs from the golden file"]
        );
        // The logged event by its record number, as `cvm-image eventlog` and tpm2_eventlog count
        // (the Spec ID header is record 0).
        let m = &v.differences[0].message;
        assert!(
            m.starts_with("PCR 2: event 1 (EV_SEPARATOR separator) differs")
                && m.ends_with("(log event 1: separator)"),
            "{m}"
        );
        let MismatchKind::Differs { actual, .. } = &v.differences[0].mismatch.kind else {
            panic!("{:?}", v.differences[0].mismatch)
        };
        assert_eq!(actual.index, e.eventlog.record_number(0));
    }

    #[test]
    fn log_not_replaying_to_the_reported_values_fails() {
        let e = evidence(&[separator(2), separator(3)], |v| {
            v.insert(3, vec![0x11; 32]);
        });
        let v = verify(&golden(), "qemu", &e).unwrap();
        assert!(!v.ok);
        assert_eq!(v.logs[0].mismatches.len(), 1);
        assert!(
            v.failures[0].starts_with("PCR 3 (sha256): the firmware event log replays to 3d458cfe"),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn unreported_enforced_pcr_fails_and_unknown_profile_is_an_input_error() {
        let e = evidence(&[separator(3)], |_| {});
        let v = verify(&golden(), "qemu", &e).unwrap();
        assert_eq!(status(&v, 2), PcrStatus::NotReported);
        assert!(!v.ok);
        let err = verify(&golden(), "gcp", &e).unwrap_err().to_string();
        assert!(err.contains("no profile \"gcp\"; it has: qemu"), "{err}");
    }

    #[test]
    fn runtime_log_continues_pcr23_and_is_diffed() {
        let root = [7u8; 32];
        let good = workload::workload_events(&root, "workload.toml", b"a", &SHA256);
        let mut g = golden();
        let expected = cvm_measure::predict::pcr23::workload_events(&good);
        let value = hex::encode(replay_expected(&expected, HashAlg::SHA256).unwrap()[&23].clone());
        g.profiles
            .get_mut("qemu")
            .unwrap()
            .pcrs
            .get_mut("sha256")
            .unwrap()
            .insert(
                "23".into(),
                PcrEntry {
                    value: Some(value),
                    source: Source::Predicted,
                    enforce: true,
                    note: None,
                    events: expected,
                },
            );
        let booted = workload::workload_events(&[8u8; 32], "workload.toml", b"a", &SHA256);
        let mut e = evidence(&[separator(2), separator(3)], |_| {});
        let pcr23 = workload::replay(&booted, HashAlg::SHA256).unwrap()[&23].clone();
        e.pcrs.get_mut(&HashAlg::SHA256).unwrap().insert(23, pcr23);
        e.runtime = Some(booted);
        let v = verify(&g, "qemu", &e).unwrap();
        assert_eq!(v.logs[1].status, LogStatus::Ok);
        assert!(!v.ok);
        // The runtime log's first line is its event 1.
        let m = &v.differences[0].message;
        assert!(
            m.starts_with("PCR 23: event 1 (EV_IPL workload verity root hash) differs")
                && m.contains("(log event 1: \"cvm-image.workload.verity-root-hash:"),
            "{m}"
        );
    }

    /// PCR 23 of a two-bank golden profile: the prediction of `expected`, every bank.
    fn two_bank_golden(expected: &[RuntimeEvent]) -> Golden {
        let events = cvm_measure::predict::pcr23::workload_events(expected);
        let mut g = golden();
        let qemu = g.profiles.get_mut("qemu").unwrap();
        for bank in TWO_BANKS {
            let mut bank_events = events.clone();
            for e in &mut bank_events {
                e.digests.retain(|b, _| *b == bank);
            }
            let value = hex::encode(&replay_expected(&bank_events, bank).unwrap()[&23]);
            qemu.pcrs.entry(bank.name()).or_default().insert(
                "23".into(),
                PcrEntry {
                    value: Some(value),
                    source: Source::Predicted,
                    enforce: true,
                    note: None,
                    events: bank_events,
                },
            );
        }
        g
    }

    /// Evidence of a boot with a two-bank firmware log (separators of PCRs 2 and 3) whose init
    /// logged `booted`, reporting the banks `reported`.
    fn runtime_evidence(booted: &[RuntimeEvent], reported: &[HashAlg]) -> Evidence {
        let separators: Vec<ExpectedEvent> = [2, 3]
            .map(|pcr| {
                ExpectedEvent::hashing(
                    pcr,
                    EventType::EV_SEPARATOR,
                    "separator",
                    &[0; 4],
                    Some(vec![0; 4]),
                    &TWO_BANKS,
                )
                .unwrap()
            })
            .to_vec();
        let mut e = evidence(&[separator(2), separator(3)], |_| {});
        e.eventlog = expected_log(&TWO_BANKS, &separators).unwrap();
        let firmware = eventlog::replay(&e.eventlog);
        e.pcrs.clear();
        for &bank in reported {
            let mut values = firmware.banks[&bank].clone();
            let pcr23 = workload::replay(booted, bank).unwrap()[&23].clone();
            values.insert(23, pcr23);
            e.pcrs.insert(bank, values);
        }
        e.runtime = Some(booted.to_vec());
        e
    }

    #[test]
    fn every_common_bank_is_compared() {
        let good = workload::workload_events(&[7u8; 32], "workload.toml", b"a", &TWO_BANKS);
        let g = two_bank_golden(&good);
        // Both banks reported and right.
        let v = verify(&g, "qemu", &runtime_evidence(&good, &TWO_BANKS)).unwrap();
        assert!(v.ok, "{:?}", v.failures);
        assert_eq!(v.logs[1].checked[&HashAlg::SHA384], [23]);
        assert!(v
            .pcrs
            .iter()
            .any(|r| r.pcr == 23 && r.bank == HashAlg::SHA384 && r.status == PcrStatus::Ok));
        // SHA-256 only (a quote): SHA-384 is not compared and is named as such.
        let v = verify(&g, "qemu", &runtime_evidence(&good, &SHA256)).unwrap();
        assert!(v.ok, "{:?}", v.failures);
        assert_eq!(v.evidence.banks_not_reported, [HashAlg::SHA384]);
        assert!(v.pcrs.iter().all(|r| r.bank == HashAlg::SHA256));
    }

    #[test]
    fn a_wrong_sha384_pcr23_fails_and_is_diffed() {
        let good = workload::workload_events(&[7u8; 32], "workload.toml", b"a", &TWO_BANKS);
        let g = two_bank_golden(&good);
        // The SHA-384 digest of the manifest event is another file's: SHA-256 still matches.
        let mut booted = good.clone();
        let other = workload::manifest_event("workload.toml", b"b", &[HashAlg::SHA384]);
        booted[1]
            .digests
            .insert(HashAlg::SHA384, other.digests[&HashAlg::SHA384].clone());
        let v = verify(&g, "qemu", &runtime_evidence(&booted, &TWO_BANKS)).unwrap();
        assert!(!v.ok);
        assert_eq!(
            v.failures,
            ["PCR 23 (sha384): enforced value differs from the golden file"]
        );
        assert_eq!(v.differences.len(), 1);
        assert!(
            v.differences[0]
                .message
                .starts_with("PCR 23: event 2 (EV_IPL workload.toml) differs"),
            "{}",
            v.differences[0].message
        );
    }

    #[test]
    fn runtime_log_without_a_reported_bank_fails() {
        // An init that extended SHA-256 only, on a TPM reporting SHA-384 too.
        let good = workload::workload_events(&[7u8; 32], "workload.toml", b"a", &TWO_BANKS);
        let g = two_bank_golden(&good);
        let sha256_only = workload::workload_events(&[7u8; 32], "workload.toml", b"a", &SHA256);
        let mut e = runtime_evidence(&sha256_only, &SHA256);
        e.pcrs
            .entry(HashAlg::SHA384)
            .or_default()
            .insert(23, vec![0; 48]);
        let v = verify(&g, "qemu", &e).unwrap();
        assert!(!v.ok);
        assert!(
            v.failures
                .iter()
                .any(|f| f.contains("has no sha384 digest")),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn no_common_bank_fails() {
        let mut e = evidence(&[separator(2), separator(3)], |_| {});
        let values = e.pcrs.remove(&HashAlg::SHA256).unwrap();
        e.pcrs.insert(
            HashAlg::SHA1,
            values.keys().map(|k| (*k, vec![0; 20])).collect(),
        );
        let v = verify(&golden(), "qemu", &e).unwrap();
        assert!(!v.ok);
        assert!(
            v.failures.iter().any(|f| f.contains("no bank to compare")),
            "{:?}",
            v.failures
        );
    }
}

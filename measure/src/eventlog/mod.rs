//! TCG event logs: parse, describe, replay, diff and write.
//!
//! Three on-disk forms are read, all little-endian (TCG PC Client Platform Firmware Profile,
//! "PFP", §10; reference: docs/measured-boot.md §2):
//!
//! * **Crypto-agile** (`binary_bios_measurements` of a TPM 2.0 firmware): a legacy `TCG_PCR_EVENT`
//!   header record (EV_NO_ACTION, 20 zero bytes, `TCG_EfiSpecIDEvent` "Spec ID Event03") naming the
//!   banks and their digest sizes, then `TCG_PCR_EVENT2` records with one digest per bank.
//! * **TDX CC event log** (ACPI `CCEL`): the same format, but the index field is the CC
//!   measurement register (1 = RTMR0 … 4 = RTMR3, docs/tee.md §4.3) and the ACPI area is padded
//!   with 0xFF to its reserved length. Recognised by a header record whose index is not 0 (the PFP
//!   requires 0 for a TPM log); [`parse_as`] forces either reading. Replay is identical either way
//!   (registers start at zero; the PCR-only initial values of 0, 17–22 never apply to MR indexes
//!   1–4).
//! * **Legacy SHA-1** (TCG 1.2 / early TPM 2.0 firmware, e.g. GCE Debian 10): `TCG_PCR_EVENT`
//!   records only, no Spec ID event; read as a SHA-1-only log.
//!
//! Parsing never panics and never trusts a length field: every read is bounds-checked and a
//! malformed log is an [`EventLogError`] naming the record and byte offset. [`EventLog::encode`]
//! writes the same bytes back (`parse(encode(log)) == log`, and for a parsed log
//! `encode(parse(bytes)) == bytes`).
//!
//! Replay ([`replay()`]) extends every event except EV_NO_ACTION: `PCR = H(PCR ‖ digest)`, from the
//! reset values of PFP §3.3.4 (0 except PCRs 17–22 = 0xFF…; PCR 0 starts at the locality byte
//! when a StartupLocality event is present, at 4 after an H-CRTM event). Replay never re-hashes
//! event data: for PE images the digest is not derived from the logged bytes.

mod describe;
mod devpath;
mod encode;
mod expected;
mod parse;
mod render;
mod replay;
mod text;
mod types;

pub use describe::known_guid_name;
pub use devpath::device_path_to_text;
pub use expected::{
    diff, diff_all, diff_pcrs, expected_log, replay_expected, ActualEvent, ExpectedEvent,
    LogEvents, Mismatch, MismatchKind,
};
pub use parse::{parse, parse_as};
pub use render::{render_json, render_text, report, EventReport, LogReport};
pub use replay::{replay, Replay, PCR_COUNT};
pub use text::guid_to_string;
pub use types::{EventType, HashAlg};

use serde::{Deserialize, Serialize};

/// Which on-disk record layout a log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Spec ID Event03 header, then `TCG_PCR_EVENT2` records.
    CryptoAgile,
    /// `TCG_PCR_EVENT` records with one SHA-1 digest each, no Spec ID header.
    Sha1Legacy,
}

/// What the index field of each record names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Registers {
    /// TPM PCR index (0–23).
    Pcr,
    /// Confidential-computing measurement register index (TDX: 0 = MRTD, 1–4 = RTMR0–3).
    CcMr,
}

impl Registers {
    /// Human name of register `index`: "PCR 7", "RTMR1 (MR 2)".
    pub fn name(self, index: u32) -> String {
        match (self, index) {
            (Registers::Pcr, _) => format!("PCR {index}"),
            (Registers::CcMr, 0) => "MRTD (MR 0)".to_string(),
            (Registers::CcMr, 1..=4) => format!("RTMR{} (MR {index})", index - 1),
            (Registers::CcMr, _) => format!("MR {index}"),
        }
    }
}

/// One bank declared by the Spec ID event (`TCG_EfiSpecIdEventAlgorithmSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlgorithmSize {
    pub alg: HashAlg,
    pub digest_size: u16,
}

/// The `TCG_EfiSpecIDEvent` of a crypto-agile log's header record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecIdEvent {
    /// Index field of the header record: 0 in a TPM log; the GCE TDX CCEL has 1.
    pub header_index: u32,
    pub platform_class: u32,
    pub spec_version_minor: u8,
    pub spec_version_major: u8,
    pub spec_errata: u8,
    /// 1 = UINT32, 2 = UINT64 sized `UINTN` fields in event data.
    pub uintn_size: u8,
    pub algorithms: Vec<AlgorithmSize>,
    #[serde(with = "hex_bytes")]
    pub vendor_info: Vec<u8>,
}

impl SpecIdEvent {
    /// A header for a TPM 2.0 PC Client log with the given banks (platform class 0 = client,
    /// spec version 2.0 errata 0, 64-bit UINTN) — what edk2 writes.
    pub fn for_banks(algs: &[HashAlg]) -> Result<Self, EventLogError> {
        let algorithms = algs
            .iter()
            .map(|&alg| {
                let size = alg
                    .digest_len()
                    .ok_or(EventLogError::UnknownDigestSize { alg })?;
                Ok(AlgorithmSize {
                    alg,
                    digest_size: size as u16,
                })
            })
            .collect::<Result<Vec<_>, EventLogError>>()?;
        Ok(SpecIdEvent {
            header_index: 0,
            platform_class: 0,
            spec_version_minor: 0,
            spec_version_major: 2,
            spec_errata: 0,
            uintn_size: 2,
            algorithms,
            vendor_info: Vec::new(),
        })
    }
}

/// One digest of an event (`TPMT_HA`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDigest {
    pub alg: HashAlg,
    #[serde(with = "hex_bytes")]
    pub digest: Vec<u8>,
}

/// One measurement record (everything after the Spec ID header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// PCR index, or CC MR index in a CCEL (see [`Registers`]).
    pub pcr: u32,
    pub event_type: EventType,
    /// In record order (the order of `TPML_DIGEST_VALUES`).
    pub digests: Vec<EventDigest>,
    /// The event data (`Event` field), not hashed by replay.
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
}

impl Event {
    /// This event's digest for `alg`, if it has one.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.alg == alg)
            .map(|d| d.digest.as_slice())
    }

    /// Whether replay extends this event into its register (everything but EV_NO_ACTION).
    pub fn is_extended(&self) -> bool {
        self.event_type != EventType::EV_NO_ACTION
    }

    /// A one-line human description of the event data (best effort; never fails).
    pub fn description(&self) -> String {
        describe::describe(self)
    }
}

/// Fill bytes after the last record (the CCEL ACPI area is 0xFF-filled to its reserved size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Padding {
    pub byte: u8,
    pub len: usize,
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    pub format: LogFormat,
    pub registers: Registers,
    /// `None` for [`LogFormat::Sha1Legacy`].
    pub spec_id: Option<SpecIdEvent>,
    pub events: Vec<Event>,
    /// Trailing fill after the last record, if any.
    pub padding: Option<Padding>,
}

impl EventLog {
    /// A new, empty crypto-agile TPM log with the given banks (for writing expected logs).
    pub fn new(banks: &[HashAlg]) -> Result<Self, EventLogError> {
        Ok(EventLog {
            format: LogFormat::CryptoAgile,
            registers: Registers::Pcr,
            spec_id: Some(SpecIdEvent::for_banks(banks)?),
            events: Vec::new(),
            padding: None,
        })
    }

    /// The banks of this log: the Spec ID algorithms, or SHA-1 for a legacy log.
    pub fn banks(&self) -> Vec<HashAlg> {
        match &self.spec_id {
            Some(spec) => spec.algorithms.iter().map(|a| a.alg).collect(),
            None => vec![HashAlg::SHA1],
        }
    }

    /// Log record number of `events[i]` as tpm2_eventlog counts (`EventNum`): the Spec ID header
    /// is record 0 in a crypto-agile log.
    pub fn record_number(&self, i: usize) -> usize {
        match self.format {
            LogFormat::CryptoAgile => i + 1,
            LogFormat::Sha1Legacy => i,
        }
    }

    /// Serialise to the binary format this log was read from (byte-exact for a parsed log).
    pub fn encode(&self) -> Result<Vec<u8>, EventLogError> {
        encode::encode(self)
    }
}

/// Why a log could not be parsed, replayed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    #[error("event log truncated in record {record} at byte offset {offset}: {what} needs {need} bytes, {have} left")]
    Truncated {
        record: usize,
        offset: usize,
        what: &'static str,
        need: u64,
        have: usize,
    },
    #[error("event log is empty")]
    Empty,
    #[error("malformed Spec ID event (record 0): {problem}")]
    SpecId { problem: String },
    #[error("record {record} at byte offset {offset}: digest algorithm {alg} (0x{:04x}) is not declared in the Spec ID event", alg.0)]
    UndeclaredAlgorithm {
        record: usize,
        offset: usize,
        alg: HashAlg,
    },
    #[error("record {record} at byte offset {offset}: {problem}")]
    Record {
        record: usize,
        offset: usize,
        problem: String,
    },
    #[error("hash algorithm {alg} has no known digest size")]
    UnknownDigestSize { alg: HashAlg },
    #[error("expected event {event}: {problem}")]
    Expected { event: usize, problem: String },
    #[error("cannot encode event {event}: {problem}")]
    Encode { event: usize, problem: String },
}

/// Serde helper: bytes as lower-case hex strings.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text).map_err(serde::de::Error::custom)
    }
}

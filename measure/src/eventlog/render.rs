//! Output for `cvm-image eventlog FILE [--json]`: every event (record number, register, type,
//! digests per bank, description) and the replayed value of every register per bank.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{replay, EventLog, EventType, HashAlg, LogFormat, Padding, Registers, SpecIdEvent};

/// One event in a [`LogReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventReport {
    /// Record number as tpm2_eventlog counts it (the Spec ID header is record 0).
    pub index: usize,
    /// Raw index field: PCR, or CC MR index.
    pub pcr: u32,
    /// "PCR 4" or "RTMR1 (MR 2)".
    pub register: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub type_value: u32,
    /// Hex digest per bank.
    pub digests: BTreeMap<HashAlg, String>,
    pub description: String,
    pub data_size: usize,
    /// False for EV_NO_ACTION (logged, never extended).
    pub extended: bool,
}

/// Everything `cvm-image eventlog --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogReport {
    pub format: LogFormat,
    pub registers: Registers,
    pub banks: Vec<HashAlg>,
    pub spec_id: Option<SpecIdEvent>,
    pub events: Vec<EventReport>,
    /// bank → register index → replayed value (hex), for every register the log extends.
    pub replayed: BTreeMap<HashAlg, BTreeMap<u32, String>>,
    /// Banks that could not be replayed, and why.
    pub problems: Vec<String>,
    pub padding: Option<Padding>,
}

/// Build the report of `log` (decodes every event and replays every bank).
pub fn report(log: &EventLog) -> LogReport {
    let events = log
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| EventReport {
            index: log.record_number(i),
            pcr: e.pcr,
            register: log.registers.name(e.pcr),
            event_type: e.event_type,
            type_value: e.event_type.0,
            digests: e
                .digests
                .iter()
                .map(|d| (d.alg, hex::encode(&d.digest)))
                .collect(),
            description: e.description(),
            data_size: e.data.len(),
            extended: e.is_extended(),
        })
        .collect();
    let replayed = replay(log);
    LogReport {
        format: log.format,
        registers: log.registers,
        banks: log.banks(),
        spec_id: log.spec_id.clone(),
        events,
        replayed: replayed
            .banks
            .iter()
            .map(|(bank, values)| {
                let hexed = values.iter().map(|(i, v)| (*i, hex::encode(v))).collect();
                (*bank, hexed)
            })
            .collect(),
        problems: replayed.problems,
        padding: log.padding,
    }
}

/// The report as pretty JSON.
pub fn render_json(log: &EventLog) -> String {
    // Serialising plain strings, numbers and maps with string-convertible keys cannot fail.
    serde_json::to_string_pretty(&report(log))
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

/// The report as text for a terminal.
pub fn render_text(log: &EventLog) -> String {
    let r = report(log);
    let mut out = String::new();
    let _ = writeln!(out, "{}", headline(log, &r));
    let alg_width = r.banks.iter().map(|b| b.name().len()).max().unwrap_or(0);
    let reg_width = r.events.iter().map(|e| e.register.len()).max().unwrap_or(0);
    for e in &r.events {
        let _ = writeln!(
            out,
            "#{:<4} {:<reg_width$}  {}  {}",
            e.index, e.register, e.event_type, e.description
        );
        for (alg, d) in &e.digests {
            let _ = writeln!(out, "      {:<alg_width$}  {d}", alg.name());
        }
    }
    let _ = writeln!(
        out,
        "\nReplayed values{}:",
        if all_extended(&r) {
            ""
        } else {
            " (EV_NO_ACTION not extended)"
        }
    );
    for (bank, values) in &r.replayed {
        let _ = writeln!(out, "  {bank}:");
        for (index, value) in values {
            let _ = writeln!(
                out,
                "    {:<reg_width$}  {value}",
                log.registers.name(*index)
            );
        }
    }
    for p in &r.problems {
        let _ = writeln!(out, "  warning: {p}");
    }
    out
}

fn all_extended(r: &LogReport) -> bool {
    r.events.iter().all(|e| e.extended)
}

fn headline(log: &EventLog, r: &LogReport) -> String {
    let kind = match (log.format, log.registers) {
        (LogFormat::Sha1Legacy, _) => "TCG legacy SHA-1 event log",
        (LogFormat::CryptoAgile, Registers::Pcr) => "TCG crypto-agile event log",
        (LogFormat::CryptoAgile, Registers::CcMr) => "CC event log (CCEL, MR indexes)",
    };
    let banks: Vec<String> = r.banks.iter().map(|b| b.name()).collect();
    let mut line = format!(
        "{kind}: {} events, banks {}",
        r.events.len(),
        banks.join(", ")
    );
    if let Some(s) = &log.spec_id {
        let _ = write!(
            line,
            " (Spec ID Event03: platform class {}, spec {}.{} errata {}, UINTN size {})",
            s.platform_class,
            s.spec_version_major,
            s.spec_version_minor,
            s.spec_errata,
            s.uintn_size
        );
    }
    if let Some(p) = log.padding {
        let _ = write!(
            line,
            ", {} bytes of 0x{:02x} fill at the end",
            p.len, p.byte
        );
    }
    line
}

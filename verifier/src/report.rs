//! The text form of a [`Verdict`]: logs, a per-PCR table, the event-level differences, the verdict.

use crate::attestation::{AttestCheck, CheckStatus};
use crate::check::{LogCheck, LogKind, LogStatus, PcrResult, PcrStatus, Verdict};
use crate::golden::Source;
use std::fmt::Write;

/// Render `v` for a terminal (`golden` names the golden file in the header).
pub fn render_text(v: &Verdict, golden: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "golden: {golden} ({} {}), profile {}",
        v.image.name, v.image.version, v.profile
    );
    let _ = writeln!(s, "evidence: {}", v.evidence.origin.describe());
    if v.evidence.quoted {
        s.push_str("  (PCR values quoted by the TPM over a fresh nonce)\n");
    } else {
        let _ = writeln!(
            s,
            "  (not quoted: PCR values as reported by the VM, no TPM quote was checked, so this \
             proves consistency with the prediction, not authenticity)"
        );
    }
    if !v.attestation.is_empty() {
        s.push_str("\nattestation:\n");
        for c in &v.attestation {
            s.push_str(&attest_line(c));
        }
    }
    s.push_str("\nevent logs:\n");
    for l in &v.logs {
        s.push_str(&log_line(l));
    }
    let _ = writeln!(
        s,
        "\n{:>3}  {:<7} {:<14} {:<12} value",
        "PCR", "bank", "policy", "status"
    );
    for r in &v.pcrs {
        s.push_str(&pcr_line(r));
    }
    if !v.differences.is_empty() {
        s.push_str("\ndifferences (first differing event of each PCR):\n");
        for d in &v.differences {
            let tag = if d.enforce { "" } else { " [informational]" };
            let _ = writeln!(s, "  {}{tag}", d.message);
        }
    }
    if v.ok {
        s.push_str("\nverdict: OK — every enforced PCR equals the golden measurement\n");
    } else {
        s.push_str("\nverdict: FAILED\n");
        for f in &v.failures {
            let _ = writeln!(s, "  {f}");
        }
    }
    s
}

fn attest_line(c: &AttestCheck) -> String {
    let name = c.check.label();
    let status = match c.status {
        CheckStatus::Ok => "ok",
        CheckStatus::Failed => "FAILED",
        CheckStatus::Skipped => "SKIPPED",
    };
    format!("  {status:<7} {name}: {}\n", c.detail)
}

fn log_line(l: &LogCheck) -> String {
    let name = match l.log {
        LogKind::Firmware => "firmware log",
        LogKind::Runtime => "runtime log",
    };
    let checked: Vec<String> = l
        .checked
        .iter()
        .map(|(bank, pcrs)| {
            let list: Vec<String> = pcrs.iter().map(u32::to_string).collect();
            let noun = if list.len() == 1 { "PCR" } else { "PCRs" };
            format!("{bank} {noun} {}", list.join(","))
        })
        .collect();
    let mut s = match l.status {
        LogStatus::Absent => format!("  {:<7} {name}: not provided\n", "-"),
        LogStatus::Ok => format!(
            "  {:<7} {name} ({} events) replays to the reported {}\n",
            "ok",
            l.events,
            checked.join("; ")
        ),
        LogStatus::Differs => format!("  {:<7} {name} ({} events)\n", "FAILED", l.events),
    };
    for m in &l.mismatches {
        let _ = writeln!(
            s,
            "          PCR {} {}: replays to {}, reported {}",
            m.pcr,
            m.bank,
            hex::encode(&m.replayed),
            hex::encode(&m.reported)
        );
    }
    for p in &l.problems {
        let _ = writeln!(s, "          {p}");
    }
    s
}

fn pcr_line(r: &PcrResult) -> String {
    let policy = if r.enforce {
        "enforced"
    } else {
        "informational"
    };
    let status = match r.status {
        PcrStatus::Ok => "ok",
        PcrStatus::Differs => "DIFFERS",
        PcrStatus::Unknown => "unknown",
        PcrStatus::NotReported => "not reported",
    };
    let value = r.reported.as_deref().unwrap_or("-");
    let mut s = format!(
        "{:>3}  {:<7} {policy:<14} {status:<12} {value}\n",
        r.pcr,
        r.bank.name()
    );
    if r.status == PcrStatus::Differs || r.status == PcrStatus::NotReported {
        if let Some(e) = &r.expected {
            let _ = writeln!(s, "{:>50} {e}", "expected");
        }
        // A reference value names what it was recorded with (e.g. the QEMU version for PCR 1):
        // the likely cause of the difference.
        if let (Source::Reference, Some(note)) = (r.source, &r.note) {
            let _ = writeln!(s, "{:>50} {note}", "reference");
        }
    }
    s
}

#[cfg(test)]
mod reference_note_tests {
    use super::*;
    use cvm_measure::eventlog::HashAlg;

    fn result(source: Source, status: PcrStatus) -> PcrResult {
        PcrResult {
            pcr: 1,
            bank: HashAlg::SHA256,
            enforce: true,
            source,
            status,
            expected: Some("aa".into()),
            reported: Some("bb".into()),
            note: Some("recorded with QEMU emulator version 7.2.19".into()),
        }
    }

    /// A differing reference PCR names what the reference was recorded with (its likely cause).
    #[test]
    fn a_differing_reference_pcr_shows_its_note() {
        let line = pcr_line(&result(Source::Reference, PcrStatus::Differs));
        assert!(
            line.contains("reference recorded with QEMU emulator version 7.2.19"),
            "{line}"
        );
        let ok = pcr_line(&result(Source::Reference, PcrStatus::Ok));
        assert!(!ok.contains("QEMU"), "{ok}");
        let predicted = pcr_line(&result(Source::Predicted, PcrStatus::Differs));
        assert!(!predicted.contains("QEMU"), "{predicted}");
    }
}

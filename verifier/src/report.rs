//! The text form of a [`Verdict`]: logs, a per-PCR table, the event-level differences, the verdict.

use crate::check::{LogCheck, LogKind, LogStatus, PcrResult, PcrStatus, Verdict};
use crate::collaterals::{AttestCheck, CheckKind, CheckStatus};
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
    let name = match c.check {
        CheckKind::Quote => "TPM quote",
        CheckKind::AkEkBinding => "AK↔EK binding",
        CheckKind::EkCertificate => "EK certificate",
    };
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
    }
    s
}

//! The outcome of each attestation check of agent evidence (quote, AK↔EK binding, EK certificate,
//! boot signing key, TEE report), as the verdict and its report show it.

use crate::error::{chain, VerifyError};
use serde::Serialize;

/// Which attestation check an [`AttestCheck`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    Quote,
    AkEkBinding,
    EkCertificate,
    /// The agent's boot signing key: AK certification and PolicyPCR over the quoted PCRs.
    SigningKey,
    /// The SEV-SNP report or TDX quote binding the nonce and the AK.
    TeeReport,
}

impl CheckKind {
    /// How reports name the check.
    pub fn label(self) -> &'static str {
        match self {
            CheckKind::Quote => "TPM quote",
            CheckKind::AkEkBinding => "AK↔EK binding (credential activation)",
            CheckKind::EkCertificate => "EK certificate chain",
            CheckKind::SigningKey => "boot signing key",
            CheckKind::TeeReport => "TEE report",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Ok,
    Failed,
    /// Not enforced (`--insecure-no-ek`).
    Skipped,
}

/// One attestation check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestCheck {
    pub check: CheckKind,
    pub status: CheckStatus,
    /// What was established, or why it failed.
    pub detail: String,
}

impl AttestCheck {
    /// Ok with what was established, or Failed with the error and its causes.
    pub fn from_result(check: CheckKind, r: Result<String, VerifyError>) -> Self {
        match r {
            Ok(detail) => AttestCheck {
                check,
                status: CheckStatus::Ok,
                detail,
            },
            Err(e) => AttestCheck::failed(check, chain(&e)),
        }
    }

    pub fn failed(check: CheckKind, detail: impl Into<String>) -> Self {
        AttestCheck {
            check,
            status: CheckStatus::Failed,
            detail: detail.into(),
        }
    }

    pub fn skipped(check: CheckKind, detail: impl Into<String>) -> Self {
        AttestCheck {
            check,
            status: CheckStatus::Skipped,
            detail: detail.into(),
        }
    }
}

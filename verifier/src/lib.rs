//! cvm-verify: is a running confidential VM the one a golden measurement predicts?
//!
//! | module | holds |
//! |---|---|
//! | [`golden`] | the `golden-measurement.json` schema and loader |
//! | [`golden_sign`] | detached signatures over golden files (ECDSA P-256, RSA) |
//! | [`pin`] | no rollback: the image name, version, UKI and security version a golden file must be for |
//! | [`agent_golden`] | the golden file an agent serves from the ESP, trusted by its signature |
//! | [`evidence`] | PCR values + event logs, from files or from an agent |
//! | [`collaterals`] | the agent's `/collaterals`: nonce, quote, AK↔EK activation, EK chain |
//! | [`ekcert`] | EK certificate chains |
//! | [`attest`] | TPM2 structures, quote signatures, MakeCredential, SEV-SNP reports |
//! | [`tee`] | the SEV-SNP report / TDX quote in the collaterals |
//! | [`check`] | evidence vs one golden profile → [`check::Verdict`] |
//! | [`report`] | the verdict as a per-PCR text table |
//! | [`wire`] | the agent's JSON documents (`/collaterals`, `/pcrs`, credential activation), shared with the agent |
//! | [`attestation`] | the outcome of each attestation check |
//! | [`error`] | [`VerifyError`], by kind |
//! | [`http`] | the HTTP client for agents |
//!
//! The host's `cvm-image verify` and the guest agent's peer `POST /verify` both run [`check::verify`]
//! over evidence built by [`collaterals::check_collaterals`], so a VM verifies a peer exactly as the
//! host does.

pub mod agent_golden;
pub mod attest;
pub mod attestation;
pub mod check;
pub mod collaterals;
pub mod ekcert;
pub mod error;
pub mod evidence;
pub mod golden;
pub mod golden_sign;
pub mod http;
pub mod pin;
pub mod report;
pub mod tee;
pub mod wire;

pub use error::VerifyError;

#[cfg(test)]
mod testutil;

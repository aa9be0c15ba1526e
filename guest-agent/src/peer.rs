//! `POST /verify` (loopback listener only): attests ANOTHER VM for the workload — peer-to-peer
//! attestation between VMs — with exactly the host verifier's code ([`cvm_verify`]).
//!
//! The agent runs the interactive protocol against the peer's agent: a fresh nonce of its own,
//! the peer's `/collaterals`, TPM2_MakeCredential → the peer's `/activate-credential` (AK↔EK), the
//! EK chain against the CA bundle the caller trusts, the TEE report, the boot signing key, then the
//! event logs and PCRs against the golden measurement the caller gives. Replayed or forwarded
//! collaterals cannot pass: the nonce is this agent's. Optionally it also checks a message the peer's
//! workload signed with its boot signing key (`/sign-message` there), so that the caller knows the
//! message comes from software in the attested state.
//!
//! Loopback only: the endpoint makes outgoing connections on the caller's behalf.

use axum::extract::rejection::JsonRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{post, MethodRouter};
use axum::Json;
use base64::Engine;
use cvm_verify::attest::signing_key::{verify_message_signature, SignedMessage};
use cvm_verify::attest::tdx::TdxCollateral;
use cvm_verify::check::{verify, Verdict};
use cvm_verify::collaterals::{attest_agent, EkTrust};
use cvm_verify::golden::{Golden, FORMAT};
use cvm_verify::tee::TeeTrust;
use cvm_verify::VerifyError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Largest request: a golden measurement with its expected event logs is ~100 KiB; the TDX
/// collateral ~20 KiB.
pub const MAX_VERIFY_BODY: usize = 4 * 1024 * 1024;
/// Default and largest wait for each request to the peer.
const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
const MAX_TIMEOUT_SECONDS: u64 = 300;

/// `POST /verify` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The peer's agent, e.g. `http://10.0.0.7:8000`.
    pub agent: String,
    /// The golden measurement the peer must match (the JSON object of golden-measurement.json).
    pub golden: serde_json::Value,
    /// Its profile to compare with.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// PEM bundle of the EK CA certificates the peer's EK must chain to.
    pub ek_ca_pem: Option<String>,
    /// Accept any TPM (no EK certificate check). Reported as skipped.
    #[serde(default)]
    pub insecure_no_ek: bool,
    /// SEV-SNP VCEK/VLEK (PEM) when the peer's host provides no certificate table.
    pub snp_vcek_pem: Option<String>,
    /// SEV-SNP KDS cert_chain (PEM) when the peer's host provides none.
    pub amd_chain_pem: Option<String>,
    /// TDX DCAP collateral (dcap-qvl's JSON shape).
    pub tdx_collateral: Option<TdxCollateral>,
    /// Fail unless the peer presents a verified SEV-SNP or TDX report.
    #[serde(default)]
    pub require_tee: bool,
    /// A message the peer's workload signed with `/sign-message`, to check against the attested key.
    pub signed_message: Option<SignedMessageCheck>,
    /// Seconds to wait for each request to the peer (default 30, at most 300).
    pub timeout_seconds: Option<u64>,
}

fn default_profile() -> String {
    "qemu".into()
}

/// A message and the peer's `/sign-message` answer for it (pasted whole: its other fields are
/// ignored).
#[derive(Debug, Deserialize)]
pub struct SignedMessageCheck {
    /// The message, base64.
    pub message: String,
    #[serde(flatten)]
    pub signed: SignedMessage,
}

/// `POST /verify` answer (HTTP 200 whether or not the peer passed: `ok` says).
#[derive(Debug, Serialize)]
pub struct VerifyResponse {
    /// Everything enforced holds (and the signed message, if given, verifies).
    pub ok: bool,
    pub verdict: Verdict,
    /// The peer's boot signing key, when it checked out.
    pub signing_key: Option<String>,
    /// Outcome of the signed-message check, when one was given.
    pub message: Option<MessageOutcome>,
}

#[derive(Debug, Serialize)]
pub struct MessageOutcome {
    pub ok: bool,
    pub detail: String,
}

/// The route, with its body limit.
pub fn verify_route() -> MethodRouter<AppState> {
    post(verify_peer).layer(DefaultBodyLimit::max(MAX_VERIFY_BODY))
}

async fn verify_peer(
    body: Result<Json<VerifyRequest>, JsonRejection>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let Json(req) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let checked = CheckedRequest::new(req)?;
    tokio::task::spawn_blocking(move || checked.run())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("task: {e}")))?
        .map(Json)
}

/// A request whose inputs parsed.
struct CheckedRequest {
    agent: String,
    golden: Golden,
    profile: String,
    ek: EkTrust,
    tee: TeeTrust,
    signed_message: Option<(Vec<u8>, SignedMessage)>,
    timeout: Duration,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

impl CheckedRequest {
    fn new(req: VerifyRequest) -> Result<Self, ApiError> {
        let agent = check_url(&req.agent)?;
        let golden: Golden = serde_json::from_value(req.golden).map_err(|e| {
            unprocessable(format!(
                "golden is not a golden-measurement.json object: {e}"
            ))
        })?;
        if golden.format != FORMAT {
            return Err(unprocessable(format!(
                "golden format {} is not {FORMAT}",
                golden.format
            )));
        }
        if !golden.profiles.contains_key(&req.profile) {
            return Err(unprocessable(format!(
                "the golden measurement has no profile {:?} (it has {:?})",
                req.profile,
                golden.profiles.keys().collect::<Vec<_>>()
            )));
        }
        let ek = match (&req.ek_ca_pem, req.insecure_no_ek) {
            (Some(pem), false) => EkTrust::Ca(
                cvm_verify::ekcert::parse_bundle(pem.as_bytes(), "ek_ca_pem")
                    .map_err(|e| unprocessable(format!("{e:#}")))?,
            ),
            (None, true) => EkTrust::Insecure,
            _ => {
                return Err(bad(
                    "give exactly one of ek_ca_pem (the EK CA bundle) or insecure_no_ek: true",
                ))
            }
        };
        let signed_message = match req.signed_message {
            Some(m) => Some((
                base64::engine::general_purpose::STANDARD
                    .decode(&m.message)
                    .map_err(|_| bad("signed_message.message is not base64"))?,
                m.signed,
            )),
            None => None,
        };
        let timeout = req.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        if timeout == 0 || timeout > MAX_TIMEOUT_SECONDS {
            return Err(bad(format!(
                "timeout_seconds must be 1..={MAX_TIMEOUT_SECONDS}"
            )));
        }
        Ok(CheckedRequest {
            agent,
            golden,
            profile: req.profile,
            ek,
            tee: TeeTrust {
                snp_vcek: req.snp_vcek_pem.map(String::into_bytes),
                amd_chain: req.amd_chain_pem.map(String::into_bytes),
                tdx_collateral: req.tdx_collateral,
                require: req.require_tee,
            },
            signed_message,
            timeout: Duration::from_secs(timeout),
        })
    }

    /// The exchange with the peer (blocking: run it off the async runtime).
    fn run(self) -> Result<VerifyResponse, ApiError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "clock before 1970"))?
            .as_secs();
        let evidence =
            attest_agent(&self.agent, &self.ek, &self.tee, self.timeout, now).map_err(|e| {
                ApiError::new(
                    status_of(&e),
                    format!("the peer's evidence could not be obtained: {}", e.chain()),
                )
            })?;
        let verdict = verify(&self.golden, &self.profile, &evidence)
            .map_err(|e| ApiError::new(status_of(&e), e.chain()))?;
        let message = self.signed_message.as_ref().map(|(message, signed)| {
            match evidence.signing_key.as_ref() {
                Some(key) => match verify_message_signature(key, message, signed) {
                    Ok(()) => MessageOutcome {
                        ok: true,
                        detail: format!("signed by the peer's attested boot key {}", key.key_hash),
                    },
                    Err(e) => MessageOutcome {
                        ok: false,
                        detail: format!("{e:#}"),
                    },
                },
                None => MessageOutcome {
                    ok: false,
                    detail: "the peer presented no verified boot signing key".into(),
                },
            }
        });
        Ok(VerifyResponse {
            ok: verdict.ok && message.as_ref().is_none_or(|m| m.ok),
            signing_key: evidence.signing_key.as_ref().map(|k| k.key_hash.clone()),
            verdict,
            message,
        })
    }
}

/// The status of a verifier error: the caller's golden measurement or inputs are unusable (422);
/// the peer could not be reached, answered an error, or served evidence that does not parse or
/// check (502: the fault is upstream).
fn status_of(e: &VerifyError) -> StatusCode {
    match e {
        VerifyError::Golden { .. } | VerifyError::Input { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        VerifyError::Transport { .. }
        | VerifyError::Malformed { .. }
        | VerifyError::Check { .. }
        | VerifyError::Attest(_) => StatusCode::BAD_GATEWAY,
    }
}

/// Only plain `http://host[:port][/path]` URLs: the agent has no TLS client, and the evidence is
/// authenticated end to end by the quote, not by the transport.
fn check_url(url: &str) -> Result<String, ApiError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad(format!("agent {url:?} is not an http:// URL")))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(bad(format!("agent {url:?} has no valid host")));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            check_url("http://10.0.0.7:8000/").unwrap(),
            "http://10.0.0.7:8000"
        );
        for bad in [
            "https://x",
            "ftp://x",
            "http://",
            "http://u@h",
            "10.0.0.7:8000",
        ] {
            assert_eq!(
                check_url(bad).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}

//! `POST /sign-message` (loopback listener only): signs a workload message with this boot's
//! signing key.
//!
//! The key ([`cvm_tpm::Tpm::create_signing_key`]) lives in the TPM, can never leave it (fixedTPM),
//! and its only authorization is a TPM2_PolicyPCR over the SHA-256 PCRs 0–15 and 23 as they were
//! when the agent first used it. A signature therefore means "made by a process inside this VM while
//! it was in the state the collaterals' quote shows": a verifier links the key to that state with
//! the collaterals' `signing_key` (certified by the AK) and the quote. If a bound PCR changes, the TPM
//! refuses to sign and the endpoint answers 409.
//!
//! Only the loopback router serves it: anyone who can reach it gets signatures from the VM's key,
//! which is what the workload inside wants and what nobody outside may have.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{post, MethodRouter};
use axum::Json;
use base64::Engine;
use cvm_tpm::HashAlg;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::boot_keys::Evidence;
use crate::evidence::{b64, key_hash, load_signing_key, open_tpm, QUOTED_PCRS};
use crate::http::error::ApiError;
use crate::http::error::{unavailable, Failure};
use crate::http::state::AppState;
use crate::tpm::TpmSource;

/// Largest message accepted (decoded): the workload signs documents, not bulk data; the TPM only
/// ever sees the 32-byte digest.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Room for the JSON around the base64 text (`{"message": "…"}` and whitespace).
const JSON_OVERHEAD: usize = 1024;
/// Largest request body: base64 of [`MAX_MESSAGE_LEN`] bytes plus the JSON around it.
pub const MAX_SIGN_BODY: usize = MAX_MESSAGE_LEN.div_ceil(3) * 4 + JSON_OVERHEAD;

/// `POST /sign-message` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The message, base64 (standard alphabet, padded).
    pub message: String,
}

/// `POST /sign-message` answer.
#[derive(Debug, Serialize)]
pub struct SignResponse {
    /// `TPMT_SIGNATURE` (ECDSA P-256, SHA-256) over `message_sha256`, base64.
    pub signature: String,
    /// The same signature as a DER `ECDSA-Sig-Value`, base64 (what openssl and most libraries take).
    pub signature_der: String,
    /// SHA-256 of the message: the digest the TPM signed, hex.
    pub message_sha256: String,
    /// SHA-256 of the key's TPMT_PUBLIC (its TPM2B_PUBLIC without the size), hex — the
    /// collaterals' `signing_key.key_hash`.
    pub key_hash: String,
    /// The key's TPM Name (0x000b ‖ key_hash), hex.
    pub key_name: String,
}

/// The route, with its body limit.
pub fn sign_message_route() -> MethodRouter<AppState> {
    post(sign_message).layer(DefaultBodyLimit::max(MAX_SIGN_BODY))
}

async fn sign_message(
    State(state): State<AppState>,
    body: Result<Json<SignRequest>, JsonRejection>,
) -> Result<Json<SignResponse>, ApiError> {
    let Json(req) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let message = decode_message(&req.message)?;
    let digest: [u8; 32] = Sha256::digest(&message).into();
    let (tpm, evidence) = (state.config.tpm.clone(), state.evidence.clone());
    let signed = tokio::task::spawn_blocking(move || sign(&tpm, &evidence, &digest))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("task: {e}")))??;
    Ok(Json(SignResponse {
        signature: b64(&signed.signature),
        signature_der: b64(&signed.signature_der),
        message_sha256: hex::encode(digest),
        key_hash: key_hash(&signed.public),
        key_name: hex::encode(&signed.name),
    }))
}

/// The message bytes: base64, at most [`MAX_MESSAGE_LEN`] (413 beyond).
fn decode_message(text: &str) -> Result<Vec<u8>, ApiError> {
    let message = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("message is not base64: {e}"),
            )
        })?;
    if message.len() > MAX_MESSAGE_LEN {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "message has {} bytes; at most {MAX_MESSAGE_LEN} are signed (sign a digest of \
                 larger data)",
                message.len()
            ),
        ));
    }
    Ok(message)
}

/// A signature and the key that made it.
struct Signed {
    signature: Vec<u8>,
    signature_der: Vec<u8>,
    public: Vec<u8>,
    name: Vec<u8>,
}

/// Recreates the boot signing key (creating it on first use) and signs `digest` under its policy.
fn sign(source: &TpmSource, evidence: &Evidence, digest: &[u8; 32]) -> Result<Signed, Failure> {
    let mut boot = evidence
        .boot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut tpm = open_tpm(source)?;
    let key = load_signing_key(&mut tpm, &mut boot.signing_key)?;
    let signature = tpm.sign_with_pcr_policy(key.handle, HashAlg::Sha256, &QUOTED_PCRS, digest);
    let _ = tpm.flush_context(key.handle);
    let signature = signature.map_err(|e| match e {
        cvm_tpm::Error::PcrPolicyMismatch { .. } => Failure::Conflict(format!(
            "{e}. The boot signing key signs only while SHA-256 PCRs 0-15 and 23 hold the values \
             they had when it was created; something extended one of them since (GET /pcrs and \
             the event logs show what). It cannot sign again until the next boot"
        )),
        other => unavailable("signing with the boot signing key")(other),
    })?;
    let signature_der = cvm_tpm::EcdsaSignature::parse(&signature)
        .map_err(unavailable("the TPM's signature"))?
        .to_der();
    Ok(Signed {
        signature,
        signature_der,
        public: key.public,
        name: key.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limit_fits_the_largest_message() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_MESSAGE_LEN]);
        let body = serde_json::json!({ "message": b64 }).to_string();
        assert!(
            body.len() <= MAX_SIGN_BODY,
            "{} > {MAX_SIGN_BODY}",
            body.len()
        );
    }

    #[test]
    fn message_decoding() {
        assert_eq!(decode_message("aGk=").unwrap(), b"hi");
        assert_eq!(decode_message("").unwrap(), b"");
        let e = decode_message("not base64!").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_MESSAGE_LEN + 1]);
        assert_eq!(
            decode_message(&big).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}

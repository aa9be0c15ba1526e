//! Attestation evidence: `GET /collaterals?nonce=HEX` and `POST /activate-credential`.
//!
//! **Collaterals** answer "prove what you are" for one verifier nonce: a TPM quote over the SHA-256
//! PCRs 0–15 and 23 with the nonce as qualifying data, signed by the attestation key (AK); the AK's
//! public area; the quoted PCR values; both event logs (firmware TCG log and the init's PCR 23 log);
//! the endorsement key (EK) public area and certificate; and the TEE report when the VM has one, its
//! report data binding the same nonce *and* the AK ([`tee_report_data`]), so that a verifier who
//! trusts the TEE report also knows the quote came from a TPM inside that TEE.
//!
//! **Credential activation** proves the AK lives in the TPM that owns the EK: the verifier encrypts
//! a secret to (EK public, AK Name) with TPM2_MakeCredential semantics, and only that TPM can return it.
//!
//! The AK is a primary key derived from the endorsement seed and a fixed template, so it is the same
//! key for the whole boot (and across boots of the same vTPM). It is created on first use, its public
//! area remembered, and each request recreates it and checks it is unchanged: no transient handle has
//! to outlive a request (the kernel's resource manager flushes them when the device is closed).
//!
//! The **boot signing key** (the `signing` module, `POST /sign-message`) follows the same pattern: a primary of the null
//! hierarchy whose template holds the PolicyPCR digest of the PCRs at its first use, recreated per
//! request. Each collaterals answer carries it, certified by the AK with the request's nonce.

mod collect;
mod keys;
mod pem;

use std::path::Path;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use cvm_verify::wire::{
    ActivateRequest, ActivateResponse, Collaterals, PATH_ACTIVATE, PATH_COLLATERALS,
};

pub use crate::boot_keys::Evidence;
use crate::http::error::{ApiError, Failure};
use crate::http::state::AppState;
use crate::tpm::TpmSource;

pub(crate) use keys::{load_signing_key, open_tpm, QUOTED_PCRS};
pub(crate) use pem::{b64, key_hash};

/// Shortest nonce accepted: 128 bits, so that a verifier's random nonce cannot be guessed.
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce: the TEE report data field (and within TPM2B_DATA).
pub const MAX_NONCE_LEN: usize = 64;
/// Largest request body `/activate-credential` reads: a credential blob and an encrypted secret are
/// a few hundred bytes each, base64 in JSON.
pub const MAX_ACTIVATE_BODY: usize = 16 * 1024;
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH_COLLATERALS, get(collaterals))
        .route(
            PATH_ACTIVATE,
            post(activate_credential).layer(DefaultBodyLimit::max(MAX_ACTIVATE_BODY)),
        )
}

/// Parses the query `nonce=HEX` (and nothing else) into 16–64 bytes.
pub fn parse_nonce(query: Option<&str>) -> Result<Vec<u8>, String> {
    let query = query.unwrap_or("");
    let mut nonce = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("nonce", v)) if nonce.is_none() => nonce = Some(v),
            Some(("nonce", _)) => return Err("nonce given more than once".into()),
            _ => {
                return Err(format!(
                    "unexpected query parameter {:?} (only nonce=HEX is accepted)",
                    pair.split('=').next().unwrap_or(pair)
                ))
            }
        }
    }
    let hex_nonce = nonce.ok_or("missing query parameter nonce=HEX (16 to 64 random bytes)")?;
    if hex_nonce.len() > 2 * MAX_NONCE_LEN {
        return Err(format!(
            "nonce has {} hex digits; at most {} ({MAX_NONCE_LEN} bytes) fit the report data",
            hex_nonce.len(),
            2 * MAX_NONCE_LEN
        ));
    }
    let bytes = hex::decode(hex_nonce).map_err(|e| format!("nonce is not hex: {e}"))?;
    if bytes.len() < MIN_NONCE_LEN {
        return Err(format!(
            "nonce has {} bytes; at least {MIN_NONCE_LEN} are required",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// The TEE report data: SHA-512(domain ‖ u16 len ‖ nonce ‖ AK Name), defined once with the verifier
/// that checks it. Binds the verifier's nonce (freshness) and the AK (the quote's signer) into the
/// hardware-signed report.
pub use cvm_verify::attest::tee_report_data;

async fn collaterals(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Collaterals>, ApiError> {
    let nonce = parse_nonce(query.as_deref()).map_err(Failure::BadRequest)?;
    let (tpm, evidence) = (state.config.tpm.clone(), state.evidence.clone());
    let (eventlog, runtime) = (
        state.config.eventlog.clone(),
        state.config.runtime_eventlog.clone(),
    );
    let result = tokio::task::spawn_blocking(move || {
        let mut c = collect::collect(&tpm, &evidence, &nonce)?;
        c.eventlog = read_optional(&eventlog)?;
        c.runtime_eventlog = read_optional(&runtime)?;
        Ok::<_, Failure>(c)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("task: {e}")))?;
    Ok(Json(result?))
}

/// A log file as base64, `None` when it does not exist (no TPM event log, no workload measured).
fn read_optional(path: &Path) -> Result<Option<String>, Failure> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b64(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::Unavailable(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

fn decode_b64(field: &str, v: &str) -> Result<Vec<u8>, Failure> {
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|e| Failure::BadRequest(format!("{field} is not base64: {e}")))
}

async fn activate_credential(
    State(state): State<AppState>,
    body: Result<Json<ActivateRequest>, JsonRejection>,
) -> Result<Json<ActivateResponse>, ApiError> {
    let Json(req) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let blob = decode_b64("credential_blob", &req.credential_blob)?;
    let secret = decode_b64("secret", &req.secret)?;
    if blob.is_empty() || secret.is_empty() {
        return Err(
            Failure::BadRequest("credential_blob and secret must not be empty".into()).into(),
        );
    }
    let (tpm, evidence) = (state.config.tpm.clone(), state.evidence.clone());
    let out = tokio::task::spawn_blocking(move || activate(&tpm, &evidence, &blob, &secret))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("task: {e}")))??;
    Ok(Json(ActivateResponse {
        cert_info: b64(&out),
    }))
}

fn activate(
    source: &TpmSource,
    evidence: &Arc<Evidence>,
    blob: &[u8],
    secret: &[u8],
) -> Result<Vec<u8>, ApiError> {
    let mut boot = evidence
        .boot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut tpm = open_tpm(source)?;
    let ak = keys::load_ak(&mut tpm, &mut boot.keys)?;
    let result = match boot.keys.as_ref() {
        Some(k) => keys::ek_handle(&mut tpm, k).and_then(|(ek, transient)| {
            let r = tpm.activate_credential(ak, ek, blob, secret);
            if transient {
                let _ = tpm.flush_context(ek);
            }
            r.map_err(|e| match e {
                cvm_tpm::Error::Tpm { .. } => Failure::Refused(format!(
                    "credential activation failed ({e}): the credential was not made for this \
                     TPM's EK and AK"
                )),
                other => Failure::Unavailable(format!("credential activation: {other}")),
            })
        }),
        None => Err(Failure::Unavailable("keys not loaded".into())),
    };
    let _ = tpm.flush_context(ak);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_rules() {
        let ok = "00112233445566778899aabbccddeeff";
        assert_eq!(parse_nonce(Some(&format!("nonce={ok}"))).unwrap().len(), 16);
        assert_eq!(
            parse_nonce(Some(&format!("nonce={}", "ab".repeat(64))))
                .unwrap()
                .len(),
            64
        );
        for bad in [
            None,
            Some(""),
            Some("nonce="),
            Some("nonce=0011"),                             // too short
            Some("nonce=zz112233445566778899aabbccddeeff"), // not hex
            Some("nonce=0112233445566778899aabbccddeeff"),  // odd length
            Some("other=1"),
        ] {
            assert!(parse_nonce(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_nonce(Some(&format!("nonce={}", "ab".repeat(65)))).is_err());
        assert!(parse_nonce(Some(&format!("nonce={ok}&nonce={ok}"))).is_err());
    }

    #[test]
    fn report_data_binds_nonce_and_ak() {
        let a = tee_report_data(&[1; 32], b"ak");
        assert_ne!(a, tee_report_data(&[2; 32], b"ak"));
        assert_ne!(a, tee_report_data(&[1; 32], b"ak2"));
    }
}

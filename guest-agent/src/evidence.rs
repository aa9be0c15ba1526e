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

use std::path::Path;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use cvm_tpm::{EkType, HashAlg, KeyObject, Tpm};
use cvm_verify::wire::{
    ActivateRequest, ActivateResponse, Collaterals, PcrBankJson, PcrPolicyJson, SigningKeyJson,
    TeeReportJson, COLLATERALS_VERSION, PATH_ACTIVATE, PATH_COLLATERALS,
};
use sha2::{Digest, Sha256};

pub use crate::boot_keys::Evidence;
use crate::boot_keys::{Keys, SigningKeyInfo};
use crate::http::error::{unavailable, ApiError, Failure};
use crate::http::state::AppState;
use crate::tee::TeeType;
use crate::tpm::TpmSource;

/// PCRs a quote covers: firmware and boot (0–15) and the workload (23).
pub const QUOTED_PCRS: [u32; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23];
/// Shortest nonce accepted: 128 bits, so that a verifier's random nonce cannot be guessed.
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce: the TEE report data field (and within TPM2B_DATA).
pub const MAX_NONCE_LEN: usize = 64;
/// Largest request body `/activate-credential` reads: a credential blob and an encrypted secret are
/// a few hundred bytes each, base64 in JSON.
pub const MAX_ACTIVATE_BODY: usize = 16 * 1024;
/// How often the PCRs are read again when one changed while quoting.
const PCR_RACE_RETRIES: usize = 3;
/// Persistent handles where provisioning tools (swtpm_setup, cloud vTPMs) keep the EK (TCG EK
/// profile §2.2.1.4): RSA 2048 and ECC P-256.
const PERSISTENT_EK_RSA: u32 = 0x8101_0001;
const PERSISTENT_EK_ECC: u32 = 0x8101_0002;

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

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
        let mut c = collect(&tpm, &evidence, &nonce)?;
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

pub(crate) fn open_tpm(source: &TpmSource) -> Result<Tpm, Failure> {
    source
        .open()
        .map_err(|e| Failure::Unavailable(format!("{e:#}")))
}

/// The EK certificate (trimmed to its DER length) and type: RSA 2048 if its certificate exists,
/// else ECC P-256 if its certificate exists, else RSA 2048 without certificate.
fn find_ek(tpm: &mut Tpm) -> Result<(EkType, Option<Vec<u8>>), Failure> {
    for ek in [EkType::Rsa2048, EkType::EccP256] {
        let cert = tpm
            .ek_certificate(ek)
            .map_err(unavailable("reading the EK certificate"))?;
        if let Some(cert) = cert {
            return Ok((ek, Some(trim_der(cert))));
        }
    }
    Ok((EkType::Rsa2048, None))
}

/// NV indices are often larger than the certificate (zero padding): cut at the outer DER length.
pub fn trim_der(mut der: Vec<u8>) -> Vec<u8> {
    let len = match der.as_slice() {
        [0x30, 0x82, hi, lo, ..] => 4 + ((*hi as usize) << 8 | *lo as usize),
        [0x30, 0x81, n, ..] => 3 + *n as usize,
        _ => der.len(),
    };
    der.truncate(len.min(der.len()));
    der
}

/// Creates the AK, checking it is the key of this boot; the first call also learns the EK.
fn load_ak(tpm: &mut Tpm, keys: &mut Option<Keys>) -> Result<u32, Failure> {
    let ak = tpm
        .create_ak()
        .map_err(unavailable("creating the attestation key"))?;
    match keys {
        Some(k) if k.ak_public != ak.public => {
            let _ = tpm.flush_context(ak.handle);
            Err(Failure::Unavailable(
                "the attestation key changed during this boot (was the endorsement seed reset?)"
                    .into(),
            ))
        }
        Some(_) => Ok(ak.handle),
        None => {
            let learned = learn_ek(tpm).map(|ek| Keys {
                ak_public: ak.public.clone(),
                ak_name: ak.name.clone(),
                ek_type: ek.ek_type,
                ek_public: ek.public,
                ek_cert: ek.cert,
            });
            match learned {
                Ok(k) => {
                    *keys = Some(k);
                    Ok(ak.handle)
                }
                Err(e) => {
                    let _ = tpm.flush_context(ak.handle);
                    Err(e)
                }
            }
        }
    }
}

/// The EK of this TPM: type, public area (TPMT_PUBLIC) and certificate.
struct EkInfo {
    ek_type: EkType,
    public: Vec<u8>,
    cert: Option<Vec<u8>>,
}

fn learn_ek(tpm: &mut Tpm) -> Result<EkInfo, Failure> {
    let (ek_type, cert) = find_ek(tpm)?;
    let ek = tpm
        .create_ek(ek_type)
        .map_err(unavailable("creating the endorsement key"))?;
    let _ = tpm.flush_context(ek.handle);
    Ok(EkInfo {
        ek_type,
        public: ek.public,
        cert,
    })
}

fn ek_type_name(ek: EkType) -> &'static str {
    match ek {
        EkType::Rsa2048 => "rsa2048",
        EkType::EccP256 => "ecc-p256",
    }
}

/// PCR values as (index, value), ascending.
type PcrList = Vec<(u32, Vec<u8>)>;

/// Quote and PCR values read around it, so that the values are those quoted (a runtime extend
/// between the two would otherwise give a verifier a digest mismatch).
fn quote_with_pcrs(
    tpm: &mut Tpm,
    ak: u32,
    nonce: &[u8],
) -> Result<(cvm_tpm::Quote, PcrList), Failure> {
    for _ in 0..PCR_RACE_RETRIES {
        let before = tpm
            .pcr_read(HashAlg::Sha256, &QUOTED_PCRS)
            .map_err(unavailable("reading PCRs"))?;
        let quote = tpm
            .quote(ak, nonce, HashAlg::Sha256, &QUOTED_PCRS)
            .map_err(unavailable("quoting PCRs"))?;
        let after = tpm
            .pcr_read(HashAlg::Sha256, &QUOTED_PCRS)
            .map_err(unavailable("reading PCRs"))?;
        if before == after {
            return Ok((quote, after));
        }
    }
    Err(Failure::Unavailable(format!(
        "PCRs kept changing during {PCR_RACE_RETRIES} quotes; retry"
    )))
}

/// Creates the boot signing key (first call: bound to the PCRs read now, with the same
/// before/after read as the quote so that no extend slips between reading and creating) or
/// recreates it and checks it is the same key. The caller flushes the handle.
pub(crate) fn load_signing_key(
    tpm: &mut Tpm,
    known: &mut Option<SigningKeyInfo>,
) -> Result<KeyObject, Failure> {
    if let Some(info) = known {
        let key = tpm
            .create_signing_key(&info.auth_policy)
            .map_err(unavailable("recreating the boot signing key"))?;
        if key.public != info.public {
            let _ = tpm.flush_context(key.handle);
            return Err(Failure::Unavailable(
                "the boot signing key changed during this boot (was the TPM reset?)".into(),
            ));
        }
        return Ok(key);
    }
    for _ in 0..PCR_RACE_RETRIES {
        let before = tpm
            .pcr_read(HashAlg::Sha256, &QUOTED_PCRS)
            .map_err(unavailable("reading PCRs"))?;
        let policy = cvm_tpm::pcr_policy_digest(HashAlg::Sha256, &before)
            .map_err(unavailable("computing the PCR policy"))?;
        let key = tpm
            .create_signing_key(&policy)
            .map_err(unavailable("creating the boot signing key"))?;
        let after = tpm
            .pcr_read(HashAlg::Sha256, &QUOTED_PCRS)
            .map_err(unavailable("reading PCRs"));
        match after {
            Ok(after) if after == before => {
                *known = Some(SigningKeyInfo {
                    auth_policy: policy,
                    public: key.public.clone(),
                });
                return Ok(key);
            }
            Ok(_) => {
                let _ = tpm.flush_context(key.handle);
            }
            Err(e) => {
                let _ = tpm.flush_context(key.handle);
                return Err(e);
            }
        }
    }
    Err(Failure::Unavailable(format!(
        "PCRs kept changing during {PCR_RACE_RETRIES} attempts to create the signing key; retry"
    )))
}

/// The signing key certified by `ak` with `nonce`, as the collaterals carry it.
fn certified_signing_key(
    tpm: &mut Tpm,
    known: &mut Option<SigningKeyInfo>,
    ak: u32,
    nonce: &[u8],
) -> Result<SigningKeyJson, Failure> {
    let key = load_signing_key(tpm, known)?;
    let cert = tpm.certify(key.handle, ak, nonce);
    let _ = tpm.flush_context(key.handle);
    let cert = cert.map_err(unavailable("certifying the boot signing key with the AK"))?;
    let template = cvm_tpm::templates::signing_key_ecc_p256_template(
        &known
            .as_ref()
            .ok_or_else(|| Failure::Unavailable("signing key not loaded".into()))?
            .auth_policy,
    );
    Ok(SigningKeyJson {
        public: b64(&cvm_tpm::tpm2b(&key.public)),
        public_pem: p256_public_pem(&key.public, &template)
            .map_err(|e| Failure::Unavailable(format!("signing key public area: {e}")))?,
        name: hex::encode(&key.name),
        key_hash: key_hash(&key.public),
        certify_info: b64(&cert.attest),
        certify_signature: b64(&cert.signature),
        pcr_policy: PcrPolicyJson {
            pcrs: QUOTED_PCRS.to_vec(),
            bank: HashAlg::Sha256.name().to_string(),
        },
    })
}

/// The key hash served for the signing key: SHA-256 of its TPMT_PUBLIC, hex.
pub fn key_hash(public: &[u8]) -> String {
    hex::encode(Sha256::digest(public))
}

/// Everything from the TPM and TEE for `nonce` (logs are added by the caller).
fn collect(source: &TpmSource, evidence: &Evidence, nonce: &[u8]) -> Result<Collaterals, Failure> {
    let mut boot = evidence
        .boot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let boot = &mut *boot;
    let mut tpm = open_tpm(source)?;
    let ak = load_ak(&mut tpm, &mut boot.keys)?;
    let quoted = quote_with_pcrs(&mut tpm, ak, nonce).and_then(|q| {
        certified_signing_key(&mut tpm, &mut boot.signing_key, ak, nonce).map(|s| (q, s))
    });
    let _ = tpm.flush_context(ak);
    let ((quote, pcrs), signing_key) = quoted?;
    let k = boot
        .keys
        .as_ref()
        .ok_or_else(|| Failure::Unavailable("keys not loaded".into()))?;
    let report_data = tee_report_data(nonce, &k.ak_name);
    let tee = evidence
        .tee
        .report(&report_data)
        .map_err(|e| Failure::Unavailable(format!("TEE report: {e:#}")))?;
    let tee_report = match tee {
        Some(r) => TeeReportJson {
            tee: r.tee.name().to_string(),
            source: Some(r.source),
            report_data: Some(hex::encode(report_data)),
            report: Some(b64(&r.report)),
            aux: r.aux.as_deref().map(b64),
        },
        None => TeeReportJson {
            tee: TeeType::None.name().to_string(),
            source: None,
            report_data: None,
            report: None,
            aux: None,
        },
    };
    Ok(Collaterals {
        version: COLLATERALS_VERSION,
        nonce: hex::encode(nonce),
        quote: b64(&quote.attest),
        signature: b64(&quote.signature),
        ak_public: b64(&cvm_tpm::tpm2b(&k.ak_public)),
        ak_public_pem: ak_public_pem(&k.ak_public)
            .map_err(|e| Failure::Unavailable(format!("AK public area: {e}")))?,
        ak_name: hex::encode(&k.ak_name),
        pcrs: [(
            HashAlg::Sha256.name().to_string(),
            PcrBankJson::from_values(&pcrs),
        )]
        .into(),
        eventlog: None,
        runtime_eventlog: None,
        ek_type: ek_type_name(k.ek_type).to_string(),
        ek_public: b64(&cvm_tpm::tpm2b(&k.ek_public)),
        ek_cert: k.ek_cert.as_deref().map(b64),
        tee_report: Some(tee_report),
        signing_key: Some(signing_key),
    })
}

/// DER SubjectPublicKeyInfo prefix of an uncompressed NIST P-256 point (id-ecPublicKey, prime256v1,
/// BIT STRING of 66 bytes: 0 unused bits, 0x04, X, Y).
const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];
/// Bytes at the end of our ECC templates: `unique` with two empty coordinates (u16 0, u16 0).
const EMPTY_UNIQUE_LEN: usize = 4;
const P256_COORD: usize = 32;

/// PEM SubjectPublicKeyInfo of the AK (a P-256 TPMT_PUBLIC from our template).
pub fn ak_public_pem(public: &[u8]) -> Result<String, String> {
    p256_public_pem(public, &cvm_tpm::templates::ak_ecc_p256_template())
}

/// PEM SubjectPublicKeyInfo of a P-256 TPMT_PUBLIC created from `template` (one of our ECC
/// templates, whose `unique` is empty): everything before `unique` must be the template's.
pub fn p256_public_pem(public: &[u8], template: &[u8]) -> Result<String, String> {
    let prefix = template.len().saturating_sub(EMPTY_UNIQUE_LEN);
    if public.len() < prefix || public[..prefix] != template[..prefix] {
        return Err("not an ECC P-256 key of the expected template".into());
    }
    let mut rest = &public[prefix..];
    let mut coord = || -> Result<[u8; P256_COORD], String> {
        let n = rest
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or("truncated ECC point")?;
        let v = rest.get(2..2 + n).ok_or("truncated ECC point")?;
        if n > P256_COORD {
            return Err(format!("{n}-byte P-256 coordinate"));
        }
        let mut out = [0u8; P256_COORD];
        out[P256_COORD - n..].copy_from_slice(v);
        rest = &rest[2 + n..];
        Ok(out)
    };
    let (x, y) = (coord()?, coord()?);
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&x);
    der.extend_from_slice(&y);
    Ok(pem("PUBLIC KEY", &der))
}

fn pem(label: &str, der: &[u8]) -> String {
    const PEM_LINE: usize = 64;
    let text = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(PEM_LINE) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
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

/// The EK as a handle: the persistent one when it is the same key, else created (and flushed after).
fn ek_handle(tpm: &mut Tpm, keys: &Keys) -> Result<(u32, bool), Failure> {
    let persistent = match keys.ek_type {
        EkType::Rsa2048 => PERSISTENT_EK_RSA,
        EkType::EccP256 => PERSISTENT_EK_ECC,
    };
    if let Ok(p) = tpm.read_public(persistent) {
        if p.public == keys.ek_public {
            return Ok((persistent, false));
        }
    }
    let ek = tpm
        .create_ek(keys.ek_type)
        .map_err(unavailable("creating the endorsement key"))?;
    Ok((ek.handle, true))
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
    let ak = load_ak(&mut tpm, &mut boot.keys)?;
    let result = match boot.keys.as_ref() {
        Some(k) => ek_handle(&mut tpm, k).and_then(|(ek, transient)| {
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
    fn der_trim() {
        let mut v = vec![0x30, 0x82, 0x00, 0x02, 1, 2];
        v.extend_from_slice(&[0; 10]);
        assert_eq!(trim_der(v), vec![0x30, 0x82, 0x00, 0x02, 1, 2]);
    }

    #[test]
    fn report_data_binds_nonce_and_ak() {
        let a = tee_report_data(&[1; 32], b"ak");
        assert_ne!(a, tee_report_data(&[2; 32], b"ak"));
        assert_ne!(a, tee_report_data(&[1; 32], b"ak2"));
    }
}

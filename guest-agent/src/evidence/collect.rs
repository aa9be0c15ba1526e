//! One `/collaterals` answer: the quote with the PCR values it covers, the certified boot signing
//! key and the TEE report binding the nonce and the AK.

use cvm_tpm::{HashAlg, Tpm};
use cvm_verify::attest::tee_report_data;
use cvm_verify::wire::{
    Collaterals, PcrBankJson, PcrPolicyJson, SigningKeyJson, TeeReportJson, COLLATERALS_VERSION,
};

use super::keys::{
    ek_type_name, load_ak, load_signing_key, open_tpm, PCR_RACE_RETRIES, QUOTED_PCRS,
};
use super::pem::{ak_public_pem, b64, key_hash, p256_public_pem};
use crate::boot_keys::{Evidence, SigningKeyInfo};
use crate::http::error::{unavailable, Failure};
use crate::tee::TeeType;
use crate::tpm::TpmSource;

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

/// Everything from the TPM and TEE for `nonce` (logs are added by the caller).
pub(super) fn collect(
    source: &TpmSource,
    evidence: &Evidence,
    nonce: &[u8],
) -> Result<Collaterals, Failure> {
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

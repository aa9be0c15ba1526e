//! Quoted evidence from the agent: `GET /collaterals?nonce=…` checked into an [`Evidence`] whose
//! PCR values are authenticated (docs/attestation-api.md).
//!
//! [`check_collaterals`] runs the attestation checks, each recorded as an [`AttestCheck`]:
//! 1. **quote** — the AK is a restricted signing key, its signature over the TPMS_ATTEST verifies,
//!    extraData is *our* nonce (a replayed answer fails), pcrDigest is the hash of the served PCR
//!    values; those values (and only those) become the evidence's PCRs;
//! 2. **AK↔EK binding** — TPM2_MakeCredential of a fresh secret for (EK public, AK Name), sent to
//!    `POST /activate-credential`: only the TPM holding both keys can return the secret;
//! 3. **EK certificate** — the certificate chains to `--ek-ca` and certifies that EK.
//!
//! The event logs are then replayed against the quoted values by the `check` module's `verify`.

use crate::attest::credential::{make_credential, random_credential, MadeCredential};
use crate::attest::quote::verify_quote;
use crate::attest::signing_key::{verify_signing_key, VerifiedSigningKey};
use crate::attest::tee_report_data;
use crate::ekcert;
use crate::error::{Kind, Result, ResultExt, VerifyError};
use crate::evidence::{
    parse_eventlog, parse_runtime, pcr_values, Evidence, Origin, PcrValues, Quote,
};
use crate::http::{body, transport};
use crate::tee::{check_tee, TeeTrust};
use crate::wire::{
    ActivateRequest, ActivateResponse, COLLATERALS_VERSION, PATH_ACTIVATE, PATH_COLLATERALS,
};
use base64::Engine;
use cvm_measure::eventlog::{EventLog, HashAlg};
use cvm_measure::workload::RuntimeEvent;
use cvm_tpm::constants::TPM_ALG_SHA256;
use cvm_tpm::Public;
use rand_core::{OsRng, RngCore};
use std::time::Duration;
use x509_cert::Certificate;

pub use crate::attestation::{AttestCheck, CheckKind, CheckStatus};
pub use crate::http::http_agent;
pub use crate::wire::Collaterals;

/// Bytes of the verifier's nonce (the agent accepts 16–64).
pub const NONCE_LEN: usize = 32;

/// How the EK is trusted.
#[derive(Debug, Clone)]
pub enum EkTrust {
    /// Its certificate must chain to one of these (`--ek-ca`).
    Ca(Vec<Certificate>),
    /// Not at all (`--insecure-no-ek`): the AK may belong to any TPM, even a software one.
    Insecure,
}

/// Runs TPM2_ActivateCredential in the VM: the credential it recovered.
pub type Activate<'a> = &'a dyn Fn(&MadeCredential) -> Result<Vec<u8>>;

/// Why the checks that need the AK were not run.
const NO_AK: &str = "the quote (and so the AK) did not verify";

/// A fresh random nonce from the OS.
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut n);
    n
}

fn b64(field: &str, value: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .malformed(format!("collaterals field {field} is not base64"))
}

/// `GET base/collaterals?nonce=HEX`, parsed.
pub fn fetch_collaterals(base: &str, nonce: &[u8], timeout: Duration) -> Result<Collaterals> {
    let url = format!("{base}{PATH_COLLATERALS}?nonce={}", hex::encode(nonce));
    let resp = http_agent(timeout).get(&url).call().map_err(|e| {
        transport(
            format!("GET {url} (is the VM running? `cvm-image run` prints the agent URL)"),
            e,
        )
    })?;
    let bytes = body(resp, &format!("GET {url}"))?;
    let c: Collaterals = serde_json::from_slice(&bytes).malformed(format!(
        "GET {url}: not the collaterals JSON of docs/attestation-api.md"
    ))?;
    if c.version != COLLATERALS_VERSION {
        return Err(VerifyError::malformed(format!(
            "GET {url}: collaterals version {}, this verifier reads {COLLATERALS_VERSION}",
            c.version
        )));
    }
    Ok(c)
}

/// `POST base/activate-credential` with `made`; returns the recovered credential.
pub fn activate_credential(
    base: &str,
    made: &MadeCredential,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let url = format!("{base}{PATH_ACTIVATE}");
    let engine = &base64::engine::general_purpose::STANDARD;
    let request = ActivateRequest {
        credential_blob: engine.encode(&made.credential_blob),
        secret: engine.encode(&made.secret),
    };
    let request = serde_json::to_string(&request).or_kind(Kind::Input, "encoding the request")?;
    let resp = http_agent(timeout)
        .post(&url)
        .header("Content-Type", "application/json")
        .send(request)
        .map_err(|e| transport(format!("POST {url}"), e))?;
    let bytes = body(resp, &format!("POST {url}"))?;
    let a: ActivateResponse = serde_json::from_slice(&bytes)
        .malformed(format!("POST {url}: expected {{\"cert_info\": base64}}"))?;
    b64("cert_info", &a.cert_info)
}

/// The whole exchange with an agent at `base`: a fresh nonce, its collaterals, the credential
/// activation back to the same agent, every check. What the host's `cvm-image verify --agent` and
/// the agent's peer `POST /verify` both run.
pub fn attest_agent(
    base: &str,
    ek: &EkTrust,
    tee: &TeeTrust,
    timeout: Duration,
    now_unix: u64,
) -> Result<Evidence> {
    let base = base.trim_end_matches('/');
    let nonce = fresh_nonce();
    let c = fetch_collaterals(base, &nonce, timeout)?;
    let activate = |m: &MadeCredential| activate_credential(base, m, timeout);
    check_collaterals(
        &c,
        &nonce,
        ek,
        tee,
        &activate,
        now_unix,
        Origin::Agent {
            url: base.to_string(),
        },
    )
}

/// Checks `c` against the nonce the verifier sent and builds the evidence from it. `activate` runs
/// TPM2_ActivateCredential in the VM (normally [`activate_credential`]); `now_unix` is when the EK
/// certificates must be valid. Malformed fields are errors; failed checks are recorded in
/// [`Evidence::attestation`], in the order quote, AK↔EK binding, EK certificate, signing key, TEE.
pub fn check_collaterals(
    c: &Collaterals,
    nonce: &[u8],
    trust: &EkTrust,
    tee: &TeeTrust,
    activate: Activate<'_>,
    now_unix: u64,
    origin: Origin,
) -> Result<Evidence> {
    let fields = Decoded::of(c)?;
    let quote = check_quote(&fields, nonce);
    let ak_name = quote.ak_name.as_deref();
    let mut checks = vec![quote.check.clone()];
    checks.push(check_binding(&fields.ek, ak_name, activate));
    checks.push(check_ek_certificate(
        c,
        fields.ek.as_ref().ok(),
        trust,
        now_unix,
    ));
    let signing_key = match &c.signing_key {
        Some(sk) => {
            let (check, key) = check_signing_key(sk, &fields, &quote, nonce);
            checks.push(check);
            key
        }
        None => None,
    };
    checks.push(check_tee_binding(c, ak_name, nonce, tee, now_unix));
    let (eventlog, runtime) = decode_logs(c)?;
    Ok(Evidence {
        origin,
        pcrs: quote.pcrs,
        eventlog,
        runtime,
        quote: Some(Quote {
            attest: fields.attest,
            signature: fields.signature,
            ak_public: fields.ak_public,
            nonce: nonce.to_vec(),
        }),
        attestation: checks,
        signing_key,
    })
}

/// The collaterals' binary fields, decoded (a field that does not decode is malformed evidence;
/// an EK that does not parse fails the checks that need it).
struct Decoded {
    attest: Vec<u8>,
    signature: Vec<u8>,
    ak_public: Vec<u8>,
    /// The PCR values as served (the evidence when the quote does not verify).
    served: PcrValues,
    ek: Result<Public>,
}

impl Decoded {
    fn of(c: &Collaterals) -> Result<Self> {
        let attest = b64("quote", &c.quote)?;
        let signature = b64("signature", &c.signature)?;
        let ak_public = b64("ak_public", &c.ak_public)?;
        let served = pcr_values(&c.pcrs, "the collaterals' pcrs")?;
        let ek = Public::parse_tpm2b(&b64("ek_public", &c.ek_public)?)
            .map_err(|e| VerifyError::from(crate::attest::Error::from(e)))
            .check_failed("collaterals field ek_public: not an EK TPM2B_PUBLIC");
        Ok(Decoded {
            attest,
            signature,
            ak_public,
            served,
            ek,
        })
    }
}

/// The quote check, and what it establishes.
struct QuoteOutcome {
    check: AttestCheck,
    /// The quoted values when the quote verifies, else the served ones.
    pcrs: PcrValues,
    /// The AK's Name when the quote verifies.
    ak_name: Option<Vec<u8>>,
}

/// The AK signed the served SHA-256 PCR values with our nonce.
fn check_quote(fields: &Decoded, nonce: &[u8]) -> QuoteOutcome {
    let sha256 = fields
        .served
        .get(&HashAlg::SHA256)
        .cloned()
        .unwrap_or_default();
    match verify_quote(
        &fields.ak_public,
        &fields.attest,
        &fields.signature,
        nonce,
        TPM_ALG_SHA256,
        &sha256,
    ) {
        Ok(q) => QuoteOutcome {
            check: AttestCheck::from_result(
                CheckKind::Quote,
                Ok(format!(
                    "signed by the AK, nonce {} = extraData, pcrDigest = the {} quoted sha256 PCRs",
                    hex::encode(nonce),
                    q.pcrs.len()
                )),
            ),
            pcrs: PcrValues::from([(HashAlg::SHA256, q.pcrs)]),
            ak_name: Some(q.ak_name),
        },
        Err(e) => QuoteOutcome {
            check: AttestCheck::from_result(CheckKind::Quote, Err(VerifyError::from(e))),
            pcrs: fields.served.clone(),
            ak_name: None,
        },
    }
}

/// MakeCredential for (EK, AK Name), activated by the VM: the secret must come back.
fn check_binding(
    ek: &Result<Public>,
    ak_name: Option<&[u8]>,
    activate: Activate<'_>,
) -> AttestCheck {
    let result = match (ek, ak_name) {
        (Ok(ek), Some(name)) => activate_binding(ek, name, activate),
        (Err(e), _) => Err(VerifyError::check(e.chain())),
        (_, None) => Err(VerifyError::check(format!("not attempted: {NO_AK}"))),
    };
    AttestCheck::from_result(CheckKind::AkEkBinding, result)
}

fn activate_binding(ek: &Public, ak_name: &[u8], activate: Activate<'_>) -> Result<String> {
    let secret = random_credential();
    let made = make_credential(ek, ak_name, &secret)
        .map_err(VerifyError::from)
        .check_failed("TPM2_MakeCredential for the EK")?;
    let returned = activate(&made).check_failed(
        "the VM could not activate the credential (the AK is not bound to this EK)",
    )?;
    if returned != secret {
        return Err(VerifyError::check(
            "the VM returned another secret than the one encrypted to the EK and AK Name",
        ));
    }
    Ok(format!(
        "credential for AK {} activated by the EK's TPM",
        hex::encode(ak_name)
    ))
}

/// The boot signing key: certified by the (verified) AK for this nonce, bound to the quoted PCRs.
fn check_signing_key(
    sk: &crate::wire::SigningKeyJson,
    fields: &Decoded,
    quote: &QuoteOutcome,
    nonce: &[u8],
) -> (AttestCheck, Option<VerifiedSigningKey>) {
    let ak = Public::parse_tpm2b(&fields.ak_public);
    let (Ok(ak), Some(_)) = (&ak, &quote.ak_name) else {
        let why = format!("not checked: {NO_AK}");
        return (AttestCheck::failed(CheckKind::SigningKey, why), None);
    };
    let quoted = quote
        .pcrs
        .get(&HashAlg::SHA256)
        .cloned()
        .unwrap_or_default();
    match verify_signing_key(sk, ak, nonce, &quoted) {
        Ok(k) => {
            let detail = format!(
                "boot signing key {} certified by the AK for this nonce, usable only with the \
                 quoted PCRs 0-15, 23 (PolicyPCR)",
                k.key_hash
            );
            (
                AttestCheck::from_result(CheckKind::SigningKey, Ok(detail)),
                Some(k),
            )
        }
        Err(e) => (
            AttestCheck::from_result(CheckKind::SigningKey, Err(VerifyError::from(e))),
            None,
        ),
    }
}

/// The TEE report binds this nonce and the (verified) AK.
fn check_tee_binding(
    c: &Collaterals,
    ak_name: Option<&[u8]>,
    nonce: &[u8],
    tee: &TeeTrust,
    now_unix: u64,
) -> AttestCheck {
    match ak_name {
        Some(name) => check_tee(
            c.tee_report.as_ref(),
            &tee_report_data(nonce, name),
            tee,
            now_unix,
        ),
        None => AttestCheck::failed(CheckKind::TeeReport, format!("not checked: {NO_AK}")),
    }
}

/// The firmware log (required: nothing else explains the PCR values) and the runtime log.
fn decode_logs(c: &Collaterals) -> Result<(EventLog, Option<Vec<RuntimeEvent>>)> {
    let eventlog =
        match &c.eventlog {
            Some(log) => parse_eventlog(&b64("eventlog", log)?, "the collaterals' eventlog")?,
            None => return Err(VerifyError::malformed(
                "the collaterals have no firmware event log (eventlog is null): nothing explains \
                 the PCR values",
            )),
        };
    let runtime = match &c.runtime_eventlog {
        Some(log) => Some(parse_runtime(
            &b64("runtime_eventlog", log)?,
            "the collaterals' runtime_eventlog",
        )?),
        None => None,
    };
    Ok((eventlog, runtime))
}

/// The EK certificate chains to the trusted bundle and certifies the served EK.
fn check_ek_certificate(
    c: &Collaterals,
    ek: Option<&Public>,
    trust: &EkTrust,
    now_unix: u64,
) -> AttestCheck {
    let bundle = match trust {
        EkTrust::Insecure => {
            return AttestCheck::skipped(
                CheckKind::EkCertificate,
                "--insecure-no-ek: the EK is not known to belong to a genuine TPM",
            )
        }
        EkTrust::Ca(bundle) => bundle,
    };
    let result = (|| {
        let ek = ek.ok_or_else(|| {
            VerifyError::check("no parseable EK public area to compare the certificate with")
        })?;
        let der = match &c.ek_cert {
            Some(cert) => b64("ek_cert", cert)?,
            None => {
                return Err(VerifyError::check(
                    "the TPM has no EK certificate (ek_cert is null)",
                ))
            }
        };
        let chain = ekcert::verify_ek_certificate(&der, bundle, ek, now_unix)?;
        Ok(format!(
            "{} EK certificate chain {}",
            c.ek_type,
            chain.join(" ← ")
        ))
    })();
    AttestCheck::from_result(CheckKind::EkCertificate, result)
}

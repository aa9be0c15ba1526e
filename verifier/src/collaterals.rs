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
//! The event logs are then replayed against the quoted values by [`super::check::verify`].

use crate::attest::credential::{make_credential, random_credential, MadeCredential};
use crate::attest::quote::verify_quote;
use crate::attest::signing_key::{verify_signing_key, SigningKeyJson};
use crate::attest::tee_report_data;
use crate::attest::tpm2::{Public, TPM_ALG_SHA256};
use crate::ekcert;
use crate::evidence::{parse_eventlog, parse_runtime, Evidence, Origin, PcrValues, Quote};
use crate::tee::{check_tee, TeeReportJson, TeeTrust};
use anyhow::{bail, Context, Result};
use base64::Engine;
use cvm_measure::eventlog::HashAlg;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use x509_cert::Certificate;

/// Bytes of the verifier's nonce (the agent accepts 16–64).
pub const NONCE_LEN: usize = 32;
/// The collaterals format this verifier reads.
const COLLATERALS_VERSION: u32 = 1;
/// Agent paths (guest-agent/src/evidence.rs).
const PATH_COLLATERALS: &str = "/collaterals";
const PATH_ACTIVATE: &str = "/activate-credential";
/// Largest answer read from the agent (the firmware log of a cloud VM is ~50 KiB).
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// The `GET /collaterals` answer (binary fields base64, digests hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collaterals {
    pub version: u32,
    pub nonce: String,
    pub quote: String,
    pub signature: String,
    pub ak_public: String,
    pub pcrs: BTreeMap<String, BTreeMap<String, String>>,
    pub eventlog: Option<String>,
    pub runtime_eventlog: Option<String>,
    pub ek_type: String,
    pub ek_public: String,
    pub ek_cert: Option<String>,
    /// Absent from agents that predate it.
    #[serde(default)]
    pub tee_report: Option<TeeReportJson>,
    #[serde(default)]
    pub signing_key: Option<SigningKeyJson>,
}

/// How the EK is trusted.
#[derive(Debug, Clone)]
pub enum EkTrust {
    /// Its certificate must chain to one of these (`--ek-ca`).
    Ca(Vec<Certificate>),
    /// Not at all (`--insecure-no-ek`): the AK may belong to any TPM, even a software one.
    Insecure,
}

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
    pub fn from_result(check: CheckKind, r: Result<String>) -> Self {
        match r {
            Ok(detail) => AttestCheck {
                check,
                status: CheckStatus::Ok,
                detail,
            },
            Err(e) => AttestCheck {
                check,
                status: CheckStatus::Failed,
                detail: format!("{e:#}"),
            },
        }
    }
}

/// A fresh random nonce from the OS.
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut n);
    n
}

fn b64(field: &str, value: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .with_context(|| format!("collaterals field {field} is not base64"))
}

/// The HTTP client for agents: never through a proxy (the agent is usually a forwarded loopback port,
/// and an `http_proxy` of a build machine must not capture it); non-2xx statuses are answers, not
/// transport errors; `timeout` bounds each whole request.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build();
    ureq::Agent::new_with_config(config)
}

/// Reads a response body; an error naming `what` unless the status is 2xx.
pub(crate) fn body(mut resp: ureq::http::Response<ureq::Body>, what: &str) -> Result<Vec<u8>> {
    let status = resp.status().as_u16();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .with_context(|| format!("reading the answer of {what}"))?;
    if !(200..300).contains(&status) {
        bail!(
            "{what}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        );
    }
    Ok(bytes)
}

/// `GET base/collaterals?nonce=HEX`, parsed.
pub fn fetch_collaterals(base: &str, nonce: &[u8], timeout: Duration) -> Result<Collaterals> {
    let url = format!("{base}{PATH_COLLATERALS}?nonce={}", hex::encode(nonce));
    let resp = http_agent(timeout).get(&url).call().with_context(|| {
        format!("GET {url} (is the VM running? `cvm-image run` prints the agent URL)")
    })?;
    let bytes = body(resp, &format!("GET {url}"))?;
    let c: Collaterals = serde_json::from_slice(&bytes).with_context(|| {
        format!("GET {url}: not the collaterals JSON of docs/attestation-api.md")
    })?;
    if c.version != COLLATERALS_VERSION {
        bail!(
            "GET {url}: collaterals version {}, this verifier reads {COLLATERALS_VERSION}",
            c.version
        );
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
    let request = serde_json::json!({
        "credential_blob": engine.encode(&made.credential_blob),
        "secret": engine.encode(&made.secret),
    });
    let resp = http_agent(timeout)
        .post(&url)
        .header("Content-Type", "application/json")
        .send(request.to_string())
        .with_context(|| format!("POST {url}"))?;
    let bytes = body(resp, &format!("POST {url}"))?;
    #[derive(Deserialize)]
    struct Answer {
        cert_info: String,
    }
    let a: Answer = serde_json::from_slice(&bytes)
        .with_context(|| format!("POST {url}: expected {{\"cert_info\": base64}}"))?;
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
/// [`Evidence::attestation`].
pub fn check_collaterals(
    c: &Collaterals,
    nonce: &[u8],
    trust: &EkTrust,
    tee: &TeeTrust,
    activate: &dyn Fn(&MadeCredential) -> Result<Vec<u8>>,
    now_unix: u64,
    origin: Origin,
) -> Result<Evidence> {
    let attest = b64("quote", &c.quote)?;
    let signature = b64("signature", &c.signature)?;
    let ak_public = b64("ak_public", &c.ak_public)?;
    let served = parse_served_pcrs(&c.pcrs)?;
    let sha256 = served.get(&HashAlg::SHA256).cloned().unwrap_or_default();

    let mut checks = vec![];
    let quoted = verify_quote(
        &ak_public,
        &attest,
        &signature,
        nonce,
        TPM_ALG_SHA256,
        &sha256,
    );
    let ak = Public::parse_tpm2b(&ak_public);
    let (pcrs, ak_name) = match quoted {
        Ok(q) => {
            checks.push(AttestCheck::from_result(
                CheckKind::Quote,
                Ok(format!(
                    "signed by the AK, nonce {} = extraData, pcrDigest = the {} quoted sha256 PCRs",
                    hex::encode(nonce),
                    q.pcrs.len()
                )),
            ));
            let ak_name = q.ak_name.clone();
            (PcrValues::from([(HashAlg::SHA256, q.pcrs)]), Some(ak_name))
        }
        Err(e) => {
            checks.push(AttestCheck::from_result(CheckKind::Quote, Err(e.into())));
            (served, None)
        }
    };

    let ek_public = b64("ek_public", &c.ek_public)?;
    let ek = Public::parse_tpm2b(&ek_public)
        .context("collaterals field ek_public: not an EK TPM2B_PUBLIC");
    let binding = match (&ek, &ak_name) {
        (Ok(ek), Some(name)) => check_binding(ek, name, activate),
        (Err(e), _) => Err(anyhow::anyhow!("{e:#}")),
        (_, None) => Err(anyhow::anyhow!(
            "not attempted: the quote (and so the AK) did not verify"
        )),
    };
    checks.push(AttestCheck::from_result(CheckKind::AkEkBinding, binding));
    checks.push(check_ek_certificate(c, ek.as_ref().ok(), trust, now_unix));
    let signing_key = match (&c.signing_key, &ak, &ak_name) {
        (Some(sk), Ok(ak), Some(_)) => {
            let quoted = pcrs.get(&HashAlg::SHA256).cloned().unwrap_or_default();
            let verified = verify_signing_key(sk, ak, nonce, &quoted);
            checks.push(AttestCheck::from_result(
                CheckKind::SigningKey,
                verified
                    .as_ref()
                    .map(|k| {
                        format!(
                        "boot signing key {} certified by the AK for this nonce, usable only with \
                         the quoted PCRs 0-15, 23 (PolicyPCR)",
                        k.key_hash
                    )
                    })
                    .map_err(|e| anyhow::anyhow!("{e:#}")),
            ));
            verified.ok()
        }
        (Some(_), _, _) => {
            checks.push(AttestCheck::from_result(
                CheckKind::SigningKey,
                Err(anyhow::anyhow!(
                    "not checked: the quote (and so the AK) did not verify"
                )),
            ));
            None
        }
        (None, _, _) => None,
    };
    checks.push(match &ak_name {
        Some(name) => check_tee(
            c.tee_report.as_ref(),
            &tee_report_data(nonce, name),
            tee,
            now_unix,
        ),
        None => AttestCheck::from_result(
            CheckKind::TeeReport,
            Err(anyhow::anyhow!(
                "not checked: the quote (and so the AK) did not verify"
            )),
        ),
    });

    let eventlog = match &c.eventlog {
        Some(log) => parse_eventlog(&b64("eventlog", log)?, "the collaterals' eventlog")?,
        None => bail!("the collaterals have no firmware event log (eventlog is null): nothing explains the PCR values"),
    };
    let runtime = match &c.runtime_eventlog {
        Some(log) => Some(parse_runtime(
            &b64("runtime_eventlog", log)?,
            "the collaterals' runtime_eventlog",
        )?),
        None => None,
    };
    Ok(Evidence {
        origin,
        pcrs,
        eventlog,
        runtime,
        quote: Some(Quote {
            attest,
            signature,
            ak_public,
            nonce: nonce.to_vec(),
        }),
        attestation: checks,
        signing_key,
    })
}

fn parse_served_pcrs(pcrs: &BTreeMap<String, BTreeMap<String, String>>) -> Result<PcrValues> {
    let json = serde_json::to_vec(pcrs).context("re-encoding the collaterals' pcrs")?;
    crate::evidence::parse_pcrs(&json, "the collaterals' pcrs")
}

/// MakeCredential for (EK, AK Name), activated by the VM: the secret must come back.
fn check_binding(
    ek: &Public,
    ak_name: &[u8],
    activate: &dyn Fn(&MadeCredential) -> Result<Vec<u8>>,
) -> Result<String> {
    let secret = random_credential();
    let made = make_credential(ek, ak_name, &secret).context("TPM2_MakeCredential for the EK")?;
    let returned = activate(&made)
        .context("the VM could not activate the credential (the AK is not bound to this EK)")?;
    if returned != secret {
        bail!("the VM returned another secret than the one encrypted to the EK and AK Name");
    }
    Ok(format!(
        "credential for AK {} activated by the EK's TPM",
        hex::encode(ak_name)
    ))
}

fn check_ek_certificate(
    c: &Collaterals,
    ek: Option<&Public>,
    trust: &EkTrust,
    now_unix: u64,
) -> AttestCheck {
    let bundle = match trust {
        EkTrust::Insecure => {
            return AttestCheck {
                check: CheckKind::EkCertificate,
                status: CheckStatus::Skipped,
                detail: "--insecure-no-ek: the EK is not known to belong to a genuine TPM".into(),
            }
        }
        EkTrust::Ca(bundle) => bundle,
    };
    let result = (|| {
        let ek = ek.context("no parseable EK public area to compare the certificate with")?;
        let der = match &c.ek_cert {
            Some(cert) => b64("ek_cert", cert)?,
            None => bail!("the TPM has no EK certificate (ek_cert is null)"),
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

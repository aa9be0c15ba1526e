//! Intel TDX quote verification (DCAP, offline, pure Rust).
//!
//! A TD quote (Intel TDX DCAP Quote Generation Library and Quote Verification Library spec,
//! "Quote Format") is a 48-byte header, the 584-byte TD report body (v4; v5 adds a 6-byte
//! body descriptor and the TDX 1.5 fields), then the signature data: the attestation key's ECDSA
//! P-256 signature over header ‖ body, the attestation key, and the Quoting Enclave (QE) report,
//! signed by the platform's PCK certificate, whose chain ends at the Intel SGX Root CA.
//!
//! [`verify_quote`] runs the whole DCAP appraisal through `dcap-qvl` (RustCrypto backend,
//! Intel SGX Root CA pinned inside dcap-qvl): PCK chain and both CRLs, TCB info and QE identity
//! signatures, QE report signature and binding to the attestation key, the TD report signature,
//! QE identity policy and the platform/TDX-module TCB level. Collateral is always passed in (no
//! network), and "now" is an argument, so a verdict is reproducible.
//!
//! The TCB status is returned, not judged: `OutOfDate` & co. are facts about the platform that
//! the caller's policy weighs. Only what dcap-qvl treats as a hard failure is an error
//! (bad signatures or chains, expired collateral, `Revoked`, and the TD attribute checks noted
//! on [`verify_quote`]).
//!
//! Runtime measurements: the CC event log (ACPI `CCEL`) is replayed with
//! [`replay_ccel_rtmrs`] and compared with the quote's RTMRs by [`check_rtmrs`].

use std::fmt;

use super::error::{bail, ensure, Classify, Context, Error, Result};
use chrono::{DateTime, SecondsFormat};
use cvm_measure::eventlog::{self, EventLog, HashAlg, Registers};
use dcap_qvl::configs::RustCryptoConfig;
use dcap_qvl::quote::{Quote, Report, TDReport10};
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::{QuoteClaims, QuoteCollateralV3};
use der08::Decode as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha384};

/// Quote header length (`sgx_quote4_header_t` / `sgx_quote5_header_t`).
const HEADER_LEN: usize = 48;
/// Offset of `tee_type` (u32 LE) in the header.
const HEADER_TEE_TYPE_OFFSET: usize = 4;
/// `tee_type` of a TDX quote (0 is SGX).
const TEE_TYPE_TDX: u32 = 0x81;
/// Quote versions that carry a TD report: 4 (TDX 1.0 body) and 5 (typed body).
const TDX_QUOTE_VERSIONS: [u16; 2] = [4, 5];
/// Offset of `attestation_key_type` (u16 LE) in the header.
const HEADER_ATT_KEY_TYPE_OFFSET: usize = 2;
/// `attestation_key_type` 2 = ECDSA-256-with-P-256 curve, the only type Intel's TDQE produces.
const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
/// Size of the `signature_data_len` (u32 LE) field that follows the report body.
const SIGNATURE_DATA_LEN_SIZE: usize = 4;
/// Raw ECDSA P-256 signature length (r ‖ s) of the TCB info / QE identity signatures.
const ECDSA_P256_RAW_SIG_LEN: usize = 64;
/// RTMR / MR register size (SHA-384).
pub const MR_LEN: usize = 48;
/// Number of runtime measurement registers (RTMR0–3).
pub const RTMR_COUNT: usize = 4;
/// `REPORTDATA` size in the TD report.
pub const REPORT_DATA_LEN: usize = 64;
/// First CC MR index that names an RTMR in a CC event log (1 = RTMR0 … 4 = RTMR3; 0 = MRTD,
/// which only the TDX module extends, at build time, so it never appears in a CCEL).
const CCEL_FIRST_RTMR_INDEX: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Quote body
// ---------------------------------------------------------------------------------------------

/// The TD report body of a quote (TDX module ABI `TDREPORT_STRUCT`-derived `TD_REPORT` fields).
///
/// Every byte field is serialised as lower-case hex, in quote byte order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxQuoteBody {
    /// Quote format version (4 or 5).
    pub version: u16,
    /// TEE_TCB_SVN: the TDX module's TCB SVN at TD launch.
    #[serde(with = "hex_array")]
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: measurement of the TDX module.
    #[serde(with = "hex_array")]
    pub mr_seam: [u8; MR_LEN],
    /// MRSIGNERSEAM: signer of the TDX module (zero for Intel's module).
    #[serde(with = "hex_array")]
    pub mr_signer_seam: [u8; MR_LEN],
    #[serde(with = "hex_array")]
    pub seam_attributes: [u8; 8],
    /// TD_ATTRIBUTES (bit 0 DEBUG, bit 28 SEPT_VE_DISABLE, …), little-endian u64 bytes.
    #[serde(with = "hex_array")]
    pub td_attributes: [u8; 8],
    /// XFAM: extended CPU features enabled for the TD.
    #[serde(with = "hex_array")]
    pub xfam: [u8; 8],
    /// MRTD: measurement of the initial TD contents (the TDVF/firmware image).
    #[serde(with = "hex_array")]
    pub mr_td: [u8; MR_LEN],
    #[serde(with = "hex_array")]
    pub mr_config_id: [u8; MR_LEN],
    #[serde(with = "hex_array")]
    pub mr_owner: [u8; MR_LEN],
    #[serde(with = "hex_array")]
    pub mr_owner_config: [u8; MR_LEN],
    /// RTMR0–3, the runtime-extendable registers the CC event log replays to.
    #[serde(with = "hex_rtmrs")]
    pub rtmr: [[u8; MR_LEN]; RTMR_COUNT],
    /// REPORTDATA: 64 bytes chosen by the TD (nonce / key binding).
    #[serde(with = "hex_array")]
    pub report_data: [u8; REPORT_DATA_LEN],
    /// TEE_TCB_SVN2 (TDX 1.5 body, quote v5 only): the module's current TCB SVN.
    #[serde(
        with = "hex_option_array",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// MRSERVICETD (TDX 1.5 body, quote v5 only): hash of the bound service TDs.
    #[serde(
        with = "hex_option_array",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mr_servicetd: Option<[u8; MR_LEN]>,
}

impl TdxQuoteBody {
    fn from_report(version: u16, report: &Report) -> Result<Self> {
        let (base, v15) = match report {
            Report::TD10(r) => (r, None),
            Report::TD15(r) => (&r.base, Some((r.tee_tcb_svn2, r.mr_service_td))),
            Report::TD15Ex(r) => (
                &r.base.base,
                Some((r.base.tee_tcb_svn2, r.base.mr_service_td)),
            ),
            Report::SgxEnclave(_) => {
                bail!(
                    Malformed,
                    "TDX quote: body is an SGX enclave report, not a TD report"
                )
            }
        };
        Ok(Self::from_td10(version, base, v15))
    }

    fn from_td10(version: u16, r: &TDReport10, v15: Option<([u8; 16], [u8; MR_LEN])>) -> Self {
        TdxQuoteBody {
            version,
            tee_tcb_svn: r.tee_tcb_svn,
            mr_seam: r.mr_seam,
            mr_signer_seam: r.mr_signer_seam,
            seam_attributes: r.seam_attributes,
            td_attributes: r.td_attributes,
            xfam: r.xfam,
            mr_td: r.mr_td,
            mr_config_id: r.mr_config_id,
            mr_owner: r.mr_owner,
            mr_owner_config: r.mr_owner_config,
            rtmr: [r.rt_mr0, r.rt_mr1, r.rt_mr2, r.rt_mr3],
            report_data: r.report_data,
            tee_tcb_svn2: v15.map(|(svn2, _)| svn2),
            mr_servicetd: v15.map(|(_, servicetd)| servicetd),
        }
    }
}

/// Check the header fields that make `bytes` a TDX ECDSA quote, before handing it to the
/// generic decoder (whose errors do not say *which* field is wrong).
fn check_tdx_header(bytes: &[u8]) -> Result<u16> {
    let header = bytes.get(..HEADER_LEN).or_err_with(Error::Malformed, || {
        format!(
            "TDX quote: {} bytes is shorter than the {HEADER_LEN}-byte quote header",
            bytes.len()
        )
    })?;
    let version = u16::from_le_bytes([header[0], header[1]]);
    let key_type = u16::from_le_bytes([
        header[HEADER_ATT_KEY_TYPE_OFFSET],
        header[HEADER_ATT_KEY_TYPE_OFFSET + 1],
    ]);
    let tee_type = u32::from_le_bytes(
        header[HEADER_TEE_TYPE_OFFSET..HEADER_TEE_TYPE_OFFSET + 4]
            .try_into()
            .or_err(Error::Malformed, "TDX quote: header tee_type")?,
    );
    ensure!(
        tee_type == TEE_TYPE_TDX,
        Malformed,
        "TDX quote: header tee_type is {tee_type:#x}, expected {TEE_TYPE_TDX:#x} (TDX); \
         0x0 is an SGX quote"
    );
    ensure!(
        TDX_QUOTE_VERSIONS.contains(&version),
        Unsupported,
        "TDX quote: version {version} is not supported (TDX quotes are version 4 or 5)"
    );
    ensure!(
        key_type == ATT_KEY_TYPE_ECDSA_P256,
        Unsupported,
        "TDX quote: attestation key type {key_type} is not supported (expected \
         {ATT_KEY_TYPE_ECDSA_P256} = ECDSA P-256)"
    );
    Ok(version)
}

/// Decode the quote structure (header, body, signature data), ignoring bytes after its end,
/// and return it with its length: header, body, `signature_data_len` and the signature data.
fn decode_quote(bytes: &[u8]) -> Result<(Quote, usize)> {
    check_tdx_header(bytes)?;
    let quote = Quote::parse(bytes).or_err(
        Error::Malformed,
        "TDX quote: malformed quote structure (header, TD report or signature data)",
    )?;
    let signed = quote.signed_length();
    let len_field: [u8; SIGNATURE_DATA_LEN_SIZE] = bytes
        .get(signed..signed + SIGNATURE_DATA_LEN_SIZE)
        .and_then(|field| field.try_into().ok())
        .or_err(
            Error::Malformed,
            "TDX quote: truncated before signature_data_len",
        )?;
    let sig_len = u32::from_le_bytes(len_field) as usize;
    let total = signed + SIGNATURE_DATA_LEN_SIZE + sig_len;
    ensure!(
        total <= bytes.len(),
        Malformed,
        "TDX quote: signature data ({sig_len} bytes) runs past the end of the {}-byte input",
        bytes.len()
    );
    Ok((quote, total))
}

/// Length of the quote at the start of `bytes`. Quotes read from configfs-tsm or copied by
/// tools are often padded; the padding is neither signed nor part of the quote.
pub fn quote_len(bytes: &[u8]) -> Result<usize> {
    decode_quote(bytes).map(|(_, len)| len)
}

/// Parse a TDX quote (v4 or v5) and return its TD report body. Trailing bytes after the quote
/// are ignored. This does **not** verify anything; use [`verify_quote`].
pub fn parse_quote(bytes: &[u8]) -> Result<TdxQuoteBody> {
    let (quote, _) = decode_quote(bytes)?;
    TdxQuoteBody::from_report(quote.header.version, &quote.report)
}

// ---------------------------------------------------------------------------------------------
// Collateral
// ---------------------------------------------------------------------------------------------

/// The DCAP collateral a TDX quote is appraised against (Intel PCS v4 / PCCS), in the JSON
/// shape of dcap-qvl's `QuoteCollateralV3`: PEM chains and JSON documents as strings, CRLs (DER)
/// and the raw r‖s signatures as hex.
///
/// `tcb_info` and `qe_identity` are the exact bytes Intel signed (the inner JSON object of the
/// PCS response); re-serialising them would break their signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxCollateral {
    /// PEM: Intel SGX PCK Platform/Processor CA, Intel SGX Root CA (issuer of `pck_crl`).
    pub pck_crl_issuer_chain: String,
    /// DER: Intel SGX Root CA CRL.
    #[serde(with = "hex_bytes")]
    pub root_ca_crl: Vec<u8>,
    /// DER: PCK CA CRL (revokes PCK leaf certificates).
    #[serde(with = "hex_bytes")]
    pub pck_crl: Vec<u8>,
    /// PEM: Intel SGX TCB Signing certificate, Intel SGX Root CA.
    pub tcb_info_issuer_chain: String,
    /// JSON text of the `tcbInfo` object, byte-exact as signed.
    pub tcb_info: String,
    /// Raw ECDSA P-256 r‖s over `tcb_info`.
    #[serde(with = "hex_bytes")]
    pub tcb_info_signature: Vec<u8>,
    /// PEM: signer chain of the QE identity (the same TCB Signing chain at Intel).
    pub qe_identity_issuer_chain: String,
    /// JSON text of the `enclaveIdentity` object (TD_QE), byte-exact as signed.
    pub qe_identity: String,
    /// Raw ECDSA P-256 r‖s over `qe_identity`.
    #[serde(with = "hex_bytes")]
    pub qe_identity_signature: Vec<u8>,
}

/// Intel PCS v4 `GET /tdx/certification/v4/tcb` response body.
#[derive(Deserialize)]
struct PcsTcbInfoResponse<'a> {
    #[serde(rename = "tcbInfo", borrow)]
    tcb_info: &'a RawValue,
    signature: String,
}

/// Intel PCS v4 `GET /tdx/certification/v4/qe/identity` response body.
#[derive(Deserialize)]
struct PcsQeIdentityResponse<'a> {
    #[serde(rename = "enclaveIdentity", borrow)]
    enclave_identity: &'a RawValue,
    signature: String,
}

/// Validity of one collateral item: `[not_before, not_after)` in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Validity {
    what: &'static str,
    not_before: u64,
    not_after: Option<u64>,
}

/// The part of the TCB info / QE identity JSON that dates it.
#[derive(Deserialize)]
struct SignedJsonDates {
    #[serde(rename = "issueDate")]
    issue_date: String,
    #[serde(rename = "nextUpdate")]
    next_update: String,
}

impl TdxCollateral {
    /// Load dcap-qvl's single-JSON collateral (`QuoteCollateralV3`, e.g. its
    /// `sample/tdx_quote_collateral.json` or what its `get_collateral` returns serialised).
    /// A `pck_certificate_chain` member, if present, is ignored: the PCK chain is always taken
    /// from the quote itself.
    pub fn from_dcap_qvl_json(bytes: &[u8]) -> Result<Self> {
        let collateral: TdxCollateral = serde_json::from_slice(bytes).or_err(
            Error::Malformed,
            "TDX collateral: not dcap-qvl QuoteCollateralV3 JSON",
        )?;
        collateral.validate()?;
        Ok(collateral)
    }

    /// Assemble collateral from Intel PCS v4 response bodies:
    /// * `tcb_info_json`: `/tdx/certification/v4/tcb?fmspc=…` body `{"tcbInfo":{…},"signature":"hex"}`;
    /// * `qe_identity_json`: `/tdx/certification/v4/qe/identity` body `{"enclaveIdentity":{…},"signature":"hex"}`;
    /// * `tcb_qe_issuer_chain_pem`: the `TCB-Info-Issuer-Chain` (= `SGX-Enclave-Identity-Issuer-Chain`)
    ///   header, URL-decoded to PEM;
    /// * `pck_crl_der`: `/sgx/certification/v4/pckcrl?ca=platform|processor&encoding=der` body;
    /// * `pck_crl_issuer_chain_pem`: its `SGX-PCK-CRL-Issuer-Chain` header, URL-decoded;
    /// * `root_ca_crl_der`: the Intel SGX Root CA CRL (DER).
    pub fn from_pcs_files(
        tcb_info_json: &[u8],
        qe_identity_json: &[u8],
        tcb_qe_issuer_chain_pem: &[u8],
        pck_crl_der: &[u8],
        pck_crl_issuer_chain_pem: &[u8],
        root_ca_crl_der: &[u8],
    ) -> Result<Self> {
        let tcb: PcsTcbInfoResponse = serde_json::from_slice(tcb_info_json).or_err(
            Error::Malformed,
            "TDX collateral: TCB info is not a PCS v4 {\"tcbInfo\":…,\"signature\":…} body",
        )?;
        let qe: PcsQeIdentityResponse = serde_json::from_slice(qe_identity_json).or_err(Error::Malformed,
            "TDX collateral: QE identity is not a PCS v4 {\"enclaveIdentity\":…,\"signature\":…} body",
        )?;
        let signing_chain = pem_text(
            tcb_qe_issuer_chain_pem,
            "TCB info / QE identity issuer chain",
        )?;
        let collateral = TdxCollateral {
            pck_crl_issuer_chain: pem_text(pck_crl_issuer_chain_pem, "PCK CRL issuer chain")?,
            root_ca_crl: root_ca_crl_der.to_vec(),
            pck_crl: pck_crl_der.to_vec(),
            tcb_info_issuer_chain: signing_chain.clone(),
            tcb_info: tcb.tcb_info.get().to_owned(),
            tcb_info_signature: hex::decode(&tcb.signature).or_err(
                Error::Malformed,
                "TDX collateral: TCB info signature is not hex",
            )?,
            qe_identity_issuer_chain: signing_chain,
            qe_identity: qe.enclave_identity.get().to_owned(),
            qe_identity_signature: hex::decode(&qe.signature).or_err(
                Error::Malformed,
                "TDX collateral: QE identity signature is not hex",
            )?,
        };
        collateral.validate()?;
        Ok(collateral)
    }

    /// Cheap structural checks so a bad file is named at load time, not deep inside DCAP.
    fn validate(&self) -> Result<()> {
        for (sig, what) in [
            (&self.tcb_info_signature, "TCB info"),
            (&self.qe_identity_signature, "QE identity"),
        ] {
            ensure!(
                sig.len() == ECDSA_P256_RAW_SIG_LEN, Malformed,
                "TDX collateral: {what} signature is {} bytes, expected {ECDSA_P256_RAW_SIG_LEN} (raw ECDSA P-256 r‖s)",
                sig.len()
            );
        }
        for (pem, what) in [
            (&self.pck_crl_issuer_chain, "PCK CRL issuer chain"),
            (&self.tcb_info_issuer_chain, "TCB info issuer chain"),
            (&self.qe_identity_issuer_chain, "QE identity issuer chain"),
        ] {
            ensure!(
                pem.contains("-----BEGIN CERTIFICATE-----"),
                Malformed,
                "TDX collateral: {what} contains no PEM certificate"
            );
        }
        self.validities().map(|_| ())
    }

    /// Dates of the four dated items (Intel QVL's collateral window, minus the certificates,
    /// whose validity the chain verification checks itself).
    fn validities(&self) -> Result<[Validity; 4]> {
        Ok([
            json_validity(&self.tcb_info, "TCB info")?,
            json_validity(&self.qe_identity, "QE identity")?,
            crl_validity(&self.pck_crl, "PCK CRL")?,
            crl_validity(&self.root_ca_crl, "root CA CRL")?,
        ])
    }

    /// `[start, end)` in unix seconds during which every dated item is current: the latest
    /// issue date / `thisUpdate` and the earliest `nextUpdate`. Verify within it; refresh the
    /// collateral before `end`.
    pub fn validity_window(&self) -> Result<(u64, u64)> {
        let items = self.validities()?;
        let start = items.iter().map(|v| v.not_before).max().unwrap_or(0);
        let end = items
            .iter()
            .filter_map(|v| v.not_after)
            .min()
            .unwrap_or(u64::MAX);
        Ok((start, end))
    }

    /// Fail with the item that makes the collateral stale (or not yet valid) at `now`.
    fn check_current(&self, now: u64) -> Result<()> {
        let items = self.validities()?;
        if let Some(v) = items
            .iter()
            .filter(|v| v.not_after.is_some_and(|end| now >= end))
            .min_by_key(|v| v.not_after)
        {
            bail!(
                Tcb,
                "TDX quote: collateral expired at {} ({} nextUpdate); verification time is {} — \
                 fetch current collateral from Intel PCS or the PCCS",
                Rfc3339(v.not_after.unwrap_or_default()),
                v.what,
                Rfc3339(now)
            );
        }
        if let Some(v) = items
            .iter()
            .filter(|v| now < v.not_before)
            .max_by_key(|v| v.not_before)
        {
            bail!(Tcb,
                "TDX quote: collateral not valid before {} ({} issue date); verification time is {} — \
                 check the verifier's clock",
                Rfc3339(v.not_before),
                v.what,
                Rfc3339(now)
            );
        }
        Ok(())
    }

    fn to_dcap_qvl(&self) -> QuoteCollateralV3 {
        QuoteCollateralV3 {
            pck_crl_issuer_chain: self.pck_crl_issuer_chain.clone(),
            root_ca_crl: self.root_ca_crl.clone(),
            pck_crl: self.pck_crl.clone(),
            tcb_info_issuer_chain: self.tcb_info_issuer_chain.clone(),
            tcb_info: self.tcb_info.clone(),
            tcb_info_signature: self.tcb_info_signature.clone(),
            qe_identity_issuer_chain: self.qe_identity_issuer_chain.clone(),
            qe_identity: self.qe_identity.clone(),
            qe_identity_signature: self.qe_identity_signature.clone(),
            // Always the chain embedded in the quote (certification data type 5).
            pck_certificate_chain: None,
        }
    }
}

fn pem_text(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).or_err_with(Error::Malformed, || {
        format!("TDX collateral: {what} is not UTF-8 PEM text")
    })
}

fn json_validity(json: &str, what: &'static str) -> Result<Validity> {
    let dates: SignedJsonDates = serde_json::from_str(json)
        .or_err_with(Error::Malformed, || {
            format!("TDX collateral: {what} JSON has no issueDate/nextUpdate")
        })?;
    Ok(Validity {
        what,
        not_before: parse_rfc3339(&dates.issue_date)
            .with_context(|| format!("TDX collateral: {what} issueDate"))?,
        not_after: Some(
            parse_rfc3339(&dates.next_update)
                .with_context(|| format!("TDX collateral: {what} nextUpdate"))?,
        ),
    })
}

fn crl_validity(der: &[u8], what: &'static str) -> Result<Validity> {
    let crl = x509_cert03::crl::CertificateList::<x509_cert03::certificate::Rfc5280>::from_der(der)
        .or_err_with(Error::Malformed, || {
            format!("TDX collateral: {what} is not a DER X.509 CRL (from Intel PCS, request encoding=der)")
        })?;
    let tbs = &crl.tbs_cert_list;
    Ok(Validity {
        what,
        not_before: tbs.this_update.to_unix_duration().as_secs(),
        not_after: tbs.next_update.map(|t| t.to_unix_duration().as_secs()),
    })
}

fn parse_rfc3339(text: &str) -> Result<u64> {
    let secs = DateTime::parse_from_rfc3339(text)
        .map_err(|e| Error::Malformed(format!("{text:?} is not an RFC 3339 date: {e}")))?
        .timestamp();
    u64::try_from(secs).or_err_with(Error::Malformed, || format!("{text} is before 1970"))
}

/// Unix seconds shown as `YYYY-MM-DDTHH:MM:SSZ` in messages.
struct Rfc3339(u64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match i64::try_from(self.0)
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
        {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            None => write!(f, "unix {}", self.0),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// The outcome of a successful DCAP verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxVerdict {
    pub body: TdxQuoteBody,
    /// Converged platform + QE (+ TDX module) TCB status, Intel's names: `UpToDate`,
    /// `SWHardeningNeeded`, `ConfigurationNeeded`, `ConfigurationAndSWHardeningNeeded`,
    /// `OutOfDate`, `OutOfDateConfigurationNeeded`, `TDRelaunchAdvised`,
    /// `TDRelaunchAdvisedConfigurationNeeded`. (`Revoked` is an error.)
    pub tcb_status: String,
    /// Intel security advisories (`INTEL-SA-…`) that apply to the matched TCB levels.
    pub advisory_ids: Vec<String>,
    /// FMSPC from the PCK certificate, upper-case hex (as Intel PCS writes it).
    pub fmspc: String,
    /// The lower of the TCB info and QE identity `tcbEvaluationDataNumber`s: how recent Intel's
    /// TCB recovery data behind this verdict is.
    pub tcb_evaluation_data_number: u32,
}

/// Fully verify a TDX quote against `collateral` at `now_unix` (seconds).
///
/// The collateral must be current: `now_unix` inside [`TdxCollateral::validity_window`]
/// (half-open: a `nextUpdate` instant is already stale), checked first so the error names the
/// stale item; dcap-qvl checks the same dates again, plus every certificate's validity.
///
/// Errors name the failing step. Besides cryptographic and freshness failures, dcap-qvl 0.7.1
/// rejects — with no switch to disable it — a TD whose attributes show DEBUG or profiling, set
/// reserved bits, MIGRATABLE, SERVTD_EXT, a non-zero MRSERVICETD, or lack SEPT_VE_DISABLE.
pub fn verify_quote(quote: &[u8], collateral: &TdxCollateral, now_unix: u64) -> Result<TdxVerdict> {
    let (parsed, len) = decode_quote(quote)?;
    let quote = &quote[..len];
    let body = TdxQuoteBody::from_report(parsed.header.version, &parsed.report)?;
    collateral.check_current(now_unix)?;
    let claims = QuoteVerifier::new_prod()
        .with_config::<RustCryptoConfig>()
        .verify_with_policy(
            quote,
            collateral.to_dcap_qvl(),
            now_unix,
            &AcceptAnyTcbStatus,
        )
        .or_err_with(Error::Dcap, || {
            format!(
                "TDX quote: DCAP verification failed at {}",
                Rfc3339(now_unix)
            )
        })?;
    verdict_from_claims(body, &claims)
}

/// dcap-qvl applies a policy after the cryptographic checks; ours accepts every status it
/// returns, so the caller's policy sees the status instead of an error.
struct AcceptAnyTcbStatus;

impl dcap_qvl::Policy for AcceptAnyTcbStatus {
    fn validate(&self, _claims: &QuoteClaims) -> anyhow::Result<()> {
        Ok(())
    }
}

fn verdict_from_claims(body: TdxQuoteBody, claims: &QuoteClaims) -> Result<TdxVerdict> {
    // The verified body must be the one we parsed (same bytes, same decoder); cheap insurance.
    let verified = TdxQuoteBody::from_report(body.version, &claims.report)?;
    ensure!(
        verified == body,
        Mismatch,
        "TDX quote: verified report differs from the parsed body"
    );
    Ok(TdxVerdict {
        body,
        tcb_status: claims.tcb.status.to_string(),
        advisory_ids: claims.tcb.advisory_ids.clone(),
        fmspc: hex::encode_upper(claims.platform.pck.fmspc),
        tcb_evaluation_data_number: claims.tcb.eval_data_number,
    })
}

/// Check that the quote carries the expected REPORTDATA (nonce or key binding).
pub fn check_report_data(body: &TdxQuoteBody, expected: &[u8; REPORT_DATA_LEN]) -> Result<()> {
    ensure!(
        &body.report_data == expected,
        Nonce,
        "TDX quote: report_data is {}, expected {} — the quote was not made for this request",
        hex::encode(body.report_data),
        hex::encode(expected)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CC event log (CCEL) replay
// ---------------------------------------------------------------------------------------------

/// Replay a TDX CC event log (the ACPI `CCEL` area, TCG crypto-agile format whose index field is
/// the CC MR index) into RTMR0–3: each RTMR starts at 48 zero bytes and is extended
/// `RTMR = SHA-384(RTMR ‖ digest)` with the SHA-384 digest of every event of MR index i+1,
/// EV_NO_ACTION excepted. Event data is never re-hashed; [`check_rtmrs`] ties the result to a
/// quote.
pub fn replay_ccel_rtmrs(ccel_log_bytes: &[u8]) -> Result<[[u8; MR_LEN]; RTMR_COUNT]> {
    let log = eventlog::parse_as(ccel_log_bytes, Registers::CcMr)
        .or_err(Error::Malformed, "CC event log: cannot parse")?;
    replay_rtmrs(&log)
}

fn replay_rtmrs(log: &EventLog) -> Result<[[u8; MR_LEN]; RTMR_COUNT]> {
    let mut rtmrs = [[0u8; MR_LEN]; RTMR_COUNT];
    for (i, event) in log
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_extended())
    {
        let record = log.record_number(i);
        let slot = rtmr_slot(event.pcr).or_err_with(Error::Malformed, || {
            format!(
                "CC event log record {record}: MR index {} is not an RTMR (1–4)",
                event.pcr
            )
        })?;
        let digest = event
            .digest(HashAlg::SHA384)
            .or_err_with(Error::Malformed, || {
                format!("CC event log record {record}: no SHA-384 digest")
            })?;
        let mut h = Sha384::new();
        h.update(rtmrs[slot]);
        h.update(digest);
        rtmrs[slot] = h.finalize().into();
    }
    Ok(rtmrs)
}

fn rtmr_slot(mr_index: u32) -> Option<usize> {
    let slot = mr_index.checked_sub(CCEL_FIRST_RTMR_INDEX)? as usize;
    (slot < RTMR_COUNT).then_some(slot)
}

/// Compare the quote's RTMRs with replayed values; the error names the first that differs.
pub fn check_rtmrs(body: &TdxQuoteBody, replayed: &[[u8; MR_LEN]; RTMR_COUNT]) -> Result<()> {
    for (i, (quoted, replayed)) in body.rtmr.iter().zip(replayed).enumerate() {
        ensure!(
            quoted == replayed,
            Mismatch,
            "TDX quote: RTMR{i} is {} but the CC event log replays to {} — the log does not \
             describe this TD's boot",
            hex::encode(quoted),
            hex::encode(replayed)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Serde helpers: bytes as lower-case hex
// ---------------------------------------------------------------------------------------------

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        decode(&String::deserialize(d)?)
    }

    /// `N` bytes from hex, the failure reported through the deserializer's own error type.
    pub fn decode<E: serde::de::Error, const N: usize>(text: &str) -> Result<[u8; N], E> {
        let bytes = hex::decode(text).map_err(E::custom)?;
        let len = bytes.len();
        bytes
            .try_into()
            .map_err(|_| E::custom(format!("expected {N} bytes of hex, got {len}")))
    }
}

mod hex_option_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(
        v: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&hex::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| super::hex_array::decode(&text))
            .transpose()
    }
}

mod hex_rtmrs {
    use super::{MR_LEN, RTMR_COUNT};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        v: &[[u8; MR_LEN]; RTMR_COUNT],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.iter().map(hex::encode).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<[[u8; MR_LEN]; RTMR_COUNT], D::Error> {
        let texts = <[String; RTMR_COUNT]>::deserialize(d)?;
        let mut out = [[0u8; MR_LEN]; RTMR_COUNT];
        for (slot, text) in out.iter_mut().zip(&texts) {
            *slot = super::hex_array::decode(text)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! All inputs are the real files of /work/shared/testdata/tdx; every expected value is
    //! quoted from /work/shared/testdata/SOURCES.md §tdx (which cites the source projects' own
    //! tests or the decoded fields), never computed by this module.
    use super::*;

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/tdx");

    fn read(name: &str) -> Vec<u8> {
        let path = format!("{TESTDATA}/{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("test data {path} missing: {e}"))
    }

    /// Unix seconds of an RFC 3339 date, with chrono directly (not the module's parser).
    fn unix(text: &str) -> u64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp() as u64
    }

    fn hex_of(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    fn err_text<T: fmt::Debug>(r: Result<T>) -> String {
        let text = format!("{:#}", r.expect_err("expected an error"));
        eprintln!("error: {text}");
        text
    }

    // --- dcap-qvl sample: quote-v4-dcapqvl.dat + quote-v4-dcapqvl-collateral.json ---------------

    /// SOURCES: "now" = end of the common validity window minus one second.
    const DCAPQVL_NOW: u64 = 1752919234;
    const DCAPQVL_WINDOW_START: &str = "2025-06-19T10:32:27Z";
    const DCAPQVL_WINDOW_END: &str = "2025-07-19T10:00:35Z";

    fn dcapqvl() -> (Vec<u8>, TdxCollateral) {
        let collateral =
            TdxCollateral::from_dcap_qvl_json(&read("quote-v4-dcapqvl-collateral.json")).unwrap();
        (read("quote-v4-dcapqvl.dat"), collateral)
    }

    #[test]
    fn dcapqvl_sample_verifies_up_to_date() {
        let (quote, collateral) = dcapqvl();
        let verdict = verify_quote(&quote, &collateral, DCAPQVL_NOW).unwrap();
        assert_eq!(verdict.tcb_status, "UpToDate");
        assert!(
            verdict.advisory_ids.is_empty(),
            "{:?}",
            verdict.advisory_ids
        );
        assert_eq!(verdict.fmspc, "B0C06F000000");
        assert_eq!(verdict.tcb_evaluation_data_number, 17);
    }

    #[test]
    fn dcapqvl_collateral_window_matches_sources() {
        let (_, collateral) = dcapqvl();
        assert_eq!(
            collateral.validity_window().unwrap(),
            (unix(DCAPQVL_WINDOW_START), unix(DCAPQVL_WINDOW_END))
        );
        assert_eq!(unix(DCAPQVL_WINDOW_END) - 1, DCAPQVL_NOW);
    }

    #[test]
    fn dcapqvl_sample_fails_after_window_end() {
        let (quote, collateral) = dcapqvl();
        let end = unix(DCAPQVL_WINDOW_END);
        for now in [end, end + 1] {
            let e = err_text(verify_quote(&quote, &collateral, now));
            assert!(
                e.contains("collateral expired at 2025-07-19T10:00:35Z (PCK CRL nextUpdate)"),
                "{e}"
            );
        }
    }

    #[test]
    fn dcapqvl_sample_fails_before_window_start() {
        let (quote, collateral) = dcapqvl();
        let e = err_text(verify_quote(
            &quote,
            &collateral,
            unix(DCAPQVL_WINDOW_START) - 1,
        ));
        assert!(
            e.contains("collateral not valid before 2025-06-19T10:32:27Z (QE identity issue date)"),
            "{e}"
        );
        // The first second of the window is valid.
        verify_quote(&quote, &collateral, unix(DCAPQVL_WINDOW_START)).unwrap();
    }

    /// Freshness is not only our pre-check: dcap-qvl itself refuses stale collateral.
    #[test]
    fn dcap_qvl_itself_rejects_collateral_outside_window() {
        let (quote, collateral) = dcapqvl();
        let verifier = QuoteVerifier::new_prod().with_config::<RustCryptoConfig>();
        let dcap = collateral.to_dcap_qvl();
        assert!(verifier.verify(&quote, &dcap, DCAPQVL_NOW).is_ok());
        assert!(verifier
            .verify(&quote, &dcap, unix(DCAPQVL_WINDOW_END) + 1)
            .is_err());
        assert!(verifier
            .verify(&quote, &dcap, unix(DCAPQVL_WINDOW_START) - 1)
            .is_err());
    }

    #[test]
    fn dcapqvl_body_fields_match_sources_snapshot() {
        let body = parse_quote(&read("quote-v4-dcapqvl.dat")).unwrap();
        assert_eq!(body.version, 4);
        assert_eq!(
            hex_of(&body.tee_tcb_svn),
            "06010300000000000000000000000000"
        );
        assert_eq!(
            hex_of(&body.mr_seam),
            "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1"
        );
        assert_eq!(hex_of(&body.td_attributes), "0000001000000000");
        assert_eq!(hex_of(&body.xfam), "e702060000000000");
        assert_eq!(
            hex_of(&body.mr_td),
            "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
        );
        assert_eq!(
            hex_of(&body.rtmr[0]),
            "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0"
        );
        assert_eq!(
            hex_of(&body.rtmr[1]),
            "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378"
        );
        assert_eq!(
            hex_of(&body.rtmr[2]),
            "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132"
        );
        assert_eq!(body.rtmr[3], [0u8; MR_LEN]);
        assert_eq!(
            hex_of(&body.report_data),
            "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"
        );
        assert_eq!((body.tee_tcb_svn2, body.mr_servicetd), (None, None));
    }

    #[test]
    fn quote_len_excludes_trailing_padding() {
        // SOURCES: dcap-qvl file 5006 bytes, quote ends at 4936; SPR 4974 / 4935; GCE 8000 / 4935.
        for (name, file_len, quote_end) in [
            ("quote-v4-dcapqvl.dat", 5006, 4936),
            ("spr-quote-v4-gotdxguest.dat", 4974, 4935),
            ("gce-cos113-td-quote.dat", 8000, 4935),
        ] {
            let bytes = read(name);
            assert_eq!(bytes.len(), file_len, "{name}");
            assert_eq!(quote_len(&bytes).unwrap(), quote_end, "{name}");
        }
    }

    #[test]
    fn flipped_body_byte_fails_the_signature() {
        let (quote, collateral) = dcapqvl();
        // One byte of MRTD, one of REPORTDATA (offsets in the v4 layout of SOURCES §tdx).
        let mr_td_offset = HEADER_LEN + 16 + 48 + 48 + 8 + 8 + 8;
        let report_data_offset = HEADER_LEN + 584 - REPORT_DATA_LEN;
        for offset in [mr_td_offset, report_data_offset + 63] {
            let mut bad = quote.clone();
            bad[offset] ^= 0x01;
            assert_ne!(parse_quote(&bad).unwrap(), parse_quote(&quote).unwrap());
            let e = err_text(verify_quote(&bad, &collateral, DCAPQVL_NOW));
            assert!(e.contains("DCAP verification failed"), "{e}");
            assert!(e.contains("signature is invalid"), "{e}");
        }
    }

    #[test]
    fn tampered_tcb_info_fails_its_signature() {
        let (quote, mut collateral) = dcapqvl();
        collateral.tcb_info = collateral.tcb_info.replacen(
            "\"tcbEvaluationDataNumber\":17",
            "\"tcbEvaluationDataNumber\":18",
            1,
        );
        let e = err_text(verify_quote(&quote, &collateral, DCAPQVL_NOW));
        assert!(e.contains("Signature is invalid for tcb_info"), "{e}");
    }

    #[test]
    fn collateral_serialises_in_dcap_qvl_shape() {
        let (quote, collateral) = dcapqvl();
        let json = serde_json::to_string(&collateral).unwrap();
        // dcap-qvl's own deserialiser reads what we write, field for field.
        let theirs: QuoteCollateralV3 = serde_json::from_str(&json).unwrap();
        assert_eq!(theirs, collateral.to_dcap_qvl());
        assert!(dcap_qvl::verify::rustcrypto::verify(&quote, &theirs, DCAPQVL_NOW).is_ok());
        let back = TdxCollateral::from_dcap_qvl_json(json.as_bytes()).unwrap();
        assert_eq!(back, collateral);
    }

    #[test]
    fn body_json_is_hex_and_round_trips() {
        let body = parse_quote(&read("quote-v5-gotdxguest.dat")).unwrap();
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json["mr_td"],
            "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876"
        );
        assert_eq!(json["rtmr"].as_array().unwrap().len(), RTMR_COUNT);
        let back: TdxQuoteBody = serde_json::from_value(json).unwrap();
        assert_eq!(back, body);
    }

    // --- go-tdx-guest SPR quote + Intel PCS v4 files --------------------------------------------

    fn spr_collateral() -> TdxCollateral {
        TdxCollateral::from_pcs_files(
            &read("spr-tcbinfo-fmspc50806f000000.json"),
            &read("spr-qeidentity-tdqe.json"),
            &read("spr-tcbinfo-qeidentity-issuer-chain.pem"),
            &read("spr-pckcrl-platform.der"),
            &read("spr-pckcrl-issuer-chain.pem"),
            &read("intel-sgx-rootca-crl-2023.der"),
        )
        .unwrap()
    }

    /// SOURCES: go-tdx-guest accepts this quote with this collateral at 2023-07-01T01:00:00Z.
    /// dcap-qvl 0.7.1 gets through the signature steps (TCB info and QE identity signatures over
    /// the byte-exact inner JSON, PCK chain + both CRLs, QE report signature and hash, QE
    /// identity policy, TD report signature) and then, like Intel's QVL, finds no TCB level the
    /// platform meets: the PCK's CPUSVN (SOURCES `03030202020100020000000000000000`) is below
    /// every level's `sgxtcbcomponents`. go-tdx-guest does not require a matching level; DCAP
    /// (Intel QVL: TCB_NOT_SUPPORTED) does. The shortfall is checked here straight from the file.
    #[test]
    fn spr_quote_passes_signatures_but_matches_no_tcb_level() {
        let pck_cpusvn = hex::decode("03030202020100020000000000000000").unwrap();
        let file: serde_json::Value =
            serde_json::from_slice(&read("spr-tcbinfo-fmspc50806f000000.json")).unwrap();
        for level in file["tcbInfo"]["tcbLevels"].as_array().unwrap() {
            let svns = level["tcb"]["sgxtcbcomponents"].as_array().unwrap();
            assert!(
                svns.iter()
                    .zip(&pck_cpusvn)
                    .any(|(c, &have)| u64::from(have) < c["svn"].as_u64().unwrap()),
                "the PCK meets a TCB level: {level}"
            );
        }
        let quote = read("spr-quote-v4-gotdxguest.dat");
        let now = unix("2023-07-01T01:00:00Z");
        let e = err_text(verify_quote(&quote, &spr_collateral(), now));
        assert!(e.ends_with("No matching TCB level found"), "{e}");

        // The same run with one byte of the signed TCB info changed stops at its signature, so
        // the unmodified text (as the PCS loader extracted it) did verify.
        let mut tampered = spr_collateral();
        tampered.tcb_info = tampered.tcb_info.replacen(
            "\"tcbEvaluationDataNumber\":15",
            "\"tcbEvaluationDataNumber\":16",
            1,
        );
        assert_ne!(tampered, spr_collateral());
        let e = err_text(verify_quote(&quote, &tampered, now));
        assert!(e.contains("Signature is invalid for tcb_info"), "{e}");
    }

    #[test]
    fn spr_quote_fails_in_2053() {
        let quote = read("spr-quote-v4-gotdxguest.dat");
        let e = err_text(verify_quote(
            &quote,
            &spr_collateral(),
            unix("2053-07-01T01:00:00Z"),
        ));
        assert!(e.contains("collateral expired at"), "{e}");
    }

    #[test]
    fn spr_pcs_signatures_cover_the_exact_inner_json() {
        let c = spr_collateral();
        // Re-serialising the inner object (as a generic JSON value) would reorder keys and
        // break Intel's signature; the loader must keep the signed bytes.
        let tcb_file = String::from_utf8(read("spr-tcbinfo-fmspc50806f000000.json")).unwrap();
        assert!(tcb_file.starts_with(&format!("{{\"tcbInfo\":{}", c.tcb_info)));
        let qe_file = String::from_utf8(read("spr-qeidentity-tdqe.json")).unwrap();
        assert!(qe_file.starts_with(&format!("{{\"enclaveIdentity\":{}", c.qe_identity)));
        // Window: QE identity / PCK CRL next update 2023-07-08 (SOURCES), so 2023-07-01 is inside.
        let (start, end) = c.validity_window().unwrap();
        assert!(start <= unix("2023-07-01T01:00:00Z") && unix("2023-07-01T01:00:00Z") < end);
        assert_eq!(end, unix("2023-07-08T07:24:59Z"));
    }

    #[test]
    fn spr_body_fields_match_sources() {
        let body = parse_quote(&read("spr-quote-v4-gotdxguest.dat")).unwrap();
        assert_eq!(
            hex_of(&body.mr_td),
            "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
        );
        assert_eq!(
            hex_of(&body.report_data),
            "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"
        );
        assert_eq!(
            hex_of(&body.mr_seam),
            "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656"
        );
        assert_eq!(hex_of(&body.td_attributes), "0000004000000000");
        assert_eq!(hex_of(&body.xfam), "e71a060000000000");
        assert_eq!(body.mr_config_id, [0; MR_LEN]);
        assert_eq!(body.mr_owner, [0; MR_LEN]);
        assert_eq!(body.mr_owner_config, [0; MR_LEN]);
    }

    // --- v5 ----------------------------------------------------------------------------------

    #[test]
    fn v5_quote_parses() {
        let body = parse_quote(&read("quote-v5-gotdxguest.dat")).unwrap();
        assert_eq!(body.version, 5);
        assert_eq!(
            hex_of(&body.mr_td),
            "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876"
        );
        assert!(body.tee_tcb_svn2.is_some() && body.mr_servicetd.is_some());
    }

    // --- GCE COS 113: CCEL replay ----------------------------------------------------------------

    const GCE_RTMR: [&str; 3] = [
        "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6",
        "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1",
        "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1",
    ];

    #[test]
    fn gce_ccel_replays_to_the_quoted_rtmrs() {
        let body = parse_quote(&read("gce-cos113-td-quote.dat")).unwrap();
        let replayed = replay_ccel_rtmrs(&read("gce-cos113-ccel-eventlog.bin")).unwrap();
        for (i, expected) in GCE_RTMR.iter().enumerate() {
            assert_eq!(hex_of(&replayed[i]), *expected, "replayed RTMR{i}");
            assert_eq!(hex_of(&body.rtmr[i]), *expected, "quoted RTMR{i}");
        }
        assert_eq!(replayed[3], [0; MR_LEN]);
        check_rtmrs(&body, &replayed).unwrap();
        assert_eq!(
            hex_of(&body.mr_td),
            "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a"
        );
    }

    #[test]
    fn gce_report_data_is_the_nonce() {
        let body = parse_quote(&read("gce-cos113-td-quote.dat")).unwrap();
        let nonce: [u8; REPORT_DATA_LEN] = read("gce-cos113-nonce.bin").try_into().unwrap();
        check_report_data(&body, &nonce).unwrap();
        let mut other = nonce;
        other[0] ^= 1;
        let e = err_text(check_report_data(&body, &other));
        assert!(e.contains("report_data is"), "{e}");
    }

    /// Flip one byte of the first RTMR1 (MR index 2) event's SHA-384 digest in the raw log.
    #[test]
    fn changed_ccel_digest_is_named_by_rtmr() {
        let raw = read("gce-cos113-ccel-eventlog.bin");
        let log = eventlog::parse_as(&raw, Registers::CcMr).unwrap();
        let event = log
            .events
            .iter()
            .find(|e| e.pcr == 2 && e.is_extended())
            .unwrap();
        let digest = event.digest(HashAlg::SHA384).unwrap();
        let at: Vec<usize> = raw
            .windows(MR_LEN)
            .enumerate()
            .filter(|(_, w)| *w == digest)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "digest must occur once in the log");
        let mut bad = raw.clone();
        bad[at[0] + 5] ^= 0x80;

        let body = parse_quote(&read("gce-cos113-td-quote.dat")).unwrap();
        let replayed = replay_ccel_rtmrs(&bad).unwrap();
        assert_eq!(hex_of(&replayed[0]), GCE_RTMR[0]);
        let e = err_text(check_rtmrs(&body, &replayed));
        assert!(e.contains("RTMR1 is"), "{e}");
    }

    #[test]
    fn ccel_event_outside_rtmrs_is_rejected() {
        let mut log =
            eventlog::parse_as(&read("gce-cos113-ccel-eventlog.bin"), Registers::CcMr).unwrap();
        let i = log.events.iter().position(|e| e.is_extended()).unwrap();
        log.events[i].pcr = 0; // MRTD: never extended through the event log
        let e = err_text(replay_rtmrs(&log));
        assert!(e.contains("MR index 0 is not an RTMR"), "{e}");
    }

    // --- malformed input -------------------------------------------------------------------------

    #[test]
    fn non_tdx_and_truncated_quotes_are_named() {
        let quote = read("quote-v4-dcapqvl.dat");
        let mut sgx = quote.clone();
        sgx[HEADER_TEE_TYPE_OFFSET] = 0;
        assert!(err_text(parse_quote(&sgx)).contains("tee_type is 0x0"));
        assert!(
            err_text(parse_quote(&quote[..40])).contains("shorter than the 48-byte quote header")
        );
        assert!(err_text(parse_quote(&quote[..600])).contains("malformed quote structure"));
        let end = quote_len(&quote).unwrap();
        assert!(err_text(quote_len(&quote[..end - 1])).contains("malformed quote structure"));
    }
}

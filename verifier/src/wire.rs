//! The agent's attestation documents as JSON on the wire (docs/attestation-api.md), defined once:
//! the guest agent serialises them, the verifier (host or peer) deserialises them.
//!
//! Binary fields are base64 (standard alphabet, padded), digests and names hex. Fields added after
//! the first agents shipped are `#[serde(default)]`, so that a verifier still reads older answers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The collaterals format the agent writes and this verifier reads (`version`).
pub const COLLATERALS_VERSION: u32 = 1;
/// `GET /collaterals?nonce=HEX`.
pub const PATH_COLLATERALS: &str = "/collaterals";
/// `POST /activate-credential`.
pub const PATH_ACTIVATE: &str = "/activate-credential";

/// One PCR bank: `{"0": "<hex>", …, "23": "<hex>"}`, in numeric index order (a map keyed by the
/// index as a string would put `"10"` before `"2"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PcrBankJson(pub BTreeMap<u32, String>);

impl PcrBankJson {
    /// The bank of `(index, value)` pairs, values hex-encoded.
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a (u32, Vec<u8>)>) -> Self {
        PcrBankJson(
            values
                .into_iter()
                .map(|(i, v)| (*i, hex::encode(v)))
                .collect(),
        )
    }

    /// The hex value of PCR `index` (`"7"`), if the bank has it.
    pub fn get(&self, index: &str) -> Option<&String> {
        self.0.get(&index.parse().ok()?)
    }

    pub fn get_mut(&mut self, index: &str) -> Option<&mut String> {
        self.0.get_mut(&index.parse().ok()?)
    }
}

impl<K: AsRef<str>> std::ops::Index<K> for PcrBankJson {
    type Output = String;

    fn index(&self, index: K) -> &String {
        let index = index.as_ref();
        self.get(index)
            .unwrap_or_else(|| panic!("no PCR {index:?} in the bank"))
    }
}

/// PCR values of several banks by bank name (`"sha1"`, `"sha256"`, …): `GET /pcrs` and the
/// collaterals' `pcrs`.
pub type PcrsJson = BTreeMap<String, PcrBankJson>;

/// `GET /collaterals` (see the agent's module docs for what each proves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collaterals {
    pub version: u32,
    /// The verifier's nonce, hex.
    pub nonce: String,
    /// TPMS_ATTEST.
    pub quote: String,
    /// TPMT_SIGNATURE.
    pub signature: String,
    /// TPM2B_PUBLIC of the AK.
    pub ak_public: String,
    /// The AK as a PEM SubjectPublicKeyInfo (informative: the verifier reads `ak_public`).
    #[serde(default)]
    pub ak_public_pem: String,
    /// AK Name (nameAlg ‖ SHA-256(TPMT_PUBLIC)), hex (informative).
    #[serde(default)]
    pub ak_name: String,
    /// The quoted PCR values, `{"sha256": {"0": hex, …, "23": hex}}`.
    pub pcrs: PcrsJson,
    /// The firmware's TCG event log.
    pub eventlog: Option<String>,
    /// The init's PCR 23 log (JSON lines).
    pub runtime_eventlog: Option<String>,
    /// "rsa2048" or "ecc-p256".
    pub ek_type: String,
    /// TPM2B_PUBLIC of the EK.
    pub ek_public: String,
    /// DER certificate from the TPM's NV, when the manufacturer stored one.
    pub ek_cert: Option<String>,
    /// Absent from agents that predate it.
    #[serde(default)]
    pub tee_report: Option<TeeReportJson>,
    /// This boot's signing key, certified by the AK for this nonce. Absent from agents that
    /// predate it.
    #[serde(default)]
    pub signing_key: Option<SigningKeyJson>,
}

/// `tee_report` of the collaterals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeeReportJson {
    /// "none", "sev-snp" or "tdx".
    #[serde(rename = "type")]
    pub tee: String,
    /// The interface that produced it: "configfs-tsm:<provider>" or "sev-guest".
    pub source: Option<String>,
    /// Hex of the 64 bytes the agent asked the TEE to sign (absent without a TEE).
    pub report_data: Option<String>,
    /// SNP: ATTESTATION_REPORT; TDX: the TD quote (base64).
    pub report: Option<String>,
    /// SNP: the host's certificate table (base64), if any.
    pub aux: Option<String>,
}

/// The boot signing key in the collaterals (docs/attestation-api.md lists the checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyJson {
    /// TPM2B_PUBLIC, base64.
    pub public: String,
    /// The key as a PEM SubjectPublicKeyInfo (informative: the verifier reads `public`).
    #[serde(default)]
    pub public_pem: String,
    /// Name (nameAlg ‖ SHA-256(TPMT_PUBLIC)), hex.
    pub name: String,
    /// SHA-256 of the TPMT_PUBLIC (the TPM2B_PUBLIC without its size), hex: the Name's digest.
    pub key_hash: String,
    /// TPMS_ATTEST of TPM2_Certify(key, AK), extraData = the request's nonce, base64.
    pub certify_info: String,
    /// TPMT_SIGNATURE by the AK over SHA-256(certify_info), base64.
    pub certify_signature: String,
    pub pcr_policy: PcrPolicyJson,
}

/// Which PCRs the signing key's authPolicy (a TPM2_PolicyPCR) covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrPolicyJson {
    pub pcrs: Vec<u32>,
    pub bank: String,
}

/// `POST /activate-credential` body: the TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET contents of
/// TPM2_MakeCredential, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub credential_blob: String,
    pub secret: String,
}

/// `POST /activate-credential` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    /// The credential the verifier encrypted, base64.
    pub cert_info: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_banks_keep_numeric_order_both_ways() {
        let bank = PcrBankJson::from_values(&[(2, vec![0xaa]), (10, vec![0xbb])]);
        let json = serde_json::to_string(&bank).unwrap();
        assert_eq!(json, r#"{"2":"aa","10":"bb"}"#);
        let back: PcrBankJson = serde_json::from_str(&json).unwrap();
        assert_eq!(back, bank);
        assert_eq!(back["10"], "bb");
        assert_eq!(back.get("3"), None);
    }
}

//! The boot signing key of the agent's `POST /sign-message` (docs/attestation-api.md, "signing_key").
//!
//! The agent's key is an unrestricted ECDSA P-256 key inside the same TPM as the AK, created with an
//! authPolicy of TPM2_PolicyPCR over the sha256 PCRs 0–15 and 23 as they were when it was created,
//! and without userWithAuth: the TPM signs with it only while those PCRs hold the same values. Each
//! `/collaterals` answer carries a TPM2_Certify of it by the AK with the verifier's nonce, so a
//! verifier that trusts the quote learns, for this boot, which key speaks for software in the
//! attested state:
//!
//! 1. the public area is such a key (type, attributes, scheme, a 32-byte policy);
//! 2. `key_hash`/`name` are its digest and Name;
//! 3. the AK signed the certification, whose extraData is the nonce and whose Name is the key's;
//! 4. the authPolicy is the PolicyPCR digest of the QUOTED values of the policy's PCRs — so the key
//!    cannot sign unless the PCRs are the ones the quote (and the golden comparison) vouch for.

use super::error::{bail, ensure, Classify, Context, Error, Result};
use super::quote::verify_signature;
use base64::Engine;
use cvm_tpm::constants::{TPM_ALG_ECDSA, TPM_ALG_SHA256};
use cvm_tpm::{CertifyInfo, EcdsaSignature, Public, PublicKey, Signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// TPMA_OBJECT of the agent's key: fixedTPM | fixedParent | sensitiveDataOrigin | sign — no
/// userWithAuth (signing needs the PCR policy), no adminWithPolicy, not restricted (it signs
/// external digests), not decrypt. The template's own value: a key of any other template is not
/// the agent's.
pub use cvm_tpm::templates::SIGNING_KEY_ATTRIBUTES;
/// The PCRs the policy covers: the ones the golden measurement lists.
pub const POLICY_PCRS: [u32; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 23];
/// Bank of the policy.
pub const POLICY_BANK: &str = "sha256";

/// `signing_key` of the collaterals: one definition with the agent that writes it.
pub use crate::wire::{PcrPolicyJson, SigningKeyJson};

/// The answer of `POST /sign-message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    /// TPMT_SIGNATURE, base64.
    pub signature: String,
    /// SHA-256 of the message, hex.
    pub message_sha256: String,
    /// The signing key's `key_hash`, hex.
    pub key_hash: String,
}

/// A signing key whose certification and policy checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSigningKey {
    pub public: Public,
    /// hex SHA-256 of the TPMT_PUBLIC: how messages name the key.
    pub key_hash: String,
}

fn b64(field: &str, value: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .or_err_with(Error::Malformed, || {
            format!("signing_key field {field} is not base64")
        })
}

/// Checks `sk` as certified by the verified AK `ak` for `nonce`, bound to the `quoted` sha256 PCRs.
pub fn verify_signing_key(
    sk: &SigningKeyJson,
    ak: &Public,
    nonce: &[u8],
    quoted: &BTreeMap<u32, Vec<u8>>,
) -> Result<VerifiedSigningKey> {
    let public_bytes = b64("public", &sk.public)?;
    let public = Public::parse_tpm2b(&public_bytes).context("signing_key.public")?;
    check_key_shape(&public)?;

    let key_hash = hex::encode(Sha256::digest(&public.bytes));
    // nameAlg is SHA-256 (check_key_shape): the Name is 0x000b ‖ the same digest.
    let name = public.name()?;
    ensure!(
        sk.key_hash == key_hash,
        Mismatch,
        "signing_key.key_hash {} is not SHA-256 of its public area ({key_hash})",
        sk.key_hash
    );
    ensure!(
        sk.name == hex::encode(&name),
        Mismatch,
        "signing_key.name is not the Name of its public area"
    );

    let certify = b64("certify_info", &sk.certify_info)?;
    let signature = Signature::parse(&b64("certify_signature", &sk.certify_signature)?)
        .context("signing_key.certify_signature")?;
    verify_signature(&ak.key, &certify, &signature)
        .context("the AK's signature over the signing key's certification")?;
    let info = CertifyInfo::parse(&certify).context("signing_key.certify_info")?;
    ensure!(
        info.header.extra_data == nonce,
        Nonce,
        "the signing key's certification carries nonce {}, not this verifier's {} (replayed)",
        hex::encode(&info.header.extra_data),
        hex::encode(nonce)
    );
    ensure!(
        info.name == name,
        Mismatch,
        "the AK certified another object ({}) than the signing key",
        hex::encode(&info.name)
    );

    check_policy(sk, &public, quoted)?;
    Ok(VerifiedSigningKey { public, key_hash })
}

/// An unrestricted ECDSA P-256/SHA-256 signing key that only a policy can use.
fn check_key_shape(public: &Public) -> Result<()> {
    ensure!(
        matches!(public.key, PublicKey::EccP256 { .. }),
        Key,
        "the signing key is not an ECC P-256 key"
    );
    ensure!(
        public.name_alg == TPM_ALG_SHA256,
        Key,
        "the signing key's nameAlg {:#06x} is not SHA-256",
        public.name_alg
    );
    ensure!(
        public.attributes == SIGNING_KEY_ATTRIBUTES,
        Key,
        "the signing key's attributes {:#010x} are not {SIGNING_KEY_ATTRIBUTES:#010x} \
         (fixedTPM, fixedParent, sensitiveDataOrigin, sign; no userWithAuth): it might be usable \
         without its PCR policy",
        public.attributes
    );
    ensure!(
        public.scheme == Some((TPM_ALG_ECDSA, TPM_ALG_SHA256)),
        Key,
        "the signing key's scheme is not ECDSA/SHA-256"
    );
    ensure!(
        public.auth_policy.len() == 32,
        Key,
        "the signing key has no SHA-256 authPolicy"
    );
    Ok(())
}

/// authPolicy must be PolicyPCR over the quoted values of every golden PCR.
fn check_policy(
    sk: &SigningKeyJson,
    public: &Public,
    quoted: &BTreeMap<u32, Vec<u8>>,
) -> Result<()> {
    ensure!(
        sk.pcr_policy.bank == POLICY_BANK && sk.pcr_policy.pcrs == POLICY_PCRS,
        Key,
        "the signing key's policy covers {} PCRs {:?}, not sha256 PCRs {POLICY_PCRS:?}",
        sk.pcr_policy.bank,
        sk.pcr_policy.pcrs
    );
    let mut values = Vec::with_capacity(POLICY_PCRS.len());
    for pcr in POLICY_PCRS {
        let v = quoted.get(&pcr).or_err_with(Error::Mismatch, || {
            format!("PCR {pcr} of the signing key's policy is not quoted")
        })?;
        values.push((pcr, v.clone()));
    }
    let want = cvm_tpm::pcr_policy_digest(cvm_tpm::HashAlg::Sha256, &values)
        .context("computing the PolicyPCR digest of the quoted PCRs")?;
    if public.auth_policy != want {
        bail!(
            Key,
            "the signing key's authPolicy is not PolicyPCR over the quoted PCR values: the PCRs \
             changed since the key was created (it can no longer sign), or it is bound to other values"
        );
    }
    Ok(())
}

/// Checks a `/sign-message` answer for `message` against the verified key.
pub fn verify_message_signature(
    key: &VerifiedSigningKey,
    message: &[u8],
    signed: &SignedMessage,
) -> Result<()> {
    ensure!(
        signed.key_hash == key.key_hash,
        Signature,
        "the message was signed by key {}, not by the attested key {}",
        signed.key_hash,
        key.key_hash
    );
    ensure!(
        signed.message_sha256 == hex::encode(Sha256::digest(message)),
        Mismatch,
        "message_sha256 is not the SHA-256 of the message"
    );
    let sig = Signature::parse(
        &base64::engine::general_purpose::STANDARD
            .decode(&signed.signature)
            .or_err(Error::Malformed, "the message signature is not base64")?,
    )
    .context("the message signature")?;
    ensure!(
        matches!(
            sig,
            Signature::Ecdsa(EcdsaSignature {
                hash: TPM_ALG_SHA256,
                ..
            })
        ),
        Unsupported,
        "the message signature is not ECDSA/SHA-256"
    );
    verify_signature(&key.public.key, message, &sig)
        .context("the message signature does not verify with the attested signing key")
}

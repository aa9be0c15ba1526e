//! `TPMT_PUBLIC` templates for the two keys attestation needs (TPM 2.0 Library Part 2 §12.2.4).
//!
//! * The **attestation key** (AK): a restricted ECDSA P-256/SHA-256 signing key. "Restricted" is what
//!   makes a quote trustworthy: such a key refuses to sign data that starts with `TPM_GENERATED_VALUE`
//!   unless the TPM produced it, so a forged TPMS_ATTEST cannot be signed.
//! * The **boot signing key**: an *unrestricted* ECDSA P-256/SHA-256 signing key whose only
//!   authorization is a PolicyPCR over the PCR values of the moment it was made, so it can sign
//!   only while the machine is in the state a quote shows ([`signing_key_ecc_p256_template`]).
//! * The **endorsement key** (EK): the TCG EK Credential Profile 2.0 default templates (Annex B.3.3,
//!   "L-1" RSA 2048 and "L-2" ECC NIST P-256). Created under the endorsement hierarchy, they reproduce
//!   exactly the key whose certificate the manufacturer (here swtpm_setup/swtpm_localca) wrote to NV.
//!
//! Primary keys are derived from the hierarchy seed and the template, so the same template gives the
//! same key until the seed changes: the agent can recreate "its" AK per request and get the same one.

use crate::codec::Command;
use crate::constants::{
    tpma_object, TPM_ALG_AES, TPM_ALG_CFB, TPM_ALG_ECC, TPM_ALG_ECDSA, TPM_ALG_NULL, TPM_ALG_RSA,
    TPM_ALG_SHA256, TPM_ECC_NIST_P256,
};

/// AK attributes: fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign
/// (0x00050072, what `tpm2_createak` uses).
pub const AK_ATTRIBUTES: u32 = tpma_object::FIXED_TPM
    | tpma_object::FIXED_PARENT
    | tpma_object::SENSITIVE_DATA_ORIGIN
    | tpma_object::USER_WITH_AUTH
    | tpma_object::RESTRICTED
    | tpma_object::SIGN_ENCRYPT;

/// Boot signing key attributes: fixedTPM | fixedParent | sensitiveDataOrigin | sign (0x00040032).
///
/// * no userWithAuth: the USER role (TPM2_Sign) needs a policy session satisfying authPolicy, i.e.
///   the PolicyPCR of [`crate::pcr_policy_digest`]; the empty authValue never signs;
/// * no restricted: the key signs digests of any workload message (a restricted key signs only
///   digests the TPM hashed itself, and refuses anything starting with TPM_GENERATED_VALUE);
/// * no adminWithPolicy: with it set, the ADMIN role (TPM2_Certify's objectHandle) also needs the
///   policy, and a TPM requires an ADMIN-role policy to contain TPM2_PolicyCommandCode, which a bare
///   PolicyPCR does not: swtpm answers TPM2_Certify with TPM_RC_POLICY_FAIL (tests/signing_key.rs
///   shows it). Left clear, ADMIN is the empty authValue, which allows only harmless operations on a
///   fixedTPM|fixedParent primary: Certify (anyone may certify it) and ObjectChangeAuth (whose
///   output cannot be loaded for a primary, and whose authValue the USER role would ignore anyway).
pub const SIGNING_KEY_ATTRIBUTES: u32 = tpma_object::FIXED_TPM
    | tpma_object::FIXED_PARENT
    | tpma_object::SENSITIVE_DATA_ORIGIN
    | tpma_object::SIGN_ENCRYPT;

/// EK attributes (TCG EK profile B.3.3): fixedTPM | fixedParent | sensitiveDataOrigin |
/// adminWithPolicy | restricted | decrypt (0x000300B2). No userWithAuth: every use needs the policy.
pub const EK_ATTRIBUTES: u32 = tpma_object::FIXED_TPM
    | tpma_object::FIXED_PARENT
    | tpma_object::SENSITIVE_DATA_ORIGIN
    | tpma_object::ADMIN_WITH_POLICY
    | tpma_object::RESTRICTED
    | tpma_object::DECRYPT;

/// The EK's authPolicy: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256 (TCG EK profile, "Policy A").
pub const EK_POLICY_A_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// Which EK template; each has its certificate at its own TCG NV index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkType {
    /// Template L-1, certificate at 0x01C00002.
    Rsa2048,
    /// Template L-2, certificate at 0x01C0000A.
    EccP256,
}

impl EkType {
    /// TCG PC Client Platform TPM Profile: NV index of the EK certificate for this template.
    pub fn cert_nv_index(self) -> u32 {
        match self {
            EkType::Rsa2048 => 0x01C0_0002,
            EkType::EccP256 => 0x01C0_000A,
        }
    }

    /// `TPMT_PUBLIC` of the default EK template.
    pub fn template(self) -> Vec<u8> {
        match self {
            EkType::Rsa2048 => ek_rsa2048_template(),
            EkType::EccP256 => ek_ecc_p256_template(),
        }
    }
}

/// Size of the RSA 2048 EK template's zero `unique` (the modulus length, per the EK profile).
const RSA2048_UNIQUE_LEN: usize = 256;
/// Size of each zero coordinate in the ECC P-256 EK template's `unique`.
const P256_COORD_LEN: usize = 32;
/// RSA key size of template L-1.
const RSA2048_BITS: u16 = 2048;
/// AES key size of the EK's symmetric (storage) parameters.
const AES128_BITS: u16 = 128;

/// `TPMT_PUBLIC` of the attestation key: ECC P-256, nameAlg SHA-256, [`AK_ATTRIBUTES`], no policy,
/// TPMS_ECC_PARMS { symmetric NULL, scheme ECDSA/SHA-256, curve P-256, kdf NULL }, empty unique.
pub fn ak_ecc_p256_template() -> Vec<u8> {
    let mut c = Command::body();
    c.u16(TPM_ALG_ECC).u16(TPM_ALG_SHA256).u32(AK_ATTRIBUTES);
    c.u16(0); // authPolicy: empty
    c.u16(TPM_ALG_NULL); // symmetric
    c.u16(TPM_ALG_ECDSA).u16(TPM_ALG_SHA256); // scheme
    c.u16(TPM_ECC_NIST_P256).u16(TPM_ALG_NULL); // curveID, kdf
    c.u16(0).u16(0); // unique: x, y empty
    c.into_bytes()
}

/// `TPMT_PUBLIC` of the boot signing key: ECC P-256, nameAlg SHA-256, [`SIGNING_KEY_ATTRIBUTES`],
/// `auth_policy` (a SHA-256 policy digest, normally [`crate::pcr_policy_digest`] of the current PCRs),
/// TPMS_ECC_PARMS { symmetric NULL, scheme ECDSA/SHA-256, curve P-256, kdf NULL }, empty unique.
///
/// The policy is part of the template, hence of the key's Name and of its derivation: the same
/// hierarchy seed and the same PCR values give the same key.
pub fn signing_key_ecc_p256_template(auth_policy: &[u8; 32]) -> Vec<u8> {
    ecc_p256_signing_template(SIGNING_KEY_ATTRIBUTES, auth_policy)
}

/// The signing-key layout with other attributes (tests show why adminWithPolicy stays clear).
pub fn ecc_p256_signing_template(attributes: u32, auth_policy: &[u8]) -> Vec<u8> {
    let mut c = Command::body();
    c.u16(TPM_ALG_ECC).u16(TPM_ALG_SHA256).u32(attributes);
    c.tpm2b(auth_policy);
    c.u16(TPM_ALG_NULL); // symmetric
    c.u16(TPM_ALG_ECDSA).u16(TPM_ALG_SHA256); // scheme
    c.u16(TPM_ECC_NIST_P256).u16(TPM_ALG_NULL); // curveID, kdf
    c.u16(0).u16(0); // unique: x, y empty
    c.into_bytes()
}

/// TCG EK template L-1 (RSA 2048, AES-128-CFB storage parameters, zero 256-byte unique).
pub fn ek_rsa2048_template() -> Vec<u8> {
    let mut c = Command::body();
    c.u16(TPM_ALG_RSA).u16(TPM_ALG_SHA256).u32(EK_ATTRIBUTES);
    c.u16(EK_POLICY_A_SHA256.len() as u16)
        .bytes(&EK_POLICY_A_SHA256);
    c.u16(TPM_ALG_AES).u16(AES128_BITS).u16(TPM_ALG_CFB); // symmetric
    c.u16(TPM_ALG_NULL); // scheme
    c.u16(RSA2048_BITS).u32(0); // keyBits, exponent (0 = 65537)
    c.u16(RSA2048_UNIQUE_LEN as u16)
        .bytes(&[0; RSA2048_UNIQUE_LEN]);
    c.into_bytes()
}

/// TCG EK template L-2 (ECC NIST P-256, AES-128-CFB, zero 32-byte x and y).
pub fn ek_ecc_p256_template() -> Vec<u8> {
    let mut c = Command::body();
    c.u16(TPM_ALG_ECC).u16(TPM_ALG_SHA256).u32(EK_ATTRIBUTES);
    c.u16(EK_POLICY_A_SHA256.len() as u16)
        .bytes(&EK_POLICY_A_SHA256);
    c.u16(TPM_ALG_AES).u16(AES128_BITS).u16(TPM_ALG_CFB);
    c.u16(TPM_ALG_NULL); // scheme
    c.u16(TPM_ECC_NIST_P256).u16(TPM_ALG_NULL); // curveID, kdf
    c.u16(P256_COORD_LEN as u16).bytes(&[0; P256_COORD_LEN]);
    c.u16(P256_COORD_LEN as u16).bytes(&[0; P256_COORD_LEN]);
    c.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field by field from Part 2 (type ECC, nameAlg SHA-256, attributes 0x00050072, empty policy,
    /// symmetric NULL, ECDSA/SHA-256, P-256, kdf NULL, empty x/y). That swtpm accepts it and that
    /// tpm2-tools verifies its quotes is checked in tests/attest.rs.
    #[test]
    fn ak_template_bytes() {
        let want = hex_bytes("0023 000b 00050072 0000 0010 0018 000b 0003 0010 0000 0000");
        assert_eq!(ak_ecc_p256_template(), want);
    }

    /// Field by field from Part 2, as `tpm2_createprimary -G ecc256:ecdsa-sha256:null -g sha256
    /// -a 'fixedtpm|fixedparent|sensitivedataorigin|sign' -L policy` writes it (`tpm2_readpublic`
    /// prints attributes 0x40032): type ECC, nameAlg SHA-256, attributes, TPM2B policy, symmetric
    /// NULL, ECDSA/SHA-256, P-256, kdf NULL, empty x/y.
    #[test]
    fn signing_key_template_bytes() {
        let policy = [0xAB; 32];
        let t = signing_key_ecc_p256_template(&policy);
        assert_eq!(&t[..10], &hex_bytes("0023 000b 00040032 0020"));
        assert_eq!(&t[10..42], &policy);
        assert_eq!(&t[42..], &hex_bytes("0010 0018 000b 0003 0010 0000 0000"));
    }

    #[test]
    fn ek_rsa_template_layout() {
        let t = ek_rsa2048_template();
        assert_eq!(&t[..8], &hex_bytes("0001000b000300b2"));
        assert_eq!(&t[8..10], &[0, 32]);
        assert_eq!(&t[10..42], &EK_POLICY_A_SHA256);
        assert_eq!(&t[42..56], &hex_bytes("0006008000430010080000000000"));
        assert_eq!(&t[56..58], &[1, 0]);
        assert_eq!(t.len(), 58 + 256);
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }
}

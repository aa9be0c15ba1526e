//! The TPM 2.0 constants that both sides of attestation name (TPM 2.0 Library Part 2): algorithm
//! identifiers (§6.3 `TPM_ALG_ID`), curves (§6.4 `TPM_ECC_CURVE`), `TPM_GENERATED_VALUE` (§6.2),
//! structure tags (§6.9 `TPM_ST`), permanent handles (§7.4 `TPM_RH`, which also holds `TPM_RS_PW`)
//! and the attribute bits of objects and sessions (§8.3 `TPMA_OBJECT`, §8.4 `TPMA_SESSION`).
//!
//! One table for the client that builds templates and commands and for the verifier that parses
//! what a TPM produced, so a value cannot differ between the two. Command and response codes stay
//! with the commands that use them (and `rc`), which no one else needs.

/// `TPM_ALG_RSA`.
pub const TPM_ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_SHA1`.
pub const TPM_ALG_SHA1: u16 = 0x0004;
/// `TPM_ALG_AES`.
pub const TPM_ALG_AES: u16 = 0x0006;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// `TPM_ALG_SHA384`.
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// `TPM_ALG_SHA512`.
pub const TPM_ALG_SHA512: u16 = 0x000D;
/// `TPM_ALG_NULL`: "no algorithm" (no scheme, no symmetric parameters, the key's own scheme).
pub const TPM_ALG_NULL: u16 = 0x0010;
/// `TPM_ALG_RSASSA` (PKCS#1 v1.5 signatures).
pub const TPM_ALG_RSASSA: u16 = 0x0014;
/// `TPM_ALG_RSAPSS`.
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
/// `TPM_ALG_ECDSA`.
pub const TPM_ALG_ECDSA: u16 = 0x0018;
/// `TPM_ALG_ECC`.
pub const TPM_ALG_ECC: u16 = 0x0023;
/// `TPM_ALG_CFB`.
pub const TPM_ALG_CFB: u16 = 0x0043;

/// `TPM_ECC_NIST_P256`.
pub const TPM_ECC_NIST_P256: u16 = 0x0003;

/// `TPM_GENERATED_VALUE`: first field of every TPMS_ATTEST the TPM signs. A restricted key refuses
/// to sign outside data that starts with it, which is what makes a quote unforgeable.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;

/// `TPM_ST_NO_SESSIONS`: command/response without an authorization area.
pub const TPM_ST_NO_SESSIONS: u16 = 0x8001;
/// `TPM_ST_SESSIONS`: command/response with an authorization area.
pub const TPM_ST_SESSIONS: u16 = 0x8002;
/// `TPM_ST_ATTEST_CERTIFY`: a TPMS_ATTEST made by TPM2_Certify.
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
/// `TPM_ST_ATTEST_QUOTE`: a TPMS_ATTEST made by TPM2_Quote.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ST_HASHCHECK`: tag of the TPMT_TK_HASHCHECK validation ticket.
pub const TPM_ST_HASHCHECK: u16 = 0x8024;

/// `TPM_RS_PW`: the password authorization session handle.
pub const TPM_RS_PW: u32 = 0x4000_0009;
/// `TPM_RH_NULL`: the null hierarchy (its seed changes at every TPM reset), or "no handle".
pub const TPM_RH_NULL: u32 = 0x4000_0007;
/// `TPM_RH_ENDORSEMENT`: the endorsement hierarchy (EK and our AK live under it).
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;

/// `TPMA_SESSION` with no attribute set: every session this crate opens is used by one command
/// (continueSession is meaningless for TPM_RS_PW, and a policy session is spent by the command it
/// authorizes; tpm2-tools 5.4 sends 0 for the password session too).
pub const TPMA_SESSION_NONE: u8 = 0x00;

/// `TPMA_OBJECT` bits (Part 2 §8.3): what templates set and what a verifier checks on a key.
pub mod tpma_object {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN_ENCRYPT: u32 = 1 << 18;
}

//! Host-side attestation checks: what `cvm-image verify` needs to trust a running VM's evidence.
//!
//! | module | checks |
//! |---|---|
//! | [`error`] | the one error type: why evidence was refused, by variant |
//! | [`quote`] | AK signature over the quote, nonce = extraData, pcrDigest over the reported PCRs |
//! | [`credential`] | TPM2_MakeCredential for the AK↔EK proof (RSA-OAEP or ECDH seed, KDFa, AES-CFB, HMAC) |
//! | [`signing_key`] | the agent's boot signing key: AK certification, PolicyPCR over the quoted PCRs |
//! | [`snp`] | SEV-SNP report parsing, ARK → ASK/ASVK → VCEK/VLEK chain, report signature, TCB |
//! | [`snp_policy`] | the SEV-SNP guest policy (DEBUG, MIGRATE_MA refused) and TCB versions, read from a verified report |
//! | [`tdx`] | TDX quotes: DCAP verification with Intel collateral, report data, CCEL → RTMR replay |
//!
//! The TPM 2.0 structures (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE, PCR selections, object Names)
//! and constants come from `cvm_tpm`, the TPM client the agent builds its evidence with, so both
//! ends share one definition of them; the modules here decide what to accept.
//!
//! The agent's side of the protocol is `guest-agent/src/evidence.rs`; [`tee_report_data`] mirrors how
//! it binds the verifier's nonce and the AK into a TEE report.

pub mod credential;
pub mod error;
pub mod quote;
pub mod signing_key;
pub mod snp;
pub mod snp_policy;
pub mod tdx;

pub use error::{Error, Result};

use sha2::{Digest, Sha512};

/// Domain separation of the TEE report data (must match the agent's `REPORT_DATA_DOMAIN`).
pub const REPORT_DATA_DOMAIN: &[u8] = b"cvm-image collaterals v1\0";

/// The report data the agent asks the TEE to sign: SHA-512(domain ‖ u16 len(nonce) ‖ nonce ‖ AK Name).
/// A verifier compares it with the report's REPORT_DATA to know the TEE report is fresh and that the
/// quote's AK belongs to a TPM inside that TEE.
pub fn tee_report_data(nonce: &[u8], ak_name: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(REPORT_DATA_DOMAIN);
    h.update((nonce.len() as u16).to_be_bytes());
    h.update(nonce);
    h.update(ak_name);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference computed with Python's hashlib over the same byte string.
    #[test]
    fn report_data_vector() {
        let nonce: Vec<u8> = (0u8..32).collect();
        let mut name = vec![0x00, 0x0b];
        name.extend_from_slice(&[0xAA; 32]);
        assert_eq!(
            hex::encode(tee_report_data(&nonce, &name)),
            "f6f32e327359c9b8cd614c60067a888f1b88b602fa26869ddf6f0368e06702915fbbacc76315c60a833c276416787127c0fd136593cfcbafb596453c8fe0fe7b"
        );
    }
}

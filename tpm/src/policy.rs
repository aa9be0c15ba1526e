//! The PolicyPCR digest (TPM 2.0 Library Part 3 §23.7, TPM2_PolicyPCR) computed without a TPM.
//!
//! The agent puts it in the boot signing key's `authPolicy` when it creates the key; a verifier
//! recomputes it from the PCR values of a quote and compares it with the `authPolicy` of the key's
//! (certified) public area. Equal digests mean: this key can sign only while those PCRs hold exactly
//! the quoted values. Pure and dependency-light so that both sides call the same function.

use sha2::{Digest, Sha256};

use crate::codec::Command;
use crate::pcr_selection::PcrSelection;
use crate::{Error, HashAlg, Result};

/// `TPM_CC_PolicyPCR`.
pub const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
/// Size of a SHA-256 policy digest (the session hash of every policy this crate uses).
pub const POLICY_DIGEST_LEN: usize = 32;

/// The `TPML_PCR_SELECTION` a PolicyPCR over `pcrs` of `bank` carries: count 1, then
/// `{hashAlg, sizeofSelect = 3, pcrSelect}`. A TPM hashes the selection as the caller marshalled it,
/// so the 3-byte bitmap (PCR_SELECT_MIN of a 24-PCR PC-client TPM, what tpm2-tools sends too) is
/// part of the policy: [`crate::Tpm::sign_with_pcr_policy`] sends exactly these bytes.
pub fn pcr_selection_list(bank: HashAlg, pcrs: &[u32]) -> Result<Vec<u8>> {
    let sel = PcrSelection::from_pcrs(bank.alg_id(), pcrs)?;
    let mut c = Command::body();
    c.u32(1);
    sel.write(&mut c);
    Ok(c.into_bytes())
}

/// SHA-256 policy digest of a fresh session after `TPM2_PolicyPCR(pcrDigest, pcrs)`:
///
/// ```text
/// pcrDigest    = SHA-256(value(p1) ‖ value(p2) ‖ …)              (ascending PCR index)
/// policyDigest = SHA-256(0^32 ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ pcrDigest)
/// ```
///
/// `values` are `(pcr, value)` of `bank`, in strictly ascending PCR order (the order a TPM
/// concatenates them in, whatever order they were listed in); each value must have the bank's
/// digest length. The session hash (SHA-256) also hashes the PCR values, whatever the bank.
pub fn pcr_policy_digest(
    bank: HashAlg,
    values: &[(u32, Vec<u8>)],
) -> Result<[u8; POLICY_DIGEST_LEN]> {
    if values.is_empty() {
        return Err(Error::InvalidArgument(
            "a PolicyPCR needs at least one PCR".into(),
        ));
    }
    if let Some(w) = values.windows(2).find(|w| w[0].0 >= w[1].0) {
        return Err(Error::InvalidArgument(format!(
            "PCR values must be in strictly ascending PCR order (PCR {} before PCR {})",
            w[0].0, w[1].0
        )));
    }
    let mut pcr_digest = Sha256::new();
    for (pcr, value) in values {
        if value.len() != bank.digest_len() {
            return Err(Error::InvalidArgument(format!(
                "PCR {pcr}: {}-byte value in the {} bank (expected {})",
                value.len(),
                bank.name(),
                bank.digest_len()
            )));
        }
        pcr_digest.update(value);
    }
    let pcrs: Vec<u32> = values.iter().map(|(p, _)| *p).collect();
    let mut policy = Sha256::new();
    policy.update([0u8; POLICY_DIGEST_LEN]);
    policy.update(TPM_CC_POLICY_PCR.to_be_bytes());
    policy.update(pcr_selection_list(bank, &pcrs)?);
    policy.update(pcr_digest.finalize());
    Ok(policy.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PCRs the agent binds: 0–15 and 23.
    fn bound_pcrs() -> Vec<u32> {
        (0..16).chain([23]).collect()
    }

    /// Reference: swtpm in a trial session, `tpm2_policypcr -S trial.ctx -l
    /// sha256:0,…,15,23 -L pol.bin <sha256 of the 17 values>` (tpm2-tools 5.4) for a fresh swtpm
    /// (PCRs 0–15 all zero, PCR 23 all zero) printed
    /// e0612a42131ebcb7c2c6a5f942cd73922b31b7577a2dd75790231c38cef22a81.
    /// tests/signing_key.rs repeats the comparison for non-zero PCRs against a live swtpm.
    #[test]
    fn fresh_tpm_vector_from_tpm2_policypcr() {
        let values: Vec<(u32, Vec<u8>)> =
            bound_pcrs().into_iter().map(|p| (p, vec![0; 32])).collect();
        assert_eq!(
            hex::encode(pcr_policy_digest(HashAlg::Sha256, &values).unwrap()),
            "e0612a42131ebcb7c2c6a5f942cd73922b31b7577a2dd75790231c38cef22a81"
        );
    }

    #[test]
    fn selection_bytes() {
        assert_eq!(
            pcr_selection_list(HashAlg::Sha256, &bound_pcrs()).unwrap(),
            [0, 0, 0, 1, 0x00, 0x0B, 3, 0xFF, 0xFF, 0x80]
        );
    }

    #[test]
    fn rejects_bad_input() {
        let v = |p: u32, n: usize| (p, vec![0u8; n]);
        assert!(pcr_policy_digest(HashAlg::Sha256, &[]).is_err());
        assert!(pcr_policy_digest(HashAlg::Sha256, &[v(1, 32), v(0, 32)]).is_err());
        assert!(pcr_policy_digest(HashAlg::Sha256, &[v(1, 32), v(1, 32)]).is_err());
        assert!(pcr_policy_digest(HashAlg::Sha256, &[v(0, 20)]).is_err());
        assert!(pcr_policy_digest(HashAlg::Sha256, &[v(24, 32)]).is_err());
        assert!(pcr_policy_digest(HashAlg::Sha1, &[v(0, 20)]).is_ok());
    }

    #[test]
    fn every_value_matters() {
        let base: Vec<(u32, Vec<u8>)> =
            bound_pcrs().into_iter().map(|p| (p, vec![0; 32])).collect();
        let d0 = pcr_policy_digest(HashAlg::Sha256, &base).unwrap();
        let mut changed = base.clone();
        changed[16].1[31] = 1;
        assert_ne!(pcr_policy_digest(HashAlg::Sha256, &changed).unwrap(), d0);
        assert_ne!(pcr_policy_digest(HashAlg::Sha256, &base[..16]).unwrap(), d0);
    }
}

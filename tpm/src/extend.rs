//! TPM2_PCR_Extend of several banks at once (TPM 2.0 Library Part 3 §22.2): one command whose
//! `TPML_DIGEST_VALUES` carries one digest per bank. The TPM extends exactly the banks listed, each
//! with its own digest, atomically; a bank left out keeps its value. Measuring code should list
//! every active bank ([`Tpm::active_banks`]) so that no bank of the PCR is left attesting nothing.

use crate::attest::password_sessions;
use crate::codec::Command;
use crate::constants::TPM_ST_SESSIONS;
use crate::marshal::{self, TPM_CC_PCR_EXTEND};
use crate::pcr_selection::PCR_COUNT;
use crate::{Error, HashAlg, Result, Tpm};

impl Tpm {
    /// Extends `pcr` in every bank of `digests`, each with its digest (PCR\[bank\] := H_bank(PCR\[bank\]
    /// ‖ digest)), in one TPM2_PCR_Extend authorized by the PCR's empty password (TPM_RS_PW).
    ///
    /// Each digest must have its bank's size and each bank may appear once; banks the TPM has not
    /// allocated make the TPM refuse the command.
    pub fn pcr_extend_banks(&mut self, pcr: u32, digests: &[(HashAlg, &[u8])]) -> Result<()> {
        let cmd = pcr_extend_banks_command(pcr, digests)?;
        let resp = self.execute("TPM2_PCR_Extend", &cmd)?;
        // Nothing to read but the (empty) parameter area; check that it is well formed.
        marshal::session_response_params(&resp)?;
        Ok(())
    }
}

/// The TPM2_PCR_Extend command for `pcr` with a `TPML_DIGEST_VALUES` of `digests`, in the order
/// given.
pub(crate) fn pcr_extend_banks_command(pcr: u32, digests: &[(HashAlg, &[u8])]) -> Result<Vec<u8>> {
    check_arguments(pcr, digests)?;
    let mut c = Command::new(TPM_ST_SESSIONS, TPM_CC_PCR_EXTEND);
    c.u32(pcr); // pcrHandle: a PCR's handle is its index (TPM_HT_PCR = 0x00)
    password_sessions(&mut c, 1); // the PCR's empty authValue
                                  // digests: TPML_DIGEST_VALUES { count, TPMT_HA { hashAlg, digest } … }; the digest size is
                                  // implied by hashAlg (no size field).
    c.u32(digests.len() as u32);
    for (bank, digest) in digests {
        c.u16(bank.alg_id()).bytes(digest);
    }
    Ok(c.finish())
}

fn check_arguments(pcr: u32, digests: &[(HashAlg, &[u8])]) -> Result<()> {
    if pcr >= PCR_COUNT {
        return Err(Error::InvalidArgument(format!(
            "PCR {pcr} out of range (0–{})",
            PCR_COUNT - 1
        )));
    }
    if digests.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "extending PCR {pcr}: no bank to extend"
        )));
    }
    for (i, (bank, digest)) in digests.iter().enumerate() {
        if digest.len() != bank.digest_len() {
            return Err(Error::InvalidArgument(format!(
                "extending PCR {pcr}: the {} digest has {} bytes, not {}",
                bank.name(),
                digest.len(),
                bank.digest_len()
            )));
        }
        if digests[..i].iter().any(|(b, _)| b == bank) {
            return Err(Error::InvalidArgument(format!(
                "extending PCR {pcr}: bank {} listed twice",
                bank.name()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bank_is_the_tpm2_tools_command() {
        // The single-bank command, whose bytes marshal.rs checks against what tpm2_pcrextend sends.
        let one = pcr_extend_banks_command(23, &[(HashAlg::Sha256, &[0x11; 32])]).unwrap();
        assert_eq!(one, marshal::pcr_extend_command(23, &[0x11; 32]));
    }

    #[test]
    fn two_banks_follow_tpml_digest_values() {
        let cmd = pcr_extend_banks_command(
            23,
            &[
                (HashAlg::Sha256, &[0x11; 32]),
                (HashAlg::Sha384, &[0x22; 48]),
            ],
        )
        .unwrap();
        // Part 3 §22.2 table 110: header, pcrHandle, password authorization, TPML_DIGEST_VALUES.
        let mut want = vec![
            0x80, 0x02, // TPM_ST_SESSIONS
            0x00, 0x00, 0x00, 0x73, // commandSize = 10 + 4 + 4 + 9 + 4 + (2 + 32) + (2 + 48)
            0x00, 0x00, 0x01, 0x82, // TPM_CC_PCR_Extend
            0x00, 0x00, 0x00, 0x17, // pcrHandle 23
            0x00, 0x00, 0x00, 0x09, // authorizationSize
            0x40, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, // TPM_RS_PW, empty auth
            0x00, 0x00, 0x00, 0x02, // count
            0x00, 0x0b, // TPM_ALG_SHA256
        ];
        want.extend_from_slice(&[0x11; 32]);
        want.extend_from_slice(&[0x00, 0x0c]); // TPM_ALG_SHA384
        want.extend_from_slice(&[0x22; 48]);
        assert_eq!(cmd, want);
        assert_eq!(cmd.len(), 0x73);
    }

    #[test]
    fn bad_arguments_are_refused_before_sending() {
        let err =
            |pcr, d: &[(HashAlg, &[u8])]| pcr_extend_banks_command(pcr, d).unwrap_err().to_string();
        assert!(err(24, &[(HashAlg::Sha256, &[0; 32])]).contains("PCR 24 out of range"));
        assert!(err(23, &[]).contains("no bank"));
        assert!(err(23, &[(HashAlg::Sha384, &[0; 32])]).contains("sha384 digest has 32 bytes"));
        let twice = [
            (HashAlg::Sha1, &[0u8; 20][..]),
            (HashAlg::Sha1, &[1u8; 20][..]),
        ];
        assert!(err(23, &twice).contains("bank sha1 listed twice"));
    }
}

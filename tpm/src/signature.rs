//! Parsing of a TPM signature (TPM 2.0 Library Part 2 §11.3 "Signatures", `TPMT_SIGNATURE`):
//! `sigAlg`, then the scheme's `TPMS_SIGNATURE_ECC` (hash, r, s) or `TPMS_SIGNATURE_RSA` (hash,
//! sig). The TPM returns one from Quote, Certify and Sign; the agent converts the ECDSA ones to DER
//! (`ecdsa`), a verifier checks them with the signer's public key.

use crate::codec::Reader;
use crate::constants::{TPM_ALG_ECDSA, TPM_ALG_RSAPSS, TPM_ALG_RSASSA};
use crate::{Error, HashAlg, Result};

/// Longest ECDSA scalar accepted: P-521 (66 bytes); keeps every DER length in short or 1-byte long
/// form.
pub(crate) const MAX_SCALAR_LEN: usize = 66;

/// An ECDSA `TPMT_SIGNATURE`: `sigAlg = TPM_ALG_ECDSA`, `hash`, `signatureR`, `signatureS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaSignature {
    pub hash: u16,
    /// Big-endian r, as the TPM wrote it (TPMs left-pad to the curve size).
    pub r: Vec<u8>,
    /// Big-endian s.
    pub s: Vec<u8>,
}

/// A parsed `TPMT_SIGNATURE` of one of the schemes attestation keys use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Ecdsa(EcdsaSignature),
    /// PKCS#1 v1.5.
    RsaSsa {
        hash: u16,
        sig: Vec<u8>,
    },
    RsaPss {
        hash: u16,
        sig: Vec<u8>,
    },
}

impl Signature {
    /// Parses a whole `TPMT_SIGNATURE`; other schemes (HMAC, SM2, ECSCHNORR…) are
    /// [`Error::Unsupported`], trailing bytes are an error.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let alg = r.u16()?;
        let hash = r.u16()?;
        let sig = match alg {
            TPM_ALG_ECDSA => Signature::Ecdsa(EcdsaSignature::read(hash, &mut r)?),
            TPM_ALG_RSASSA => Signature::RsaSsa {
                hash,
                sig: r.tpm2b()?.to_vec(),
            },
            TPM_ALG_RSAPSS => Signature::RsaPss {
                hash,
                sig: r.tpm2b()?.to_vec(),
            },
            a => {
                return Err(Error::Unsupported(format!(
                    "TPMT_SIGNATURE algorithm {a:#06x} is not ECDSA, RSASSA or RSAPSS"
                )))
            }
        };
        r.finish()?;
        Ok(sig)
    }

    /// The scheme's hash algorithm (`TPM_ALG_ID`): what the signed digest was computed with, and
    /// what a quote's pcrDigest uses.
    pub fn hash(&self) -> u16 {
        match self {
            Signature::Ecdsa(EcdsaSignature { hash, .. })
            | Signature::RsaSsa { hash, .. }
            | Signature::RsaPss { hash, .. } => *hash,
        }
    }
}

impl EcdsaSignature {
    /// Parses a whole `TPMT_SIGNATURE`; anything but ECDSA, or trailing bytes, is an error.
    pub fn parse(tpmt_signature: &[u8]) -> Result<Self> {
        let mut r = Reader::new(tpmt_signature, "TPMT_SIGNATURE");
        let alg = r.u16()?;
        if alg != TPM_ALG_ECDSA {
            return Err(Error::Malformed(format!(
                "TPMT_SIGNATURE algorithm {alg:#06x} is not TPM_ALG_ECDSA ({TPM_ALG_ECDSA:#06x})"
            )));
        }
        let hash = r.u16()?;
        let sig = Self::read(hash, &mut r)?;
        r.finish()?;
        Ok(sig)
    }

    /// `signatureR`, `signatureS` after sigAlg and hash. An empty scalar is no signature, and a
    /// scalar longer than any curve's is not one the TPM made.
    fn read(hash: u16, r: &mut Reader<'_>) -> Result<Self> {
        let (sig_r, sig_s) = (r.tpm2b()?.to_vec(), r.tpm2b()?.to_vec());
        for (name, v) in [("r", &sig_r), ("s", &sig_s)] {
            if v.is_empty() || v.len() > MAX_SCALAR_LEN {
                return Err(Error::Malformed(format!(
                    "TPMT_SIGNATURE: ECDSA {name} has {} bytes",
                    v.len()
                )));
            }
        }
        Ok(EcdsaSignature {
            hash,
            r: sig_r,
            s: sig_s,
        })
    }

    /// The signature's hash algorithm, if this crate knows it.
    pub fn hash_alg(&self) -> Option<HashAlg> {
        HashAlg::from_alg_id(self.hash)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tpmt(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut v = vec![0x00, 0x18, 0x00, 0x0B];
        v.extend_from_slice(&(r.len() as u16).to_be_bytes());
        v.extend_from_slice(r);
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(s);
        v
    }

    #[test]
    fn rejects_other_structures() {
        let mut rsa = tpmt(&[1], &[1]);
        rsa[1] = 0x14; // TPM_ALG_RSASSA
        assert!(EcdsaSignature::parse(&rsa).is_err());
        let mut trailing = tpmt(&[1], &[1]);
        trailing.push(0);
        assert!(EcdsaSignature::parse(&trailing).is_err());
        assert!(EcdsaSignature::parse(&tpmt(&[], &[1])).is_err());
        assert!(EcdsaSignature::parse(&tpmt(&[1], &[1])[..7]).is_err());
    }

    #[test]
    fn every_scheme_and_its_hash() {
        let ecdsa = Signature::parse(&tpmt(&[1], &[2])).unwrap();
        assert_eq!(
            ecdsa,
            Signature::Ecdsa(EcdsaSignature {
                hash: 0x000B,
                r: vec![1],
                s: vec![2]
            })
        );
        let rsa = |alg: u8| [0x00, alg, 0x00, 0x0C, 0x00, 0x02, 0xAB, 0xCD];
        let pss = Signature::parse(&rsa(0x16)).unwrap();
        assert_eq!(
            pss,
            Signature::RsaPss {
                hash: 0x000C,
                sig: vec![0xAB, 0xCD]
            }
        );
        assert_eq!(pss.hash(), 0x000C);
        assert!(matches!(
            Signature::parse(&rsa(0x14)).unwrap(),
            Signature::RsaSsa { hash: 0x000C, .. }
        ));
        // TPM_ALG_HMAC: a valid TPMT_SIGNATURE, but no attestation key signs with it.
        assert!(matches!(
            Signature::parse(&rsa(0x05)),
            Err(Error::Unsupported(_))
        ));
        let mut trailing = rsa(0x14).to_vec();
        trailing.push(0);
        assert!(Signature::parse(&trailing).is_err());
    }
}

//! The hash algorithms of PCR banks, Names and signatures: the `TPMI_ALG_HASH` values (TPM 2.0
//! Library Part 2 §6.3 `TPM_ALG_ID`) this crate has a name and a digest size for.

use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::constants::{TPM_ALG_SHA1, TPM_ALG_SHA256, TPM_ALG_SHA384, TPM_ALG_SHA512};

/// PCR bank hash algorithms (`TPM_ALG_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// `TPM_ALG_SHA1` 0x0004, `TPM_ALG_SHA256` 0x000B, `TPM_ALG_SHA384` 0x000C, `TPM_ALG_SHA512` 0x000D.
    pub fn alg_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => TPM_ALG_SHA1,
            HashAlg::Sha256 => TPM_ALG_SHA256,
            HashAlg::Sha384 => TPM_ALG_SHA384,
            HashAlg::Sha512 => TPM_ALG_SHA512,
        }
    }

    pub fn from_alg_id(id: u16) -> Option<Self> {
        [Self::Sha1, Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|a| a.alg_id() == id)
    }

    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The name tpm2-tools and the TCG event log JSON use ("sha256").
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// `H(data)` for the SHA-2 algorithms; `None` for SHA-1, which this crate does not implement
    /// (its only dependency is sha2, and nothing here needs a SHA-1 digest: the guest extends the
    /// SHA-1 bank with digests it is given, and a verifier refuses SHA-1 signatures).
    pub fn digest(self, data: &[u8]) -> Option<Vec<u8>> {
        match self {
            HashAlg::Sha1 => None,
            HashAlg::Sha256 => Some(Sha256::digest(data).to_vec()),
            HashAlg::Sha384 => Some(Sha384::digest(data).to_vec()),
            HashAlg::Sha512 => Some(Sha512::digest(data).to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_digests_have_the_bank_size() {
        for alg in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            assert_eq!(HashAlg::from_alg_id(alg.alg_id()), Some(alg));
            if let Some(d) = alg.digest(b"abc") {
                assert_eq!(d.len(), alg.digest_len(), "{}", alg.name());
            }
        }
        assert_eq!(HashAlg::from_alg_id(0x0012), None); // TPM_ALG_SM3_256
        assert_eq!(HashAlg::Sha1.digest(b"abc"), None);
    }
}

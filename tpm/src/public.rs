//! Parsing of a key's public area (TPM 2.0 Library Part 2 §12.2.4 `TPMT_PUBLIC`, with the
//! `TPMS_RSA_PARMS` and `TPMS_ECC_PARMS` of §12.2.3) and its Name (Part 1 §16).
//!
//! What the verifier reads of an AK, an EK or the boot signing key: type, nameAlg, attributes,
//! authPolicy, symmetric and scheme parameters and the public key. RSA keys of any size and ECC
//! keys on NIST P-256 (the curve of the TCG EK template L-2 and of our AK) are understood; every
//! length is checked, and trailing bytes are an error.

use crate::codec::{unwrap_tpm2b, Reader};
use crate::constants::{TPM_ALG_ECC, TPM_ALG_NULL, TPM_ALG_RSA, TPM_ECC_NIST_P256};
use crate::{Error, HashAlg, Result};

/// RSA public exponent meaning "default" (65537) in TPMS_RSA_PARMS.
const RSA_DEFAULT_EXPONENT: u32 = 65537;
/// Bytes of a P-256 coordinate.
const P256_COORD_LEN: usize = 32;

/// The public key of a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        modulus: Vec<u8>,
        exponent: u32,
    },
    /// NIST P-256 point, coordinates left-padded to 32 bytes.
    EccP256 {
        x: [u8; P256_COORD_LEN],
        y: [u8; P256_COORD_LEN],
    },
}

/// A parsed `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// The marshalled TPMT_PUBLIC (what the Name hashes).
    pub bytes: Vec<u8>,
    pub name_alg: u16,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    /// Symmetric algorithm and key bits of a storage key (EK): `(TPM_ALG_AES, 128)`; NULL otherwise.
    pub symmetric: Option<(u16, u16)>,
    /// Signing or decryption scheme and its hash, if not TPM_ALG_NULL.
    pub scheme: Option<(u16, u16)>,
    pub key: PublicKey,
}

/// Reads an optional `{alg, u16 detail}` pair (TPMT_*_SCHEME, TPMT_KDF_SCHEME).
fn alg_with_hash(r: &mut Reader<'_>) -> Result<Option<(u16, u16)>> {
    let alg = r.u16()?;
    if alg == TPM_ALG_NULL {
        return Ok(None);
    }
    Ok(Some((alg, r.u16()?)))
}

/// `TPMT_SYM_DEF_OBJECT`: NULL, or {alg, keyBits, mode}.
fn symmetric(r: &mut Reader<'_>) -> Result<Option<(u16, u16)>> {
    let alg = r.u16()?;
    if alg == TPM_ALG_NULL {
        return Ok(None);
    }
    let bits = r.u16()?;
    let _mode = r.u16()?;
    Ok(Some((alg, bits)))
}

/// A TPM may drop leading zero bytes of a coordinate; the point needs them back.
fn p256_coordinate(v: &[u8]) -> Result<[u8; P256_COORD_LEN]> {
    if v.len() > P256_COORD_LEN {
        return Err(Error::Malformed(format!(
            "P-256 coordinate of {} bytes",
            v.len()
        )));
    }
    let mut out = [0u8; P256_COORD_LEN];
    out[P256_COORD_LEN - v.len()..].copy_from_slice(v);
    Ok(out)
}

impl Public {
    /// Parses a `TPMT_PUBLIC` (no size prefix).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "TPMT_PUBLIC");
        let type_ = r.u16()?;
        let name_alg = r.u16()?;
        let attributes = r.u32()?;
        let auth_policy = r.tpm2b()?.to_vec();
        let symmetric = symmetric(&mut r)?;
        let scheme = alg_with_hash(&mut r)?;
        let key = match type_ {
            TPM_ALG_RSA => {
                let _key_bits = r.u16()?;
                let exponent = match r.u32()? {
                    0 => RSA_DEFAULT_EXPONENT,
                    e => e,
                };
                PublicKey::Rsa {
                    modulus: r.tpm2b()?.to_vec(),
                    exponent,
                }
            }
            TPM_ALG_ECC => {
                let curve = r.u16()?;
                if curve != TPM_ECC_NIST_P256 {
                    return Err(Error::Unsupported(format!(
                        "ECC curve {curve:#06x} is not supported (only NIST P-256)"
                    )));
                }
                let _kdf = alg_with_hash(&mut r)?;
                let x = p256_coordinate(r.tpm2b()?)?;
                let y = p256_coordinate(r.tpm2b()?)?;
                PublicKey::EccP256 { x, y }
            }
            t => {
                return Err(Error::Unsupported(format!(
                    "TPMT_PUBLIC type {t:#06x} is not RSA or ECC"
                )))
            }
        };
        r.finish()?;
        Ok(Public {
            bytes: bytes.to_vec(),
            name_alg,
            attributes,
            auth_policy,
            symmetric,
            scheme,
            key,
        })
    }

    /// Parses a `TPM2B_PUBLIC` (what the agent serves and tpm2-tools writes).
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self> {
        Self::parse(unwrap_tpm2b(bytes, "TPM2B_PUBLIC")?)
    }

    /// The object's Name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC) (Part 1 §16).
    pub fn name(&self) -> Result<Vec<u8>> {
        let digest = HashAlg::from_alg_id(self.name_alg)
            .and_then(|alg| alg.digest(&self.bytes))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "hash algorithm {:#06x} is not supported (SHA-256, SHA-384 or SHA-512)",
                    self.name_alg
                ))
            })?;
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&digest);
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::{tpma_object, TPM_ALG_AES, TPM_ALG_SHA256};
    use crate::templates;

    /// The TCG EK template L-1 parses back to what it says: exponent 0 is 65537, AES-128 storage
    /// parameters, no scheme, the 256-byte zero unique as modulus.
    #[test]
    fn rsa_ek_template_parses() {
        let p = Public::parse(&templates::ek_rsa2048_template()).unwrap();
        assert_eq!(p.name_alg, TPM_ALG_SHA256);
        assert_eq!(p.attributes, templates::EK_ATTRIBUTES);
        assert_ne!(p.attributes & tpma_object::DECRYPT, 0);
        assert_eq!(p.auth_policy, templates::EK_POLICY_A_SHA256);
        assert_eq!(p.symmetric, Some((TPM_ALG_AES, 128)));
        assert_eq!(p.scheme, None);
        assert_eq!(
            p.key,
            PublicKey::Rsa {
                modulus: vec![0; 256],
                exponent: 65537
            }
        );
        let name = p.name().unwrap();
        assert_eq!(&name[..2], &[0x00, 0x0B]);
        assert_eq!(name.len(), 2 + 32);
    }

    #[test]
    fn short_coordinates_are_left_padded_and_junk_refused() {
        let mut ecc = templates::ek_ecc_p256_template();
        let len = ecc.len();
        // Replace the two 32-byte zero coordinates by x = 01, y = 02 02.
        ecc.truncate(len - 2 * (2 + 32));
        ecc.extend_from_slice(&[0, 1, 1, 0, 2, 2, 2]);
        let PublicKey::EccP256 { x, y } = Public::parse(&ecc).unwrap().key else {
            panic!("not ECC");
        };
        assert_eq!((x[31], x[30], y[31], y[30], y[29]), (1, 0, 2, 2, 0));
        ecc.push(0);
        assert!(Public::parse(&ecc).is_err());
        let tpm2b = crate::codec::tpm2b(&ecc[..ecc.len() - 1]);
        assert!(Public::parse_tpm2b(&tpm2b).is_ok());
    }

    #[test]
    fn other_types_and_curves_are_unsupported() {
        let mut keyed_hash = templates::ak_ecc_p256_template();
        keyed_hash[1] = 0x08; // TPM_ALG_KEYEDHASH
        assert!(matches!(
            Public::parse(&keyed_hash),
            Err(Error::Unsupported(_))
        ));
        let mut p384 = templates::ak_ecc_p256_template();
        p384[17] = 0x04; // curveID TPM_ECC_NIST_P384
        let e = Public::parse(&p384).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported(m) if m.contains("only NIST P-256")),
            "{e}"
        );
    }
}

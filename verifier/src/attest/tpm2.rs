//! Parsing of the TPM 2.0 structures a verifier receives (TPM 2.0 Library Part 2): `TPMT_PUBLIC`
//! (AK and EK public areas), `TPMS_ATTEST` (the quote) and `TPMT_SIGNATURE`. Everything is
//! big-endian; every length is checked, and trailing bytes are an error (a signed structure with
//! junk after it is not what the TPM produced).

use super::error::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256, Sha384};

pub const TPM_ALG_RSA: u16 = 0x0001;
pub const TPM_ALG_AES: u16 = 0x0006;
pub const TPM_ALG_SHA256: u16 = 0x000B;
pub const TPM_ALG_SHA384: u16 = 0x000C;
pub const TPM_ALG_NULL: u16 = 0x0010;
pub const TPM_ALG_RSASSA: u16 = 0x0014;
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
pub const TPM_ALG_ECDSA: u16 = 0x0018;
pub const TPM_ALG_ECC: u16 = 0x0023;
pub const TPM_ECC_NIST_P256: u16 = 0x0003;
/// `TPM_GENERATED_VALUE`: first field of every TPMS_ATTEST the TPM signs.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ST_ATTEST_CERTIFY`.
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
/// `TPMA_OBJECT` bits a verifier checks on an AK or EK.
pub const TPMA_FIXED_TPM: u32 = 1 << 1;
pub const TPMA_RESTRICTED: u32 = 1 << 16;
pub const TPMA_DECRYPT: u32 = 1 << 17;
pub const TPMA_SIGN: u32 = 1 << 18;
/// RSA public exponent meaning "default" (65537) in TPMS_RSA_PARMS.
const RSA_DEFAULT_EXPONENT: u32 = 65537;

/// Big-endian reader naming the structure in its errors (the TPM client's, one implementation).
pub use cvm_tpm::Reader;

/// Strips the u16 size of a TPM2B and checks it covers the rest exactly.
pub fn unwrap_tpm2b<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a [u8]> {
    let mut r = Reader::new(bytes, what);
    let inner = r.tpm2b()?;
    r.finish()?;
    Ok(inner)
}

/// The public key of a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        modulus: Vec<u8>,
        exponent: u32,
    },
    /// NIST P-256 point, coordinates left-padded to 32 bytes.
    EccP256 {
        x: [u8; 32],
        y: [u8; 32],
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

fn p256_coordinate(v: &[u8]) -> Result<[u8; 32]> {
    ensure!(
        v.len() <= 32,
        Malformed,
        "P-256 coordinate of {} bytes",
        v.len()
    );
    let mut out = [0u8; 32];
    out[32 - v.len()..].copy_from_slice(v);
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
                ensure!(
                    curve == TPM_ECC_NIST_P256,
                    Unsupported,
                    "ECC curve {curve:#06x} is not supported (only NIST P-256)"
                );
                let _kdf = alg_with_hash(&mut r)?;
                let x = p256_coordinate(r.tpm2b()?)?;
                let y = p256_coordinate(r.tpm2b()?)?;
                PublicKey::EccP256 { x, y }
            }
            t => bail!(Unsupported, "TPMT_PUBLIC type {t:#06x} is not RSA or ECC"),
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
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&hash(self.name_alg, &self.bytes)?);
        Ok(name)
    }

    /// Checks the attributes of a key whose quotes can be trusted: fixedTPM, restricted, sign.
    pub fn check_attestation_key(&self) -> Result<()> {
        let need = TPMA_FIXED_TPM | TPMA_RESTRICTED | TPMA_SIGN;
        ensure!(
            self.attributes & need == need && self.attributes & TPMA_DECRYPT == 0,
            Key,
            "the AK's attributes {:#010x} are not those of an attestation key (fixedTPM, \
             restricted, sign, not decrypt): a non-restricted key can sign forged quotes",
            self.attributes
        );
        Ok(())
    }
}

/// Digest with a TPM hash algorithm (SHA-256 or SHA-384; SHA-1 is refused for new evidence).
pub fn hash(alg: u16, data: &[u8]) -> Result<Vec<u8>> {
    Ok(match alg {
        TPM_ALG_SHA256 => Sha256::digest(data).to_vec(),
        TPM_ALG_SHA384 => Sha384::digest(data).to_vec(),
        a => bail!(
            Unsupported,
            "hash algorithm {a:#06x} is not supported (SHA-256 or SHA-384)"
        ),
    })
}

/// One `TPMS_PCR_SELECTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub hash_alg: u16,
    /// Selected PCR indices, ascending (the order their values enter pcrDigest).
    pub pcrs: Vec<u32>,
}

/// A parsed quote (`TPMS_ATTEST` with `TPMS_QUOTE_INFO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    pub qualified_signer: Vec<u8>,
    /// extraData: the verifier's nonce.
    pub extra_data: Vec<u8>,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
    pub firmware_version: u64,
    pub pcr_select: Vec<PcrSelection>,
    pub pcr_digest: Vec<u8>,
}

/// The fields every `TPMS_ATTEST` starts with, up to its type-specific `attested` union.
struct AttestHeader {
    qualified_signer: Vec<u8>,
    extra_data: Vec<u8>,
    clock: u64,
    reset_count: u32,
    restart_count: u32,
    safe: bool,
    firmware_version: u64,
}

impl AttestHeader {
    /// Reads magic, type (which must be `want_type`, named `type_name` in the error), signer,
    /// extraData, clockInfo and firmwareVersion.
    fn read(r: &mut Reader<'_>, want_type: u16, type_name: &str) -> Result<Self> {
        let magic = r.u32()?;
        ensure!(
            magic == TPM_GENERATED_VALUE,
            Malformed,
            "TPMS_ATTEST magic {magic:#010x} is not TPM_GENERATED_VALUE (0xff544347)"
        );
        let type_ = r.u16()?;
        ensure!(
            type_ == want_type,
            Malformed,
            "TPMS_ATTEST type {type_:#06x} is not {type_name} ({want_type:#06x})"
        );
        Ok(AttestHeader {
            qualified_signer: r.tpm2b()?.to_vec(),
            extra_data: r.tpm2b()?.to_vec(),
            clock: r.u64()?,
            reset_count: r.u32()?,
            restart_count: r.u32()?,
            safe: r.u8()? != 0,
            firmware_version: r.u64()?,
        })
    }
}

impl Attest {
    /// Parses a TPMS_ATTEST and requires it to be a TPM-generated quote.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let h = AttestHeader::read(&mut r, TPM_ST_ATTEST_QUOTE, "TPM_ST_ATTEST_QUOTE")?;
        let count = r.u32()?;
        let mut pcr_select = Vec::new();
        for _ in 0..count {
            let hash_alg = r.u16()?;
            let n = r.u8()? as usize;
            let bitmap = r.take(n)?;
            let pcrs = (0..n * 8)
                .filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0)
                .map(|i| i as u32)
                .collect();
            pcr_select.push(PcrSelection { hash_alg, pcrs });
        }
        let pcr_digest = r.tpm2b()?.to_vec();
        r.finish()?;
        Ok(Attest {
            qualified_signer: h.qualified_signer,
            extra_data: h.extra_data,
            clock: h.clock,
            reset_count: h.reset_count,
            restart_count: h.restart_count,
            safe: h.safe,
            firmware_version: h.firmware_version,
            pcr_select,
            pcr_digest,
        })
    }
}

/// A parsed certification (`TPMS_ATTEST` with `TPMS_CERTIFY_INFO`, TPM2_Certify's output): the
/// signer vouches that an object with this Name is loaded in the same TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifyInfo {
    /// extraData: the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// Name of the certified object.
    pub name: Vec<u8>,
    /// Its qualified Name (hierarchy ‖ parents ‖ Name, hashed).
    pub qualified_name: Vec<u8>,
}

impl CertifyInfo {
    /// Parses a TPMS_ATTEST and requires it to be a TPM-generated certification.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST (certify)");
        let h = AttestHeader::read(&mut r, TPM_ST_ATTEST_CERTIFY, "TPM_ST_ATTEST_CERTIFY")?;
        let name = r.tpm2b()?.to_vec();
        let qualified_name = r.tpm2b()?.to_vec();
        r.finish()?;
        Ok(CertifyInfo {
            extra_data: h.extra_data,
            name,
            qualified_name,
        })
    }
}

/// A parsed `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Ecdsa {
        hash_alg: u16,
        r: Vec<u8>,
        s: Vec<u8>,
    },
    RsaSsa {
        hash_alg: u16,
        sig: Vec<u8>,
    },
    RsaPss {
        hash_alg: u16,
        sig: Vec<u8>,
    },
}

impl Signature {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let alg = r.u16()?;
        let hash_alg = r.u16()?;
        let sig = match alg {
            TPM_ALG_ECDSA => Signature::Ecdsa {
                hash_alg,
                r: r.tpm2b()?.to_vec(),
                s: r.tpm2b()?.to_vec(),
            },
            TPM_ALG_RSASSA => Signature::RsaSsa {
                hash_alg,
                sig: r.tpm2b()?.to_vec(),
            },
            TPM_ALG_RSAPSS => Signature::RsaPss {
                hash_alg,
                sig: r.tpm2b()?.to_vec(),
            },
            a => bail!(
                Unsupported,
                "TPMT_SIGNATURE algorithm {a:#06x} is not ECDSA, RSASSA or RSAPSS"
            ),
        };
        r.finish().context("TPMT_SIGNATURE")?;
        Ok(sig)
    }
}

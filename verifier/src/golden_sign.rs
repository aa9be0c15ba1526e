//! Signed golden measurements: `cvm-image golden sign` / `golden verify`, and the signature gate of
//! `cvm-image verify --golden-pubkey`.
//!
//! A verifier that trusts a golden file trusts whoever wrote it; signing lets the image owner's key,
//! not the transport, vouch for the prediction.
//!
//! # Signature format
//!
//! A **detached** signature over the **exact bytes** of the golden file, so that no canonical JSON
//! serialisation has to be agreed on and `openssl dgst` can check it. By default it sits next to the
//! golden file as `golden-measurement.json.sig` (the golden file name + [`SIG_SUFFIX`]):
//!
//! ```json
//! {
//!   "format": 1,
//!   "algorithm": "ecdsa-p256-sha256",
//!   "key_id": "<hex SHA-256 of the public key's SubjectPublicKeyInfo DER>",
//!   "signature": "<base64>"
//! }
//! ```
//!
//! * `algorithm` is `ecdsa-p256-sha256` (ECDSA over NIST P-256 with SHA-256, the signature being the
//!   DER `ECDSA-Sig-Value` — exactly what `openssl dgst -sha256 -sign` writes; ours are deterministic,
//!   RFC 6979) or `rsa-pkcs1v15-sha256` (RSASSA-PKCS1-v1_5 with SHA-256, RFC 8017 §8.2, also
//!   `openssl dgst -sha256 -sign`'s default; deterministic by construction; keys of at least
//!   [`MIN_RSA_BITS`] bits). RSA-PSS is not used: it is randomised, and v1.5 is what openssl emits
//!   without extra options.
//! * `key_id` = `openssl pkey -pubin -in PUB.pem -outform DER | sha256sum`. It only names the key in
//!   error messages ("signed by another key"); it is not trusted — the signature is always checked
//!   with the verifier's own public key, and the algorithm must match that key's type.
//! * `signature`: base64 (RFC 4648, padded) of the bytes `openssl dgst -sha256 -verify PUB.pem
//!   -signature SIG.der FILE` takes as SIG.der.
//!
//! Keys are PEM as openssl writes them: private keys PKCS#8 (`BEGIN PRIVATE KEY`, `openssl
//! genpkey`, and `cvm-image keys generate`'s `golden.key`), SEC1 (`BEGIN EC PRIVATE KEY`, `openssl
//! ecparam -genkey`, an `EC PARAMETERS` block before it is skipped) or PKCS#1 (`BEGIN RSA PRIVATE
//! KEY`); public keys SPKI (`BEGIN PUBLIC KEY`, `openssl pkey -pubout`) or PKCS#1 (`BEGIN RSA PUBLIC
//! KEY`). Encrypted private keys are refused with the openssl command that decrypts them.

use crate::error::{Kind, OptionExt, Result, ResultExt, VerifyError};

/// `bail!("format", args…)`: the caller's key or signature file is not usable.
macro_rules! bail {
    ($($fmt:tt)+) => {
        return Err(VerifyError::input(format!($($fmt)+)))
    };
}
use base64::Engine;
use der::Decode;
use p256::ecdsa::signature::{SignatureEncoding, Signer, Verifier};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Appended to the golden file's name to find its detached signature.
pub const SIG_SUFFIX: &str = ".sig";
/// Version of the signature file's schema (its `format` field).
pub const SIG_FORMAT: u32 = 1;
/// `algorithm` of ECDSA P-256 / SHA-256 signatures.
pub const ALG_ECDSA_P256: &str = "ecdsa-p256-sha256";
/// `algorithm` of RSASSA-PKCS1-v1_5 / SHA-256 signatures.
pub const ALG_RSA_PKCS1V15: &str = "rsa-pkcs1v15-sha256";
/// Smallest RSA modulus accepted for signing or verifying (NIST SP 800-57: 112-bit security).
pub const MIN_RSA_BITS: usize = 2048;
/// OID id-ecPublicKey (RFC 5480 §2.1.1), the SPKI/PKCS#8 algorithm of EC keys.
const OID_EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// OID rsaEncryption (RFC 8017 Appendix C), the SPKI/PKCS#8 algorithm of RSA keys.
const OID_RSA_ENCRYPTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// Exit status when a signature check ran and refused (usage/input errors exit 2 via `main`).
pub const EXIT_REFUSED: u8 = 1;

/// The detached signature file (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub format: u32,
    pub algorithm: String,
    pub key_id: String,
    pub signature: String,
}

/// A private key that can sign golden files.
pub enum SigningKey {
    EcdsaP256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

/// A public key that golden-file signatures are checked with.
#[derive(Debug, Clone)]
pub enum PublicKey {
    EcdsaP256(p256::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

/// Why a signature check refused a golden file (a verification failure, not an input error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The default signature path of `golden`: `golden` + [`SIG_SUFFIX`].
pub fn default_sig_path(golden: &Path) -> PathBuf {
    let mut name = golden.as_os_str().to_owned();
    name.push(SIG_SUFFIX);
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------------------
// PEM and key loading
// ---------------------------------------------------------------------------------------------

/// The PEM blocks of `text` as (label, DER), in order.
fn pem_blocks(text: &str, what: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let label_end = after.find("-----").or_kind(
            Kind::Input,
            format!("{}: unterminated PEM BEGIN line", what.display()),
        )?;
        let label = &after[..label_end];
        let end_line = format!("-----END {label}-----");
        let end = rest[start..].find(&end_line).or_kind(
            Kind::Input,
            format!("{}: PEM block {label:?} has no END line", what.display()),
        )? + start
            + end_line.len();
        let (_, der) = der::pem::decode_vec(&rest.as_bytes()[start..end]).map_err(|e| {
            VerifyError::input(format!(
                "{}: malformed PEM block {label:?}: {e}",
                what.display()
            ))
        })?;
        blocks.push((label.to_string(), der));
        rest = &rest[end..];
    }
    if blocks.is_empty() {
        bail!(
            "{} holds no PEM block (expected a key as openssl writes it)",
            what.display()
        );
    }
    Ok(blocks)
}

fn read_pem(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let text = std::fs::read_to_string(path)
        .input(format!("cannot read the key file {}", path.display()))?;
    pem_blocks(&text, path)
}

fn rsa_bits_ok(n_bits: usize, path: &Path) -> Result<()> {
    if n_bits < MIN_RSA_BITS {
        bail!(
            "{}: RSA key of {n_bits} bits; at least {MIN_RSA_BITS} are required \
             (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072)",
            path.display()
        );
    }
    Ok(())
}

fn rsa_signing_key(key: rsa::RsaPrivateKey, path: &Path) -> Result<SigningKey> {
    rsa_bits_ok(key.size() * 8, path)?;
    Ok(SigningKey::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(
        key,
    ))))
}

/// Load a private key from PEM (PKCS#8, SEC1 EC or PKCS#1 RSA).
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    for (label, der) in read_pem(path)? {
        let ctx = || format!("{}: cannot decode the {label} block", path.display());
        return match label.as_str() {
            "EC PARAMETERS" => continue,
            "PRIVATE KEY" => {
                let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).or_kind_with(Kind::Input, ctx)?;
                match info.algorithm.oid {
                    OID_EC_PUBLIC_KEY => Ok(SigningKey::EcdsaP256(
                        p256::ecdsa::SigningKey::from_pkcs8_der(&der)
                            .or_kind_with(Kind::Input, || format!("{} (only P-256 EC keys are supported)", ctx()))?,
                    )),
                    OID_RSA_ENCRYPTION => rsa_signing_key(
                        rsa::RsaPrivateKey::from_pkcs8_der(&der).or_kind_with(Kind::Input, ctx)?,
                        path,
                    ),
                    other => bail!(
                        "{}: key algorithm {other} is not supported (use ECDSA P-256 or RSA)",
                        path.display()
                    ),
                }
            }
            "EC PRIVATE KEY" => Ok(SigningKey::EcdsaP256(p256::ecdsa::SigningKey::from(
                p256::SecretKey::from_sec1_der(&der)
                    .or_kind_with(Kind::Input, || format!("{} (only P-256 EC keys are supported)", ctx()))?,
            ))),
            "RSA PRIVATE KEY" => rsa_signing_key(
                rsa::RsaPrivateKey::from_pkcs1_der(&der).or_kind_with(Kind::Input, ctx)?,
                path,
            ),
            "ENCRYPTED PRIVATE KEY" => bail!(
                "{} is encrypted; decrypt it first: openssl pkey -in {} -out PLAIN.pem",
                path.display(),
                path.display()
            ),
            other => bail!(
                "{}: PEM block {other:?} is not a private key (expected PRIVATE KEY, EC PRIVATE KEY \
                 or RSA PRIVATE KEY)",
                path.display()
            ),
        };
    }
    bail!("{} holds EC parameters but no private key", path.display())
}

/// Load a public key from PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let blocks = read_pem(path)?;
    let (label, der) = &blocks[0];
    let ctx = || format!("{}: cannot decode the {label} block", path.display());
    let key = match label.as_str() {
        "PUBLIC KEY" => {
            let spki =
                spki::SubjectPublicKeyInfoRef::from_der(der).or_kind_with(Kind::Input, ctx)?;
            match spki.algorithm.oid {
                OID_EC_PUBLIC_KEY => PublicKey::EcdsaP256(
                    p256::ecdsa::VerifyingKey::from_public_key_der(der)
                        .or_kind_with(Kind::Input, || {
                            format!("{} (only P-256 EC keys are supported)", ctx())
                        })?,
                ),
                OID_RSA_ENCRYPTION => PublicKey::Rsa(
                    rsa::RsaPublicKey::from_public_key_der(der).or_kind_with(Kind::Input, ctx)?,
                ),
                other => bail!(
                    "{}: key algorithm {other} is not supported (use ECDSA P-256 or RSA)",
                    path.display()
                ),
            }
        }
        "RSA PUBLIC KEY" => {
            PublicKey::Rsa(rsa::RsaPublicKey::from_pkcs1_der(der).or_kind_with(Kind::Input, ctx)?)
        }
        other => bail!(
            "{}: PEM block {other:?} is not a public key (expected PUBLIC KEY; \
             openssl pkey -in KEY.pem -pubout writes one)",
            path.display()
        ),
    };
    if let PublicKey::Rsa(k) = &key {
        rsa_bits_ok(k.size() * 8, path)?;
    }
    Ok(key)
}

// ---------------------------------------------------------------------------------------------
// Signing and checking
// ---------------------------------------------------------------------------------------------

impl SigningKey {
    pub fn public_key(&self) -> PublicKey {
        match self {
            SigningKey::EcdsaP256(k) => PublicKey::EcdsaP256(*k.verifying_key()),
            SigningKey::Rsa(k) => PublicKey::Rsa(rsa::RsaPublicKey::from(k.as_ref().as_ref())),
        }
    }

    /// Sign `data` (the exact golden file bytes) into a signature file.
    pub fn sign(&self, data: &[u8]) -> Result<SignatureFile> {
        let signature = match self {
            SigningKey::EcdsaP256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(data);
                sig.to_der().to_vec()
            }
            SigningKey::Rsa(k) => k
                .try_sign(data)
                .input("RSA PKCS#1 v1.5 signing failed")?
                .to_vec(),
        };
        let public = self.public_key();
        Ok(SignatureFile {
            format: SIG_FORMAT,
            algorithm: public.algorithm().to_string(),
            key_id: public.key_id()?,
            signature: base64::engine::general_purpose::STANDARD.encode(signature),
        })
    }
}

impl PublicKey {
    /// The `algorithm` of signatures this key checks.
    pub fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::EcdsaP256(_) => ALG_ECDSA_P256,
            PublicKey::Rsa(_) => ALG_RSA_PKCS1V15,
        }
    }

    /// Hex SHA-256 of the SubjectPublicKeyInfo DER (`key_id`).
    pub fn key_id(&self) -> Result<String> {
        let der = match self {
            PublicKey::EcdsaP256(k) => k.to_public_key_der(),
            PublicKey::Rsa(k) => k.to_public_key_der(),
        }
        .input("encoding the public key as SPKI DER")?;
        Ok(hex::encode(Sha256::digest(der.as_bytes())))
    }

    /// Check `sig` over `data`; `Err(Refusal)` says why it does not hold.
    pub fn check(&self, data: &[u8], sig: &SignatureFile) -> Result<(), Refusal> {
        let key_id = self
            .key_id()
            .map_err(|e| Refusal(format!("cannot compute the key id: {}", e.chain())))?;
        if sig.format != SIG_FORMAT {
            return Err(Refusal(format!(
                "signature file format {}, this cvm-image reads format {SIG_FORMAT}",
                sig.format
            )));
        }
        if sig.algorithm != self.algorithm() {
            return Err(Refusal(format!(
                "signed with {:?} (key {}), but the given public key is {} (key {key_id})",
                sig.algorithm,
                sig.key_id,
                self.algorithm()
            )));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sig.signature.as_bytes())
            .map_err(|e| Refusal(format!("the signature is not valid base64: {e}")))?;
        let valid = match self {
            PublicKey::EcdsaP256(k) => {
                let s = p256::ecdsa::Signature::from_der(&raw).map_err(|e| {
                    Refusal(format!("the signature is not a DER ECDSA-Sig-Value: {e}"))
                })?;
                k.verify(data, &s).is_ok()
            }
            PublicKey::Rsa(k) => {
                let s = rsa::pkcs1v15::Signature::try_from(raw.as_slice())
                    .map_err(|e| Refusal(format!("the signature is malformed: {e}")))?;
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.clone())
                    .verify(data, &s)
                    .is_ok()
            }
        };
        if valid {
            Ok(())
        } else if sig.key_id != key_id {
            Err(Refusal(format!(
                "signed by another key (key_id {}), not by the given public key (key_id {key_id})",
                sig.key_id
            )))
        } else {
            Err(Refusal(format!(
                "the signature does not match the file's bytes (the golden file or its signature \
                 was altered after signing with key {key_id})"
            )))
        }
    }
}

/// Check the detached signature at `sig_path` of `golden_bytes` (read from `golden`) with `key`.
/// A missing, unparsable or wrong signature is a [`Refusal`]; only an unreadable signature file
/// (other than absent) is an input error.
pub fn check_detached(
    golden: &Path,
    golden_bytes: &[u8],
    sig_path: &Path,
    key: &PublicKey,
) -> Result<Result<(), Refusal>> {
    let sig_bytes = match std::fs::read(sig_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(Refusal(format!(
                "{} is not signed: no signature file {} (cvm-image golden sign --key KEY.pem)",
                golden.display(),
                sig_path.display()
            ))))
        }
        Err(e) => {
            return Err(e).input(format!("cannot read {}", sig_path.display()));
        }
    };
    let sig: SignatureFile = match serde_json::from_slice(&sig_bytes) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Err(Refusal(format!(
                "{} is not a golden signature file: {e}",
                sig_path.display()
            ))))
        }
    };
    Ok(key.check(golden_bytes, &sig).map_err(|r| {
        Refusal(format!(
            "{} (signature {}): {r}",
            golden.display(),
            sig_path.display()
        ))
    }))
}

/// The pretty JSON of a signature file, newline-terminated.
pub fn render(sig: &SignatureFile) -> Result<String> {
    Ok(serde_json::to_string_pretty(sig).input("serialising the signature")? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key from a fixed scalar (no randomness in tests).
    fn p256_key() -> SigningKey {
        let scalar = [0x11u8; 32];
        SigningKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&scalar).unwrap())
    }

    #[test]
    fn ecdsa_is_deterministic_and_round_trips() {
        let k = p256_key();
        let a = k.sign(b"golden").unwrap();
        assert_eq!(
            a,
            k.sign(b"golden").unwrap(),
            "RFC 6979: same input, same signature"
        );
        assert_eq!(a.algorithm, ALG_ECDSA_P256);
        k.public_key().check(b"golden", &a).unwrap();
        let err = k.public_key().check(b"golden!", &a).unwrap_err();
        assert!(err.0.contains("does not match"), "{err}");
    }

    #[test]
    fn refuses_algorithm_mismatch_and_garbage() {
        let k = p256_key();
        let mut s = k.sign(b"x").unwrap();
        s.algorithm = ALG_RSA_PKCS1V15.into();
        assert!(k
            .public_key()
            .check(b"x", &s)
            .unwrap_err()
            .0
            .contains("rsa-pkcs1v15"));
        let mut s = k.sign(b"x").unwrap();
        s.signature = "!!".into();
        assert!(k
            .public_key()
            .check(b"x", &s)
            .unwrap_err()
            .0
            .contains("base64"));
        let mut s = k.sign(b"x").unwrap();
        s.signature = base64::engine::general_purpose::STANDARD.encode([0x30, 0x00]);
        assert!(k
            .public_key()
            .check(b"x", &s)
            .unwrap_err()
            .0
            .contains("DER"));
    }

    #[test]
    fn other_key_is_named() {
        let other =
            SigningKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[0x22u8; 32]).unwrap());
        let s = other.sign(b"x").unwrap();
        let err = p256_key().public_key().check(b"x", &s).unwrap_err();
        assert!(err.0.contains("another key"), "{err}");
    }

    #[test]
    fn sig_path_appends_suffix() {
        assert_eq!(
            default_sig_path(Path::new("out/golden-measurement.json")),
            PathBuf::from("out/golden-measurement.json.sig")
        );
    }

    #[test]
    fn pem_blocks_skip_surrounding_text() {
        let text =
            "junk\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let b = pem_blocks(text, Path::new("t")).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, "EC PARAMETERS");
        // The named curve prime256v1 OID, as `openssl ecparam -name prime256v1` writes it.
        assert_eq!(hex::encode(&b[0].1), "06082a8648ce3d030107");
        assert!(pem_blocks("no pem", Path::new("t")).is_err());
    }
}

//! Encodings of the evidence: base64, the PEM SubjectPublicKeyInfo of our P-256 TPM keys, and the
//! key hash served for the signing key.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Standard base64 with padding, as every binary field of the wire documents.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The key hash served for the signing key: SHA-256 of its TPMT_PUBLIC, hex.
pub fn key_hash(public: &[u8]) -> String {
    hex::encode(Sha256::digest(public))
}

/// DER SubjectPublicKeyInfo prefix of an uncompressed NIST P-256 point (id-ecPublicKey, prime256v1,
/// BIT STRING of 66 bytes: 0 unused bits, 0x04, X, Y).
const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];
/// Bytes at the end of our ECC templates: `unique` with two empty coordinates (u16 0, u16 0).
const EMPTY_UNIQUE_LEN: usize = 4;
const P256_COORD: usize = 32;

/// PEM SubjectPublicKeyInfo of the AK (a P-256 TPMT_PUBLIC from our template).
pub fn ak_public_pem(public: &[u8]) -> Result<String, String> {
    p256_public_pem(public, &cvm_tpm::templates::ak_ecc_p256_template())
}

/// PEM SubjectPublicKeyInfo of a P-256 TPMT_PUBLIC created from `template` (one of our ECC
/// templates, whose `unique` is empty): everything before `unique` must be the template's.
pub fn p256_public_pem(public: &[u8], template: &[u8]) -> Result<String, String> {
    let prefix = template.len().saturating_sub(EMPTY_UNIQUE_LEN);
    if public.len() < prefix || public[..prefix] != template[..prefix] {
        return Err("not an ECC P-256 key of the expected template".into());
    }
    let mut rest = &public[prefix..];
    let mut coord = || -> Result<[u8; P256_COORD], String> {
        let n = rest
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or("truncated ECC point")?;
        let v = rest.get(2..2 + n).ok_or("truncated ECC point")?;
        if n > P256_COORD {
            return Err(format!("{n}-byte P-256 coordinate"));
        }
        let mut out = [0u8; P256_COORD];
        out[P256_COORD - n..].copy_from_slice(v);
        rest = &rest[2 + n..];
        Ok(out)
    };
    let (x, y) = (coord()?, coord()?);
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&x);
    der.extend_from_slice(&y);
    Ok(pem("PUBLIC KEY", &der))
}

fn pem(label: &str, der: &[u8]) -> String {
    const PEM_LINE: usize = 64;
    let text = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(PEM_LINE) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

//! ECDSA signatures as X.509/PKIX tools want them (DER `ECDSA-Sig-Value`, RFC 3279 §2.2.3), converted
//! from the `TPMT_SIGNATURE` the TPM returns (parsed in `signature`), so that a workload can check a
//! signature with openssl or any ECDSA library without knowing TPM structures.

use crate::signature::EcdsaSignature;

/// DER tag of a SEQUENCE.
const DER_SEQUENCE: u8 = 0x30;
/// DER tag of an INTEGER.
const DER_INTEGER: u8 = 0x02;

impl EcdsaSignature {
    /// DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`: minimal two's-complement
    /// integers (leading zero bytes dropped, one 0x00 added when the top bit is set).
    pub fn to_der(&self) -> Vec<u8> {
        let (r, s) = (der_integer(&self.r), der_integer(&self.s));
        let mut out = vec![DER_SEQUENCE];
        push_der_len(&mut out, r.len() + s.len());
        out.extend_from_slice(&r);
        out.extend_from_slice(&s);
        out
    }
}

/// A non-negative big-endian integer as a DER INTEGER TLV.
fn der_integer(be: &[u8]) -> Vec<u8> {
    let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let digits = if first == be.len() {
        &[0u8][..]
    } else {
        &be[first..]
    };
    let pad = digits[0] & 0x80 != 0;
    let mut out = vec![DER_INTEGER];
    push_der_len(&mut out, digits.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// DER definite length: short form below 128, else `0x81 len` (every length here is < 256: the
/// parser refuses scalars longer than P-521's 66 bytes).
fn push_der_len(out: &mut Vec<u8>, len: usize) {
    const LONG_FORM_1: u8 = 0x81;
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push(LONG_FORM_1);
        out.push(len as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests::tpmt;
    use crate::HashAlg;

    /// Expected DER written by `openssl asn1parse -genconf` for
    /// `asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x<r>\ns=INTEGER:0x<s>` (openssl 3.0):
    /// r = 0x80 00..01 (32 bytes, high bit set → 0x00 pad), s = 0x00 00 7f ff (leading zeros dropped).
    #[test]
    fn der_matches_openssl_encoding() {
        let mut r = vec![0u8; 32];
        r[0] = 0x80;
        r[31] = 1;
        let sig = EcdsaSignature::parse(&tpmt(&r, &[0, 0, 0x7F, 0xFF])).unwrap();
        let mut want = hex::decode("302702210080").unwrap();
        want.extend_from_slice(&[0; 30]);
        want.extend_from_slice(&hex::decode("0102027fff").unwrap());
        assert_eq!(sig.to_der(), want);
        assert_eq!(sig.hash_alg(), Some(HashAlg::Sha256));
    }

    #[test]
    fn long_form_length_for_p521_sized_scalars() {
        let sig = EcdsaSignature::parse(&tpmt(&[0xFF; 66], &[0xFF; 66])).unwrap();
        let der = sig.to_der();
        assert_eq!(&der[..3], &[0x30, 0x81, 2 * (2 + 67)]);
        assert_eq!(der.len(), 3 + 2 * (2 + 67));
    }

    #[test]
    fn zero_scalar_is_one_zero_byte() {
        assert_eq!(der_integer(&[0, 0]), vec![2, 1, 0]);
    }
}

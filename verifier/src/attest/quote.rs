//! TPM quote verification: the AK's signature over the TPMS_ATTEST, the nonce in extraData, and
//! pcrDigest against the PCR values the VM reported (TPM 2.0 Part 3 §18.4: pcrDigest is the hash,
//! with the signing scheme's hash algorithm, of the selected PCR values concatenated in ascending
//! PCR order, bank by bank in selection order).

use std::collections::BTreeMap;

use super::error::{bail, ensure, Classify, Context, Error, Result};
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Sha256, Sha384};

use cvm_tpm::constants::{tpma_object, TPM_ALG_SHA256, TPM_ALG_SHA384};
use cvm_tpm::{EcdsaSignature, HashAlg, Public, PublicKey, QuoteInfo, Signature};

/// A quote whose signature, nonce and PCR digest all checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    pub attest: QuoteInfo,
    /// Name of the AK that signed it (what MakeCredential binds to the EK).
    pub ak_name: Vec<u8>,
    /// The quoted PCR values (index → value) of the quoted bank.
    pub pcrs: BTreeMap<u32, Vec<u8>>,
}

/// Digest with a TPM hash algorithm: SHA-256 or SHA-384 only (SHA-1 is refused for new evidence,
/// and no AK here signs with SHA-512).
fn tpm_hash(alg: u16, data: &[u8]) -> Result<Vec<u8>> {
    HashAlg::from_alg_id(alg)
        .filter(|h| matches!(h, HashAlg::Sha256 | HashAlg::Sha384))
        .and_then(|h| h.digest(data))
        .or_err_with(Error::Unsupported, || {
            format!("hash algorithm {alg:#06x} is not supported (SHA-256 or SHA-384)")
        })
}

/// Checks the attributes of a key whose quotes can be trusted: fixedTPM, restricted, sign.
pub fn check_attestation_key(ak: &Public) -> Result<()> {
    let need = tpma_object::FIXED_TPM | tpma_object::RESTRICTED | tpma_object::SIGN_ENCRYPT;
    ensure!(
        ak.attributes & need == need && ak.attributes & tpma_object::DECRYPT == 0,
        Key,
        "the AK's attributes {:#010x} are not those of an attestation key (fixedTPM, \
         restricted, sign, not decrypt): a non-restricted key can sign forged quotes",
        ak.attributes
    );
    Ok(())
}

fn rsa_key(modulus: &[u8], exponent: u32) -> Result<RsaPublicKey> {
    RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(exponent))
        .or_err(Error::Key, "RSA public key of the AK")
}

/// Verifies `sig` over `message` (a TPMS_ATTEST) with `key`.
pub fn verify_signature(key: &PublicKey, message: &[u8], sig: &Signature) -> Result<()> {
    match (key, sig) {
        (PublicKey::EccP256 { x, y }, Signature::Ecdsa(EcdsaSignature { hash, r, s })) => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let digest = tpm_hash(*hash, message)?;
            let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
            let vk = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                .or_err(Error::Key, "the AK's ECC point is not on P-256")?;
            let pad = |v: &[u8]| -> Result<[u8; 32]> {
                ensure!(
                    v.len() <= 32,
                    Malformed,
                    "ECDSA P-256 scalar of {} bytes",
                    v.len()
                );
                let mut out = [0u8; 32];
                out[32 - v.len()..].copy_from_slice(v);
                Ok(out)
            };
            let sig = p256::ecdsa::Signature::from_scalars(pad(r)?, pad(s)?)
                .or_err(Error::Malformed, "ECDSA signature scalars out of range")?;
            vk.verify_prehash(&digest, &sig).or_err(
                Error::Signature,
                "the quote's ECDSA signature does not verify with the AK",
            )
        }
        (PublicKey::Rsa { modulus, exponent }, Signature::RsaSsa { hash, sig }) => {
            let digest = tpm_hash(*hash, message)?;
            let scheme = match *hash {
                TPM_ALG_SHA256 => Pkcs1v15Sign::new::<Sha256>(),
                TPM_ALG_SHA384 => Pkcs1v15Sign::new::<Sha384>(),
                a => bail!(Unsupported, "RSASSA with hash {a:#06x} is not supported"),
            };
            rsa_key(modulus, *exponent)?
                .verify(scheme, &digest, sig)
                .or_err(
                    Error::Signature,
                    "the quote's RSASSA signature does not verify with the AK",
                )
        }
        (PublicKey::Rsa { modulus, exponent }, Signature::RsaPss { hash, sig }) => {
            let digest = tpm_hash(*hash, message)?;
            let scheme = match *hash {
                TPM_ALG_SHA256 => Pss::new::<Sha256>(),
                TPM_ALG_SHA384 => Pss::new::<Sha384>(),
                a => bail!(Unsupported, "RSAPSS with hash {a:#06x} is not supported"),
            };
            rsa_key(modulus, *exponent)?
                .verify(scheme, &digest, sig)
                .or_err(
                    Error::Signature,
                    "the quote's RSAPSS signature does not verify with the AK",
                )
        }
        _ => bail!(
            Signature,
            "the quote's signature algorithm does not match the AK's key type"
        ),
    }
}

/// pcrDigest for `values` (already in selection order) with hash `alg`.
pub fn pcr_digest(alg: u16, values: &[&[u8]]) -> Result<Vec<u8>> {
    tpm_hash(alg, &values.concat())
}

/// Full quote check.
///
/// * `ak_public`: TPM2B_PUBLIC of the AK (must be a restricted signing key);
/// * `attest`, `signature`: TPMS_ATTEST and TPMT_SIGNATURE as the TPM returned them;
/// * `nonce`: what the verifier sent (must equal extraData — a replayed quote fails here);
/// * `bank`, `pcrs`: the PCR values reported alongside; every selected PCR must be present and their
///   digest must equal pcrDigest.
pub fn verify_quote(
    ak_public: &[u8],
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    bank: u16,
    pcrs: &BTreeMap<u32, Vec<u8>>,
) -> Result<VerifiedQuote> {
    let ak = Public::parse_tpm2b(ak_public).context("parsing the AK public area")?;
    check_attestation_key(&ak)?;
    let sig = Signature::parse(signature).context("parsing the quote signature")?;
    verify_signature(&ak.key, attest, &sig)?;
    let parsed = QuoteInfo::parse(attest).context("parsing the quote")?;
    ensure!(
        parsed.header.extra_data == nonce,
        Nonce,
        "the quote's nonce {} is not the one sent ({}): stale or replayed evidence",
        hex::encode(&parsed.header.extra_data),
        hex::encode(nonce)
    );
    let [selection] = parsed.pcr_select.as_slice() else {
        bail!(
            Mismatch,
            "the quote selects {} PCR banks; exactly one (the {bank:#06x} bank) is expected",
            parsed.pcr_select.len()
        );
    };
    ensure!(
        selection.alg == bank,
        Mismatch,
        "the quote covers bank {:#06x}, not {bank:#06x}",
        selection.alg
    );
    let mut quoted = BTreeMap::new();
    for p in selection.pcrs() {
        let v = pcrs.get(&p).or_err_with(Error::Mismatch, || {
            format!("PCR {p} is quoted but its value was not reported")
        })?;
        quoted.insert(p, v.clone());
    }
    let values: Vec<&[u8]> = quoted.values().map(Vec::as_slice).collect();
    let digest = pcr_digest(sig.hash(), &values)?;
    ensure!(
        digest == parsed.pcr_digest,
        Mismatch,
        "the reported PCR values do not match the quote's pcrDigest (computed {}, quoted {}): \
         the values were altered or changed after the quote",
        hex::encode(&digest),
        hex::encode(&parsed.pcr_digest)
    );
    Ok(VerifiedQuote {
        attest: parsed,
        ak_name: ak.name()?,
        pcrs: quoted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::testdata;

    /// AK TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE and the reported SHA-256 PCRs.
    type QuoteFixture = (Vec<u8>, Vec<u8>, Vec<u8>, BTreeMap<u32, Vec<u8>>);

    /// GCE COS 85 (go-tpm-tools): RSA AK, RSASSA-SHA256, nonce 9009, SHA-256 bank, all 24 PCRs.
    fn gce() -> QuoteFixture {
        let tpmt_public = testdata("tpm-quote/gce-cos85-ak.tpmt_public");
        let ak = [
            (tpmt_public.len() as u16).to_be_bytes().to_vec(),
            tpmt_public,
        ]
        .concat();
        let attest = testdata("tpm-quote/gce-cos85-quote-sha256bank.tpms_attest");
        let sig = testdata("tpm-quote/gce-cos85-quote-sha256bank.tpmt_signature");
        let json: serde_json::Value =
            serde_json::from_slice(&testdata("tpm-quote/gce-cos85-pcrs.json")).unwrap();
        let pcrs = json["sha256"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.parse().unwrap(),
                    hex::decode(v.as_str().unwrap()).unwrap(),
                )
            })
            .collect();
        (ak, attest, sig, pcrs)
    }

    #[test]
    fn gce_quote_verifies() {
        let (ak, attest, sig, pcrs) = gce();
        let q = verify_quote(&ak, &attest, &sig, &[0x90, 0x09], TPM_ALG_SHA256, &pcrs).unwrap();
        assert_eq!(q.pcrs.len(), 24);
        assert_eq!(
            hex::encode(&q.pcrs[&0]),
            "0f35c214608d93c7a6e68ae7359b4a8be5a0e99eea9107ece427c4dea4e439cf"
        );
    }

    #[test]
    fn gce_quote_negatives() {
        let (ak, attest, sig, pcrs) = gce();
        let err = |r: Result<VerifiedQuote>| format!("{:#}", r.unwrap_err());
        let e = err(verify_quote(
            &ak,
            &attest,
            &sig,
            &[0x90, 0x0a],
            TPM_ALG_SHA256,
            &pcrs,
        ));
        assert!(e.contains("stale or replayed"), "{e}");
        let mut bad = pcrs.clone();
        bad.get_mut(&9).unwrap()[0] ^= 1;
        let e = err(verify_quote(
            &ak,
            &attest,
            &sig,
            &[0x90, 0x09],
            TPM_ALG_SHA256,
            &bad,
        ));
        assert!(e.contains("pcrDigest"), "{e}");
        let mut bad_sig = sig.clone();
        *bad_sig.last_mut().unwrap() ^= 1;
        let e = err(verify_quote(
            &ak,
            &attest,
            &bad_sig,
            &[0x90, 0x09],
            TPM_ALG_SHA256,
            &pcrs,
        ));
        assert!(e.contains("does not verify"), "{e}");
        let mut bad_attest = attest.clone();
        bad_attest[40] ^= 1;
        let e = err(verify_quote(
            &ak,
            &bad_attest,
            &sig,
            &[0x90, 0x09],
            TPM_ALG_SHA256,
            &pcrs,
        ));
        assert!(e.contains("does not verify"), "{e}");
        let e = err(verify_quote(
            &ak,
            &attest,
            &sig,
            &[0x90, 0x09],
            TPM_ALG_SHA384,
            &pcrs,
        ));
        assert!(e.contains("bank"), "{e}");
        let mut missing = pcrs.clone();
        missing.remove(&23);
        let e = err(verify_quote(
            &ak,
            &attest,
            &sig,
            &[0x90, 0x09],
            TPM_ALG_SHA256,
            &missing,
        ));
        assert!(e.contains("PCR 23"), "{e}");
    }

    /// GCP AMD vTPM (vaportpm): ECC P-256 AK given as x/y, DER ECDSA signature, SHA-256 bank.
    #[test]
    fn gcp_ecdsa_quote_verifies() {
        let json: serde_json::Value =
            serde_json::from_slice(&testdata("tpm-quote/gcp-amd-vtpm-vaportpm.json")).unwrap();
        let h = |v: &serde_json::Value| hex::decode(v.as_str().unwrap()).unwrap();
        let key = PublicKey::EccP256 {
            x: h(&json["ak_pubkeys"]["ecc_p256"]["x"]).try_into().unwrap(),
            y: h(&json["ak_pubkeys"]["ecc_p256"]["y"]).try_into().unwrap(),
        };
        let attest = h(&json["attestation"]["tpm"]["ecc_p256"]["attest_data"]);
        let der = h(&json["attestation"]["tpm"]["ecc_p256"]["signature"]);
        let ds = p256::ecdsa::Signature::from_der(&der).unwrap();
        let sig = Signature::Ecdsa(EcdsaSignature {
            hash: TPM_ALG_SHA256,
            r: ds.r().to_bytes().to_vec(),
            s: ds.s().to_bytes().to_vec(),
        });
        verify_signature(&key, &attest, &sig).unwrap();
        let parsed = QuoteInfo::parse(&attest).unwrap();
        assert_eq!(parsed.header.extra_data, h(&json["nonce"]));
        let sel = &parsed.pcr_select[0];
        let values: Vec<Vec<u8>> = sel
            .pcrs()
            .iter()
            .map(|p| h(&json["pcrs"]["sha256"][p.to_string()]))
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        assert_eq!(
            pcr_digest(TPM_ALG_SHA256, &refs).unwrap(),
            parsed.pcr_digest
        );
        let mut tampered = attest.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(verify_signature(&key, &tampered, &sig).is_err());
    }

    #[test]
    fn non_restricted_ak_is_refused() {
        let (ak, attest, sig, pcrs) = gce();
        let mut ak = ak;
        ak[2 + 4 + 1] &= !0x01; // clear `restricted` (bit 16 of objectAttributes at offset 4)
        let e = verify_quote(&ak, &attest, &sig, &[0x90, 0x09], TPM_ALG_SHA256, &pcrs).unwrap_err();
        assert!(format!("{e:#}").contains("restricted"), "{e:#}");
    }
}

//! TPM2_MakeCredential on the verifier's side (TPM 2.0 Part 1 §24 "Credential Protection",
//! Part 3 §12.6): encrypt a fresh secret so that only the TPM holding the EK *and* a loaded object
//! with the AK's Name can recover it with TPM2_ActivateCredential. Getting the secret back proves
//! the AK lives in the same TPM as the EK — the certificate of which chains to the manufacturer.
//!
//! 1. seed: random, the EK nameAlg's digest size; protected for the EK:
//!    RSA — RSA-OAEP(EK, seed, nameAlg, label "IDENTITY\0");
//!    ECC — ephemeral ECDH with the EK point, seed = KDFe(nameAlg, Z, "IDENTITY", Qe.x, EK.x).
//! 2. symKey = KDFa(nameAlg, seed, "STORAGE", AK Name, ∅, EK symmetric key bits);
//!    encIdentity = AES-CFB(symKey, IV 0, TPM2B_DIGEST(credential)).
//! 3. HMACkey = KDFa(nameAlg, seed, "INTEGRITY", ∅, ∅, digest bits);
//!    outerHMAC = HMAC(HMACkey, encIdentity ‖ AK Name).
//! 4. credentialBlob (TPM2B_ID_OBJECT contents) = TPM2B(outerHMAC) ‖ encIdentity;
//!    secret (TPM2B_ENCRYPTED_SECRET contents) = the RSA ciphertext or the TPMS_ECC_POINT Qe.

use super::error::{bail, ensure, Classify, Error, Result};
use hmac::{Hmac, Mac};
use rand_core::{CryptoRngCore, OsRng, RngCore};
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::Sha256;

use cvm_tpm::constants::{TPM_ALG_AES, TPM_ALG_SHA256};
use cvm_tpm::{tpm2b, Public, PublicKey};

/// OAEP label for credential seeds, including its terminating NUL (Part 1 §24.4, B.10.3).
const IDENTITY_LABEL: &[u8] = b"IDENTITY\0";
/// KDFa labels (the NUL is appended by [`kdfa`]).
const STORAGE_LABEL: &[u8] = b"STORAGE";
const INTEGRITY_LABEL: &[u8] = b"INTEGRITY";
/// KDFe label (likewise without the NUL).
const IDENTITY_KDFE_LABEL: &[u8] = b"IDENTITY";
/// Digest size of SHA-256, the only EK nameAlg supported (TCG default templates).
const SHA256_LEN: usize = 32;
/// Largest credential TPM2B_DIGEST can carry with SHA-256 as the largest TPM hash we assume.
pub const MAX_CREDENTIAL_LEN: usize = 64;

/// The two inputs of TPM2_ActivateCredential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT contents.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents.
    pub secret: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;

/// KDFa (Part 1 §11.4.10.2, SP 800-108 counter mode with HMAC-SHA-256):
/// HMAC(key, i ‖ label ‖ 0 ‖ contextU ‖ contextV ‖ bits), i = 1, 2, …, truncated to `bits`.
pub fn kdfa(key: &[u8], label: &[u8], context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let len = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(len + SHA256_LEN);
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// KDFe (Part 1 §11.4.10.3, SP 800-56A concatenation KDF with SHA-256):
/// H(i ‖ Z ‖ label ‖ 0 ‖ partyUInfo ‖ partyVInfo), i = 1, 2, …, truncated to `bits`.
pub fn kdfe(z: &[u8], label: &[u8], party_u: &[u8], party_v: &[u8], bits: u32) -> Vec<u8> {
    use sha2::Digest;
    let len = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(len + SHA256_LEN);
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        h.update(label);
        h.update([0]);
        h.update(party_u);
        h.update(party_v);
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// Seed and its encryption to the EK.
fn protect_seed(ek: &Public, rng: &mut impl CryptoRngCore) -> Result<(Vec<u8>, Vec<u8>)> {
    match &ek.key {
        PublicKey::Rsa { modulus, exponent } => {
            let mut seed = vec![0u8; SHA256_LEN];
            rng.fill_bytes(&mut seed);
            let key = RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(*exponent))
                .or_err(Error::Key, "the EK's RSA public key")?;
            let label = String::from_utf8_lossy(IDENTITY_LABEL).into_owned();
            let encrypted = key
                .encrypt(rng, Oaep::new_with_label::<Sha256, _>(label), &seed)
                .or_err(Error::Crypto, "RSA-OAEP encryption of the credential seed")?;
            Ok((seed, encrypted))
        }
        PublicKey::EccP256 { x, y } => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
            let ek_key = p256::PublicKey::from_sec1_bytes(point.as_bytes())
                .or_err(Error::Key, "the EK's ECC point is not on P-256")?;
            let ephemeral = p256::ecdh::EphemeralSecret::random(rng);
            let qe = ephemeral.public_key().to_encoded_point(false);
            let (qe_x, qe_y) = match (qe.x(), qe.y()) {
                (Some(x), Some(y)) => (x.to_vec(), y.to_vec()),
                _ => bail!(Crypto, "ephemeral ECDH key is the identity point"),
            };
            let z = ephemeral.diffie_hellman(&ek_key);
            let seed = kdfe(
                z.raw_secret_bytes(),
                IDENTITY_KDFE_LABEL,
                &qe_x,
                x,
                (SHA256_LEN * 8) as u32,
            );
            Ok((seed, [tpm2b(&qe_x), tpm2b(&qe_y)].concat()))
        }
    }
}

/// MakeCredential for the EK `ek` (TPMT_PUBLIC of an RSA or P-256 storage key with SHA-256 nameAlg
/// and AES-CFB symmetric parameters) and the object Name `ak_name`.
pub fn make_credential(ek: &Public, ak_name: &[u8], credential: &[u8]) -> Result<MadeCredential> {
    make_credential_with_rng(ek, ak_name, credential, &mut OsRng)
}

/// [`make_credential`] with a caller-supplied random source.
pub fn make_credential_with_rng(
    ek: &Public,
    ak_name: &[u8],
    credential: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<MadeCredential> {
    ensure!(
        ek.name_alg == TPM_ALG_SHA256,
        Key,
        "EK nameAlg {:#06x} is not SHA-256",
        ek.name_alg
    );
    let Some((TPM_ALG_AES, sym_bits)) = ek.symmetric else {
        bail!(
            Key,
            "the EK has no AES symmetric parameters: it is not a storage (endorsement) key"
        );
    };
    ensure!(
        !credential.is_empty() && credential.len() <= MAX_CREDENTIAL_LEN,
        Crypto,
        "a credential has 1 to {MAX_CREDENTIAL_LEN} bytes, not {}",
        credential.len()
    );
    let (seed, secret) = protect_seed(ek, rng)?;
    let sym_key = kdfa(&seed, STORAGE_LABEL, ak_name, &[], sym_bits as u32);
    let mut enc_identity = tpm2b(credential);
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;
    let hmac_key = kdfa(&seed, INTEGRITY_LABEL, &[], &[], (SHA256_LEN * 8) as u32);
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&hmac_key).expect("any key length");
    mac.update(&enc_identity);
    mac.update(ak_name);
    let outer_hmac = mac.finalize().into_bytes();
    Ok(MadeCredential {
        credential_blob: [tpm2b(&outer_hmac), enc_identity].concat(),
        secret,
    })
}

/// AES-CFB (full-block feedback, zero IV) as TPM parameter/credential encryption uses it.
fn aes_cfb_encrypt(key: &[u8], data: &mut [u8]) -> Result<()> {
    use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
    const IV: [u8; 16] = [0; 16];
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(key, &IV)
            .or_err(Error::Crypto, "AES-128-CFB key")?
            .encrypt(data),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(key, &IV)
            .or_err(Error::Crypto, "AES-256-CFB key")?
            .encrypt(data),
        n => bail!(Crypto, "AES key of {n} bytes"),
    }
    Ok(())
}

/// A random 32-byte credential for an activation challenge.
pub fn random_credential() -> [u8; 32] {
    let mut c = [0u8; 32];
    OsRng.fill_bytes(&mut c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvm_tpm::swtpm::TcpSwtpm;
    use cvm_tpm::EkType;
    use std::path::Path;
    use std::process::{Command, Stdio};

    /// KDFa's first block is HMAC-SHA256(key, 00000001 ‖ label ‖ 00 ‖ contextU ‖ contextV ‖ bits):
    /// checked against openssl's HMAC of that byte string.
    #[test]
    fn kdfa_matches_openssl_hmac() {
        let key = [0x11u8; 32];
        let ours = kdfa(&key, b"STORAGE", b"name", b"", 128);
        // HMAC-SHA256(key, 00000001 ‖ "STORAGE" ‖ 00 ‖ "name" ‖ 00000080) by openssl.
        let mut msg = vec![0, 0, 0, 1];
        msg.extend_from_slice(b"STORAGE\0name");
        msg.extend_from_slice(&128u32.to_be_bytes());
        let out = Command::new("openssl")
            .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
            .arg(format!("hexkey:{}", hex::encode(key)))
            .arg("-hex")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&msg)?;
                c.wait_with_output()
            })
            .expect("openssl is required for this test");
        let text = String::from_utf8(out.stdout).unwrap();
        let hexed = text.trim().rsplit(' ').next().unwrap();
        assert_eq!(hex::encode(&ours), &hexed[..32]);
    }

    /// A plain swtpm (the TPM client's launcher) with its state directory, removed after it.
    struct Swtpm {
        // Declared first: dropped (killed) before its state directory goes.
        tpm: TcpSwtpm,
        _dir: tempfile::TempDir,
    }

    fn swtpm(tag: &str) -> Swtpm {
        let dir = crate::testutil::temp_dir(tag);
        let tpm = TcpSwtpm::start(Path::new("swtpm"), dir.path()).unwrap_or_else(|e| {
            panic!("{e}: swtpm is required for this test (Debian package swtpm)")
        });
        Swtpm { tpm, _dir: dir }
    }

    /// Our MakeCredential, activated by swtpm's TPM2_ActivateCredential (an independent
    /// implementation of the same spec), for RSA and ECC EKs; a credential for another TPM's EK
    /// fails, and so does one bound to another AK name.
    #[test]
    fn swtpm_activates_our_credentials() {
        let a = swtpm("makecred-a");
        let b = swtpm("makecred-b");
        let mut tpm = a.tpm.connect().unwrap();
        let mut other = b.tpm.connect().unwrap();
        let ak = tpm.create_ak().unwrap();
        let ak_name = Public::parse(&ak.public).unwrap().name().unwrap();
        assert_eq!(
            ak_name, ak.name,
            "our Name computation agrees with the TPM's"
        );
        for ek_type in [EkType::Rsa2048, EkType::EccP256] {
            let ek = tpm.create_ek(ek_type).unwrap();
            let ek_public = Public::parse(&ek.public).unwrap();
            let secret = random_credential();
            let made = make_credential(&ek_public, &ak_name, &secret).unwrap();
            let got = tpm
                .activate_credential(ak.handle, ek.handle, &made.credential_blob, &made.secret)
                .unwrap();
            assert_eq!(got, secret, "{ek_type:?}");

            let foreign = other.create_ek(ek_type).unwrap();
            let foreign_public = Public::parse(&foreign.public).unwrap();
            other.flush_context(foreign.handle).unwrap();
            let made = make_credential(&foreign_public, &ak_name, &secret).unwrap();
            let e = tpm
                .activate_credential(ak.handle, ek.handle, &made.credential_blob, &made.secret)
                .unwrap_err();
            assert!(e.to_string().contains("ActivateCredential"), "{e}");

            let mut wrong_name = ak_name.clone();
            wrong_name[5] ^= 1;
            let made = make_credential(&ek_public, &wrong_name, &secret).unwrap();
            assert!(tpm
                .activate_credential(ak.handle, ek.handle, &made.credential_blob, &made.secret)
                .is_err());
            tpm.flush_context(ek.handle).unwrap();
        }
        tpm.flush_context(ak.handle).unwrap();
    }

    #[test]
    fn rejects_non_storage_key() {
        let ak_template = cvm_tpm::templates::ak_ecc_p256_template();
        // The template has empty x/y; give it a point so it parses, then MakeCredential refuses it.
        let mut public = ak_template[..ak_template.len() - 4].to_vec();
        let g = p256::AffinePoint::GENERATOR;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let e = g.to_encoded_point(false);
        public.extend_from_slice(&tpm2b(e.x().unwrap()));
        public.extend_from_slice(&tpm2b(e.y().unwrap()));
        let p = Public::parse(&public).unwrap();
        let err = make_credential(&p, b"name", b"secret").unwrap_err();
        assert!(err.to_string().contains("storage"), "{err}");
    }
}

//! The EK certificate chain: is the VM's endorsement key one that a CA the verifier trusts issued?
//!
//! `--ek-ca FILE` is a PEM bundle of trusted certificates (for `cvm-image run`: the issuer and root
//! of the run's private swtpm_localca, `OUT/ek-ca.pem`; for a cloud: the vendor's EK CA bundle).
//! The EK certificate must chain, certificate by certificate (issuer Name = subject Name, signature
//! verified with the issuer's key, each valid now), to a self-signed certificate of the bundle, and
//! its public key must be the EK the credential was encrypted to — otherwise the certificate would
//! vouch for some other TPM.

use crate::attest::error::{bail, ensure, Classify, Context, Error, Result};
use crate::error::{ResultExt, VerifyError};
use cvm_tpm::{Public, PublicKey};
use der::{Decode, Encode};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384};
use std::path::Path;
use x509_cert::Certificate;

/// Longest chain followed (EK certificate, intermediates, root); stops a bundle with a cycle.
const MAX_CHAIN_DEPTH: usize = 8;
/// Signature algorithms of X.509 certificates (RFC 4055 §5, RFC 5758 §3.2).
const OID_SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const OID_SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
const OID_ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";

/// Reads a PEM bundle of trusted EK CA certificates.
pub fn load_bundle(path: &Path) -> crate::error::Result<Vec<Certificate>> {
    let pem =
        std::fs::read(path).input(format!("cannot read the EK CA bundle {}", path.display()))?;
    parse_bundle(&pem, &path.display().to_string())
}

/// Parses a PEM bundle of trusted EK CA certificates; `what` names it in errors.
pub fn parse_bundle(pem: &[u8], what: &str) -> crate::error::Result<Vec<Certificate>> {
    let certs = Certificate::load_pem_chain(pem).input(format!(
        "{what} is not a PEM bundle of X.509 certificates (`cvm-image run` writes OUT/ek-ca.pem)"
    ))?;
    if certs.is_empty() {
        return Err(VerifyError::input(format!("{what} holds no certificate")));
    }
    Ok(certs)
}

/// Verifies `ek_cert_der` against the trusted `bundle` at `now_unix` and that its key is `ek`;
/// returns the chain's subjects, leaf first.
pub fn verify_ek_certificate(
    ek_cert_der: &[u8],
    bundle: &[Certificate],
    ek: &Public,
    now_unix: u64,
) -> Result<Vec<String>> {
    let leaf = Certificate::from_der(ek_cert_der)
        .or_err(Error::Malformed, "the EK certificate is not X.509 DER")?;
    check_key_is_ek(&leaf, ek)?;
    let mut chain = vec![leaf.tbs_certificate.subject.to_string()];
    let mut current = leaf;
    for _ in 0..MAX_CHAIN_DEPTH {
        check_validity(&current, now_unix)?;
        let issuer = find_issuer(&current, bundle)?;
        if issuer.tbs_certificate.subject == current.tbs_certificate.subject {
            // `current` is a self-signed certificate of the bundle: a trust anchor.
            return Ok(chain);
        }
        chain.push(issuer.tbs_certificate.subject.to_string());
        current = issuer.clone();
    }
    bail!(
        CertificateChain,
        "the EK certificate chain is longer than {MAX_CHAIN_DEPTH} certificates"
    )
}

/// The certificate of `bundle` that issued `cert` (Name match and verified signature).
fn find_issuer<'b>(cert: &Certificate, bundle: &'b [Certificate]) -> Result<&'b Certificate> {
    let issuer_name = &cert.tbs_certificate.issuer;
    let mut last_error = None;
    for candidate in bundle
        .iter()
        .filter(|c| &c.tbs_certificate.subject == issuer_name)
    {
        match verify_signed_by(cert, candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(e).with_context(|| {
            format!(
                "the signature of {} does not verify with the key of its issuer {issuer_name} \
                 in the EK CA bundle",
                cert.tbs_certificate.subject
            )
        }),
        None => bail!(
            CertificateChain,
            "{} was issued by {issuer_name}, which is not in the EK CA bundle (is --ek-ca the CA \
             of this VM's TPM?)",
            cert.tbs_certificate.subject
        ),
    }
}

fn check_validity(cert: &Certificate, now_unix: u64) -> Result<()> {
    let v = &cert.tbs_certificate.validity;
    let (from, until) = (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    );
    ensure!(
        (from..=until).contains(&now_unix),
        CertificateChain,
        "{} is valid from {from} to {until} (unix time), not now ({now_unix})",
        cert.tbs_certificate.subject
    );
    Ok(())
}

/// Verifies `cert`'s signature with `issuer`'s public key (RSA PKCS#1 v1.5 or ECDSA P-256/P-384).
fn verify_signed_by(cert: &Certificate, issuer: &Certificate) -> Result<()> {
    let tbs = cert
        .tbs_certificate
        .to_der()
        .or_err(Error::Malformed, "re-encoding the TBSCertificate")?;
    let sig = cert.signature.as_bytes().or_err(
        Error::Malformed,
        "the certificate signature has unused bits",
    )?;
    let spki = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .or_err(Error::Malformed, "re-encoding the issuer's public key")?;
    match cert.signature_algorithm.oid.to_string().as_str() {
        OID_SHA256_WITH_RSA => verify_rsa(
            &spki,
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(&tbs),
            sig,
        ),
        OID_SHA384_WITH_RSA => verify_rsa(
            &spki,
            Pkcs1v15Sign::new::<Sha384>(),
            &Sha384::digest(&tbs),
            sig,
        ),
        OID_ECDSA_WITH_SHA256 => verify_ecdsa(&spki, &Sha256::digest(&tbs), sig),
        OID_ECDSA_WITH_SHA384 => verify_ecdsa(&spki, &Sha384::digest(&tbs), sig),
        other => bail!(
            Unsupported,
            "certificate signature algorithm {other} is not supported"
        ),
    }
}

fn verify_rsa(spki: &[u8], scheme: Pkcs1v15Sign, digest: &[u8], sig: &[u8]) -> Result<()> {
    let key = RsaPublicKey::from_public_key_der(spki)
        .or_err(Error::Unsupported, "the issuer's key is not RSA")?;
    key.verify(scheme, digest, sig)
        .or_err(Error::Signature, "RSA signature does not verify")
}

/// ECDSA with the issuer's curve (P-256 or P-384), signature DER-encoded.
fn verify_ecdsa(spki: &[u8], digest: &[u8], sig: &[u8]) -> Result<()> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) {
        let sig = p256::ecdsa::Signature::from_der(sig)
            .or_err(Error::Malformed, "ECDSA P-256 signature DER")?;
        return key
            .verify_prehash(digest, &sig)
            .or_err(Error::Signature, "ECDSA P-256 signature does not verify");
    }
    let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki).or_err(
        Error::Unsupported,
        "the issuer's key is neither RSA, P-256 nor P-384",
    )?;
    let sig = p384::ecdsa::Signature::from_der(sig)
        .or_err(Error::Malformed, "ECDSA P-384 signature DER")?;
    key.verify_prehash(digest, &sig)
        .or_err(Error::Signature, "ECDSA P-384 signature does not verify")
}

/// The certificate's subject public key must be the EK (same RSA modulus and exponent, or the same
/// P-256 point).
fn check_key_is_ek(cert: &Certificate, ek: &Public) -> Result<()> {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .or_err(
            Error::Malformed,
            "re-encoding the EK certificate's public key",
        )?;
    let same = match &ek.key {
        PublicKey::Rsa { modulus, exponent } => {
            let key = RsaPublicKey::from_public_key_der(&spki).or_err(
                Error::Key,
                "the EK certificate's key is not RSA, but the EK is",
            )?;
            use rsa::traits::PublicKeyParts;
            key.n().to_bytes_be() == strip_zeros(modulus)
                && key.e().to_bytes_be() == rsa::BigUint::from(*exponent).to_bytes_be()
        }
        PublicKey::EccP256 { x, y } => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let key = p256::PublicKey::from_public_key_der(&spki).or_err(
                Error::Key,
                "the EK certificate's key is not P-256, but the EK is",
            )?;
            let point = key.to_encoded_point(false);
            point.x().map(|v| v.as_slice()) == Some(&x[..])
                && point.y().map(|v| v.as_slice()) == Some(&y[..])
        }
    };
    ensure!(
        same,
        Key,
        "the EK certificate certifies another key than the EK the agent serves (ek_public)"
    );
    Ok(())
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[first..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_dir;
    use std::process::Command;

    fn openssl(args: &[&str], dir: &Path) {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is required for this test");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// A root (P-384), an intermediate (RSA) and a leaf for an RSA key, all made by openssl; the
    /// leaf's key as a TPMT_PUBLIC-shaped [`Public`].
    fn chain(dir: &Path) -> (Vec<u8>, Public) {
        openssl(
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "root.key",
            ],
            dir,
        );
        openssl(
            &[
                "req", "-x509", "-new", "-key", "root.key", "-subj", "/CN=root", "-days", "2",
                "-out", "root.pem",
            ],
            dir,
        );
        openssl(&["genrsa", "-out", "mid.key", "2048"], dir);
        openssl(
            &[
                "req", "-new", "-key", "mid.key", "-subj", "/CN=mid", "-out", "mid.csr",
            ],
            dir,
        );
        openssl(
            &[
                "x509", "-req", "-in", "mid.csr", "-CA", "root.pem", "-CAkey", "root.key", "-days",
                "2", "-out", "mid.pem",
            ],
            dir,
        );
        openssl(&["genrsa", "-out", "ek.key", "2048"], dir);
        openssl(
            &[
                "req", "-new", "-key", "ek.key", "-subj", "/CN=ek", "-out", "ek.csr",
            ],
            dir,
        );
        openssl(
            &[
                "x509", "-req", "-in", "ek.csr", "-CA", "mid.pem", "-CAkey", "mid.key", "-days",
                "2", "-outform", "DER", "-out", "ek.der",
            ],
            dir,
        );
        let der = std::fs::read(dir.join("ek.der")).unwrap();
        let cert = Certificate::from_der(&der).unwrap();
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap();
        let key = RsaPublicKey::from_public_key_der(&spki).unwrap();
        use rsa::traits::PublicKeyParts;
        let ek = Public {
            bytes: vec![],
            name_alg: 0x000B,
            attributes: 0,
            auth_policy: vec![],
            symmetric: None,
            scheme: None,
            key: PublicKey::Rsa {
                modulus: key.n().to_bytes_be(),
                exponent: 65537,
            },
        };
        (der, ek)
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn openssl_chain_verifies_and_wrong_anchor_key_or_time_fail() {
        let dir = temp_dir("ekcert");
        let (der, ek) = chain(dir.path());
        let mut bundle = std::fs::read(dir.path().join("mid.pem")).unwrap();
        bundle.extend(std::fs::read(dir.path().join("root.pem")).unwrap());
        std::fs::write(dir.path().join("bundle.pem"), &bundle).unwrap();
        let certs = load_bundle(&dir.path().join("bundle.pem")).unwrap();
        let names = verify_ek_certificate(&der, &certs, &ek, now()).unwrap();
        assert_eq!(names, ["CN=ek", "CN=mid", "CN=root"]);

        // Without the root, the chain ends at an untrusted issuer.
        let only_mid = load_bundle(&dir.path().join("mid.pem")).unwrap();
        let e = format!(
            "{:#}",
            verify_ek_certificate(&der, &only_mid, &ek, now()).unwrap_err()
        );
        assert!(
            e.contains("CN=root, which is not in the EK CA bundle"),
            "{e}"
        );

        // Another root with the same name: the intermediate's signature does not verify.
        openssl(
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "other.key",
            ],
            dir.path(),
        );
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "other.key",
                "-subj",
                "/CN=root",
                "-days",
                "2",
                "-out",
                "other.pem",
            ],
            dir.path(),
        );
        let mut forged = std::fs::read(dir.path().join("mid.pem")).unwrap();
        forged.extend(std::fs::read(dir.path().join("other.pem")).unwrap());
        std::fs::write(dir.path().join("forged.pem"), &forged).unwrap();
        let forged = load_bundle(&dir.path().join("forged.pem")).unwrap();
        let e = format!(
            "{:#}",
            verify_ek_certificate(&der, &forged, &ek, now()).unwrap_err()
        );
        assert!(e.contains("does not verify"), "{e}");

        // The certificate of another key.
        let mut other = ek.clone();
        if let PublicKey::Rsa { modulus, .. } = &mut other.key {
            modulus[10] ^= 1;
        }
        let e = format!(
            "{:#}",
            verify_ek_certificate(&der, &certs, &other, now()).unwrap_err()
        );
        assert!(e.contains("another key"), "{e}");

        // Three days from now the two-day certificates have expired.
        let e = format!(
            "{:#}",
            verify_ek_certificate(&der, &certs, &ek, now() + 3 * 86400).unwrap_err()
        );
        assert!(e.contains("CN=ek is valid from"), "{e}");
    }
}

//! The EK certificate chain: is the VM's endorsement key one that a CA the verifier trusts issued?
//!
//! `--ek-ca FILE` is a PEM bundle of trusted certificates (for `cvm-image run`: the issuer and root
//! of the run's private swtpm_localca, `OUT/ek-ca.pem`; for a cloud: the vendor's EK CA bundle).
//! The EK certificate must chain, certificate by certificate (issuer Name = subject Name, signature
//! verified with the issuer's key, each valid now), to a self-signed certificate of the bundle, and
//! its public key must be the EK the credential was encrypted to — otherwise the certificate would
//! vouch for some other TPM.
//!
//! Every issuer on the way, the self-signed anchor included, must be a CA (RFC 5280 §4.2.1.9
//! basicConstraints `CA:TRUE`, §4.2.1.3 keyUsage with `keyCertSign`) and within its
//! pathLenConstraint: a leaf certificate in the bundle — an EK certificate, a TLS server
//! certificate of the same organisation — cannot issue one, even when its key signed it.

use crate::attest::error::{bail, ensure, Classify, Context, Error, Result};
use crate::error::{ResultExt, VerifyError};
use cvm_tpm::{Public, PublicKey};
use der::{Decode, Encode};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384};
use std::path::Path;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
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
        // The CA certificates between `current`'s issuer and the leaf, which its pathLen limits;
        // a self-issued one (the anchor, checking its own signature) does not count (RFC 5280
        // §4.2.1.9).
        let self_issued = current.tbs_certificate.issuer == current.tbs_certificate.subject;
        let below = chain.len() - 1 - usize::from(self_issued && chain.len() > 1);
        let issuer = find_issuer(&current, bundle, below)?;
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

/// The certificate of `bundle` that issued `cert` (Name match, verified signature, and a CA
/// that may issue a certificate with `below` CA certificates under it).
fn find_issuer<'b>(
    cert: &Certificate,
    bundle: &'b [Certificate],
    below: usize,
) -> Result<&'b Certificate> {
    let issuer_name = &cert.tbs_certificate.issuer;
    let mut last_error = None;
    let mut not_a_ca = None;
    for candidate in bundle
        .iter()
        .filter(|c| &c.tbs_certificate.subject == issuer_name)
    {
        match verify_signed_by(cert, candidate) {
            Ok(()) => match check_may_issue(candidate, below) {
                Ok(()) => return Ok(candidate),
                Err(e) => not_a_ca = Some(e),
            },
            Err(e) => last_error = Some(e),
        }
    }
    // A signer that may not issue says more than another key's bad signature.
    if let Some(e) = not_a_ca {
        return Err(e).with_context(|| {
            format!(
                "{} is signed by {issuer_name} of the EK CA bundle, which may not issue certificates",
                cert.tbs_certificate.subject
            )
        });
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

/// `issuer` is a CA certificate (basicConstraints CA:TRUE), its key is for certificate signatures
/// (keyUsage keyCertSign) and its pathLenConstraint allows `below` CA certificates under it.
fn check_may_issue(issuer: &Certificate, below: usize) -> Result<()> {
    let name = &issuer.tbs_certificate.subject;
    let tbs = &issuer.tbs_certificate;
    let constraints = tbs.get::<BasicConstraints>().or_err(
        Error::Malformed,
        format!("{name}: its basicConstraints extension does not parse (or appears twice)"),
    )?;
    let Some((_, constraints)) = constraints.filter(|(_, c)| c.ca) else {
        bail!(
            CertificateChain,
            "{name} is not a CA certificate (no basicConstraints CA:TRUE): a leaf certificate \
             cannot issue one, so it does not belong in --ek-ca as an issuer"
        );
    };
    let usage = tbs.get::<KeyUsage>().or_err(
        Error::Malformed,
        format!("{name}: its keyUsage extension does not parse (or appears twice)"),
    )?;
    ensure!(
        usage.is_some_and(|(_, u)| u.key_cert_sign()),
        CertificateChain,
        "{name} is a CA certificate whose keyUsage lacks keyCertSign, so its key may not sign \
         certificates"
    );
    if let Some(max) = constraints.path_len_constraint {
        ensure!(
            below <= usize::from(max),
            CertificateChain,
            "{name} allows {max} CA certificate(s) below it (pathLenConstraint), the chain has \
             {below}"
        );
    }
    Ok(())
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
    use crate::testutil::{temp_dir, testdata};
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

    /// openssl's configuration for the test certificates: one section of X.509v3 extensions per
    /// kind of certificate (`-extensions NAME`).
    const OPENSSL_CONF: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[ca_pathlen0]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
[ca_without_cert_sign]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature,cRLSign
[ca_without_key_usage]
basicConstraints = critical,CA:TRUE
[no_basic_constraints]
keyUsage = critical,keyCertSign
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment,keyCertSign
";

    /// Key types of the test certificates.
    #[derive(Clone, Copy)]
    enum Key {
        Rsa,
        P384,
    }

    /// Makes `NAME.key` (unless it exists) and `NAME.pem`, a certificate with subject CN=`subject`
    /// and the extensions of section `ext` of [`OPENSSL_CONF`], valid two days, self-signed or
    /// signed by the certificate and key `issuer` made before.
    fn cert(dir: &Path, name: &str, subject: &str, key: Key, issuer: Option<&str>, ext: &str) {
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CONF).unwrap();
        let key_file = format!("{name}.key");
        if !dir.join(&key_file).exists() {
            match key {
                Key::Rsa => openssl(&["genrsa", "-out", &key_file, "2048"], dir),
                Key::P384 => openssl(
                    &[
                        "ecparam",
                        "-name",
                        "secp384r1",
                        "-genkey",
                        "-noout",
                        "-out",
                        &key_file,
                    ],
                    dir,
                ),
            }
        }
        let (pem, csr, subj) = (
            format!("{name}.pem"),
            format!("{name}.csr"),
            format!("/CN={subject}"),
        );
        let conf = ["-config", "openssl.cnf"];
        match issuer {
            None => {
                let mut a = vec!["req", "-x509", "-new", "-key", &key_file, "-subj", &subj];
                a.extend(conf);
                a.extend(["-extensions", ext, "-days", "2", "-out", &pem]);
                openssl(&a, dir);
            }
            Some(issuer) => {
                let mut a = vec!["req", "-new", "-key", &key_file, "-subj", &subj];
                a.extend(conf);
                a.extend(["-out", &csr]);
                openssl(&a, dir);
                let (ca, ca_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
                openssl(
                    &[
                        "x509",
                        "-req",
                        "-in",
                        &csr,
                        "-CA",
                        &ca,
                        "-CAkey",
                        &ca_key,
                        "-days",
                        "2",
                        "-extfile",
                        "openssl.cnf",
                        "-extensions",
                        ext,
                        "-out",
                        &pem,
                    ],
                    dir,
                );
            }
        }
    }

    fn der_of(dir: &Path, name: &str) -> Vec<u8> {
        use der::DecodePem;
        Certificate::from_pem(std::fs::read(dir.join(format!("{name}.pem"))).unwrap())
            .unwrap()
            .to_der()
            .unwrap()
    }

    /// The certificates `names` as one trusted bundle.
    fn bundle(dir: &Path, names: &[&str]) -> Vec<Certificate> {
        let mut pem = vec![];
        for n in names {
            pem.extend(std::fs::read(dir.join(format!("{n}.pem"))).unwrap());
        }
        parse_bundle(&pem, "test bundle").unwrap()
    }

    /// The RSA key of certificate `der` as a TPMT_PUBLIC-shaped [`Public`].
    fn rsa_public(der: &[u8]) -> Public {
        let cert = Certificate::from_der(der).unwrap();
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap();
        let key = RsaPublicKey::from_public_key_der(&spki).unwrap();
        use rsa::traits::PublicKeyParts;
        Public {
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
        }
    }

    /// A root (P-384), an intermediate (RSA), both CAs, and a leaf EK certificate for an RSA key,
    /// all made by openssl; the leaf as DER and its key as a [`Public`].
    fn chain(dir: &Path) -> (Vec<u8>, Public) {
        let der = issue_chain(dir, "ca", "ca");
        let ek = rsa_public(&der);
        (der, ek)
    }

    /// root (P-384) → mid (RSA) → ek (a leaf, RSA) with the extension sections `root_ext` and
    /// `mid_ext` for the CAs, made or re-issued in `dir` (keys kept); the EK certificate's DER.
    fn issue_chain(dir: &Path, root_ext: &str, mid_ext: &str) -> Vec<u8> {
        cert(dir, "root", "root", Key::P384, None, root_ext);
        cert(dir, "mid", "mid", Key::Rsa, Some("root"), mid_ext);
        cert(dir, "ek", "ek", Key::Rsa, Some("mid"), "leaf");
        der_of(dir, "ek")
    }

    /// The EK certificate `der` of [`issue_chain`] verified against the bundle mid + root.
    fn verify_issued(dir: &Path, der: &[u8]) -> Result<Vec<String>> {
        verify_ek_certificate(der, &bundle(dir, &["mid", "root"]), &rsa_public(der), now())
    }

    /// Why [`verify_issued`] refuses (a certificate-chain error).
    fn issued_refusal(dir: &Path, der: &[u8]) -> String {
        refusal(der, &bundle(dir, &["mid", "root"]), &rsa_public(der))
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn refusal(der: &[u8], bundle: &[Certificate], ek: &Public) -> String {
        let e = verify_ek_certificate(der, bundle, ek, now()).unwrap_err();
        assert!(matches!(e, Error::CertificateChain(_)), "{e:?}");
        format!("{e:#}")
    }

    #[test]
    fn openssl_chain_verifies_and_wrong_anchor_key_or_time_fail() {
        let dir = temp_dir("ekcert");
        let d = dir.path();
        let (der, ek) = chain(d);
        let certs = bundle(d, &["mid", "root"]);
        let names = verify_ek_certificate(&der, &certs, &ek, now()).unwrap();
        assert_eq!(names, ["CN=ek", "CN=mid", "CN=root"]);

        // Without the root, the chain ends at an untrusted issuer.
        let e = refusal(&der, &bundle(d, &["mid"]), &ek);
        assert!(
            e.contains("CN=root, which is not in the EK CA bundle"),
            "{e}"
        );

        // Another root with the same name: the intermediate's signature does not verify.
        cert(d, "other", "root", Key::P384, None, "ca");
        let e = format!(
            "{:#}",
            verify_ek_certificate(&der, &bundle(d, &["mid", "other"]), &ek, now()).unwrap_err()
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

    /// Every issuer must be a CA whose key may sign certificates: an intermediate or a root
    /// without basicConstraints CA:TRUE or without keyUsage keyCertSign is refused, naming it.
    #[test]
    fn every_issuer_needs_ca_true_and_key_cert_sign() {
        let dir = temp_dir("ekcert-ca");
        let d = dir.path();
        for (section, why) in [
            ("no_basic_constraints", "CN=mid is not a CA certificate"),
            ("leaf", "CN=mid is not a CA certificate"),
            (
                "ca_without_cert_sign",
                "CN=mid is a CA certificate whose keyUsage lacks keyCertSign",
            ),
            (
                "ca_without_key_usage",
                "CN=mid is a CA certificate whose keyUsage lacks keyCertSign",
            ),
        ] {
            // The intermediate issued with these extensions signs the EK certificate.
            let e = issued_refusal(d, &issue_chain(d, "ca", section));
            assert!(e.contains(why), "{section}: {e}");
            assert!(
                e.contains("CN=ek is signed by CN=mid of the EK CA bundle, which may not issue"),
                "{section}: {e}"
            );
        }
        // The trust anchor is an issuer too.
        let e = issued_refusal(d, &issue_chain(d, "ca_without_key_usage", "ca"));
        assert!(
            e.contains("CN=root is a CA certificate whose keyUsage lacks keyCertSign"),
            "{e}"
        );
    }

    /// A leaf certificate in `--ek-ca` cannot act as an issuer: not the genuine EK certificate
    /// (CA:FALSE, though its key usage even claims keyCertSign) signing another one for the same
    /// key, and not a self-signed leaf standing as its own trust anchor.
    #[test]
    fn a_leaf_in_the_bundle_cannot_issue() {
        let dir = temp_dir("ekcert-leaf");
        let d = dir.path();
        let (der, ek) = chain(d);
        // The genuine EK certificate's key signs a certificate "issued by CN=ek" for another key.
        cert(d, "forged", "forged", Key::Rsa, Some("ek"), "leaf");
        let forged = der_of(d, "forged");
        let e = refusal(
            &forged,
            &bundle(d, &["ek", "mid", "root"]),
            &rsa_public(&forged),
        );
        assert!(
            e.contains("CN=ek is not a CA certificate (no basicConstraints CA:TRUE)"),
            "{e}"
        );
        // With the leaf in the bundle, the genuine chain still verifies through the CAs.
        let names = verify_ek_certificate(&der, &bundle(d, &["ek", "mid", "root"]), &ek, now());
        assert_eq!(names.unwrap(), ["CN=ek", "CN=mid", "CN=root"]);

        // A self-signed leaf in the bundle, presented as the EK certificate.
        cert(d, "selfleaf", "selfleaf", Key::Rsa, None, "leaf");
        let self_signed = der_of(d, "selfleaf");
        let e = refusal(
            &self_signed,
            &bundle(d, &["selfleaf"]),
            &rsa_public(&self_signed),
        );
        assert!(e.contains("CN=selfleaf is not a CA certificate"), "{e}");
    }

    /// pathLenConstraint: a root allowing no CA below it cannot anchor root → intermediate → EK;
    /// one that allows it can.
    #[test]
    fn path_length_constraint_is_enforced() {
        let dir = temp_dir("ekcert-pathlen");
        let d = dir.path();
        let e = issued_refusal(d, &issue_chain(d, "ca_pathlen0", "ca"));
        assert!(
            e.contains("CN=root allows 0 CA certificate(s) below it"),
            "{e}"
        );
        // An intermediate with pathlen 0 may issue the leaf directly.
        let der = issue_chain(d, "ca", "ca_pathlen0");
        assert_eq!(
            verify_issued(d, &der).unwrap(),
            ["CN=ek", "CN=mid", "CN=root"]
        );
    }

    /// Google's real TPM CA (root, and an intermediate with pathlen 0) passes the issuer checks:
    /// the GCE COS 85 AK certificate chains to them (SOURCES.md, tpm-quote/).
    #[test]
    fn google_tpm_ca_chain_passes_the_issuer_checks() {
        let leaf = testdata("tpm-quote/gce-cos85-ak-cert.der");
        let ak = Public::parse(&testdata("tpm-quote/gce-cos85-ak.tpmt_public")).unwrap();
        let certs = [
            Certificate::from_der(&testdata("tpm-quote/gce-tpm-ek-intermediate-2.der")).unwrap(),
            Certificate::from_der(&testdata("tpm-quote/gce-tpm-ek-root-1.der")).unwrap(),
        ];
        // A time inside every validity period (AK certificate: 2021-08-31 – 2051-08-24).
        let names = verify_ek_certificate(&leaf, &certs, &ak, 1_700_000_000).unwrap();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names[1].contains("tpm_ek_v1_cloud_host-signer"),
            "{names:?}"
        );
    }
}

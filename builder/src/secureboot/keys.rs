//! The owner's Secure Boot keys: PK, KEK and db (RSA-2048, self-signed X.509) and the
//! golden-measurement signing key (ECDSA P-256).
//!
//! Files in the key directory (PEM as `openssl` writes them: PKCS#8 private keys, X.509
//! certificates; `.der` copies of the certificates for cloud APIs that take DER):
//! `PK.key PK.crt PK.der KEK.key KEK.crt KEK.der db.key db.crt db.der golden.key golden.pub`.
//!
//! RSA-2048 because it is the one key type every UEFI implementation must accept for PK/KEK/db
//! certificates (UEFI spec §32.4.1 lists RSA-2048; larger keys fail on some firmware).
//! Each certificate is self-signed: PK, KEK and db entries are trust anchors in their own
//! variables, and verifiers accept a self-signed anchor without the partial-chain flag a
//! chained (non-self-signed) anchor would need. The extensions mirror `openssl req -x509`
//! (subjectKeyIdentifier, authorityKeyIdentifier, critical basicConstraints CA:TRUE, no
//! keyUsage), the de-facto profile of Secure Boot keys that all verifiers accept.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use der::asn1::{OctetString, UtcTime};
use der::{DateTime, Decode, DecodePem, Encode, EncodePem};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pkcs1v15::SigningKey;
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// RSA modulus size of PK, KEK and db.
pub const RSA_BITS: usize = 2048;
/// Certificate validity: fixed dates (the keys themselves are random).
const NOT_BEFORE: (u16, u8, u8) = (2025, 1, 1);
const NOT_AFTER: (u16, u8, u8) = (2045, 1, 1);
/// Unix permissions of private-key files.
const KEY_FILE_MODE: u32 = 0o600;
/// Bytes of the certificate serial number (RFC 5280 §4.1.2.2 allows up to 20 octets).
const SERIAL_LEN: usize = 16;

/// The three Secure Boot key roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Platform Key: signs KEK updates (and itself).
    Pk,
    /// Key Exchange Key: signs db/dbx updates.
    Kek,
    /// Signature database key: signs the UKI.
    Db,
}

impl Role {
    /// All roles in enrollment order.
    pub const ALL: [Role; 3] = [Role::Pk, Role::Kek, Role::Db];

    /// File stem and UEFI variable name (`PK`, `KEK`, `db`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Pk => "PK",
            Role::Kek => "KEK",
            Role::Db => "db",
        }
    }

    fn subject(self) -> String {
        format!("CN=cvm-image {}", self.name())
    }
}

/// One RSA key with its certificate.
#[derive(Clone)]
pub struct KeyPair {
    /// The private key.
    pub key: RsaPrivateKey,
    /// Its self-signed certificate.
    pub cert: Certificate,
}

impl KeyPair {
    /// DER encoding of the certificate (what ESLs and the cloud APIs carry).
    pub fn cert_der(&self) -> Result<Vec<u8>> {
        self.cert.to_der().context("encoding a certificate as DER")
    }
}

/// PK, KEK and db as loaded for a build.
#[derive(Clone)]
pub struct SecureBootKeys {
    /// Platform key.
    pub pk: KeyPair,
    /// Key exchange key.
    pub kek: KeyPair,
    /// Signature database key (signs the UKI).
    pub db: KeyPair,
}

impl SecureBootKeys {
    /// The key pair of `role`.
    pub fn pair(&self, role: Role) -> &KeyPair {
        match role {
            Role::Pk => &self.pk,
            Role::Kek => &self.kek,
            Role::Db => &self.db,
        }
    }
}

/// Every file [`generate`] writes, relative to the key directory.
pub fn file_names() -> Vec<String> {
    let mut names: Vec<String> = Role::ALL
        .iter()
        .flat_map(|r| ["key", "crt", "der"].map(|ext| format!("{}.{ext}", r.name())))
        .collect();
    names.push("golden.key".into());
    names.push("golden.pub".into());
    names
}

/// Generate PK, KEK, db and the golden key into `dir` (created if missing).
///
/// Refuses to run if any of the files already exists, so an owner's keys are never replaced
/// by accident (their certificates are enrolled in deployed images).
pub fn generate(dir: &Path) -> Result<()> {
    let existing: Vec<String> = file_names()
        .into_iter()
        .filter(|n| dir.join(n).exists())
        .collect();
    if !existing.is_empty() {
        bail!(
            "key directory {} already holds {}: refusing to overwrite existing keys \
             (move them away or choose another --dir)",
            dir.display(),
            existing.join(", ")
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating key directory {}", dir.display()))?;
    let mut rng = rand_core::OsRng;
    for role in Role::ALL {
        let key = RsaPrivateKey::new(&mut rng, RSA_BITS)
            .with_context(|| format!("generating the {} RSA key", role.name()))?;
        let cert = self_signed_certificate(&key, &role.subject())
            .with_context(|| format!("creating the {} certificate", role.name()))?;
        write_rsa_pair(dir, role.name(), &key, &cert)?;
    }
    write_golden_key(dir, &mut rng)
}

fn write_rsa_pair(dir: &Path, stem: &str, key: &RsaPrivateKey, cert: &Certificate) -> Result<()> {
    let key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .with_context(|| format!("encoding {stem}.key as PKCS#8 PEM"))?;
    write_new(
        &dir.join(format!("{stem}.key")),
        key_pem.as_bytes(),
        KEY_FILE_MODE,
    )?;
    let cert_pem = cert
        .to_pem(LineEnding::LF)
        .with_context(|| format!("encoding {stem}.crt as PEM"))?;
    write_new(&dir.join(format!("{stem}.crt")), cert_pem.as_bytes(), 0o644)?;
    let cert_der = cert
        .to_der()
        .with_context(|| format!("encoding {stem}.der"))?;
    write_new(&dir.join(format!("{stem}.der")), &cert_der, 0o644)
}

fn write_golden_key(dir: &Path, rng: &mut rand_core::OsRng) -> Result<()> {
    let secret = p256::SecretKey::random(rng);
    let key_pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding golden.key as PKCS#8 PEM")?;
    write_new(&dir.join("golden.key"), key_pem.as_bytes(), KEY_FILE_MODE)?;
    let pub_pem = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encoding golden.pub as SPKI PEM")?;
    write_new(&dir.join("golden.pub"), pub_pem.as_bytes(), 0o644)
}

/// Create `path` with `mode`, failing if it exists (O_EXCL closes the check-then-write race).
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {} (refusing to overwrite)", path.display()))?;
    file.write_all(data)
        .with_context(|| format!("writing {}", path.display()))
}

/// A self-signed X.509 v3 certificate for `key` with subject `subject` (RFC 4514 string).
fn self_signed_certificate(key: &RsaPrivateKey, subject: &str) -> Result<Certificate> {
    let signer = SigningKey::<Sha256>::new(key.clone());
    let spki_der = key
        .to_public_key()
        .to_public_key_der()
        .context("encoding the public key")?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
        .context("re-reading the public key")?;
    let name = Name::from_str(subject).with_context(|| format!("subject `{subject}`"))?;
    let mut builder = CertificateBuilder::new(
        Profile::Manual { issuer: None },
        serial_from_key(spki_der.as_bytes())?,
        validity()?,
        name,
        spki.clone(),
        &signer,
    )
    .context("starting the certificate")?;
    // Key identifier: SHA-1 in RFC 5280 §4.2.1.2 method 1; SHA-256 truncated to 20 bytes is
    // equally unique and keeps one hash in the dependency set.
    let key_id = key_identifier(&spki)?;
    builder
        .add_extension(&SubjectKeyIdentifier(key_id.clone()))
        .context("adding subjectKeyIdentifier")?;
    builder
        .add_extension(&AuthorityKeyIdentifier {
            key_identifier: Some(key_id),
            ..Default::default()
        })
        .context("adding authorityKeyIdentifier")?;
    builder
        .add_extension(&BasicConstraints {
            ca: true,
            path_len_constraint: None,
        })
        .context("adding basicConstraints")?;
    builder
        .build::<rsa::pkcs1v15::Signature>()
        .context("signing the certificate")
}

fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<OctetString> {
    const KEY_ID_LEN: usize = 20;
    let digest = Sha256::digest(spki.subject_public_key.raw_bytes());
    OctetString::new(&digest[..KEY_ID_LEN]).context("key identifier")
}

/// A positive serial number derived from the public key, so it is unique per key without
/// another random source.
fn serial_from_key(spki_der: &[u8]) -> Result<SerialNumber> {
    let digest = Sha256::digest(spki_der);
    let mut serial = [0u8; SERIAL_LEN];
    serial.copy_from_slice(&digest[..SERIAL_LEN]);
    serial[0] = (serial[0] & 0x7f) | 0x01; // positive, and no leading zero octet to strip
    SerialNumber::new(&serial).context("serial number")
}

fn validity() -> Result<Validity> {
    let time = |(y, m, d): (u16, u8, u8)| -> Result<Time> {
        let dt = DateTime::new(y, m, d, 0, 0, 0).context("certificate validity date")?;
        Ok(Time::UtcTime(
            UtcTime::from_date_time(dt).context("certificate validity as UTCTime")?,
        ))
    };
    Ok(Validity {
        not_before: time(NOT_BEFORE)?,
        not_after: time(NOT_AFTER)?,
    })
}

/// Load PK, KEK and db (`*.key` PKCS#8 PEM, `*.crt` PEM) from `dir`, checking that each
/// certificate belongs to its key.
pub fn load(dir: &Path) -> Result<SecureBootKeys> {
    let one = |role: Role| load_pair(dir, role.name());
    Ok(SecureBootKeys {
        pk: one(Role::Pk)?,
        kek: one(Role::Kek)?,
        db: one(Role::Db)?,
    })
}

/// Load `<stem>.key` and `<stem>.crt` from `dir`.
pub fn load_pair(dir: &Path, stem: &str) -> Result<KeyPair> {
    let key_path = dir.join(format!("{stem}.key"));
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_pem = read_text(&key_path)?;
    let key = RsaPrivateKey::from_pkcs8_pem(&key_pem)
        .or_else(|_| {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            RsaPrivateKey::from_pkcs1_pem(&key_pem)
        })
        .with_context(|| {
            format!(
                "{} is not an unencrypted RSA private key in PEM (PKCS#8 or PKCS#1)",
                key_path.display()
            )
        })?;
    let cert = Certificate::from_pem(read_text(&cert_path)?.as_bytes())
        .with_context(|| format!("{} is not a PEM X.509 certificate", cert_path.display()))?;
    let cert_spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .with_context(|| format!("encoding the public key of {}", cert_path.display()))?;
    let key_spki = key
        .to_public_key()
        .to_public_key_der()
        .context("encoding a public key")?;
    if cert_spki != key_spki.as_bytes() {
        bail!(
            "{} does not certify the key in {}: regenerate the pair or fix the file names",
            cert_path.display(),
            key_path.display()
        );
    }
    Ok(KeyPair { key, cert })
}

fn read_text(path: &PathBuf) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::sync::OnceLock;

    use crate::testutil::TempDir;

    /// A generated key directory: `keys/` inside a temporary directory that lives for the whole
    /// test process (statics are never dropped, so it stays in the system temp dir; RSA key
    /// generation is too slow to repeat per test).
    fn generated(cell: &'static OnceLock<TempDir>, tag: &str) -> &'static Path {
        cell.get_or_init(|| {
            let tmp = TempDir::new(tag);
            generate(&tmp.join("keys")).expect("generate test keys");
            tmp
        })
        .path()
    }

    /// One generated key directory shared by all tests of the module tree.
    pub(crate) fn test_keys_dir() -> PathBuf {
        static DIR: OnceLock<TempDir> = OnceLock::new();
        generated(&DIR, "sb-keys").join("keys")
    }

    /// A second, unrelated set of keys (for "signed by another key" checks).
    pub(crate) fn other_keys_dir() -> PathBuf {
        static DIR: OnceLock<TempDir> = OnceLock::new();
        generated(&DIR, "sb-other").join("keys")
    }

    pub(crate) fn run(program: &str, args: &[&str]) -> std::process::Output {
        Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "reference tool `{program}` could not run ({e}); install it \
                 (Debian: openssl, sbsigntool, osslsigncode, efitools; PyPI: virt-firmware)"
                )
            })
    }

    #[test]
    fn generated_files_pass_openssl() {
        let dir = &test_keys_dir();
        for role in Role::ALL {
            let crt = dir.join(format!("{}.crt", role.name()));
            let out = run(
                "openssl",
                &["x509", "-in", crt.to_str().unwrap(), "-noout", "-text"],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&format!("Subject: CN = cvm-image {}", role.name())),
                "{text}"
            );
            assert!(
                text.contains("Not Before: Jan  1 00:00:00 2025 GMT"),
                "{text}"
            );
            assert!(
                text.contains("Not After : Jan  1 00:00:00 2045 GMT"),
                "{text}"
            );
            assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
            assert!(text.contains("CA:TRUE"), "{text}");
            // Self-signed: verifies against itself.
            let out = run(
                "openssl",
                &[
                    "verify",
                    "-CAfile",
                    crt.to_str().unwrap(),
                    crt.to_str().unwrap(),
                ],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );

            let key = dir.join(format!("{}.key", role.name()));
            let out = run(
                "openssl",
                &["pkey", "-in", key.to_str().unwrap(), "-check", "-noout"],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("Key is valid"));
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, KEY_FILE_MODE);

            // DER copy is the same certificate.
            let der = dir.join(format!("{}.der", role.name()));
            let out = run(
                "openssl",
                &["x509", "-inform", "DER", "-in", der.to_str().unwrap()],
            );
            assert!(out.status.success());
            assert_eq!(out.stdout, fs::read(&crt).unwrap());
        }
        let out = run(
            "openssl",
            &[
                "pkey",
                "-in",
                dir.join("golden.key").to_str().unwrap(),
                "-pubout",
            ],
        );
        assert!(out.status.success());
        assert_eq!(out.stdout, fs::read(dir.join("golden.pub")).unwrap());
        let out = run(
            "openssl",
            &[
                "pkey",
                "-in",
                dir.join("golden.key").to_str().unwrap(),
                "-check",
                "-noout",
                "-text",
            ],
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("prime256v1"));
    }

    #[test]
    fn refuses_to_overwrite_and_load_checks_pairs() {
        let dir = &test_keys_dir();
        let before = fs::read(dir.join("PK.key")).unwrap();
        let err = generate(dir).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(dir.join("PK.key")).unwrap(), before);

        let keys = load(dir).unwrap();
        assert_eq!(
            keys.db.cert_der().unwrap(),
            fs::read(dir.join("db.der")).unwrap()
        );

        // A certificate of another key is rejected.
        let tmp = TempDir::new("sb-mixed");
        let mixed = tmp.path();
        fs::copy(dir.join("db.key"), mixed.join("db.key")).unwrap();
        fs::copy(dir.join("KEK.crt"), mixed.join("db.crt")).unwrap();
        let err = format!("{:#}", load_pair(mixed, "db").err().unwrap());
        assert!(err.contains("does not certify"), "{err}");
    }
}

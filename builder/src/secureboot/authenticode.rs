//! Authenticode signing of a PE image (the UKI) with the db key, deterministically.
//!
//! Layout written (Microsoft "Windows Authenticode Portable Executable Signature Format"):
//! the image zero-padded to 8 bytes, then one WIN_CERTIFICATE {dwLength, wRevision 0x0200,
//! wCertificateType 0x0002 (PKCS_SIGNED_DATA), ContentInfo{SignedData}} padded to 8 bytes;
//! DataDirectory[SECURITY] = (file offset, padded size); CheckSum recomputed.
//!
//! The SignedData is version 1 with encapsulated content SpcIndirectDataContent
//! {SpcPeImageData, DigestInfo(SHA-256 Authenticode digest)} and signed attributes
//! contentType and messageDigest only: no signingTime (sbsign adds one, which is why its
//! output differs from run to run) and no SpcSpOpusInfo (optional, no verifier needs it).

use anyhow::{bail, Context, Result};
use der::asn1::{BitString, ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, Encode, Sequence};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;

use super::keys::KeyPair;
use super::pkcs7::{self, Signed};
use crate::pe_checksum::pe_checksum;
use cvm_measure::pe::{authenticode_sha256_signer, PeHeaders};

/// SPC_INDIRECT_DATA_OBJID: the encapsulated content type of an Authenticode signature.
const SPC_INDIRECT_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// SPC_PE_IMAGE_DATAOBJ: SpcAttributeTypeAndOptionalValue.type for PE images.
const SPC_PE_IMAGE_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");
/// PKCS#9 contentType attribute.
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// PKCS#9 messageDigest attribute.
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

/// SpcPeImageData.file = [0] EXPLICIT SpcLink.file [2] EXPLICIT SpcString.unicode [0]
/// IMPLICIT BMPString "<<<Obsolete>>>": the fixed value the Authenticode spec prescribes and
/// every signer writes.
const SPC_LINK_OBSOLETE: [u8; 32] = [
    0xa0, 0x1e, 0x80, 0x1c, 0x00, 0x3c, 0x00, 0x3c, 0x00, 0x3c, 0x00, 0x4f, 0x00, 0x62, 0x00, 0x73,
    0x00, 0x6f, 0x00, 0x6c, 0x00, 0x65, 0x00, 0x74, 0x00, 0x65, 0x00, 0x3e, 0x00, 0x3e, 0x00, 0x3e,
];

/// WIN_CERTIFICATE.wRevision = WIN_CERT_REVISION_2_0.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// WIN_CERTIFICATE.wCertificateType = WIN_CERT_TYPE_PKCS_SIGNED_DATA.
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// dwLength + wRevision + wCertificateType.
const WIN_CERTIFICATE_HEADER_LEN: usize = 8;
/// The image and each certificate entry are quadword-aligned (PE spec "The Attribute
/// Certificate Table"); signers hash the image as if padded to this.
const CERT_ALIGN: usize = 8;
/// IMAGE_DIRECTORY_ENTRY_SECURITY.
const DIRECTORY_ENTRY_SECURITY: u32 = 4;

#[derive(Sequence)]
struct SpcIndirectDataContent {
    data: SpcAttributeTypeAndOptionalValue,
    message_digest: DigestInfo,
}

#[derive(Sequence)]
struct SpcAttributeTypeAndOptionalValue {
    value_type: ObjectIdentifier,
    value: SpcPeImageData,
}

#[derive(Sequence)]
struct SpcPeImageData {
    /// SpcPeImageFlags: empty (no includeResources etc.), as sbsign and pesign write it.
    flags: BitString,
    /// Already tagged `[0]`; kept as raw DER.
    file: Any,
}

#[derive(Sequence)]
struct DigestInfo {
    digest_algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

/// Sign `pe` with `key` (the db key pair): returns the signed image.
///
/// Refuses an image that already carries a certificate table (re-signing would have to decide
/// whether to replace or append; the build signs its own freshly assembled UKI).
pub fn sign(pe: &[u8], key: &KeyPair) -> Result<Vec<u8>> {
    let headers = PeHeaders::parse(pe).context("parsing the PE image to sign")?;
    let (cert_offset, cert_size) = headers.certificate_table(pe);
    if cert_offset != 0 || cert_size != 0 {
        bail!(
            "the PE image already has a certificate table ({cert_size} bytes at {cert_offset:#x}): \
             sign the unsigned image"
        );
    }
    let dir_offset = headers
        .data_directory_offset(DIRECTORY_ENTRY_SECURITY)
        .context("the PE image has fewer than 5 data directories: no room for a signature")?;

    let mut out = pe.to_vec();
    out.resize(pe.len().next_multiple_of(CERT_ALIGN), 0);
    let digest = authenticode_sha256_signer(&out).context("Authenticode digest of the image")?;
    let signature = signature_for_digest(&digest, key)?;
    let win_cert = win_certificate(&signature)?;

    let table_offset = u32::try_from(out.len()).context("signed image larger than 4 GiB")?;
    let table_size = u32::try_from(win_cert.len()).context("signature too large")?;
    out[dir_offset..dir_offset + 4].copy_from_slice(&table_offset.to_le_bytes());
    out[dir_offset + 4..dir_offset + 8].copy_from_slice(&table_size.to_le_bytes());
    out.extend_from_slice(&win_cert);
    let checksum_offset = headers.checksum_offset();
    let checksum = pe_checksum(&out, checksum_offset);
    out[checksum_offset..checksum_offset + 4].copy_from_slice(&checksum.to_le_bytes());
    Ok(out)
}

/// The DER ContentInfo{SignedData} of an Authenticode signature over `digest`.
pub fn signature_for_digest(digest: &[u8; 32], key: &KeyPair) -> Result<Vec<u8>> {
    let content = spc_indirect_data_content(digest)?;
    let econtent = Any::from_der(&content).context("re-reading SpcIndirectDataContent")?;
    // Authenticode quirk: messageDigest covers the *value* of SpcIndirectDataContent, without
    // its SEQUENCE tag and length (Authenticode spec, "Authenticode-Specific Structures").
    let message_digest = Sha256::digest(econtent.value());
    let attrs = signed_attributes(&message_digest)?;
    pkcs7::content_info(
        key,
        SPC_INDIRECT_DATA,
        Some(econtent),
        Signed::Attributes(attrs),
    )
}

fn spc_indirect_data_content(digest: &[u8; 32]) -> Result<Vec<u8>> {
    let content = SpcIndirectDataContent {
        data: SpcAttributeTypeAndOptionalValue {
            value_type: SPC_PE_IMAGE_DATA,
            value: SpcPeImageData {
                flags: BitString::from_bytes(&[]).context("SpcPeImageFlags")?,
                file: Any::from_der(&SPC_LINK_OBSOLETE).context("SpcLink")?,
            },
        },
        message_digest: DigestInfo {
            digest_algorithm: pkcs7::algorithm_with_null(pkcs7::ID_SHA256),
            digest: OctetString::new(digest.as_slice()).context("digest")?,
        },
    };
    content.to_der().context("encoding SpcIndirectDataContent")
}

fn signed_attributes(message_digest: &[u8]) -> Result<SetOfVec<Attribute>> {
    let attribute = |oid: ObjectIdentifier, value: Any| -> Result<Attribute> {
        Ok(Attribute {
            oid,
            values: SetOfVec::try_from(vec![value]).context("attribute value set")?,
        })
    };
    let content_type = attribute(
        ID_CONTENT_TYPE,
        Any::encode_from(&SPC_INDIRECT_DATA).context("contentType value")?,
    )?;
    let digest = attribute(
        ID_MESSAGE_DIGEST,
        Any::encode_from(&OctetString::new(message_digest).context("messageDigest")?)
            .context("messageDigest value")?,
    )?;
    // SetOfVec::try_from sorts into DER SET OF order, which is what gets signed.
    SetOfVec::try_from(vec![content_type, digest]).context("signed attributes")
}

/// WIN_CERTIFICATE around `pkcs7`, zero-padded to 8 bytes. dwLength is the unpadded length,
/// as sbsign writes it; edk2 steps to the next entry with ALIGN_SIZE(dwLength).
fn win_certificate(pkcs7: &[u8]) -> Result<Vec<u8>> {
    let length =
        u32::try_from(WIN_CERTIFICATE_HEADER_LEN + pkcs7.len()).context("signature too large")?;
    let mut out = Vec::with_capacity(pkcs7.len() + 2 * CERT_ALIGN);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(pkcs7);
    out.resize(out.len().next_multiple_of(CERT_ALIGN), 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secureboot::keys::load_pair;
    use crate::secureboot::keys::tests::{other_keys_dir, run, test_keys_dir};
    use crate::testutil::{fixture, TempDir};
    use std::fs;
    use std::path::PathBuf;

    fn stub_path() -> PathBuf {
        fixture("systemd-boot-efi/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
    }

    fn scratch(name: &str) -> TempDir {
        TempDir::new(&format!("sb-ac-{name}"))
    }

    fn stub() -> Vec<u8> {
        fs::read(stub_path()).expect("read the systemd-stub fixture")
    }

    #[test]
    fn sbverify_accepts_our_cert_and_rejects_another() {
        let dir = scratch("sbverify");
        let key = load_pair(&test_keys_dir(), "db").unwrap();
        // The stub is 83,297 bytes: not a multiple of 8, so this also covers the padding.
        let input = stub();
        assert_ne!(input.len() % 8, 0);
        let signed = sign(&input, &key).unwrap();
        let path = dir.join("signed.efi");
        fs::write(&path, &signed).unwrap();
        let db_crt = test_keys_dir().join("db.crt");
        let out = run(
            "sbverify",
            &["--cert", db_crt.to_str().unwrap(), path.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "sbverify rejected: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let other = other_keys_dir().join("db.crt");
        let out = run(
            "sbverify",
            &["--cert", other.to_str().unwrap(), path.to_str().unwrap()],
        );
        assert!(
            !out.status.success(),
            "sbverify accepted a foreign certificate"
        );
        let kek = test_keys_dir().join("KEK.crt");
        let out = run(
            "sbverify",
            &["--cert", kek.to_str().unwrap(), path.to_str().unwrap()],
        );
        assert!(
            !out.status.success(),
            "sbverify accepted the KEK certificate"
        );
    }

    #[test]
    fn osslsigncode_reports_our_digest_and_valid_signature() {
        let dir = scratch("ossl");
        let key = load_pair(&test_keys_dir(), "db").unwrap();
        let input = stub();
        let signed = sign(&input, &key).unwrap();
        let path = dir.join("signed.efi");
        fs::write(&path, &signed).unwrap();
        let db_crt = test_keys_dir().join("db.crt");
        let out = run(
            "osslsigncode",
            &[
                "verify",
                "-CAfile",
                db_crt.to_str().unwrap(),
                "-in",
                path.to_str().unwrap(),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let ours = hex::encode(authenticode_sha256_signer(&input).unwrap()).to_uppercase();
        assert!(
            text.contains(&format!("Current message digest    : {ours}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("Calculated message digest : {ours}")),
            "{text}"
        );
        assert!(text.contains("Signature verification: ok"), "{text}");
        // PE checksum: osslsigncode recomputes it; on a mismatch it prints "Current PE checksum"
        // and "Calculated PE checksum" lines and "Warning: invalid PE checksum".
        assert!(text.contains("PE checksum   : "), "{text}");
        assert!(!text.contains("invalid PE checksum"), "{text}");
    }

    #[test]
    fn signing_is_deterministic_and_padding_preserves_the_firmware_digest() {
        let key = load_pair(&test_keys_dir(), "db").unwrap();
        let input = stub();
        let a = sign(&input, &key).unwrap();
        let b = sign(&input, &key).unwrap();
        assert_eq!(a, b);
        // On the signed file the firmware (no padding) and signer digests agree, and equal the
        // signer digest of the unsigned input (docs/measured-boot.md §7).
        let firmware = cvm_measure::pe::authenticode_sha256_firmware(&a).unwrap();
        assert_eq!(firmware, authenticode_sha256_signer(&input).unwrap());
        // A signed image is not signed again.
        assert!(format!("{:#}", sign(&a, &key).unwrap_err()).contains("already has a certificate"));
    }
}

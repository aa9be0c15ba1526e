//! The PKCS#7/CMS SignedData both signers need, assembled from the `cms` types by hand:
//! `cms::builder::SignedDataBuilder` always adds signed attributes and writes version 3 for
//! non-id-data content, while Authenticode wants version 1 with exactly our attributes and
//! authenticated variables want no attributes at all (efitools' `PKCS7_NOATTR`).

use anyhow::{Context, Result};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Encode};
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::Sha256;
use spki::AlgorithmIdentifierOwned;

use super::keys::KeyPair;

/// id-sha256 (RFC 5754).
pub const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// rsaEncryption (RFC 8017): the SignerInfo signature algorithm for PKCS#1 v1.5.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-data (RFC 5652 §4).
pub const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// id-signedData (RFC 5652 §5.1).
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// An AlgorithmIdentifier with explicit NULL parameters, as OpenSSL writes them.
pub fn algorithm_with_null(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::null()),
    }
}

/// What the signature covers (RFC 5652 §5.4).
pub enum Signed<'a> {
    /// No signed attributes: the signature is over the content itself.
    Content(&'a [u8]),
    /// Signed attributes: the signature is over their DER encoding as a SET OF.
    Attributes(SignedAttributes),
}

/// A DER ContentInfo{signedData} (what Authenticode's WIN_CERTIFICATE carries) around
/// [`signed_data`].
pub fn content_info(
    key: &KeyPair,
    econtent_type: ObjectIdentifier,
    econtent: Option<Any>,
    signed: Signed<'_>,
) -> Result<Vec<u8>> {
    let signed_data = signed_data(key, econtent_type, econtent, signed)?;
    let content_info = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed_data).context("encoding SignedData")?,
    };
    content_info.to_der().context("encoding ContentInfo")
}

/// SignedData version 1 with one SHA-256 RSA signer identified by issuer and serial number,
/// and its certificate. `econtent` is `None` for a detached signature.
pub fn signed_data(
    key: &KeyPair,
    econtent_type: ObjectIdentifier,
    econtent: Option<Any>,
    signed: Signed<'_>,
) -> Result<SignedData> {
    let signer_info = signer_info(key, signed)?;
    let digest_algorithms =
        SetOfVec::try_from(vec![algorithm_with_null(ID_SHA256)]).context("digest algorithm set")?;
    let certificates = CertificateSet(
        SetOfVec::try_from(vec![CertificateChoices::Certificate(key.cert.clone())])
            .context("certificate set")?,
    );
    Ok(SignedData {
        version: CmsVersion::V1,
        digest_algorithms,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type,
            econtent,
        },
        certificates: Some(certificates),
        crls: None,
        signer_infos: SignerInfos(
            SetOfVec::try_from(vec![signer_info]).context("signer info set")?,
        ),
    })
}

fn signer_info(key: &KeyPair, signed: Signed<'_>) -> Result<SignerInfo> {
    let tbs = &key.cert.tbs_certificate;
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: tbs.issuer.clone(),
        serial_number: tbs.serial_number.clone(),
    });
    let (to_sign, signed_attrs) = match signed {
        Signed::Content(content) => (content.to_vec(), None),
        Signed::Attributes(attrs) => (
            attrs.to_der().context("encoding signed attributes")?,
            Some(attrs),
        ),
    };
    // PKCS#1 v1.5 is deterministic: the same input and key give the same signature bytes.
    let signature = SigningKey::<Sha256>::new(key.key.clone())
        .try_sign(&to_sign)
        .context("RSA signing")?;
    Ok(SignerInfo {
        version: CmsVersion::V1,
        sid,
        digest_alg: algorithm_with_null(ID_SHA256),
        signed_attrs,
        signature_algorithm: algorithm_with_null(RSA_ENCRYPTION),
        signature: OctetString::new(signature.to_vec()).context("signature value")?,
        unsigned_attrs: None,
    })
}

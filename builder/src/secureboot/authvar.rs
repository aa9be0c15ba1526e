//! Time-based authenticated variables (UEFI spec §8.2.2): EFI_VARIABLE_AUTHENTICATION_2
//! followed by the new variable data, as `SetVariable` (or efitools' `UpdateVars`,
//! `efi-updatevar`, `virt-fw-vars --set-json`) takes it.
//!
//! The signature is a detached PKCS#7 SignedData without signed attributes over
//! `VariableName ‖ VendorGuid ‖ Attributes ‖ TimeStamp ‖ Data`; PK is signed by PK (enrolling
//! the platform key), KEK by PK, db and dbx by KEK. The CertData is the bare SignedData (no
//! ContentInfo wrapper), as efitools' `sign-efi-sig-list` writes it; edk2 accepts both.

use anyhow::{Context, Result};
use der::Encode;

use super::keys::{KeyPair, SecureBootKeys};
use super::pkcs7::{self, Signed};
use super::{attr, utf16le, EfiTime, Guid, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};

/// WIN_CERTIFICATE.wRevision = WIN_CERT_REVISION_2_0.
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// WIN_CERTIFICATE.wCertificateType = WIN_CERT_TYPE_EFI_GUID.
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0EF1;
/// WIN_CERTIFICATE header (8) + CertType GUID (16).
const WIN_CERTIFICATE_UEFI_GUID_HEADER_LEN: usize = 24;
/// EFI_CERT_TYPE_PKCS7_GUID: WIN_CERTIFICATE_UEFI_GUID.CertType for a PKCS#7 signature.
pub const EFI_CERT_TYPE_PKCS7: Guid = Guid::from_fields(
    0x4aafd29d,
    0x68df,
    0x49ee,
    [0x8a, 0xa9, 0x34, 0x7d, 0x37, 0x56, 0x65, 0xa7],
);

/// The four Secure Boot policy variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyVar {
    /// Platform key.
    Pk,
    /// Key exchange keys.
    Kek,
    /// Allowed signatures.
    Db,
    /// Forbidden signatures.
    Dbx,
}

impl PolicyVar {
    /// Variable name.
    pub fn name(self) -> &'static str {
        match self {
            PolicyVar::Pk => "PK",
            PolicyVar::Kek => "KEK",
            PolicyVar::Db => "db",
            PolicyVar::Dbx => "dbx",
        }
    }

    /// Vendor GUID: EFI_GLOBAL_VARIABLE for PK/KEK, the image security database for db/dbx.
    pub fn vendor(self) -> Guid {
        match self {
            PolicyVar::Pk | PolicyVar::Kek => EFI_GLOBAL_VARIABLE,
            PolicyVar::Db | PolicyVar::Dbx => EFI_IMAGE_SECURITY_DATABASE,
        }
    }

    /// The key allowed to update this variable once PK is enrolled.
    pub fn signer(self, keys: &SecureBootKeys) -> &KeyPair {
        match self {
            PolicyVar::Pk | PolicyVar::Kek => &keys.pk,
            PolicyVar::Db | PolicyVar::Dbx => &keys.kek,
        }
    }
}

/// The bytes the signature covers (UEFI spec §8.2.2, step 2 of the signing procedure).
pub fn signed_payload(
    name: &str,
    vendor: Guid,
    attributes: u32,
    timestamp: &EfiTime,
    data: &[u8],
) -> Vec<u8> {
    let mut out = utf16le(name);
    out.extend_from_slice(&vendor.0);
    out.extend_from_slice(&attributes.to_le_bytes());
    out.extend_from_slice(&timestamp.to_bytes());
    out.extend_from_slice(data);
    out
}

/// EFI_VARIABLE_AUTHENTICATION_2 ‖ `data`: an authenticated update of `var` to `data` with
/// attributes NV|BS|RT|TIME_BASED_AUTH, signed by `signer`.
pub fn authenticated_update(
    var: PolicyVar,
    data: &[u8],
    timestamp: &EfiTime,
    signer: &KeyPair,
) -> Result<Vec<u8>> {
    authenticated_write(
        var.name(),
        var.vendor(),
        attr::SECURE_BOOT_POLICY,
        timestamp,
        data,
        signer,
    )
}

/// EFI_VARIABLE_AUTHENTICATION_2 ‖ `data` for any variable.
pub fn authenticated_write(
    name: &str,
    vendor: Guid,
    attributes: u32,
    timestamp: &EfiTime,
    data: &[u8],
    signer: &KeyPair,
) -> Result<Vec<u8>> {
    let payload = signed_payload(name, vendor, attributes, timestamp, data);
    let signed_data = pkcs7::signed_data(signer, pkcs7::ID_DATA, None, Signed::Content(&payload))
        .with_context(|| format!("signing the update of {name}"))?;
    let cert_data = signed_data
        .to_der()
        .with_context(|| format!("encoding the signature of {name}"))?;
    let length = u32::try_from(WIN_CERTIFICATE_UEFI_GUID_HEADER_LEN + cert_data.len())
        .context("signature too large")?;
    let mut out = Vec::with_capacity(EfiTime::LEN + length as usize + data.len());
    out.extend_from_slice(&timestamp.to_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
    out.extend_from_slice(&EFI_CERT_TYPE_PKCS7.0);
    out.extend_from_slice(&cert_data);
    out.extend_from_slice(data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secureboot::esl;
    use crate::secureboot::keys::tests::{run, test_keys_dir};
    use crate::secureboot::keys::{load, Role};
    use crate::secureboot::ENROLL_TIME;
    use std::fs;

    const OWNER: &str = "8c2fd1d9-0a4e-4b6c-9a57-3d8f2d1c6a11";

    /// Our update of each variable equals `sign-efi-sig-list -t` byte for byte (PKCS#1 v1.5
    /// signatures are deterministic, and we encode the SignedData as OpenSSL does), and the
    /// to-be-signed bundle equals its `-o` output.
    #[test]
    fn byte_identical_to_sign_efi_sig_list() {
        let dir = crate::testutil::TempDir::new("sb-auth");
        let keys = load(&test_keys_dir()).unwrap();
        let owner = Guid::parse(OWNER).unwrap();
        let cases = [
            (PolicyVar::Pk, Some(Role::Pk), "PK"),
            (PolicyVar::Kek, Some(Role::Kek), "PK"),
            (PolicyVar::Db, Some(Role::Db), "KEK"),
            (PolicyVar::Dbx, None, "KEK"),
        ];
        for (var, content, signer_stem) in cases {
            let data = match content {
                Some(role) => {
                    let der =
                        fs::read(test_keys_dir().join(format!("{}.der", role.name()))).unwrap();
                    esl::x509_list(&der, owner).unwrap()
                }
                None => Vec::new(), // empty dbx
            };
            let esl_path = dir.join(&format!("{}.esl", var.name()));
            fs::write(&esl_path, &data).unwrap();
            let key = test_keys_dir().join(format!("{signer_stem}.key"));
            let crt = test_keys_dir().join(format!("{signer_stem}.crt"));
            let tool = |extra: &[&str], out: &std::path::Path| {
                let mut args = vec!["-t", "2025-01-01 00:00:00", "-g", OWNER];
                args.extend_from_slice(extra);
                args.extend_from_slice(&[
                    var.name(),
                    esl_path.to_str().unwrap(),
                    out.to_str().unwrap(),
                ]);
                let o = run("sign-efi-sig-list", &args);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                fs::read(out).unwrap()
            };
            let bundle = tool(&["-o"], &dir.join(&format!("{}.bundle", var.name())));
            assert_eq!(
                signed_payload(
                    var.name(),
                    var.vendor(),
                    attr::SECURE_BOOT_POLICY,
                    &ENROLL_TIME,
                    &data
                ),
                bundle,
                "{}",
                var.name()
            );
            let reference = tool(
                &["-k", key.to_str().unwrap(), "-c", crt.to_str().unwrap()],
                &dir.join(&format!("{}.auth", var.name())),
            );
            let ours = authenticated_update(var, &data, &ENROLL_TIME, var.signer(&keys)).unwrap();
            assert_eq!(ours, reference, "{}", var.name());
        }
    }
}

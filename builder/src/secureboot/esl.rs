//! EFI_SIGNATURE_LIST (UEFI spec §32.4.1): the data of PK, KEK, db and dbx.
//!
//! One list holds signatures of one type and one size; we write one X.509 certificate per
//! list, exactly as efitools' `cert-to-efi-sig-list` does.

use anyhow::{bail, Context, Result};

use super::Guid;

/// EFI_CERT_X509_GUID: SignatureType of a list of DER X.509 certificates.
pub const EFI_CERT_X509: Guid = Guid::from_fields(
    0xa5c059a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// EFI_CERT_SHA256_GUID: SignatureType of a list of SHA-256 image digests (dbx entries).
pub const EFI_CERT_SHA256: Guid = Guid::from_fields(
    0xc1c41626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);

/// SignatureType (16) + SignatureListSize (4) + SignatureHeaderSize (4) + SignatureSize (4).
const LIST_HEADER_LEN: usize = 28;
/// EFI_SIGNATURE_DATA.SignatureOwner.
const OWNER_LEN: usize = 16;

/// One EFI_SIGNATURE_DATA: the owner GUID and the signature bytes (a DER certificate or a
/// digest). Its encoding is what PCR 7's EV_EFI_VARIABLE_AUTHORITY event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureData {
    /// SignatureOwner: identifies who enrolled the entry.
    pub owner: Guid,
    /// SignatureData.
    pub data: Vec<u8>,
}

impl SignatureData {
    /// `owner ‖ data`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(OWNER_LEN + self.data.len());
        out.extend_from_slice(&self.owner.0);
        out.extend_from_slice(&self.data);
        out
    }
}

/// An EFI_SIGNATURE_LIST with one X.509 certificate (DER) owned by `owner`.
pub fn x509_list(cert_der: &[u8], owner: Guid) -> Result<Vec<u8>> {
    signature_list(
        EFI_CERT_X509,
        &[SignatureData {
            owner,
            data: cert_der.to_vec(),
        }],
    )
}

/// An EFI_SIGNATURE_LIST of `signature_type` holding `entries`, which must all have the same
/// size (a list has one SignatureSize). SignatureHeaderSize is 0 for every defined type.
pub fn signature_list(signature_type: Guid, entries: &[SignatureData]) -> Result<Vec<u8>> {
    let Some(first) = entries.first() else {
        bail!("an EFI_SIGNATURE_LIST needs at least one entry");
    };
    if entries.iter().any(|e| e.data.len() != first.data.len()) {
        bail!("entries of one EFI_SIGNATURE_LIST must have equal sizes: use one list per size");
    }
    let signature_size = OWNER_LEN + first.data.len();
    let list_size = LIST_HEADER_LEN + signature_size * entries.len();
    let u32_of = |n: usize| u32::try_from(n).context("signature list larger than 4 GiB");
    let mut out = Vec::with_capacity(list_size);
    out.extend_from_slice(&signature_type.0);
    out.extend_from_slice(&u32_of(list_size)?.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&u32_of(signature_size)?.to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.to_bytes());
    }
    Ok(out)
}

/// One parsed list: its type and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList {
    /// SignatureType.
    pub signature_type: Guid,
    /// The EFI_SIGNATURE_DATA entries.
    pub entries: Vec<SignatureData>,
}

/// Parse a variable's data as a sequence of EFI_SIGNATURE_LISTs (what db holds).
pub fn parse(mut data: &[u8]) -> Result<Vec<SignatureList>> {
    let mut lists = Vec::new();
    while !data.is_empty() {
        if data.len() < LIST_HEADER_LEN {
            bail!(
                "truncated EFI_SIGNATURE_LIST header ({} bytes left)",
                data.len()
            );
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        let mut signature_type = [0u8; 16];
        signature_type.copy_from_slice(&data[..16]);
        let list_size = u32_at(16) as usize;
        let header_size = u32_at(20) as usize;
        let signature_size = u32_at(24) as usize;
        let body_start = LIST_HEADER_LEN + header_size;
        if list_size > data.len() || list_size < body_start || signature_size < OWNER_LEN {
            bail!(
                "corrupt EFI_SIGNATURE_LIST: SignatureListSize {list_size}, header {header_size}, \
                 SignatureSize {signature_size}, {} bytes available",
                data.len()
            );
        }
        let body = &data[body_start..list_size];
        if !body.len().is_multiple_of(signature_size) {
            bail!("EFI_SIGNATURE_LIST body is not a whole number of {signature_size}-byte entries");
        }
        let entries = body
            .chunks(signature_size)
            .map(|c| {
                let mut owner = [0u8; 16];
                owner.copy_from_slice(&c[..OWNER_LEN]);
                SignatureData {
                    owner: Guid(owner),
                    data: c[OWNER_LEN..].to_vec(),
                }
            })
            .collect();
        lists.push(SignatureList {
            signature_type: Guid(signature_type),
            entries,
        });
        data = &data[list_size..];
    }
    Ok(lists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secureboot::keys::tests::{run, test_keys_dir};
    use crate::secureboot::keys::Role;
    use std::fs;

    #[test]
    fn byte_identical_to_cert_to_efi_sig_list() {
        let dir = crate::testutil::TempDir::new("sb-esl");
        let owner = "8c2fd1d9-0a4e-4b6c-9a57-3d8f2d1c6a11";
        for role in Role::ALL {
            let crt = test_keys_dir().join(format!("{}.crt", role.name()));
            let out_path = dir.join(&format!("{}.esl", role.name()));
            let out = run(
                "cert-to-efi-sig-list",
                &[
                    "-g",
                    owner,
                    crt.to_str().unwrap(),
                    out_path.to_str().unwrap(),
                ],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let der = fs::read(test_keys_dir().join(format!("{}.der", role.name()))).unwrap();
            let ours = x509_list(&der, Guid::parse(owner).unwrap()).unwrap();
            assert_eq!(ours, fs::read(&out_path).unwrap(), "{}", role.name());
            let parsed = parse(&ours).unwrap();
            assert_eq!(parsed.len(), 1);
            assert_eq!(parsed[0].signature_type, EFI_CERT_X509);
            assert_eq!(parsed[0].entries[0].data, der);
        }
    }

    #[test]
    fn parse_rejects_corrupt_lists() {
        let list = x509_list(&[0x30, 0x00], Guid([7; 16])).unwrap();
        assert!(parse(&list[..list.len() - 1]).is_err());
        assert!(parse(&list[..10]).is_err());
        let mut bad = list.clone();
        bad[24] = 3; // SignatureSize smaller than the owner GUID
        assert!(parse(&bad).is_err());
    }
}

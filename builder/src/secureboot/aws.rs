//! The AWS `register-image --uefi-data` blob: the owner's PK, KEK, db (and dbx) as the UEFI
//! variable store EC2 hands to the instance's firmware.
//!
//! AWS documents the blob as what `python-uefivars -o aws` writes ("Create a binary blob
//! containing a pre-filled variable store", EC2 user guide, UEFI Secure Boot). Its layout:
//!
//! ```text
//! base64(  "AMZNUEFI" (u64 LE 0x494645554e5a4d41)
//!          CRC32C u32 LE over (Version ‖ zlib data)
//!          Version u32 LE = 0
//!          zlib( count u64, then per variable:
//!                name (u64 length ‖ UTF-8) ‖ data (u64 length ‖ bytes) ‖ VendorGuid (16 bytes)
//!                ‖ Attributes u32 ‖ [if TIME_BASED_AUTHENTICATED_WRITE_ACCESS:
//!                   TimeStamp EFI_TIME (16 bytes) ‖ digest (u64 length ‖ 32 bytes)] ) )
//! ```
//!
//! All integers little-endian. The variables carry what `uefivars -i none -P -K -b` gives them:
//! NV|BS|RT|TIME_BASED_AUTH, an all-zero timestamp (so the owner may later update with any
//! time) and an all-zero digest. python-uefivars compresses with a preset zlib dictionary; a
//! zlib reader only uses a dictionary when the stream's FDICT flag asks for one, so a stream
//! written without it (as here) decodes the same — `uefivars -i aws` reads ours back (tested).

use anyhow::{Context, Result};
use base64::Engine as _;
use std::io::Write;

use super::authvar::PolicyVar;
use super::keys::SecureBootKeys;
use super::{attr, esl, EfiTime, Guid};

/// "AMZNUEFI" read as a little-endian u64: the blob's magic.
const AMZNUEFI: u64 = 0x4946_4555_4e5a_4d41;
/// The only blob version there is.
const VERSION: u32 = 0;
/// Length of the (unused, zero) authenticated-variable digest each time-based variable carries.
const DIGEST_LEN: usize = 32;
/// zlib level python-uefivars uses.
const ZLIB_LEVEL: u32 = 9;

/// One variable of the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsVariable {
    pub name: String,
    pub vendor: Guid,
    pub attributes: u32,
    pub data: Vec<u8>,
}

/// PK, KEK and db as one-certificate signature lists owned by `owner`, plus `dbx` when given,
/// in the order `uefivars` appends them.
pub fn policy_variables(
    keys: &SecureBootKeys,
    owner: Guid,
    dbx: Option<&[u8]>,
) -> Result<Vec<AwsVariable>> {
    let mut vars = Vec::new();
    for (var, pair) in [
        (PolicyVar::Pk, &keys.pk),
        (PolicyVar::Kek, &keys.kek),
        (PolicyVar::Db, &keys.db),
    ] {
        vars.push(AwsVariable {
            name: var.name().into(),
            vendor: var.vendor(),
            attributes: attr::SECURE_BOOT_POLICY,
            data: esl::x509_list(&pair.cert_der()?, owner)
                .with_context(|| format!("signature list for {}", var.name()))?,
        });
    }
    if let Some(dbx) = dbx {
        vars.push(AwsVariable {
            name: PolicyVar::Dbx.name().into(),
            vendor: PolicyVar::Dbx.vendor(),
            attributes: attr::SECURE_BOOT_POLICY,
            data: dbx.to_vec(),
        });
    }
    Ok(vars)
}

/// The uncompressed variable list.
fn payload(vars: &[AwsVariable]) -> Vec<u8> {
    fn sized(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = (vars.len() as u64).to_le_bytes().to_vec();
    for v in vars {
        sized(&mut out, v.name.as_bytes());
        sized(&mut out, &v.data);
        out.extend_from_slice(&v.vendor.0);
        out.extend_from_slice(&v.attributes.to_le_bytes());
        if v.attributes & attr::TIME_BASED_AUTHENTICATED_WRITE_ACCESS != 0 {
            out.extend_from_slice(&[0; EfiTime::LEN]);
            sized(&mut out, &[0; DIGEST_LEN]);
        }
    }
    out
}

/// The blob as binary (before base64).
pub fn blob_bytes(vars: &[AwsVariable]) -> Result<Vec<u8>> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(ZLIB_LEVEL));
    z.write_all(&payload(vars))
        .and_then(|()| z.finish())
        .context("compressing the AWS UEFI variable store")
        .map(|zdata| {
            let mut checked = VERSION.to_le_bytes().to_vec();
            checked.extend_from_slice(&zdata);
            let mut out = AMZNUEFI.to_le_bytes().to_vec();
            out.extend_from_slice(&crc32c(&checked).to_le_bytes());
            out.extend_from_slice(&checked);
            out
        })
}

/// The blob as `--uefi-data` takes it and `uefivars -o aws` writes it: base64 text.
pub fn blob(vars: &[AwsVariable]) -> Result<String> {
    Ok(base64::engine::general_purpose::STANDARD.encode(blob_bytes(vars)?))
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, init and final XOR 0xFFFFFFFF).
pub fn crc32c(data: &[u8]) -> u32 {
    const POLY: u32 = 0x82f6_3b78;
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secureboot::keys::load;
    use crate::secureboot::keys::tests::{run, test_keys_dir};
    use crate::testutil::TempDir;
    use std::fs;

    const OWNER: &str = "8c2fd1d9-0a4e-4b6c-9a57-3d8f2d1c6a11";

    /// RFC 3720 (iSCSI) Appendix B.4 check value and test vectors.
    #[test]
    fn crc32c_published_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    }

    fn uefivars_json(args: &[&str]) -> String {
        let out = run("uefivars", args);
        assert!(
            out.status.success(),
            "uefivars {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// python-uefivars (what AWS documents) reads our blob back as exactly the variables it
    /// produces itself from the same signature lists.
    #[test]
    fn uefivars_reads_our_blob_as_its_own() {
        let dir = TempDir::new("sb-aws");
        let keys = load(&test_keys_dir()).unwrap();
        let owner = Guid::parse(OWNER).unwrap();
        let vars = policy_variables(&keys, owner, None).unwrap();
        let ours = dir.join("ours.bin");
        fs::write(&ours, blob(&vars).unwrap()).unwrap();

        let mut esl_args = vec![];
        for (flag, v) in ["-P", "-K", "-b"].iter().zip(&vars) {
            let p = dir.join(&format!("{}.esl", v.name));
            fs::write(&p, &v.data).unwrap();
            esl_args.push(flag.to_string());
            esl_args.push(p.to_str().unwrap().to_string());
        }
        let reference = dir.join("ref.bin");
        let mut args = vec!["-i", "none", "-o", "aws", "-O", reference.to_str().unwrap()];
        args.extend(esl_args.iter().map(String::as_str));
        uefivars_json(&args);

        let decode = |p: &std::path::Path| {
            uefivars_json(&["-i", "aws", "-o", "json", "-I", p.to_str().unwrap()])
        };
        let (ours_json, ref_json) = (decode(&ours), decode(&reference));
        assert_eq!(ours_json, ref_json);
        assert!(
            ours_json.contains("\"PK\"") && ours_json.contains("\"db\""),
            "{ours_json}"
        );
        // Deterministic.
        assert_eq!(blob(&vars).unwrap(), fs::read_to_string(&ours).unwrap());
    }

    #[test]
    fn corrupt_blob_is_rejected_by_uefivars() {
        let dir = TempDir::new("sb-aws-bad");
        let keys = load(&test_keys_dir()).unwrap();
        let vars = policy_variables(&keys, Guid([1; 16]), None).unwrap();
        let mut bytes = blob_bytes(&vars).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let p = dir.join("bad.bin");
        fs::write(&p, base64::engine::general_purpose::STANDARD.encode(&bytes)).unwrap();
        let out = run(
            "uefivars",
            &["-i", "aws", "-o", "json", "-I", p.to_str().unwrap()],
        );
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"));
    }
}

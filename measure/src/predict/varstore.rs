//! Reader of an OVMF variable store file (`OVMF_VARS*.fd`): the variables the firmware starts
//! with, which it measures into PCR 7 (Secure Boot policy) and PCR 1 (boot options).
//!
//! Layout (edk2 `MdePkg/Include/Pi/PiFirmwareVolume.h`, `MdeModulePkg/Include/Guid/VariableFormat.h`),
//! little-endian:
//!
//! * `EFI_FIRMWARE_VOLUME_HEADER`: ZeroVector[16], FileSystemGuid = gEfiSystemNvDataFvGuid,
//!   FvLength u64, Signature "_FVH", Attributes u32, HeaderLength u16, …
//! * at HeaderLength, `VARIABLE_STORE_HEADER`: Signature GUID (gEfiAuthenticatedVariableGuid for
//!   the 4M builds), Size u32, Format u8 (0x5A), State u8 (0xFE), Reserved u16, Reserved1 u32;
//! * then `AUTHENTICATED_VARIABLE_HEADER`s, each 4-byte aligned: StartId u16 = 0x55AA, State u8,
//!   Reserved u8, Attributes u32, MonotonicCount u64, TimeStamp EFI_TIME (16), PubKeyIndex u32,
//!   NameSize u32, DataSize u32, VendorGuid (16); the UTF-16 name (NameSize bytes with NUL), then
//!   the data right after it (`GET_PAD_SIZE` pads to `ALIGNMENT` = 1 on x86), then padding to 4. The list ends at the first header whose StartId is not 0x55AA (erased flash
//!   reads 0xFFFF).
//!
//! Only variables in state VAR_ADDED (0x3F) are live; a copy in VAR_IN_DELETED_TRANSITION
//! (0x3E) is live when no VAR_ADDED copy of the same variable exists (edk2 `FindVariableEx`).

use super::{PredictError, Result};

/// gEfiSystemNvDataFvGuid fff12b8d-7696-4c8b-a985-2747075b4f50, in on-disk (mixed-endian) order.
pub const SYSTEM_NV_DATA_FV_GUID: [u8; 16] = [
    0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50,
];
/// gEfiAuthenticatedVariableGuid aaf32c78-947b-439a-a180-2e144ec37792.
pub const AUTHENTICATED_VARIABLE_GUID: [u8; 16] = [
    0x78, 0x2c, 0xf3, 0xaa, 0x7b, 0x94, 0x9a, 0x43, 0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92,
];
/// `EFI_FVH_SIGNATURE`.
const FVH_SIGNATURE: &[u8; 4] = b"_FVH";
/// Offset of `Signature` in the FV header.
const FV_SIGNATURE_OFFSET: usize = 0x28;
/// Offset of `FileSystemGuid` in the FV header.
const FV_GUID_OFFSET: usize = 0x10;
/// Offset of `HeaderLength` in the FV header.
const FV_HEADER_LENGTH_OFFSET: usize = 0x30;
/// `sizeof(VARIABLE_STORE_HEADER)`.
const STORE_HEADER_LEN: usize = 28;
/// `VARIABLE_STORE_FORMATTED`.
const STORE_FORMATTED: u8 = 0x5A;
/// `VARIABLE_STORE_HEALTHY`.
const STORE_HEALTHY: u8 = 0xFE;
/// `sizeof(AUTHENTICATED_VARIABLE_HEADER)`.
const VAR_HEADER_LEN: usize = 60;
/// `VARIABLE_DATA`: StartId of every variable header.
const VAR_START_ID: u16 = 0x55AA;
/// `VAR_ADDED`.
const VAR_ADDED: u8 = 0x3F;
/// `VAR_ADDED & VAR_IN_DELETED_TRANSITION`.
const VAR_ADDED_IN_DELETED_TRANSITION: u8 = 0x3E;
/// `HEADER_ALIGNMENT`.
const ALIGN: usize = 4;

/// One live variable of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// VendorGuid, on-disk byte order.
    pub vendor_guid: [u8; 16],
    /// Name without the NUL.
    pub name: String,
    pub attributes: u32,
    pub data: Vec<u8>,
}

/// The live variables of an OVMF VARS file, in store order.
pub fn read_variables(vars: &[u8]) -> Result<Vec<Variable>> {
    let store = variable_store(vars)?;
    let mut added = Vec::new();
    let mut in_transition = Vec::new();
    let mut off = STORE_HEADER_LEN;
    while off + VAR_HEADER_LEN <= store.len() && u16_at(store, off) == VAR_START_ID {
        let (var, state, next) = read_variable(store, off)?;
        match state {
            VAR_ADDED => added.push(var),
            VAR_ADDED_IN_DELETED_TRANSITION => in_transition.push(var),
            _ => {}
        }
        off = next;
    }
    for var in in_transition {
        let same = |v: &Variable| v.name == var.name && v.vendor_guid == var.vendor_guid;
        if !added.iter().any(same) {
            added.push(var);
        }
    }
    Ok(added)
}

/// The live variable `name` of `vendor_guid`, if present.
pub fn find<'a>(vars: &'a [Variable], vendor_guid: &[u8; 16], name: &str) -> Option<&'a Variable> {
    vars.iter()
        .find(|v| v.name == name && &v.vendor_guid == vendor_guid)
}

/// The authenticated variable store inside the FV, up to its declared size.
fn variable_store(vars: &[u8]) -> Result<&[u8]> {
    let bad = |why: &str| PredictError::VarStore(format!("{why}: not an OVMF_VARS file"));
    if vars.len() < FV_HEADER_LENGTH_OFFSET + 2
        || &vars[FV_SIGNATURE_OFFSET..FV_SIGNATURE_OFFSET + 4] != FVH_SIGNATURE
    {
        return Err(bad("no \"_FVH\" firmware volume header"));
    }
    if vars[FV_GUID_OFFSET..FV_GUID_OFFSET + 16] != SYSTEM_NV_DATA_FV_GUID {
        return Err(bad("firmware volume is not gEfiSystemNvDataFvGuid"));
    }
    let start = usize::from(u16_at(vars, FV_HEADER_LENGTH_OFFSET));
    let header = vars
        .get(start..start + STORE_HEADER_LEN)
        .ok_or_else(|| bad("variable store header beyond the end of the file"))?;
    if header[..16] != AUTHENTICATED_VARIABLE_GUID {
        return Err(PredictError::VarStore(
            "the variable store is not an authenticated one (gEfiAuthenticatedVariableGuid); \
             only the OVMF 4M layout is supported"
                .into(),
        ));
    }
    let size = u32_at(header, 16) as usize;
    if header[20] != STORE_FORMATTED || header[21] != STORE_HEALTHY {
        return Err(bad("variable store is not formatted and healthy"));
    }
    vars.get(start..start + size)
        .ok_or_else(|| bad("variable store size beyond the end of the file"))
}

/// The variable whose header is at `off`: (variable, State, offset of the next header).
fn read_variable(store: &[u8], off: usize) -> Result<(Variable, u8, usize)> {
    let h = &store[off..off + VAR_HEADER_LEN];
    let state = h[2];
    let attributes = u32_at(h, 4);
    let name_size = u32_at(h, 36) as usize;
    let data_size = u32_at(h, 40) as usize;
    let mut vendor_guid = [0u8; 16];
    vendor_guid.copy_from_slice(&h[44..60]);
    let name_start = off + VAR_HEADER_LEN;
    let data_start = name_start + name_size;
    let end = data_start
        .checked_add(data_size)
        .filter(|_| name_start + name_size <= store.len())
        .filter(|&e| e <= store.len())
        .ok_or_else(|| {
            PredictError::VarStore(format!(
                "variable at store offset {off:#x} (name {name_size} bytes, data {data_size} bytes) \
                 runs past the end of the store"
            ))
        })?;
    let name = utf16_name(&store[name_start..name_start + name_size]).ok_or_else(|| {
        PredictError::VarStore(format!(
            "variable at store offset {off:#x}: name is not UTF-16"
        ))
    })?;
    let var = Variable {
        vendor_guid,
        name,
        attributes,
        data: store[data_start..end].to_vec(),
    };
    Ok((var, state, align(end)))
}

fn utf16_name(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Callers have bounds-checked `off + 2`.
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Callers have bounds-checked `off + 4`.
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[cfg(test)]
mod tests {
    use super::super::pcr7::{EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
    use super::super::test_support::*;
    use super::*;
    use std::process::Command;

    /// `EFI_CERT_X509_GUID` a5c059a1-94e4-4aa7-87b5-ab155c2bf072.
    const CERT_X509: [u8; 16] = [
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ];

    /// Subject of the first X.509 certificate of an EFI_SIGNATURE_LIST, decoded by openssl.
    fn first_cert_subject(esl: &[u8]) -> String {
        assert_eq!(&esl[..16], &CERT_X509, "not an X.509 signature list");
        let header_size = u32_at(esl, 20) as usize;
        let sig_size = u32_at(esl, 24) as usize;
        // EFI_SIGNATURE_LIST is 28 bytes; each EFI_SIGNATURE_DATA = owner GUID + certificate.
        let cert = &esl[28 + header_size + 16..28 + header_size + sig_size];
        let path = std::env::temp_dir().join(format!("cvm-varstore-{}.der", std::process::id()));
        std::fs::write(&path, cert).unwrap();
        let out = Command::new("openssl")
            .args(["x509", "-inform", "der", "-noout", "-subject", "-in"])
            .arg(&path)
            .output()
            .expect("openssl is needed");
        let _ = std::fs::remove_file(path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn pinned_template_store_is_empty() {
        assert_eq!(read_variables(&fixture(OVMF_VARS)).unwrap(), vec![]);
    }

    #[test]
    fn snakeoil_store_holds_the_enrolled_keys() {
        let vars = read_variables(&fixture(OVMF_VARS_SNAKEOIL)).unwrap();
        let pk = find(&vars, &EFI_GLOBAL_VARIABLE, "PK").expect("PK enrolled");
        let kek = find(&vars, &EFI_GLOBAL_VARIABLE, "KEK").expect("KEK enrolled");
        let db = find(&vars, &EFI_IMAGE_SECURITY_DATABASE, "db").expect("db enrolled");
        for v in [pk, kek, db] {
            let subject = first_cert_subject(&v.data);
            assert!(subject.contains("O = SnakeOil"), "{}: {subject}", v.name);
        }
        // dbx: one EFI_CERT_SHA256 list with one entry = 28 + 16 (owner) + 32 bytes.
        let dbx = find(&vars, &EFI_IMAGE_SECURITY_DATABASE, "dbx").expect("dbx");
        assert_eq!(dbx.data.len(), 76);
        assert_eq!(
            &dbx.data[..4],
            &[0x26, 0x16, 0xc4, 0xc1],
            "EFI_CERT_SHA256_GUID"
        );
        // Deleted copies (state 0x3C/0x3D) are not live: one CustomMode, the last one.
        let custom: Vec<_> = vars.iter().filter(|v| v.name == "CustomMode").collect();
        assert_eq!(custom.len(), 1);
    }

    #[test]
    fn malformed_stores_are_errors() {
        assert!(read_variables(b"").is_err());
        assert!(read_variables(&[0u8; 4096]).is_err());
        let mut vars = fixture(OVMF_VARS);
        // A variable header whose data size runs past the store.
        let start = usize::from(u16_at(&vars, FV_HEADER_LENGTH_OFFSET)) + STORE_HEADER_LEN;
        vars[start..start + 2].copy_from_slice(&VAR_START_ID.to_le_bytes());
        vars[start + 2] = VAR_ADDED;
        vars[start + 36..start + 40].copy_from_slice(&4u32.to_le_bytes());
        vars[start + 40..start + 44].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = read_variables(&vars).unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");
    }
}

//! Reader of an OVMF variable store file (`OVMF_VARS*.fd`): the variables the firmware starts
//! with, which it measures into PCR 7 (Secure Boot policy) and PCR 1 (boot options). The builder
//! parses its template with this reader too, before it writes an enrolled copy.
//!
//! Layout ([`layout`]; edk2 `MdePkg/Include/Pi/PiFirmwareVolume.h`,
//! `MdeModulePkg/Include/Guid/VariableFormat.h`), little-endian:
//!
//! * `EFI_FIRMWARE_VOLUME_HEADER`: `ZeroVector[16]`, FileSystemGuid = gEfiSystemNvDataFvGuid,
//!   FvLength u64, Signature "_FVH", Attributes u32, HeaderLength u16, Checksum u16, …
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
//!
//! The header checks are those of a file the firmware would accept (signature, GUIDs, lengths
//! within the file, the FV header checksum): a store that fails one is refused rather than read
//! in a way the firmware would not.

pub mod layout;

use layout::{fv, store, var, FIRST_VARIABLE};

use super::{PredictError, Result};

pub use layout::fv::SYSTEM_NV_DATA_FV_GUID;
pub use layout::store::AUTHENTICATED_VARIABLE_GUID;

/// One live variable of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// VendorGuid, on-disk byte order.
    pub vendor_guid: [u8; 16],
    /// Name without the NUL.
    pub name: String,
    pub attributes: u32,
    /// MonotonicCount (count-based authenticated variables; 0 otherwise).
    pub monotonic_count: u64,
    /// TimeStamp, the raw EFI_TIME (time-based authenticated variables; zero otherwise).
    pub timestamp: [u8; var::TIMESTAMP_LEN],
    /// PubKeyIndex (count-based authenticated variables; 0 otherwise).
    pub pubkey_index: u32,
    pub data: Vec<u8>,
}

/// Where the variable store lies in a VARS file, and its live variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableStore {
    /// File offset of the `VARIABLE_STORE_HEADER` (the FV's HeaderLength).
    pub offset: usize,
    /// `VARIABLE_STORE_HEADER.Size`, header included.
    pub size: usize,
    /// The live variables, in store order.
    pub variables: Vec<Variable>,
}

/// The live variables of an OVMF VARS file, in store order.
pub fn read_variables(vars: &[u8]) -> Result<Vec<Variable>> {
    Ok(read_store(vars)?.variables)
}

/// The variable store of an OVMF VARS file: its place in the file and its live variables.
pub fn read_store(vars: &[u8]) -> Result<VariableStore> {
    let (offset, size) = store_bounds(vars)?;
    let variables = live_variables(&vars[offset..offset + size])?;
    Ok(VariableStore {
        offset,
        size,
        variables,
    })
}

/// The live variable `name` of `vendor_guid`, if present.
pub fn find<'a>(vars: &'a [Variable], vendor_guid: &[u8; 16], name: &str) -> Option<&'a Variable> {
    vars.iter()
        .find(|v| v.name == name && &v.vendor_guid == vendor_guid)
}

fn bad(why: impl std::fmt::Display) -> PredictError {
    PredictError::VarStore(why.to_string())
}

/// (file offset, size) of the authenticated variable store inside the FV, after checking the FV
/// and store headers.
fn store_bounds(vars: &[u8]) -> Result<(usize, usize)> {
    if vars.len() < fv::MIN_HEADER_LEN + store::LEN {
        return Err(bad(format_args!(
            "{} bytes is too small for an OVMF variable store: not an OVMF_VARS file",
            vars.len()
        )));
    }
    if &vars[fv::SIGNATURE..fv::SIGNATURE + 4] != fv::SIGNATURE_VALUE {
        return Err(bad(
            "no \"_FVH\" firmware volume header: not an OVMF_VARS file",
        ));
    }
    if vars[fv::FILE_SYSTEM_GUID..fv::FILE_SYSTEM_GUID + 16] != fv::SYSTEM_NV_DATA_FV_GUID {
        return Err(bad(
            "firmware volume is not gEfiSystemNvDataFvGuid: not an OVMF_VARS file",
        ));
    }
    let fv_length = u64_at(vars, fv::FV_LENGTH);
    if fv_length > vars.len() as u64 {
        return Err(bad(format_args!(
            "FvLength {fv_length:#x} exceeds the {}-byte file: truncated",
            vars.len()
        )));
    }
    let start = usize::from(u16_at(vars, fv::HEADER_LENGTH));
    if !(fv::MIN_HEADER_LEN..=vars.len() - store::LEN).contains(&start) {
        return Err(bad(format_args!(
            "implausible firmware volume HeaderLength {start:#x}"
        )));
    }
    if layout::fv_header_sum(&vars[..start]) != 0 {
        return Err(bad(
            "firmware volume header checksum is wrong: corrupt file",
        ));
    }
    let header = &vars[start..start + store::LEN];
    if header[..16] != store::AUTHENTICATED_VARIABLE_GUID {
        return Err(bad(
            "the variable store is not an authenticated one (gEfiAuthenticatedVariableGuid); \
             only the OVMF 4M layout is supported (Debian: OVMF_VARS_4M.fd)",
        ));
    }
    if header[store::FORMAT] != store::FORMATTED || header[store::STATE] != store::HEALTHY {
        return Err(bad(format_args!(
            "variable store is not formatted and healthy (Format {:#x}, State {:#x})",
            header[store::FORMAT],
            header[store::STATE]
        )));
    }
    let size = u32_at(header, store::SIZE) as usize;
    if start + size > fv_length as usize || size <= store::LEN {
        return Err(bad(format_args!(
            "variable store size {size:#x} does not fit the firmware volume"
        )));
    }
    Ok((start, size))
}

/// Live variables of a store region (header included): VAR_ADDED records, plus records in
/// deleted transition that no VAR_ADDED record of the same variable supersedes (edk2's rule
/// after an interrupted update).
fn live_variables(store: &[u8]) -> Result<Vec<Variable>> {
    let mut added = Vec::new();
    let mut in_transition = Vec::new();
    let mut off = FIRST_VARIABLE;
    while off + var::HEADER_LEN <= store.len() && u16_at(store, off) == var::START_ID {
        let (variable, state, next) = read_variable(store, off)?;
        match state {
            var::ADDED => added.push(variable),
            var::ADDED_IN_DELETED_TRANSITION => in_transition.push(variable),
            _ => {}
        }
        off = next;
    }
    for variable in in_transition {
        let same = |v: &Variable| v.name == variable.name && v.vendor_guid == variable.vendor_guid;
        if !added.iter().any(same) {
            added.push(variable);
        }
    }
    Ok(added)
}

/// The variable whose header is at `off`: (variable, State, offset of the next header).
fn read_variable(store: &[u8], off: usize) -> Result<(Variable, u8, usize)> {
    let h = &store[off..off + var::HEADER_LEN];
    let name_size = u32_at(h, var::NAME_SIZE) as usize;
    let data_size = u32_at(h, var::DATA_SIZE) as usize;
    let name_start = off + var::HEADER_LEN;
    let end = name_start
        .checked_add(name_size)
        .and_then(|e| e.checked_add(data_size))
        .filter(|&e| e <= store.len())
        .ok_or_else(|| {
            bad(format_args!(
                "variable at store offset {off:#x} (name {name_size} bytes, data {data_size} bytes) \
                 runs past the end of the store"
            ))
        })?;
    // NameSize counts the NUL: a whole number of UTF-16 units, at least the NUL.
    if name_size < 2 || !name_size.is_multiple_of(2) {
        return Err(bad(format_args!(
            "variable at store offset {off:#x} has a bad NameSize {name_size}"
        )));
    }
    let name = utf16_name(&store[name_start..name_start + name_size]).ok_or_else(|| {
        bad(format_args!(
            "variable at store offset {off:#x}: name is not UTF-16"
        ))
    })?;
    let mut vendor_guid = [0u8; 16];
    vendor_guid.copy_from_slice(&h[var::VENDOR_GUID..var::VENDOR_GUID + 16]);
    let mut timestamp = [0u8; var::TIMESTAMP_LEN];
    timestamp.copy_from_slice(&h[var::TIMESTAMP..var::TIMESTAMP + var::TIMESTAMP_LEN]);
    let variable = Variable {
        vendor_guid,
        name,
        attributes: u32_at(h, var::ATTRIBUTES),
        monotonic_count: u64_at(h, var::MONOTONIC_COUNT),
        timestamp,
        pubkey_index: u32_at(h, var::PUBKEY_INDEX),
        data: store[name_start + name_size..end].to_vec(),
    };
    Ok((variable, h[var::STATE], end.next_multiple_of(var::ALIGN)))
}

fn utf16_name(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// Callers have bounds-checked `off + 2`.
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Callers have bounds-checked `off + 4`.
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Callers have bounds-checked `off + 8`.
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
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
        let start = usize::from(u16_at(&vars, fv::HEADER_LENGTH)) + store::LEN;
        vars[start..start + 2].copy_from_slice(&var::START_ID.to_le_bytes());
        vars[start + 2] = var::ADDED;
        vars[start + 36..start + 40].copy_from_slice(&4u32.to_le_bytes());
        vars[start + 40..start + 44].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = read_variables(&vars).unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");
    }

    #[test]
    fn corrupt_fv_header_is_refused() {
        let mut vars = fixture(OVMF_VARS);
        vars[0x40] ^= 1;
        let e = read_variables(&vars).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn store_bounds_of_the_pinned_template() {
        let vars = fixture(OVMF_VARS);
        let s = read_store(&vars).unwrap();
        assert_eq!(s.offset, usize::from(u16_at(&vars, fv::HEADER_LENGTH)));
        assert_eq!(s.size, u32_at(&vars, s.offset + store::SIZE) as usize);
        // Erased flash right after the store header: no variable.
        assert!(vars[s.offset + FIRST_VARIABLE..s.offset + s.size]
            .iter()
            .all(|&b| b == layout::ERASED));
    }
}
